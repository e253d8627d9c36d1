//! Sticky canary cohorts end to end: real pilot (in process), real proxy, testkit fake apps that
//! answer with their version, real HTTP/1.1 (the h1 fast path), HTTP/2 and gRPC (the hyper path)
//! on loopback. The DestinationRule names a hash key; the proxy then picks the weighted cluster
//! from the key's hash, so through a rollout 95/5 → 80/20 → 50/50 each user sees one version per
//! weight level, over every protocol, and a user on v2 never goes back to v1.
//!
//! Each split sets a response header naming its weights, so every reply says which config
//! served it: a level is measured only once the proxy has it, and no reply of a level comes from
//! another one. A gateway and a sidecar given the same split put every user on the same version.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test binary: panicking on the unexpected is the point

mod mesh;

use futures::StreamExt;
use graymesh_testkit::FakeAppHandle;
use graymesh_testkit::{
    run_load, CallOptions, GrpcClient, Http1Client, Http2Client, LoadCall, LoadPlan, Reply,
};
use mesh::{app, free_addr, mesh_yaml_annotated, Pilot, Proxy};
use std::time::Duration;

const USERS: usize = 200;
const LEVELS: [(u32, u32); 3] = [(95, 5), (80, 20), (50, 50)];
const LEVEL_HEADER: &str = "x-weight-level";
/// A share on v2 within this many points of its weight. The user ids are fixed, so the shares
/// are too: 200 users put 5.0%, 21.0%, 51.5% (header ids, and baggage members, whose values are
/// the same ids) and 6.0%, 21.5%, 53.5% (cookie ids)
/// on v2 at 5, 20, 50, and 32.5% (cookie ids) at 30. Another set of 200 ids could land a few
/// points further off (one standard deviation is 3.5 points at 50%).
const SHARE_POINTS: f64 = 5.0;

/// Where a request carries its user's key.
#[derive(Clone, Copy, Debug)]
enum Key {
    Header,
    Cookie,
    /// The W3C baggage member `user-id`.
    Baggage,
}

impl Key {
    /// The DestinationRule's `trafficPolicy` naming the key.
    fn rule(self) -> &'static str {
        match self {
            Key::Header => {
                "  trafficPolicy:\n    loadBalancer:\n      consistentHash: {httpHeaderName: x-user-id}\n"
            }
            Key::Cookie => {
                "  trafficPolicy:\n    loadBalancer:\n      consistentHash: {httpCookie: {name: session}}\n"
            }
            Key::Baggage => {
                "  trafficPolicy:\n    loadBalancer:\n      consistentHash: {httpHeaderName: baggage}\n"
            }
        }
    }

    /// The DestinationRule's annotations: a baggage key names its member there.
    fn annotations(self) -> &'static str {
        match self {
            Key::Baggage => "graymesh.io/hash-baggage-member: user-id",
            Key::Header | Key::Cookie => "",
        }
    }

    /// The request header that carries user `i`'s key in their request `r` (the cookie among
    /// others; the member among others that change from request to request, with spaces and
    /// properties, so only the member can keep the user on one version).
    fn header(self, i: usize, r: usize) -> (&'static str, String) {
        match self {
            Key::Header => ("x-user-id", format!("user-{i}")),
            Key::Cookie => (
                "cookie",
                format!("theme=dark; session=session-{i}; lang=en"),
            ),
            Key::Baggage if r.is_multiple_of(2) => (
                "baggage",
                format!("tenant=acme;tier=gold, user-id=user-{i};src=web, request={r}"),
            ),
            Key::Baggage => ("baggage", format!("request={r},user-id = user-{i}")),
        }
    }

    /// The mesh with this key on the DestinationRule and `vs_http` as the routes.
    fn mesh(self, apps: &[&FakeAppHandle], vs_http: &str) -> String {
        mesh_yaml_annotated(apps, self.annotations(), self.rule(), vs_http)
    }
}

/// A v1/v2 split whose responses name its weights in [`LEVEL_HEADER`].
fn marked_split(v1: u32, v2: u32) -> String {
    format!(
        "  - headers: {{response: {{set: {{{LEVEL_HEADER}: \"{v1}-{v2}\"}}}}}}\n    route:\n    - {{destination: {{host: reviews, subset: v1}}, weight: {v1}}}\n    - {{destination: {{host: reviews, subset: v2}}, weight: {v2}}}\n"
    )
}

fn level_of(reply: &Reply) -> &str {
    reply
        .headers
        .get(LEVEL_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Waits (≤ 15 s) until the proxy routes with the split `level`.
async fn wait_for_level(proxy: &Proxy, level: &str) {
    let client = Http1Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let reply = client.get(&proxy.url("/"), &[]).await.unwrap();
        if reply.status == 200 && level_of(&reply) == level {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the proxy did not get the split {level} within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[derive(Clone)]
struct Clients {
    h1: Http1Client,
    h2: Http2Client,
    grpc: GrpcClient,
    url: String,
}

/// The one version user `i` gets at `level`: two requests over HTTP/1.1, two over HTTP/2 and
/// one gRPC call, each of which must answer from the same version.
async fn version_of_user(c: Clients, key: Key, i: usize, level: String) -> String {
    let mut seen = Vec::new();
    for r in 0..4 {
        let (name, value) = key.header(i, r);
        let headers = [(name, value.as_str())];
        let reply = if r.is_multiple_of(2) {
            c.h1.get(&c.url, &headers).await
        } else {
            c.h2.get(&c.url, &headers).await
        };
        let reply = reply.unwrap();
        assert_eq!(reply.status, 200, "user {i}");
        assert_eq!(level_of(&reply), level, "user {i}: served by another split");
        seen.push(reply.version.clone().unwrap_or_default());
    }
    let (name, value) = key.header(i, 4);
    let options = CallOptions::default().metadata(name, value.as_str());
    seen.push(c.grpc.version(&options).await.unwrap());
    assert!(
        seen.iter().all(|v| *v == seen[0]),
        "{key:?} user {i} flipped at {level}: {seen:?}"
    );
    seen.swap_remove(0)
}

/// Every user's version at `level`, in user order.
async fn cohort(clients: &Clients, key: Key, level: &str) -> Vec<String> {
    futures::stream::iter(0..USERS)
        .map(|i| version_of_user(clients.clone(), key, i, level.to_string()))
        .buffered(16)
        .collect()
        .await
}

/// The rollout 95/5 → 80/20 → 50/50 with users keyed by `key`.
async fn rollout_keeps_cohorts(key: Key) {
    let (v1, v2) = (app("v1").await, app("v2").await);
    let config = |(a, b): (u32, u32)| key.mesh(&[&v1, &v2], &marked_split(a, b));
    let pilot = Pilot::start(free_addr(), &config(LEVELS[0])).await;
    let proxy = Proxy::start(vec![pilot.addr]).await;
    let clients = Clients {
        h1: Http1Client::new(),
        h2: Http2Client::new(),
        grpc: GrpcClient::new(proxy.upstream).with_authority("reviews:9080"),
        url: proxy.url("/"),
    };
    let mut before: Option<Vec<String>> = None;
    for (a, b) in LEVELS {
        let level = format!("{a}-{b}");
        pilot.publish(&config((a, b)));
        wait_for_level(&proxy, &level).await;
        let now = cohort(&clients, key, &level).await;
        if let Some(before) = &before {
            for (i, (was, is)) in before.iter().zip(&now).enumerate() {
                assert!(
                    !(was == "v2" && is == "v1"),
                    "{key:?} user {i} went back from v2 to v1 at {level}"
                );
            }
        }
        let on_v2 = now.iter().filter(|v| *v == "v2").count();
        let share = on_v2 as f64 * 100.0 / USERS as f64;
        assert!(
            (share - f64::from(b)).abs() <= SHARE_POINTS,
            "{key:?}: {share:.1}% of users on v2 at {level}"
        );
        before = Some(now);
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_keyed_by_header_keep_one_version_and_only_move_to_the_canary() {
    rollout_keeps_cohorts(Key::Header).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_keyed_by_cookie_keep_one_version_and_only_move_to_the_canary() {
    rollout_keeps_cohorts(Key::Cookie).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_keyed_by_a_baggage_member_keep_one_version_and_only_move_to_the_canary() {
    rollout_keeps_cohorts(Key::Baggage).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_the_key_are_still_split_at_random() {
    let (v1, v2) = (app("v1").await, app("v2").await);
    let yaml = Key::Header.mesh(&[&v1, &v2], &marked_split(80, 20));
    let pilot = Pilot::start(free_addr(), &yaml).await;
    let proxy = Proxy::start(vec![pilot.addr]).await;
    let plan = LoadPlan {
        max_requests: 1000,
        max_duration: Duration::from_secs(30),
        concurrency: 8,
    };
    let calls = [
        ("http1", LoadCall::http1(Http1Client::new(), proxy.url("/"))),
        ("http2", LoadCall::http2(Http2Client::new(), proxy.url("/"))),
    ];
    for (name, call) in calls {
        let report = run_load(call, plan).await;
        assert_eq!(report.failed, 0, "{name}: {:?}", report.failures);
        assert_eq!(report.ok, 1000, "{name}");
        let on_v2 = *report.by_version.get("v2").unwrap_or(&0) as f64 / 10.0;
        assert!(
            (on_v2 - 20.0).abs() <= SHARE_POINTS,
            "{name}: {on_v2:.1}% on v2 without a key"
        );
    }
    proxy.stop().await;
}

/// A baggage header without the member is hashed whole (pilot's rewrite leaves it unchanged, as
/// Envoy's would): such requests keep one version per distinct baggage and are spread as the
/// weights say, instead of all landing on the one version an empty key would pick (the canary,
/// at 5%: the empty key's point is 0.958).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_whose_baggage_lacks_the_member_are_spread_by_their_whole_baggage() {
    let (v1, v2) = (app("v1").await, app("v2").await);
    let yaml = Key::Baggage.mesh(&[&v1, &v2], &marked_split(95, 5));
    let pilot = Pilot::start(free_addr(), &yaml).await;
    let proxy = Proxy::start(vec![pilot.addr]).await;
    wait_for_level(&proxy, "95-5").await;
    let client = Http1Client::new();
    let mut on_v2 = 0;
    for i in 0..USERS {
        let baggage = format!("tenant=acme, session=s-{i}");
        let headers = [("baggage", baggage.as_str())];
        let first = client.get(&proxy.url("/"), &headers).await.unwrap();
        let again = client.get(&proxy.url("/"), &headers).await.unwrap();
        assert!(first.status == 200 && again.status == 200, "{baggage:?}");
        assert_eq!(first.version, again.version, "{baggage:?} flipped");
        on_v2 += usize::from(first.version.as_deref() == Some("v2"));
    }
    // 200 such baggages put 5.0% on v2.
    let share = on_v2 as f64 * 100.0 / USERS as f64;
    assert!(
        (share - 5.0).abs() <= SHARE_POINTS,
        "{share:.1}% of member-less baggages on v2 at 95-5"
    );
    proxy.stop().await;
}

const PUBLIC_HOST: &str = "bookinfo.example.com";

/// An ingress Gateway on `port` and a VirtualService bound to it splitting reviews `v1`/`v2`.
fn gateway_yaml(port: u16, v1: u32, v2: u32) -> String {
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: ingress}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: {port}, name: http, protocol: HTTP}}\n    hosts: [\"*\"]\n---\n\
apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: bookinfo}}\nspec:\n  hosts: [{PUBLIC_HOST}]\n  gateways: [ingress]\n  http:\n{}",
        marked_split(v1, v2)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_and_a_sidecar_put_each_user_on_the_same_version() {
    let (v1, v2) = (app("v1").await, app("v2").await);
    let server = free_addr();
    let key = Key::Cookie;
    let yaml = key.mesh(&[&v1, &v2], &marked_split(70, 30)) + &gateway_yaml(server.port(), 70, 30);
    let pilot = Pilot::start(free_addr(), &yaml).await;
    let sidecar = Proxy::start(vec![pilot.addr]).await;
    let gateway = Proxy::start_gateway(vec![pilot.addr], server).await;
    let (to_sidecar, to_gateway) = (Http1Client::new(), Http1Client::via(server));
    let public_url = format!("http://{PUBLIC_HOST}/");
    let mut on_v2 = 0;
    for i in 0..USERS {
        let (name, value) = key.header(i, 0);
        let headers = [(name, value.as_str())];
        let mesh = to_sidecar.get(&sidecar.url("/"), &headers).await.unwrap();
        let entry = to_gateway.get(&public_url, &headers).await.unwrap();
        for (via, reply) in [("sidecar", &mesh), ("gateway", &entry)] {
            assert_eq!(reply.status, 200, "user {i} via the {via}");
            assert_eq!(level_of(reply), "70-30", "user {i} via the {via}");
        }
        assert_eq!(mesh.version, entry.version, "user {i}");
        on_v2 += usize::from(mesh.version.as_deref() == Some("v2"));
    }
    let share = on_v2 as f64 * 100.0 / USERS as f64;
    assert!(
        (share - 30.0).abs() <= SHARE_POINTS,
        "{share:.1}% of users on v2 at 70-30"
    );
    gateway.stop().await;
    sidecar.stop().await;
}
