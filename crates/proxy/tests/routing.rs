//! The proxy end to end: real pilot (in process), real proxy, testkit fake apps, real HTTP/1.1,
//! HTTP/2 and gRPC traffic on loopback. Every load is bounded in count and time.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test binary: panicking on the unexpected is the point

mod mesh;

use graymesh_testkit::{
    run_load, CallOptions, GrpcClient, Http1Client, Http2Client, LoadCall, LoadPlan,
};
use mesh::{app, free_addr, mesh_yaml, sample_sum, split, Pilot, Proxy, HOST};
use std::time::Duration;

fn plan(n: u64) -> LoadPlan {
    LoadPlan {
        max_requests: n,
        max_duration: Duration::from_secs(30),
        concurrency: 8,
    }
}

fn share(report: &graymesh_testkit::LoadReport, version: &str) -> f64 {
    *report.by_version.get(version).unwrap_or(&0) as f64 / report.ok.max(1) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_split_holds_for_http1_http2_and_grpc() {
    let (v1, v2) = (app("v1").await, app("v2").await);
    let pilot = Pilot::start(free_addr(), &mesh_yaml(&[&v1, &v2], "", &split(80, 20))).await;
    let proxy = Proxy::start(vec![pilot.addr]).await;
    let calls = [
        ("http1", LoadCall::http1(Http1Client::new(), proxy.url("/"))),
        ("http2", LoadCall::http2(Http2Client::new(), proxy.url("/"))),
        (
            "grpc",
            LoadCall::grpc(GrpcClient::new(proxy.upstream).with_authority("reviews:9080")),
        ),
    ];
    for (name, call) in calls {
        let report = run_load(call, plan(1000)).await;
        assert_eq!(report.failed, 0, "{name}: {:?}", report.failures);
        assert_eq!(report.ok, 1000, "{name}");
        let v2_share = share(&report, "v2");
        assert!(
            (0.15..=0.25).contains(&v2_share),
            "{name}: v2 got {:.1}%",
            v2_share * 100.0
        );
    }
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains("destination_service=\"reviews.default.svc.cluster.local\""),
        "{metrics}"
    );
    assert!(metrics.contains("destination_version=\"v2\""), "{metrics}");
    assert!(
        metrics.contains("grpc_status=\"0\""),
        "gRPC statuses from trailers are counted: {metrics}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_cookie_and_uri_matches_pick_the_canary() {
    let (v1, v2) = (app("v1").await, app("v2").await);
    let vs = "  - match: [{headers: {end-user: {exact: jason}}}, {headers: {cookie: {regex: \".*canary=yes.*\"}}}, {uri: {prefix: /beta/}}]\n    route: [{destination: {host: reviews, subset: v2}}]\n  - route: [{destination: {host: reviews, subset: v1}}]\n";
    let pilot = Pilot::start(free_addr(), &mesh_yaml(&[&v1, &v2], "", vs)).await;
    let proxy = Proxy::start(vec![pilot.addr]).await;
    let client = Http1Client::new();
    let version = |r: graymesh_testkit::Reply| r.version.unwrap_or_default();
    assert_eq!(
        version(
            client
                .get(&proxy.url("/"), &[("end-user", "jason")])
                .await
                .unwrap()
        ),
        "v2"
    );
    assert_eq!(
        version(
            client
                .get(&proxy.url("/"), &[("cookie", "a=1; canary=yes")])
                .await
                .unwrap()
        ),
        "v2"
    );
    assert_eq!(
        version(client.get(&proxy.url("/beta/page"), &[]).await.unwrap()),
        "v2"
    );
    assert_eq!(
        version(
            client
                .get(
                    &proxy.url("/"),
                    &[("end-user", "bob"), ("cookie", "canary=no")]
                )
                .await
                .unwrap()
        ),
        "v1"
    );
    let grpc = GrpcClient::new(proxy.upstream).with_authority("reviews:9080");
    assert_eq!(
        grpc.version(&CallOptions::default().metadata("end-user", "jason"))
            .await
            .unwrap(),
        "v2"
    );
    assert_eq!(grpc.version(&CallOptions::default()).await.unwrap(), "v1");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_shift_under_continuous_load_fails_no_request() {
    let (v1, v2) = (app("v1").await, app("v2").await);
    let pilot = Pilot::start(free_addr(), &mesh_yaml(&[&v1, &v2], "", &split(100, 0))).await;
    let proxy = Proxy::start(vec![pilot.addr]).await;
    let load = tokio::spawn(run_load(
        LoadCall::http1(Http1Client::new(), proxy.url("/")),
        LoadPlan {
            max_requests: 4000,
            max_duration: Duration::from_secs(20),
            concurrency: 8,
        },
    ));
    for (a, b) in [(90, 10), (50, 50), (0, 100), (50, 50), (100, 0)] {
        tokio::time::sleep(Duration::from_millis(150)).await;
        pilot.publish(&mesh_yaml(&[&v1, &v2], "", &split(a, b)));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    // The last shift is awaited: the load may end before it, and it must be in force below.
    pilot
        .publish_and_settle(&mesh_yaml(&[&v1, &v2], "", &split(0, 100)))
        .await;
    let report = load.await.unwrap();
    assert_eq!(report.failed, 0, "{:?}", report.failures);
    assert!(
        report.by_version.contains_key("v1") && report.by_version.contains_key("v2"),
        "{:?}",
        report.by_version
    );
    // The last shift (0/100) is in force.
    let after = run_load(
        LoadCall::http1(Http1Client::new(), proxy.url("/")),
        plan(200),
    )
    .await;
    assert_eq!(
        after.by_version.get("v2"),
        Some(&200),
        "{:?}",
        after.by_version
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pilot_loss_keeps_the_last_config_and_a_new_pilot_is_caught_up_with() {
    let (v1, v2) = (app("v1").await, app("v2").await);
    let addr = free_addr();
    let pilot = Pilot::start(addr, &mesh_yaml(&[&v1, &v2], "", &split(100, 0))).await;
    let proxy = Proxy::start(vec![addr]).await;
    pilot.kill();
    let during = run_load(
        LoadCall::http1(Http1Client::new(), proxy.url("/")),
        plan(300),
    )
    .await;
    assert_eq!(during.failed, 0, "{:?}", during.failures);
    assert_eq!(during.by_version.get("v1"), Some(&300));

    // A pilot comes back on the same address with the canary at 100%.
    let _back = Pilot::start(addr, &mesh_yaml(&[&v1, &v2], "", &split(0, 100))).await;
    let client = Http1Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let r = client.get(&proxy.url("/"), &[]).await.unwrap();
        assert_eq!(r.status, 200);
        if r.version.as_deref() == Some("v2") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "proxy did not catch up with the new pilot within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_hide_a_failing_endpoint_and_timeouts_answer_504() {
    let (bad, good) = (app("v1").await, app("v1").await);
    bad.set_error_rate(1.0).unwrap();
    let vs = "  - route: [{destination: {host: reviews, subset: v1}}]\n    retries: {attempts: 3, retryOn: 5xx}\n";
    let pilot = Pilot::start(free_addr(), &mesh_yaml(&[&bad, &good], "", vs)).await;
    let proxy = Proxy::start(vec![pilot.addr]).await;
    let report = run_load(
        LoadCall::http1(Http1Client::new(), proxy.url("/")),
        plan(200),
    )
    .await;
    assert_eq!(
        report.failed, 0,
        "every request retried onto the good endpoint: {:?}",
        report.failures
    );
    assert!(bad.requests().total > 0, "the failing endpoint was tried");
    assert!(proxy
        .metrics()
        .await
        .contains("graymesh_proxy_retries_total"));

    // A slow endpoint and a 300 ms route timeout: 504 from the proxy, well before the app answers.
    good.set_latency(Duration::from_secs(3));
    bad.set_error_rate(0.0).unwrap();
    bad.set_latency(Duration::from_secs(3));
    let vs = "  - route: [{destination: {host: reviews, subset: v1}}]\n    timeout: 300ms\n    retries: {attempts: 0}\n";
    pilot.publish(&mesh_yaml(&[&bad, &good], "", vs));
    let client = Http1Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let started = tokio::time::Instant::now();
        let r = client.get(&proxy.url("/"), &[]).await.unwrap();
        if r.status == 504 {
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "timed out after {:?}",
                started.elapsed()
            );
            assert_eq!(r.headers.get("x-graymesh-local-reply").unwrap(), "UT");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no 504 within 10 s");
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_detection_ejects_and_readmits() {
    let (bad, good) = (app("v1").await, app("v1").await);
    bad.set_failing(true);
    let dr = "  trafficPolicy:\n    outlierDetection: {consecutive5xxErrors: 3, interval: 1s, baseEjectionTime: 1s, maxEjectionPercent: 50}\n";
    let vs =
        "  - route: [{destination: {host: reviews, subset: v1}}]\n    retries: {attempts: 0}\n";
    let pilot = Pilot::start(free_addr(), &mesh_yaml(&[&bad, &good], dr, vs)).await;
    let proxy = Proxy::start(vec![pilot.addr]).await;
    let first = run_load(
        LoadCall::http1(Http1Client::new(), proxy.url("/")),
        LoadPlan {
            concurrency: 1,
            ..plan(100)
        },
    )
    .await;
    assert!(
        (3..=6).contains(&first.failed),
        "ejected after 3 consecutive errors: {} failed",
        first.failed
    );
    let cluster = [("destination_service", HOST), ("destination_version", "v1")];
    let text = proxy.metrics().await;
    let ejections = "graymesh_proxy_outlier_ejections_total";
    assert!(sample_sum(&text, ejections, &cluster) >= 1.0, "{text}");
    let ejected = "graymesh_proxy_outlier_ejected_endpoints";
    assert_eq!(sample_sum(&text, ejected, &cluster), 1.0, "{text}");
    let bad_seen = bad.requests().total;
    let after = run_load(
        LoadCall::http1(Http1Client::new(), proxy.url("/")),
        LoadPlan {
            concurrency: 1,
            ..plan(50)
        },
    )
    .await;
    assert_eq!(after.failed, 0);
    assert_eq!(
        bad.requests().total,
        bad_seen,
        "the ejected endpoint gets nothing"
    );

    bad.set_failing(false);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let back = run_load(
        LoadCall::http1(Http1Client::new(), proxy.url("/")),
        LoadPlan {
            concurrency: 1,
            ..plan(50)
        },
    )
    .await;
    assert_eq!(back.failed, 0);
    assert!(
        bad.requests().total > bad_seen,
        "readmitted after the ejection time"
    );
    let text = proxy.metrics().await;
    assert_eq!(sample_sum(&text, ejected, &cluster), 0.0, "{text}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaker_answers_503_with_a_clear_header() {
    let slow = app("v1").await;
    slow.set_latency(Duration::from_millis(500));
    let dr = "  trafficPolicy:\n    connectionPool: {tcp: {maxConnections: 1}, http: {http1MaxPendingRequests: 1}}\n";
    let vs =
        "  - route: [{destination: {host: reviews, subset: v1}}]\n    retries: {attempts: 0}\n";
    let pilot = Pilot::start(free_addr(), &mesh_yaml(&[&slow], dr, vs)).await;
    let proxy = Proxy::start(vec![pilot.addr]).await;
    let client = Http1Client::new();
    let url = proxy.url("/");
    let calls: Vec<_> = (0..6).map(|_| client.get(&url, &[])).collect();
    let replies = futures::future::join_all(calls).await;
    let overflowed: Vec<_> = replies
        .iter()
        .map(|r| r.as_ref().unwrap())
        .filter(|r| r.status == 503)
        .collect();
    assert!(
        overflowed.len() >= 3,
        "{} of 6 overflowed",
        overflowed.len()
    );
    for r in overflowed {
        assert_eq!(
            r.headers.get("x-graymesh-overflow").unwrap(),
            "outbound|9080|v1|reviews.default.svc.cluster.local"
        );
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirroring_copies_requests_without_delaying_them() {
    let (v1, v2) = (app("v1").await, app("v2").await);
    v2.set_latency(Duration::from_secs(2));
    let vs = "  - route: [{destination: {host: reviews, subset: v1}}]\n    mirror: {host: reviews, subset: v2}\n    mirrorPercentage: {value: 100}\n";
    let pilot = Pilot::start(free_addr(), &mesh_yaml(&[&v1, &v2], "", vs)).await;
    let proxy = Proxy::start(vec![pilot.addr]).await;
    let report = run_load(
        LoadCall::http1(Http1Client::new(), proxy.url("/")),
        plan(20),
    )
    .await;
    assert_eq!(report.by_version.get("v1"), Some(&20));
    assert!(
        report.latency_p99 < Duration::from_secs(1),
        "the slow mirror never delays: p99 {:?}",
        report.latency_p99
    );
    v2.wait_for_requests(20, Duration::from_secs(10))
        .await
        .unwrap();
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_see_the_authority_the_client_sent_over_http1_and_http2() {
    let v1 = app("v1").await;
    let vs = "  - route: [{destination: {host: reviews, subset: v1}}]\n";
    let pilot = Pilot::start(free_addr(), &mesh_yaml(&[&v1], "", vs)).await;
    let proxy = Proxy::start(vec![pilot.addr]).await;
    let sent = proxy.upstream.to_string();
    let h1 = Http1Client::new().get(&proxy.url("/a"), &[]).await.unwrap();
    let h2 = Http2Client::new().get(&proxy.url("/a"), &[]).await.unwrap();
    for (name, reply) in [("http1", h1), ("http2", h2)] {
        let json = reply.json().unwrap();
        assert_eq!(json["authority"], sent.as_str(), "{name}: {json}");
        assert_ne!(
            json["authority"],
            v1.addr().to_string().as_str(),
            "{name}: not the endpoint's address"
        );
    }
    proxy.stop().await;
}

/// The proxy's HTTP/2 path relays bodies within both connections' flow-control windows: a body
/// several times the windows' size arrives whole, while other streams of the same client
/// connection go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_bodies_larger_than_the_windows_arrive_whole_beside_other_streams() {
    let v1 = app("v1").await;
    let vs = "  - route: [{destination: {host: reviews, subset: v1}}]\n";
    let pilot = Pilot::start(free_addr(), &mesh_yaml(&[&v1], "", vs)).await;
    let proxy = Proxy::start(vec![pilot.addr]).await;
    let client = Http2Client::new();
    let url = proxy.url("/upload");
    let big = vec![b'x'; 9 * 1024 * 1024];
    let upload = client.post(&url, &[], big.clone());
    let numbers: Vec<String> = (0..50).map(|i| i.to_string()).collect();
    let headers: Vec<[(&str, &str); 1]> = numbers.iter().map(|n| [("x-n", n.as_str())]).collect();
    let small = futures::future::join_all(headers.iter().map(|h| client.get(&url, h)));
    let (upload, small) = tokio::time::timeout(
        Duration::from_secs(30),
        futures::future::join(upload, small),
    )
    .await
    .expect("bounded");
    let upload = upload.unwrap();
    assert_eq!(upload.status, 200, "{}", upload.text());
    assert_eq!(
        upload.json().unwrap()["body_len"],
        big.len(),
        "the whole body arrived"
    );
    for (i, reply) in small.into_iter().enumerate() {
        let reply = reply.unwrap();
        assert_eq!(reply.status, 200, "stream {i}");
        assert_eq!(
            reply.json().unwrap()["headers"]["x-n"],
            numbers[i],
            "stream {i}"
        );
    }
    proxy.stop().await;
}

/// Draining (SIGTERM) stops new HTTP/2 streams with a GOAWAY but lets the open ones finish: the
/// proxy stops only once a slow response has been relayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_lets_open_http2_streams_finish() {
    let v1 = app("v1").await;
    let vs = "  - route: [{destination: {host: reviews, subset: v1}}]\n";
    let pilot = Pilot::start(free_addr(), &mesh_yaml(&[&v1], "", vs)).await;
    let proxy = Proxy::start(vec![pilot.addr]).await;
    let client = Http2Client::new();
    let first = client.get(&proxy.url("/"), &[]).await.unwrap();
    assert_eq!(first.status, 200, "the connection is open before the drain");
    let slow = tokio::spawn({
        let (client, url) = (client.clone(), proxy.url("/delay/800"));
        async move { client.get(&url, &[]).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let draining = std::time::Instant::now();
    proxy.stop().await;
    let stopped_after = draining.elapsed();
    let reply = tokio::time::timeout(Duration::from_secs(5), slow)
        .await
        .expect("bounded")
        .unwrap()
        .expect("the open stream was answered");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json().unwrap()["path"], "/delay/800");
    assert!(
        stopped_after >= Duration::from_millis(400),
        "the proxy waited for the open stream ({stopped_after:?})"
    );
}

/// The upstream protocol is the cluster's: an HTTP2 (or GRPC) port is reached over HTTP/2 even
/// from an HTTP/1.1 client, an HTTP port over what the client spoke.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_port_is_reached_over_http2_whatever_the_client_speaks() {
    let v1 = app("v1").await;
    let vs = "  - route: [{destination: {host: reviews, subset: v1}}]\n";
    let http = mesh_yaml(&[&v1], "", vs);
    let http2 = http
        .replace(
            "name: http, protocol: HTTP}",
            "name: http2, protocol: HTTP2}",
        )
        .replace("ports: {http:", "ports: {http2:");
    assert_ne!(http, http2, "the port is renamed");
    let pilot = Pilot::start(free_addr(), &http).await;
    let proxy = Proxy::start(vec![pilot.addr]).await;
    let seen = |reply: graymesh_testkit::Reply| reply.json().unwrap()["protocol"].clone();
    let h1 = Http1Client::new();
    let h2 = Http2Client::new();
    assert_eq!(
        seen(h1.get(&proxy.url("/"), &[]).await.unwrap()),
        "HTTP/1.1"
    );
    assert_eq!(
        seen(h2.get(&proxy.url("/"), &[]).await.unwrap()),
        "HTTP/2.0"
    );
    // Only the clusters change (the routes are the same): wait for the new ones to be in use.
    pilot.publish(&http2);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while seen(h1.get(&proxy.url("/"), &[]).await.unwrap()) != "HTTP/2.0" {
        assert!(
            std::time::Instant::now() < deadline,
            "an HTTP/1.1 client's request goes to the HTTP2 port as HTTP/2"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let posted = h1
        .post(&proxy.url("/up"), &[], vec![b'x'; 100_000])
        .await
        .unwrap();
    assert_eq!(posted.json().unwrap()["body_len"], 100_000, "with its body");
    assert_eq!(
        seen(h2.get(&proxy.url("/"), &[]).await.unwrap()),
        "HTTP/2.0"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_are_retried_and_their_deadline_is_enforced() {
    let (bad, good) = (app("v1").await, app("v1").await);
    bad.set_error_rate(1.0).unwrap();
    let vs = "  - route: [{destination: {host: reviews, subset: v1}}]\n    retries: {attempts: 3, retryOn: unavailable}\n";
    let pilot = Pilot::start(free_addr(), &mesh_yaml(&[&bad, &good], "", vs)).await;
    let proxy = Proxy::start(vec![pilot.addr]).await;
    let grpc = GrpcClient::new(proxy.upstream).with_authority("reviews:9080");
    let report = run_load(LoadCall::grpc(grpc.clone()), plan(200)).await;
    assert_eq!(
        report.failed, 0,
        "UNAVAILABLE from the bad endpoint retried onto the good one: {:?}",
        report.failures
    );
    assert!(bad.requests().total > 0, "the failing endpoint was tried");

    // The caller's grpc-timeout (300 ms, no client-side deadline) is enforced by the proxy.
    good.set_latency(Duration::from_secs(3));
    bad.set_error_rate(0.0).unwrap();
    bad.set_latency(Duration::from_secs(3));
    let options = CallOptions::default().metadata("grpc-timeout", "300m");
    let started = tokio::time::Instant::now();
    let err = grpc.version(&options).await.unwrap_err();
    assert_eq!(err.code, 4, "DEADLINE_EXCEEDED: {err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered after {:?}",
        started.elapsed()
    );
    proxy.stop().await;
}
