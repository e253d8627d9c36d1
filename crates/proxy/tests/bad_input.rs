//! Hostile and malformed HTTP/1 and HTTP/2 requests against the proxy: refused (400/431) and never
//! forwarded — Content-Length with Transfer-Encoding included, in either order.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test binary: panicking on the unexpected is the point

mod mesh;

use mesh::{app, free_addr, mesh_yaml, Pilot, Proxy};
use std::io::{Read, Write};
use std::time::Duration;

/// Send raw bytes, return everything the proxy answers until it closes (or 3 s pass).
fn raw(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

async fn setup() -> (graymesh_testkit::FakeAppHandle, Pilot, Proxy) {
    let v1 = app("v1").await;
    let vs = "  - route: [{destination: {host: reviews, subset: v1}}]\n";
    let pilot = Pilot::start(free_addr(), &mesh_yaml(&[&v1], "", vs)).await;
    let proxy = Proxy::start(vec![pilot.addr]).await;
    (v1, pilot, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_refused_and_never_forwarded() {
    let (v1, _pilot, proxy) = setup().await;
    let addr = proxy.upstream;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("invalid chunk size", b"POST / HTTP/1.1\r\nHost: r\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        ("two different Content-Lengths", b"POST / HTTP/1.1\r\nHost: r\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!".to_vec(), "HTTP/1.1 400"),
        ("chunked not the final encoding", b"POST / HTTP/1.1\r\nHost: r\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        ("Transfer-Encoding in HTTP/1.0", b"POST / HTTP/1.0\r\nHost: r\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(), "HTTP/1.1 400"),
        ("a 70 KiB header", [b"GET / HTTP/1.1\r\nHost: r\r\nX-Big: ".to_vec(), vec![b'a'; 70 * 1024], b"\r\n\r\n".to_vec()].concat(), "HTTP/1.1 431"),
        ("120 headers", [b"GET / HTTP/1.1\r\nHost: r\r\n".to_vec(), (0..120).flat_map(|i| format!("X-H{i}: 1\r\n").into_bytes()).collect(), b"\r\n".to_vec()].concat(), "HTTP/1.1 431"),
    ];
    for (name, request, expected) in cases {
        let answer = tokio::task::spawn_blocking(move || raw(addr, &request))
            .await
            .unwrap();
        assert!(answer.starts_with(expected), "{name}: {answer:?}");
    }
    assert_eq!(v1.requests().total, 0, "nothing malformed reached the app");

    // The same proxy still serves a well-formed request.
    let ok = tokio::task::spawn_blocking(move || {
        raw(
            addr,
            b"GET / HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n",
        )
    })
    .await
    .unwrap();
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok:?}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_is_refused_and_never_forwarded() {
    let (v1, _pilot, proxy) = setup().await;
    let addr = proxy.upstream;
    // Classic CL.TE: a front end honouring Content-Length would pass the tail on as part of this
    // request's body, and a back end honouring chunked would see a second, smuggled request.
    // Either order of the two headers: the proxy refuses the request and closes the connection.
    let attacks: [&[u8]; 2] = [
        b"POST / HTTP/1.1\r\nHost: r\r\nContent-Length: 48\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: r\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: r\r\nTransfer-Encoding: chunked\r\nContent-Length: 48\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: r\r\n\r\n",
    ];
    for attack in attacks {
        let answer = tokio::task::spawn_blocking(move || raw(addr, attack))
            .await
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
        assert_eq!(
            answer.matches("HTTP/1.1").count(),
            1,
            "one answer, then the connection is closed: {answer:?}"
        );
    }
    assert_eq!(v1.requests().total, 0, "nothing reached the app");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let (_v1, _pilot, proxy) = setup().await;
    let addr = proxy.upstream;
    let started = std::time::Instant::now();
    let closed = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: r\r\n").unwrap(); // no final CRLF, ever
        let mut buf = [0u8; 512];
        s.read(&mut buf)
            .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
    })
    .await
    .unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(15),
        "closed after {waited:?}: {closed:?}"
    );
    proxy.stop().await;
}

/// The same limits over HTTP/2: more than 100 header fields, or more than 60 KiB of them, get
/// 431 on that stream, never forwarded; the connection goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_http2_header_lists_get_431() {
    let (v1, _pilot, proxy) = setup().await;
    let addr = proxy.upstream;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let send = |extra: Vec<(String, String)>| {
        let mut client = client.clone();
        async move {
            let mut request = http::Request::get(format!("http://{addr}/"));
            for (k, v) in extra {
                request = request.header(k, v);
            }
            let (response, _) = client
                .send_request(request.body(()).unwrap(), true)
                .unwrap();
            response.await.map(|r| r.status().as_u16())
        }
    };
    let many: Vec<_> = (0..120)
        .map(|i| (format!("x-h{i}"), "1".to_string()))
        .collect();
    assert_eq!(send(many).await.unwrap(), 431, "120 header fields");
    let big = vec![("x-big".to_string(), "a".repeat(70 * 1024))];
    match send(big).await {
        Ok(status) => assert_eq!(status, 431, "a 70 KiB header"),
        Err(e) => panic!("a 70 KiB header: the stream failed instead of a 431: {e}"),
    }
    assert_eq!(v1.requests().total, 0, "nothing oversized reached the app");
    assert_eq!(
        send(Vec::new()).await.unwrap(),
        200,
        "the connection still serves"
    );
    proxy.stop().await;
}

/// A connection the fast path handed over (its first request was chunked) is served by hyper
/// from then on, through the fast path's framing rules: a later request with both
/// Content-Length and Transfer-Encoding (in either order) is refused with 400 after the answer
/// to the request before it, and nothing of it reaches the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_is_refused_after_a_handover() {
    let (v1, _pilot, proxy) = setup().await;
    let addr = proxy.upstream;
    let first =
        "POST / HTTP/1.1\r\nHost: r\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let smuggle = "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: r\r\n\r\n";
    let conflicts = [
        "POST / HTTP/1.1\r\nHost: r\r\nContent-Length: 48\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: r\r\nTransfer-Encoding: chunked\r\nContent-Length: 48\r\n\r\n",
    ];
    for (i, conflict) in conflicts.into_iter().enumerate() {
        let request = format!("{first}{conflict}{smuggle}");
        let answer = tokio::task::spawn_blocking(move || raw(addr, request.as_bytes()))
            .await
            .unwrap();
        let ok = answer.find("HTTP/1.1 200").expect(&answer);
        let refused = answer.find("HTTP/1.1 400").expect(&answer);
        assert!(
            ok < refused,
            "the first answer, then the refusal: {answer:?}"
        );
        assert!(
            answer.contains("both Content-Length and Transfer-Encoding"),
            "{answer:?}"
        );
        assert!(!answer.contains("/smuggled"), "{answer:?}");
        assert_eq!(
            v1.requests().total,
            i as u64 + 1,
            "only each first request reached the app"
        );
    }
    // Requests that are fine keep the handed-over connection serving.
    let fine = format!("{first}GET /a HTTP/1.1\r\nHost: r\r\n\r\nGET /b HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n");
    let answer = tokio::task::spawn_blocking(move || raw(addr, fine.as_bytes()))
        .await
        .unwrap();
    assert_eq!(answer.matches("HTTP/1.1 200").count(), 3, "{answer:?}");
    proxy.stop().await;
}
