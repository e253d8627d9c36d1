//! Sidecars as users run them: `graymesh pilot`, a sidecar `graymesh proxy` fronting an app (it
//! registers the app with pilot and serves the inbound port), and a client-side proxy whose
//! explicit upstream port reaches that app. SIGTERM deregisters and exits promptly.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test binary: panicking on the unexpected is the point

mod support;

use graymesh_testkit::{FakeApp, Http1Client};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{eventually, free, Process, BIN};

fn spawn(args: &[String]) -> Process {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    Process::spawn(&args)
}

/// Lines a process writes to stdout, as they come.
fn access_lines(stdout: std::process::ChildStdout) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

async fn registered(client: &Http1Client, pilot_http: SocketAddr) -> Vec<String> {
    let Ok(reply) = client
        .get(&format!("http://{pilot_http}/v1/registry/instances"), &[])
        .await
    else {
        return Vec::new();
    };
    let list: serde_json::Value = reply.json().unwrap_or_default();
    list.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// `graymesh pilot` on `dir`, with its xDS and HTTP addresses.
fn start_pilot(dir: &std::path::Path) -> (Process, SocketAddr, SocketAddr) {
    let (xds, http) = (free(), free());
    let pilot = spawn(&[
        "pilot".into(),
        "--config-dir".into(),
        dir.display().to_string(),
        "--xds-addr".into(),
        xds.to_string(),
        "--http-addr".into(),
        http.to_string(),
    ]);
    (pilot, xds, http)
}

async fn wait_ready(http: &Http1Client, pilot_http: SocketAddr) {
    eventually(Duration::from_secs(20), "pilot ready", || async {
        http.get(&format!("http://{pilot_http}/ready"), &[])
            .await
            .is_ok_and(|r| r.status == 200)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_registers_its_app_serves_it_and_leaves_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("graymesh-sidecar-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("reviews.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews}\nspec:\n  host: reviews\n  subsets: [{name: v2, labels: {version: v2}}]\n",
    )
    .unwrap();
    let (_pilot, xds, pilot_http) = start_pilot(&dir);
    let app = FakeApp::builder()
        .service("reviews")
        .version("v2")
        .start()
        .await
        .unwrap();
    let http = Http1Client::new().with_timeout(Duration::from_secs(2));
    wait_ready(&http, pilot_http).await;

    let (inbound, sidecar_admin, sidecar_out) = (free(), free(), free());
    let mut sidecar = spawn(
        &[
            "proxy",
            "--pilot",
            &xds.to_string(),
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
            &sidecar_out.to_string(),
            "--admin-addr",
            &sidecar_admin.to_string(),
            "--registry",
            &format!("http://{pilot_http}"),
            "--health-path",
            "/healthz",
            "--concurrency",
            "1",
        ]
        .map(String::from),
    );
    eventually(
        Duration::from_secs(20),
        "the app to be registered",
        || async { registered(&http, pilot_http).await == ["reviews-v2-1"] },
    )
    .await;

    let (upstream, client_admin, client_out) = (free(), free(), free());
    let mut client = Process(
        Command::new(BIN)
            .args([
                "proxy",
                "--pilot",
                &xds.to_string(),
                "--node-id",
                "productpage-1",
                "--service",
                "productpage",
                "--service-version",
                "v1",
                "--no-register",
                "--concurrency",
                "1",
                "--access-log",
                "--upstream",
                &format!("reviews:9080={upstream}"),
                "--outbound-addr",
                &client_out.to_string(),
                "--admin-addr",
                &client_admin.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let access_log = access_lines(client.0.stdout.take().unwrap());
    eventually(
        Duration::from_secs(20),
        "a request through both proxies",
        || async {
            http.get(&format!("http://{upstream}/reviews/1"), &[])
                .await
                .is_ok_and(|r| r.status == 200 && r.version.as_deref() == Some("v2"))
        },
    )
    .await;
    assert!(app.requests().total >= 1);
    let entry: serde_json::Value = loop {
        let line = access_log
            .recv_timeout(Duration::from_secs(5))
            .expect("an access log line");
        let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
        if entry["response_code"] == 200 {
            break entry;
        }
    };
    assert_eq!(entry["method"], "GET");
    assert_eq!(entry["path"], "/reviews/1");
    assert_eq!(entry["direction"], "outbound");
    assert_eq!(
        entry["destination_service"],
        "reviews.default.svc.cluster.local"
    );
    assert_eq!(entry["protocol"], "HTTP/1.1");
    assert_eq!(entry["source_service"], "productpage");
    let metrics = http
        .get(&format!("http://{sidecar_admin}/metrics"), &[])
        .await
        .unwrap()
        .text();
    // The client's sidecar named itself in x-graymesh-source; this one counts it as the source.
    assert!(metrics.contains("direction=\"inbound\",source_service=\"productpage\",source_version=\"v1\",destination_service=\"reviews\",destination_version=\"v2\",response_code=\"200\""), "{metrics}");

    // SIGTERM: deregistered at once (not after the TTL) and the process exits within its drain bound.
    let stopped = Instant::now();
    Command::new("kill")
        .args(["-TERM", &sidecar.0.id().to_string()])
        .status()
        .unwrap();
    eventually(Duration::from_secs(3), "deregistration", || async {
        registered(&http, pilot_http).await.is_empty()
    })
    .await;
    let status = loop {
        if let Some(status) = sidecar.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(12),
            "sidecar still running after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A registered app that stops answering its health check is deregistered (callers stop being
/// sent to it) and registered again once it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_failing_its_health_check_is_deregistered_until_healthy() {
    let dir = std::env::temp_dir().join(format!("graymesh-sidecar-health-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (_pilot, xds, pilot_http) = start_pilot(&dir);
    let app = FakeApp::builder()
        .service("reviews")
        .version("v1")
        .start()
        .await
        .unwrap();
    let http = Http1Client::new().with_timeout(Duration::from_secs(2));
    wait_ready(&http, pilot_http).await;
    let (inbound, admin, out) = (free(), free(), free());
    let _sidecar = spawn(
        &[
            "proxy",
            "--pilot",
            &xds.to_string(),
            "--node-id",
            "reviews-v1-1",
            "--service",
            "reviews",
            "--service-version",
            "v1",
            "--app-port",
            &app.addr().port().to_string(),
            "--inbound-port",
            &inbound.port().to_string(),
            "--outbound-addr",
            &out.to_string(),
            "--admin-addr",
            &admin.to_string(),
            "--registry",
            &format!("http://{pilot_http}"),
            "--health-path",
            "/healthz",
            "--registration-ttl",
            "1",
            "--concurrency",
            "1",
        ]
        .map(String::from),
    );
    eventually(
        Duration::from_secs(20),
        "the app to be registered",
        || async { registered(&http, pilot_http).await == ["reviews-v1-1"] },
    )
    .await;
    app.set_failing(true);
    let failed_at = Instant::now();
    eventually(
        Duration::from_secs(10),
        "the failing app to be deregistered",
        || async { registered(&http, pilot_http).await.is_empty() },
    )
    .await;
    // Three failed checks, one per renewal (a third of the 1 s TTL): about a second.
    assert!(failed_at.elapsed() < Duration::from_secs(5));
    app.set_failing(false);
    eventually(
        Duration::from_secs(10),
        "the app to be registered again",
        || async { registered(&http, pilot_http).await == ["reviews-v1-1"] },
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}
