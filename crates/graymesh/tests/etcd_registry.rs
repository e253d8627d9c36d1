#![allow(clippy::unwrap_used, clippy::expect_used)] // a test binary: panicking on the unexpected is the point
//! The registry on etcd with leases, as users run it: pilots with `--etcd`, a sidecar
//! `graymesh proxy` registering its app through pilot. A SIGKILLed sidecar's instance is gone
//! within its TTL + 2 s; live registrations survive an etcd restart; any pilot renews any lease.

mod support;

use graymesh_testkit::{EtcdServer, FakeApp, FakeAppHandle, Http1Client};
use hyper::Method;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::{eventually, free, Process};

fn spawn(args: &[&str]) -> Process {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    Process::spawn(&args)
}

const TTL: Duration = Duration::from_secs(3);

struct Pilot {
    _process: Process,
    xds: SocketAddr,
    http: SocketAddr,
}

async fn pilot(etcd: &EtcdServer, client: &Http1Client) -> Pilot {
    pilot_with(etcd, client, &[]).await
}

/// Start pilot on fresh ports and wait for /ready; ports are picked before pilot binds them, so a
/// parallel test can take one: pilot then exits at once and is started again on new ports.
async fn pilot_with(etcd: &EtcdServer, client: &Http1Client, extra: &[&str]) -> Pilot {
    for _ in 0..3 {
        let (xds, http) = (free(), free());
        let (xds_arg, http_arg, endpoint) = (xds.to_string(), http.to_string(), etcd.endpoint());
        let mut args = vec!["pilot", "--etcd", &endpoint, "--xds-addr", &xds_arg];
        args.extend(["--http-addr", &http_arg]);
        args.extend(extra);
        let mut process = spawn(&args);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if process.0.try_wait().unwrap().is_some() {
                break;
            }
            let ready = client.get(&format!("http://{http}/ready"), &[]).await;
            if ready.is_ok_and(|r| r.status == 200) {
                return Pilot {
                    _process: process,
                    xds,
                    http,
                };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    panic!("pilot did not become ready in 3 attempts");
}

/// Instances pilot's translation sees for `reviews`, as `address:port` strings.
async fn endpoints(client: &Http1Client, pilot: &Pilot) -> Vec<String> {
    service_endpoints(client, pilot, "reviews", 9080).await
}

/// Instances of `service` (short name, namespace default) for service port `port`.
async fn service_endpoints(
    client: &Http1Client,
    pilot: &Pilot,
    service: &str,
    port: u16,
) -> Vec<String> {
    let Ok(reply) = client
        .get(&format!("http://{}/debug/registryz", pilot.http), &[])
        .await
    else {
        return vec!["<pilot unreachable>".into()];
    };
    let registry: serde_json::Value = reply.json().unwrap_or_default();
    let host = format!("{service}.default.svc.cluster.local");
    let port = port.to_string();
    let instances = &registry["services"][host.as_str()]["instances"];
    instances
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            let address = i["address"].as_str().unwrap_or("?");
            format!("{address}:{}", i["ports"][port.as_str()])
        })
        .collect()
}

fn sidecar(pilot: &Pilot, app: &FakeAppHandle) -> Process {
    sidecar_of(&[pilot], app)
}

/// A sidecar given every pilot in `pilots`, for xDS and for registration.
fn sidecar_of(pilots: &[&Pilot], app: &FakeAppHandle) -> Process {
    let (inbound, admin, outbound) = (free(), free(), free());
    let xds: Vec<String> = pilots.iter().map(|p| p.xds.to_string()).collect();
    let registry: Vec<String> = pilots
        .iter()
        .map(|p| format!("http://{}", p.http))
        .collect();
    spawn(&[
        "proxy",
        "--pilot",
        &xds.join(","),
        "--node-id",
        "reviews-v2-1",
        "--service",
        "reviews",
        "--service-version",
        "v2",
        "--app-port",
        &app.addr().port().to_string(),
        "--service-port",
        "9080",
        "--inbound-port",
        &inbound.port().to_string(),
        "--outbound-addr",
        &outbound.to_string(),
        "--admin-addr",
        &admin.to_string(),
        "--registry",
        &registry.join(","),
        "--registration-ttl",
        &TTL.as_secs().to_string(),
        "--concurrency",
        "1",
    ])
}

async fn reviews_app() -> FakeAppHandle {
    FakeApp::builder()
        .service("reviews")
        .version("v2")
        .start()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_sidecar_disappears_from_every_pilot_within_ttl_plus_2s() {
    let etcd = EtcdServer::start().unwrap();
    let client = Http1Client::new().with_timeout(Duration::from_secs(5));
    let a = pilot(&etcd, &client).await;
    let b = pilot(&etcd, &client).await;
    let app = reviews_app().await;
    let mut proxy = sidecar(&a, &app);
    // Registered through `a`, seen by `b`: they share nothing but etcd.
    eventually(
        Duration::from_secs(20),
        "registration seen by the other pilot",
        || async { endpoints(&client, &b).await.len() == 1 },
    )
    .await;
    assert_eq!(endpoints(&client, &a).await, endpoints(&client, &b).await);

    proxy.0.kill().unwrap(); // SIGKILL: no deregistration, heartbeats just stop
    proxy.0.wait().unwrap();
    let killed = Instant::now();
    eventually(
        TTL + Duration::from_secs(2),
        "the instance to expire on both pilots",
        || async {
            endpoints(&client, &a).await.is_empty() && endpoints(&client, &b).await.is_empty()
        },
    )
    .await;
    eprintln!("gone {:?} after SIGKILL (TTL {TTL:?})", killed.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_pilot_renews_and_revokes_a_registration() {
    let etcd = EtcdServer::start().unwrap();
    let client = Http1Client::new().with_timeout(Duration::from_secs(5));
    let a = pilot(&etcd, &client).await;
    let b = pilot(&etcd, &client).await;
    let body = r#"{"service": "reviews", "address": "127.0.0.1", "ports": [{"port": 9080, "target_port": 19082}], "labels": {"version": "v2"}, "ttl_seconds": 5}"#;
    let reply = client
        .post(
            &format!("http://{}/v1/registry/instances", a.http),
            &[],
            body,
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 201, "{}", reply.text());
    let id = reply.json().unwrap()["id"].as_str().unwrap().to_string();
    let url = |p: &Pilot, tail: &str| format!("http://{}/v1/registry/instances/{id}{tail}", p.http);
    let renew = client
        .request(Method::PUT, &url(&b, "/heartbeat"), &[], "")
        .await
        .unwrap();
    assert_eq!(renew.status, 204, "{}", renew.text());
    eventually(Duration::from_secs(10), "registration on b", || async {
        endpoints(&client, &b).await == ["127.0.0.1:19082"]
    })
    .await;
    let gone = client
        .request(Method::DELETE, &url(&b, ""), &[], "")
        .await
        .unwrap();
    assert_eq!(gone.status, 204, "{}", gone.text());
    eventually(Duration::from_secs(10), "deregistration on a", || async {
        endpoints(&client, &a).await.is_empty()
    })
    .await;
    let stale = client
        .request(Method::PUT, &url(&a, "/heartbeat"), &[], "")
        .await
        .unwrap();
    assert_eq!(
        stale.status, 404,
        "a revoked lease asks the sidecar to register again"
    );

    let bad = r#"{"service": "reviews", "address": "not-an-ip", "ports": [{"port": 9080}]}"#;
    let refused = client
        .post(
            &format!("http://{}/v1/registry/instances", a.http),
            &[],
            bad,
        )
        .await
        .unwrap();
    assert_eq!(refused.status, 400);
    assert!(refused.text().contains("address"), "{}", refused.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_registrations_survive_an_etcd_restart() {
    let mut etcd = EtcdServer::start().unwrap();
    let client = Http1Client::new().with_timeout(Duration::from_secs(5));
    let a = pilot(&etcd, &client).await;
    let app = reviews_app().await;
    let _proxy = sidecar(&a, &app);
    eventually(Duration::from_secs(20), "registration", || async {
        endpoints(&client, &a).await.len() == 1
    })
    .await;
    let before = endpoints(&client, &a).await;

    etcd.kill();
    // An outage of about one heartbeat period, then etcd comes back with its data.
    tokio::time::sleep(TTL / 3).await;
    etcd.restart().unwrap();

    // Past a whole TTL after the restart the instance must still be there, continuously.
    let watch_until = Instant::now() + TTL + Duration::from_secs(2);
    while Instant::now() < watch_until {
        assert_eq!(
            endpoints(&client, &a).await,
            before,
            "registration lost after etcd restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut raw = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .unwrap();
    let keys = raw
        .get(
            "/graymesh/registry/",
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    let keys: Vec<String> = keys
        .kvs()
        .iter()
        .map(|kv| kv.key_str().unwrap().to_string())
        .collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(
        keys[0].starts_with("/graymesh/registry/default/reviews/"),
        "{keys:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_naming_records_are_written_and_read_back() {
    let etcd = EtcdServer::start().unwrap();
    let client = Http1Client::new().with_timeout(Duration::from_secs(5));
    let a = pilot_with(&etcd, &client, &["--etcd-naming-prefix", "/services"]).await;
    let mut raw = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .unwrap();
    let prefix = Some(etcd_client::GetOptions::new().with_prefix());

    // Published: a graymesh instance appears as a record etcd's gRPC resolver reads.
    let body = r#"{"service": "reviews", "address": "127.0.0.1", "ports": [{"port": 9080, "target_port": 19082}], "labels": {"version": "v2"}, "ttl_seconds": 5}"#;
    let reply = client
        .post(
            &format!("http://{}/v1/registry/instances", a.http),
            &[],
            body,
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 201, "{}", reply.text());
    let id = reply.json().unwrap()["id"].as_str().unwrap().to_string();
    let records = raw.get("/services/", prefix.clone()).await.unwrap();
    assert_eq!(records.kvs().len(), 1);
    assert_eq!(
        records.kvs()[0].key_str().unwrap(),
        "/services/reviews/127.0.0.1:19082"
    );
    let record: serde_json::Value = serde_json::from_slice(records.kvs()[0].value()).unwrap();
    assert_eq!(record["Op"], 0);
    assert_eq!(record["Addr"], "127.0.0.1:19082");
    assert_eq!(record["Metadata"]["labels"]["version"], "v2");
    eventually(
        Duration::from_secs(10),
        "reviews registered once (own record not imported)",
        || async { endpoints(&client, &a).await == ["127.0.0.1:19082"] },
    )
    .await;

    // Imported: a record another program wrote becomes an instance, and goes with its key.
    let foreign = r#"{"Op":0,"Addr":"127.0.0.1:50051","Metadata":{"labels":{"version":"v1"}}}"#;
    raw.put("/services/greeter/127.0.0.1:50051", foreign, None)
        .await
        .unwrap();
    raw.put("/services/greeter/broken", "not json", None)
        .await
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "the foreign record imported",
        || async { service_endpoints(&client, &a, "greeter", 50051).await == ["127.0.0.1:50051"] },
    )
    .await;
    // The broken record is skipped and shown on /debug/syncz, with its key.
    let syncz = client
        .get(&format!("http://{}/debug/syncz", a.http), &[])
        .await
        .unwrap()
        .json()
        .unwrap();
    let errors = syncz["registry_errors"].to_string();
    assert!(
        errors.contains("/services/greeter/broken: not a naming record"),
        "{syncz}"
    );
    raw.delete("/services/greeter/127.0.0.1:50051", None)
        .await
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "the foreign record gone",
        || async {
            service_endpoints(&client, &a, "greeter", 50051)
                .await
                .is_empty()
        },
    )
    .await;

    // Deregistering revokes the lease: the naming record goes with the registration.
    let url = format!("http://{}/v1/registry/instances/{id}", a.http);
    assert_eq!(
        client
            .request(Method::DELETE, &url, &[], "")
            .await
            .unwrap()
            .status,
        204
    );
    let left = raw.get("/services/reviews/", prefix).await.unwrap();
    assert!(left.kvs().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_keeps_its_registration_through_another_pilot_when_its_pilot_dies() {
    let etcd = EtcdServer::start().unwrap();
    let client = Http1Client::new().with_timeout(Duration::from_secs(5));
    let a = pilot(&etcd, &client).await;
    let b = pilot(&etcd, &client).await;
    let app = reviews_app().await;
    let _proxy = sidecar_of(&[&a, &b], &app);
    eventually(Duration::from_secs(20), "registration", || async {
        endpoints(&client, &b).await.len() == 1
    })
    .await;
    let registered = endpoints(&client, &b).await;

    drop(a); // SIGKILL the pilot the sidecar registered through
             // Heartbeats move to `b`, which renews the same lease: the instance never drops out.
    let until = Instant::now() + TTL * 2 + Duration::from_secs(1);
    while Instant::now() < until {
        assert_eq!(
            endpoints(&client, &b).await,
            registered,
            "registration lost with its pilot"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// etcd's own count for the LeaseKeepAlive method: (streams started, messages received).
async fn keep_alive_counts(client: &Http1Client, etcd: &EtcdServer) -> (u64, u64) {
    let metrics = client
        .get(&format!("{}/metrics", etcd.endpoint()), &[])
        .await
        .unwrap()
        .text();
    let sum = |name: &str| -> u64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(name) && l.contains(r#"grpc_method="LeaseKeepAlive""#))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    (
        sum("grpc_server_started_total{"),
        sum("grpc_server_msg_received_total{"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_share_one_keep_alive_stream_and_renew_only_their_own_lease() {
    let etcd = EtcdServer::start().unwrap();
    let client = Http1Client::new().with_timeout(Duration::from_secs(5));
    let a = pilot(&etcd, &client).await;
    let register = |port: u16| {
        let body = format!(
            r#"{{"service": "reviews", "address": "127.0.0.1", "ports": [{{"port": 9080, "target_port": {port}}}], "ttl_seconds": 3}}"#
        );
        let url = format!("http://{}/v1/registry/instances", a.http);
        let client = &client;
        async move {
            let reply = client.post(&url, &[], body).await.unwrap();
            assert_eq!(reply.status, 201, "{}", reply.text());
            reply.json().unwrap()["id"].as_str().unwrap().to_string()
        }
    };
    let (kept, dropped) = (register(19001).await, register(19002).await);
    let heartbeat = |id: &str| {
        let url = format!("http://{}/v1/registry/instances/{id}/heartbeat", a.http);
        let client = &client;
        async move { client.request(Method::PUT, &url, &[], "").await.unwrap() }
    };
    eventually(Duration::from_secs(10), "both registrations", || async {
        endpoints(&client, &a).await.len() == 2
    })
    .await;

    let (started, received) = keep_alive_counts(&client, &etcd).await;
    let registered = Instant::now();
    let mut beats = 0;
    // Only `kept` heartbeats, every TTL/3, for longer than the TTL.
    while registered.elapsed() < TTL + Duration::from_millis(1500) {
        let reply = heartbeat(&kept).await;
        assert_eq!(reply.status, 204, "{}", reply.text());
        beats += 1;
        tokio::time::sleep(TTL / 3).await;
    }
    eventually(
        Duration::from_secs(5),
        "only the silent instance gone",
        || async { endpoints(&client, &a).await == ["127.0.0.1:19001"] },
    )
    .await;
    let (started_after, received_after) = keep_alive_counts(&client, &etcd).await;
    assert_eq!(
        started_after, started,
        "{beats} heartbeats opened new LeaseKeepAlive streams"
    );
    assert!(
        received_after - received >= beats,
        "{beats} heartbeats, {} keep-alives received by etcd",
        received_after - received
    );
    // The silent instance's lease ran out: its heartbeat is refused (on the same stream).
    assert_eq!(heartbeat(&dropped).await.status, 404);
    assert_eq!(keep_alive_counts(&client, &etcd).await.0, started);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pilot_started_after_the_registrations_serves_them_at_once() {
    let etcd = EtcdServer::start().unwrap();
    let client = Http1Client::new().with_timeout(Duration::from_secs(5));
    let a = pilot(&etcd, &client).await;
    let body = r#"{"service": "reviews", "address": "127.0.0.1", "ports": [{"port": 9080, "target_port": 19083}], "ttl_seconds": 30}"#;
    let url = format!("http://{}/v1/registry/instances", a.http);
    let reply = client.post(&url, &[], body).await.unwrap();
    assert_eq!(reply.status, 201, "{}", reply.text());
    // Nothing changes in the registry from here on: `b` must take it from its first listing.
    let b = pilot(&etcd, &client).await;
    eventually(
        Duration::from_secs(5),
        "the registration on the pilot started after it",
        || async { endpoints(&client, &b).await == ["127.0.0.1:19083"] },
    )
    .await;
}
