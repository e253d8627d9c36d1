#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The fake app over HTTP/1.0, HTTP/1.1 and h2c: echo, special paths, injected failures,
//! counters and shutdown, on real loopback sockets.

use graymesh_testkit::{FakeApp, FakeAppHandle, Http1Client, Http2Client, RequestCounts};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bound on every raw socket read, so a broken server fails the test instead of hanging it.
const READ_BOUND: Duration = Duration::from_secs(5);

async fn reviews_v2() -> FakeAppHandle {
    FakeApp::builder()
        .service("reviews")
        .version("v2")
        .instance("reviews-2")
        .start()
        .await
        .unwrap()
}

/// Writes `request` and reads until the server closes the connection.
async fn raw_exchange(app: &FakeAppHandle, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(app.addr()).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut response = Vec::new();
    let read = tokio::time::timeout(READ_BOUND, stream.read_to_end(&mut response));
    read.await
        .expect("server did not close the connection")
        .unwrap();
    String::from_utf8(response).unwrap()
}

#[tokio::test]
async fn http1_echoes_identity_request_and_headers() {
    let app = reviews_v2().await;
    let client = Http1Client::new();
    let reply = client
        .get(&app.url("/reviews/1?x=1"), &[("X-User", "jason")])
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.version.as_deref(), Some("v2"));
    assert_eq!(reply.headers["x-version"], "v2");
    let json = reply.json().unwrap();
    assert_eq!(json["service"], "reviews");
    assert_eq!(json["instance"], "reviews-2");
    assert_eq!(json["authority"], app.addr().to_string());
    assert_eq!(json["path"], "/reviews/1");
    assert_eq!(json["query"], "x=1");
    assert_eq!(json["method"], "GET");
    assert_eq!(json["protocol"], "HTTP/1.1");
    assert_eq!(json["headers"]["x-user"], "jason");
    assert_eq!(json["headers"]["host"], app.addr().to_string());
    assert_eq!(json["body_len"], 0);
}

#[tokio::test]
async fn http2_prior_knowledge_gets_the_version() {
    let app = reviews_v2().await;
    let reply = Http2Client::new().get(&app.url("/"), &[]).await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.version.as_deref(), Some("v2"));
    assert_eq!(reply.json().unwrap()["protocol"], "HTTP/2.0");
    assert_eq!(app.requests().http2, 1);
}

#[tokio::test]
async fn via_dials_the_given_address_and_keeps_the_url_host() {
    let app = reviews_v2().await;
    let url = "http://reviews.default.svc:9080/x";
    for reply in [
        Http1Client::via(app.addr()).get(url, &[]).await.unwrap(),
        Http2Client::via(app.addr()).get(url, &[]).await.unwrap(),
    ] {
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.json().unwrap()["authority"],
            "reviews.default.svc:9080"
        );
    }
}

#[tokio::test]
async fn http10_request_is_answered_and_the_connection_closes() {
    let app = reviews_v2().await;
    let response = raw_exchange(&app, b"GET / HTTP/1.0\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1."), "{response}");
    assert!(response.contains(" 200 OK\r\n"), "{response}");
    assert!(response.contains("\"protocol\":\"HTTP/1.0\""), "{response}");
    assert_eq!(app.requests().http1, 1);
}

#[tokio::test]
async fn chunked_post_reports_the_body_length() {
    let app = reviews_v2().await;
    let request = b"POST /upload HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\
        Connection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let response = raw_exchange(&app, request).await;
    assert!(response.contains(" 200 OK\r\n"), "{response}");
    assert!(response.contains("\"body_len\":11"), "{response}");
    assert!(response.contains("\"method\":\"POST\""), "{response}");
}

#[tokio::test]
async fn expect_100_continue_gets_an_interim_answer() {
    let app = reviews_v2().await;
    let mut stream = TcpStream::connect(app.addr()).await.unwrap();
    let head = b"POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\
        Connection: close\r\n\r\n";
    stream.write_all(head).await.unwrap();
    let mut interim = [0u8; 25];
    let read = tokio::time::timeout(READ_BOUND, stream.read_exact(&mut interim));
    read.await.unwrap().unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(b"abc").await.unwrap();
    let mut rest = String::new();
    let read = tokio::time::timeout(READ_BOUND, stream.read_to_string(&mut rest));
    read.await.unwrap().unwrap();
    assert!(rest.contains("\"body_len\":3"), "{rest}");
}

#[tokio::test]
async fn keep_alive_serves_many_requests_on_one_connection() {
    let app = reviews_v2().await;
    let mut stream = TcpStream::connect(app.addr()).await.unwrap();
    let two = b"GET /a HTTP/1.1\r\nHost: app\r\n\r\nGET /b HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n";
    stream.write_all(two).await.unwrap();
    let mut response = String::new();
    let read = tokio::time::timeout(READ_BOUND, stream.read_to_string(&mut response));
    read.await.unwrap().unwrap();
    assert_eq!(response.matches(" 200 OK\r\n").count(), 2, "{response}");
}

#[tokio::test]
async fn post_body_len_over_both_protocols() {
    let app = reviews_v2().await;
    let h1 = Http1Client::new()
        .post(&app.url("/p"), &[], "12345")
        .await
        .unwrap();
    let h2 = Http2Client::new()
        .post(&app.url("/p"), &[], vec![0u8; 70_000])
        .await
        .unwrap();
    assert_eq!(h1.json().unwrap()["body_len"], 5);
    assert_eq!(h2.json().unwrap()["body_len"], 70_000);
}

#[tokio::test]
async fn special_paths() {
    let app = reviews_v2().await;
    let client = Http1Client::new();
    let health = client.get(&app.url("/healthz"), &[]).await.unwrap();
    assert_eq!(
        (health.status.as_u16(), health.text().as_str()),
        (200, "ok")
    );
    let status = client.get(&app.url("/status/503"), &[]).await.unwrap();
    assert_eq!(status.status, 503);
    assert_eq!(status.version.as_deref(), Some("v2"));
    let no_content = client.get(&app.url("/status/204"), &[]).await.unwrap();
    assert_eq!(
        (no_content.status.as_u16(), no_content.body.len()),
        (204, 0)
    );
    let bad = client.get(&app.url("/status/abc"), &[]).await.unwrap();
    assert_eq!(bad.status, 400);
    let started = Instant::now();
    let delayed = client.get(&app.url("/delay/100"), &[]).await.unwrap();
    assert_eq!(delayed.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(100));
}

#[tokio::test]
async fn error_rate_one_answers_500_but_health_stays_up() {
    let app = FakeApp::builder()
        .version("v3")
        .error_rate(1.0)
        .start()
        .await
        .unwrap();
    for reply in [
        Http1Client::new().get(&app.url("/"), &[]).await.unwrap(),
        Http2Client::new().get(&app.url("/"), &[]).await.unwrap(),
    ] {
        assert_eq!(reply.status, 500);
        assert_eq!(reply.version.as_deref(), Some("v3"));
    }
    let health = Http1Client::new()
        .get(&app.url("/healthz"), &[])
        .await
        .unwrap();
    assert_eq!(health.status, 200);
    app.set_error_rate(0.0).unwrap();
    let reply = Http1Client::new().get(&app.url("/"), &[]).await.unwrap();
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn bad_error_rates_are_rejected() {
    let err = FakeApp::builder()
        .error_rate(1.5)
        .start()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("1.5"), "{err}");
    let app = FakeApp::builder().start().await.unwrap();
    assert!(app.set_error_rate(-0.1).is_err());
    assert!(app.set_error_rate(f64::NAN).is_err());
    assert_eq!(app.error_rate(), 0.0);
}

#[tokio::test]
async fn set_failing_toggles_everything_including_health() {
    let app = reviews_v2().await;
    let client = Http1Client::new();
    app.set_failing(true);
    assert!(app.is_failing());
    assert_eq!(client.get(&app.url("/"), &[]).await.unwrap().status, 500);
    assert_eq!(
        client.get(&app.url("/healthz"), &[]).await.unwrap().status,
        500
    );
    app.set_failing(false);
    assert_eq!(client.get(&app.url("/"), &[]).await.unwrap().status, 200);
    assert_eq!(
        client.get(&app.url("/healthz"), &[]).await.unwrap().status,
        200
    );
}

#[tokio::test]
async fn latency_is_added_and_can_be_changed() {
    let app = FakeApp::builder()
        .latency(Duration::from_millis(80))
        .start()
        .await
        .unwrap();
    let client = Http1Client::new();
    let started = Instant::now();
    client.get(&app.url("/"), &[]).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(80));
    app.set_latency(Duration::ZERO);
    assert_eq!(app.latency(), Duration::ZERO);
    let timed_out = Http1Client::new().with_timeout(Duration::from_millis(50));
    app.set_latency(Duration::from_secs(2));
    let err = timed_out.get(&app.url("/"), &[]).await.unwrap_err();
    assert!(err.to_string().contains("no reply within"), "{err}");
}

#[tokio::test]
async fn counters_count_by_protocol() {
    let app = reviews_v2().await;
    let h1 = Http1Client::new();
    for _ in 0..3 {
        h1.get(&app.url("/"), &[]).await.unwrap();
    }
    Http2Client::new().get(&app.url("/"), &[]).await.unwrap();
    let expected = RequestCounts {
        total: 4,
        http1: 3,
        http2: 1,
        grpc: 0,
        body_bytes: 0,
    };
    assert_eq!(app.requests(), expected);
}

#[tokio::test]
async fn shutdown_is_graceful_and_closes_the_port() {
    let app = FakeApp::builder()
        .latency(Duration::from_millis(150))
        .start()
        .await
        .unwrap();
    let addr = app.addr();
    let url = app.url("/");
    let in_flight = tokio::spawn(async move { Http1Client::new().get(&url, &[]).await });
    // Wait for the request to arrive, not for a guessed time.
    app.wait_for_requests(1, READ_BOUND).await.unwrap();
    app.shutdown().await;
    assert_eq!(in_flight.await.unwrap().unwrap().status, 200);
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn dropping_the_handle_stops_the_app() {
    let app = reviews_v2().await;
    let url = app.url("/");
    drop(app);
    let client = Http1Client::new().with_timeout(Duration::from_secs(2));
    // The abort lands on the runtime's next turn, before the request could be answered.
    let err = client.get(&url, &[]).await.unwrap_err();
    assert!(!err.to_string().contains("no reply within"), "{err}");
}
