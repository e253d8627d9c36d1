//! The proxy's `/metrics` under real traffic: a caller sidecar (productpage v1, no app) whose
//! outbound port routes to the inbound port of a callee sidecar (reviews v1) fronting a testkit
//! app, both real proxies with the real pilot in process, on loopback. Every load is bounded in
//! count and time.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test binary: panicking on the unexpected is the point

mod mesh;

use graymesh_testkit::{Http1Client, Http2Client, Reply};
use mesh::{app, free_addr, mesh_yaml_endpoints, sample_sum, Pilot, Proxy};
use std::time::Duration;

const REQUESTS: &str = "graymesh_proxy_requests_total";
const CONNECTIONS: &str = "graymesh_proxy_upstream_connections";
const OPENED: &str = "graymesh_proxy_upstream_connections_opened_total";
const FAILURES: &str = "graymesh_proxy_upstream_connect_failures_total";
const FORGED: (&str, &str) = ("x-graymesh-source", "ratings;v9");

/// What the app saw of `x-graymesh-source` (its echo lists the headers it received).
fn source_seen_by_app(reply: &Reply) -> Option<String> {
    assert_eq!(reply.status, 200, "{}", reply.text());
    let echo = reply.json().unwrap();
    echo["headers"]["x-graymesh-source"]
        .as_str()
        .map(str::to_string)
}

/// A caller sidecar and a callee sidecar fronting `reviews` v1, the caller routing all of
/// `reviews:9080` to the callee's inbound port.
async fn two_sidecars() -> (Pilot, Proxy, Proxy, graymesh_testkit::FakeAppHandle) {
    let reviews = app("v1").await;
    let inbound = free_addr();
    let vs = "  - route: [{destination: {host: reviews, subset: v1}}]\n";
    let yaml = mesh_yaml_endpoints(&[(inbound, "v1")], "", "", vs);
    let pilot = Pilot::start(free_addr(), &yaml).await;
    let callee = Proxy::start_sidecar(
        vec![pilot.addr],
        ("reviews", "v1"),
        "reviews:9080",
        Some((&reviews, inbound)),
    )
    .await;
    let caller = Proxy::start_sidecar(
        vec![pilot.addr],
        ("productpage", "v1"),
        "reviews:9080",
        None,
    )
    .await;
    (pilot, caller, callee, reviews)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_labels_name_the_calling_sidecar_and_the_app_never_sees_the_header() {
    let (_pilot, caller, callee, _reviews) = two_sidecars().await;
    let (h1, h2) = (Http1Client::new(), Http2Client::new());
    // Through the caller, HTTP/1 (fast path) and HTTP/2 (general path), with and without a
    // forged source: the callee's app never sees the header.
    for forged in [&[][..], &[FORGED][..]] {
        for _ in 0..5 {
            let reply = h1.get(&caller.url("/"), forged).await.unwrap();
            assert_eq!(source_seen_by_app(&reply), None);
            let reply = h2.get(&caller.url("/"), forged).await.unwrap();
            assert_eq!(source_seen_by_app(&reply), None);
        }
    }
    // Straight to the callee's inbound port: without the header, an unknown source; with one,
    // the source it names (an inbound port trusts its callers' sidecars).
    let direct = format!("http://{}/", callee.inbound);
    let reply = h1.get(&direct, &[]).await.unwrap();
    assert_eq!(source_seen_by_app(&reply), None);
    let reply = h1
        .get(&direct, &[("x-graymesh-source", "details;v2")])
        .await
        .unwrap();
    assert_eq!(source_seen_by_app(&reply), None);

    let outbound = caller.metrics().await;
    let from_productpage = [("source_service", "productpage"), ("source_version", "v1")];
    let labels = [&[("direction", "outbound")][..], &from_productpage].concat();
    assert_eq!(sample_sum(&outbound, REQUESTS, &labels), 20.0, "{outbound}");
    let inbound = callee.metrics().await;
    let labels = [
        &[("direction", "inbound"), ("destination_service", "reviews")][..],
        &from_productpage,
    ]
    .concat();
    assert_eq!(sample_sum(&inbound, REQUESTS, &labels), 20.0, "{inbound}");
    let unknown = [
        ("direction", "inbound"),
        ("source_service", ""),
        ("source_version", ""),
    ];
    assert_eq!(sample_sum(&inbound, REQUESTS, &unknown), 1.0, "{inbound}");
    let details = [("direction", "inbound"), ("source_service", "details")];
    assert_eq!(sample_sum(&inbound, REQUESTS, &details), 1.0, "{inbound}");
    assert!(
        !inbound.contains("ratings"),
        "a forged source never arrives: {inbound}"
    );
    let buckets = "graymesh_proxy_request_duration_seconds_count";
    assert_eq!(
        sample_sum(&inbound, buckets, &from_productpage),
        20.0,
        "{inbound}"
    );
    caller.stop().await;
    callee.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_counted_open_until_they_close() {
    let (_pilot, caller, callee, _reviews) = two_sidecars().await;
    let (h1, h2) = (Http1Client::new(), Http2Client::new());
    for _ in 0..10 {
        assert_eq!(h1.get(&caller.url("/"), &[]).await.unwrap().status, 200);
        assert_eq!(h2.get(&caller.url("/"), &[]).await.unwrap().status, 200);
    }
    let text = caller.metrics().await;
    for protocol in ["http1", "http2"] {
        let p = [("protocol", protocol)];
        let (open, opened) = (
            sample_sum(&text, CONNECTIONS, &p),
            sample_sum(&text, OPENED, &p),
        );
        assert!(
            open >= 1.0,
            "{protocol}: idle or in use, still open: {text}"
        );
        assert!(opened >= open, "{protocol}: {text}");
        assert!(opened <= 10.0, "{protocol}: connections are reused: {text}");
        assert_eq!(sample_sum(&text, FAILURES, &p), 0.0, "{text}");
    }
    assert_eq!(sample_sum(&text, CONNECTIONS, &[("protocol", "tcp")]), 0.0);

    // The callee goes away: its HTTP/2 connection's task ends and counts it closed; a new
    // HTTP/1 request finds no one to connect to.
    callee.stop().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = caller.metrics().await;
        if sample_sum(&text, CONNECTIONS, &[("protocol", "http2")]) == 0.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "HTTP/2 connection still counted: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(h1.get(&caller.url("/"), &[]).await.unwrap().status, 503);
    let text = caller.metrics().await;
    assert!(
        sample_sum(&text, FAILURES, &[("protocol", "http1")]) >= 1.0,
        "{text}"
    );
    caller.stop().await;
}
