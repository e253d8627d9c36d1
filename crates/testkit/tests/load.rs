#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `run_load` against fake apps: it stops at its count, stops at its time bound, counts versions
//! and describes failures, for each protocol.

use graymesh_testkit::{
    run_load, FakeApp, GrpcClient, Http1Client, Http2Client, LoadCall, LoadPlan, StopReason,
};
use std::time::Duration;

fn plan(max_requests: u64, max_duration: Duration, concurrency: usize) -> LoadPlan {
    LoadPlan {
        max_requests,
        max_duration,
        concurrency,
    }
}

#[tokio::test]
async fn stops_at_its_count_for_every_protocol() {
    let app = FakeApp::builder().version("v2").start().await.unwrap();
    let calls = [
        LoadCall::http1(Http1Client::new(), app.url("/")),
        LoadCall::http2(Http2Client::new(), app.url("/")),
        LoadCall::grpc(GrpcClient::new(app.addr())),
    ];
    for call in calls {
        let report = run_load(call, plan(40, Duration::from_secs(30), 4)).await;
        assert_eq!(report.stopped_by, StopReason::Count);
        assert_eq!((report.sent, report.ok, report.failed), (40, 40, 0));
        assert_eq!(report.by_version.get("v2"), Some(&40));
        assert!(report.latency_p50 <= report.latency_p99);
    }
    let counts = app.requests();
    assert_eq!(
        (counts.total, counts.http1, counts.http2, counts.grpc),
        (120, 40, 40, 40)
    );
}

#[tokio::test]
async fn stops_at_its_time_bound() {
    let app = FakeApp::builder()
        .latency(Duration::from_millis(40))
        .start()
        .await
        .unwrap();
    let call = LoadCall::http1(Http1Client::new(), app.url("/"));
    let report = run_load(call, plan(1_000_000, Duration::from_millis(300), 2)).await;
    assert_eq!(report.stopped_by, StopReason::Time);
    assert!(report.sent > 0 && report.sent < 1_000_000, "{report:?}");
    assert!(report.elapsed >= Duration::from_millis(300), "{report:?}");
    assert!(report.elapsed < Duration::from_secs(5), "{report:?}");
    assert!(
        report.latency_p50 >= Duration::from_millis(40),
        "{report:?}"
    );
    // Two workers never have more than two calls in flight when time is up.
    assert!(report.abandoned <= 2, "{report:?}");
}

#[tokio::test]
async fn failures_are_counted_and_described() {
    let app = FakeApp::builder()
        .version("v3")
        .error_rate(1.0)
        .start()
        .await
        .unwrap();
    let http = run_load(
        LoadCall::http2(Http2Client::new(), app.url("/")),
        plan(30, Duration::from_secs(30), 3),
    )
    .await;
    assert_eq!((http.sent, http.ok, http.failed), (30, 0, 30));
    assert_eq!(http.failures.len(), 20);
    assert_eq!(
        http.failures[0],
        "HTTP 500 Internal Server Error from version v3"
    );
    assert!(http.by_version.is_empty());
    let grpc = run_load(
        LoadCall::grpc(GrpcClient::new(app.addr())),
        plan(5, Duration::from_secs(30), 1),
    )
    .await;
    assert_eq!(grpc.failed, 5);
    assert!(
        grpc.failures[0].starts_with("grpc-status 14:"),
        "{:?}",
        grpc.failures
    );
}

#[tokio::test]
async fn splits_by_version_across_apps() {
    let v1 = FakeApp::builder().version("v1").start().await.unwrap();
    let v2 = FakeApp::builder().version("v2").start().await.unwrap();
    let r1 = run_load(
        LoadCall::http1(Http1Client::new(), v1.url("/")),
        plan(10, Duration::from_secs(30), 2),
    );
    let r2 = run_load(
        LoadCall::http1(Http1Client::new(), v2.url("/")),
        plan(7, Duration::from_secs(30), 2),
    );
    let (r1, r2) = tokio::join!(r1, r2);
    assert_eq!(r1.by_version.get("v1"), Some(&10));
    assert_eq!(r2.by_version.get("v2"), Some(&7));
    assert_eq!(v1.requests().total + v2.requests().total, 17);
}

#[tokio::test]
async fn connection_failures_are_failures_not_hangs() {
    let app = FakeApp::builder().start().await.unwrap();
    let url = app.url("/");
    app.shutdown().await;
    let call = LoadCall::http1(Http1Client::new(), url);
    let report = run_load(call, plan(3, Duration::from_secs(10), 1)).await;
    assert_eq!((report.sent, report.failed), (3, 3));
    assert!(
        report.failures[0].contains("onnect"),
        "{:?}",
        report.failures
    );
}
