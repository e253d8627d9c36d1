#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The fake app over gRPC (h2c): version answers, failures in headers and trailers, deadlines
//! and metadata, on real loopback sockets.

use graymesh_testkit::grpc::{code, FAIL_METHOD, METADATA_METHOD};
use graymesh_testkit::{CallOptions, FakeApp, FakeAppHandle, GrpcClient, Http2Client};
use std::time::Duration;

async fn ratings_v1() -> FakeAppHandle {
    FakeApp::builder()
        .service("ratings")
        .version("v1")
        .start()
        .await
        .unwrap()
}

#[tokio::test]
async fn version_call_returns_the_version() {
    let app = ratings_v1().await;
    let client = GrpcClient::new(app.addr());
    assert_eq!(client.version(&CallOptions::default()).await.unwrap(), "v1");
    assert_eq!(client.version(&CallOptions::default()).await.unwrap(), "v1");
    let counts = app.requests();
    assert_eq!((counts.total, counts.grpc, counts.http2), (2, 2, 0));
}

#[tokio::test]
async fn fail_method_is_trailers_only_unavailable() {
    let app = ratings_v1().await;
    let client = GrpcClient::new(app.addr());
    let err = client
        .unary(FAIL_METHOD, b"", &CallOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code, code::UNAVAILABLE);
    assert_eq!(err.message, "Fail always fails");
}

#[tokio::test]
async fn unknown_method_is_unimplemented() {
    let app = ratings_v1().await;
    let client = GrpcClient::new(app.addr());
    let options = CallOptions::default();
    let err = client
        .unary("/graymesh.test.Echo/Nope", b"x", &options)
        .await
        .unwrap_err();
    assert_eq!(err.code, code::UNIMPLEMENTED);
}

#[tokio::test]
async fn error_rate_one_and_failing_give_unavailable() {
    let app = FakeApp::builder().error_rate(1.0).start().await.unwrap();
    let client = GrpcClient::new(app.addr());
    let err = client.version(&CallOptions::default()).await.unwrap_err();
    assert_eq!(err.code, code::UNAVAILABLE);
    assert!(err.message.contains("injected failure"), "{err}");
    app.set_error_rate(0.0).unwrap();
    assert!(client.version(&CallOptions::default()).await.is_ok());
    app.set_failing(true);
    let err = client.version(&CallOptions::default()).await.unwrap_err();
    assert_eq!(err.code, code::UNAVAILABLE);
    app.set_failing(false);
    assert!(client.version(&CallOptions::default()).await.is_ok());
}

#[tokio::test]
async fn deadline_is_sent_and_enforced() {
    let app = ratings_v1().await;
    let client = GrpcClient::new(app.addr());
    let options = CallOptions::default().deadline(Duration::from_millis(500));
    let metadata = client.unary(METADATA_METHOD, b"", &options).await.unwrap();
    let metadata: serde_json::Value = serde_json::from_slice(&metadata).unwrap();
    assert_eq!(metadata["grpc-timeout"], "500000u");
    app.set_latency(Duration::from_secs(3));
    let short = CallOptions::default().deadline(Duration::from_millis(50));
    let err = client.version(&short).await.unwrap_err();
    assert_eq!(err.code, code::DEADLINE_EXCEEDED);
}

#[tokio::test]
async fn metadata_and_authority_reach_the_app() {
    let app = ratings_v1().await;
    let client = GrpcClient::new(app.addr()).with_authority("ratings:9080");
    let options = CallOptions::default().metadata("x-canary", "true");
    let metadata = client.unary(METADATA_METHOD, b"", &options).await.unwrap();
    let metadata: serde_json::Value = serde_json::from_slice(&metadata).unwrap();
    assert_eq!(metadata["x-canary"], "true");
    assert_eq!(metadata["content-type"], "application/grpc");
    assert_eq!(metadata["te"], "trailers");
    let bad = CallOptions::default().metadata("bad key", "v");
    let err = client.version(&bad).await.unwrap_err();
    assert_eq!(err.code, code::INTERNAL);
}

#[tokio::test]
async fn transport_failures_and_http_errors_map_to_grpc_codes() {
    let app = ratings_v1().await;
    let addr = app.addr();
    app.shutdown().await;
    let err = GrpcClient::new(addr)
        .version(&CallOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code, code::UNAVAILABLE);
    assert_eq!(
        graymesh_testkit::grpc::status_from_http(hyper::StatusCode::NOT_FOUND),
        12
    );
}

#[tokio::test]
async fn grpc_and_plain_h2_share_one_port() {
    let app = ratings_v1().await;
    let grpc = GrpcClient::new(app.addr());
    let h2 = Http2Client::new();
    assert_eq!(grpc.version(&CallOptions::default()).await.unwrap(), "v1");
    assert_eq!(h2.get(&app.url("/"), &[]).await.unwrap().status, 200);
    let counts = app.requests();
    assert_eq!((counts.grpc, counts.http2, counts.total), (1, 1, 2));
}
