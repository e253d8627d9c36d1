//! The HTTP/1.1 fast path byte for byte, against a raw upstream whose every answer the test
//! chooses: pooled connections the upstream closed while idle, chunked and close-delimited
//! responses, HEAD, pipelining, and the requests handed to the general path (large bodies,
//! `Expect: 100-continue`, HTTP/1.0).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test binary: panicking on the unexpected is the point

mod mesh;

use mesh::{free_addr, Pilot, Proxy, HOST};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the raw upstream saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    head: String,
    body_len: usize,
}

/// A hand-written HTTP/1.1 upstream: reads each request (Content-Length or chunked bodies),
/// answers with `answer(path)`, and closes a connection after `close_after` when set.
struct RawUpstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
}

impl RawUpstream {
    async fn start(answer: fn(&str, &str) -> Vec<u8>, close_after: Option<Duration>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let connections: Arc<AtomicUsize> = Arc::default();
        let (s, c) = (seen.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let s = s.clone();
                tokio::spawn(async move {
                    let serve = serve_raw(conn, answer, s);
                    match close_after {
                        Some(limit) => {
                            let _ = tokio::time::timeout(limit, serve).await;
                        }
                        None => serve.await,
                    }
                });
            }
        });
        Self {
            addr,
            seen,
            connections,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve_raw(
    mut conn: tokio::net::TcpStream,
    answer: fn(&str, &str) -> Vec<u8>,
    seen: Arc<Mutex<Vec<Seen>>>,
) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let lower = head.to_ascii_lowercase();
        let length: usize = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 65536];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..head_end + length);
        let mut words = head.split_whitespace();
        let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        seen.lock().unwrap().push(Seen {
            head: head.clone(),
            body_len: length,
        });
        let reply = answer(method, path);
        if conn.write_all(&reply).await.is_err() {
            return;
        }
        if reply.starts_with(b"HTTP/1.0") {
            return; // close-delimited
        }
    }
}

fn answer(method: &str, path: &str) -> Vec<u8> {
    match path {
        "/chunked" => {
            let mut out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            for i in 0..200 {
                let piece = vec![b'a' + (i % 26) as u8; 997];
                out.extend_from_slice(format!("{:x};ext=1\r\n", piece.len()).as_bytes());
                out.extend_from_slice(&piece);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\nx-trailer: 1\r\n\r\n");
            out
        }
        "/close-delimited" => b"HTTP/1.0 200 OK\r\n\r\nuntil the end".to_vec(),
        _ if method == "HEAD" => b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n".to_vec(),
        _ => format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Path: {path}\r\n\r\n{path}",
            path.len()
        )
        .into_bytes(),
    }
}

fn mesh(upstream: SocketAddr) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: reviews}}\nspec:\n  hosts: [{HOST}]\n  ports: [{{number: 9080, name: http, protocol: HTTP}}]\n  resolution: STATIC\n  endpoints:\n  - {{address: 127.0.0.1, ports: {{http: {}}}, labels: {{version: v1}}}}\n---\n\
apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews}}\nspec:\n  hosts: [reviews]\n  http:\n  - route: [{{destination: {{host: reviews}}}}]\n",
        upstream.port()
    )
}

/// The raw upstream, pilot serving a route to it, and a sidecar proxy.
async fn raw_mesh(close_after: Option<Duration>) -> (RawUpstream, Pilot, Proxy) {
    let up = RawUpstream::start(answer, close_after).await;
    let pilot = Pilot::start(free_addr(), &mesh(up.addr)).await;
    let proxy = Proxy::start(vec![pilot.addr]).await;
    (up, pilot, proxy)
}

/// Writes `request` on one connection and reads until `expect` responses have fully arrived
/// (by counting the given marker) or the proxy closes.
fn exchange(addr: SocketAddr, request: &[u8], done: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let mut chunk = [0u8; 65536];
    while !done(&out) {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
        }
    }
    out
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_the_upstream_closed_is_replaced_without_failing_the_request() {
    let (up, _pilot, proxy) = raw_mesh(Some(Duration::from_millis(150))).await;
    let client = graymesh_testkit::Http1Client::new();
    for i in 0..3 {
        let r = client
            .get(&proxy.url(&format!("/r{i}")), &[])
            .await
            .unwrap();
        assert_eq!((r.status.as_u16(), r.text()), (200, format!("/r{i}")));
        // The upstream closes every connection 150 ms after accepting it: the proxy's pooled
        // connection is dead by the next request.
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert_eq!(up.seen().len(), 3, "each request reached the upstream once");
    assert!(up.connections.load(Ordering::SeqCst) >= 3);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_relayed_whatever_their_framing() {
    let (_up, _pilot, proxy) = raw_mesh(None).await;
    let addr = proxy.upstream;

    // Chunked, 200 chunks with extensions and a trailer, then a second request on the same
    // connection: the end of the chunked body was found exactly.
    let out = blocking(move || {
        exchange(
            addr,
            b"GET /chunked HTTP/1.1\r\nHost: reviews\r\n\r\nGET /after HTTP/1.1\r\nHost: reviews\r\n\r\n",
            |o| o.ends_with(b"/after"),
        )
    })
    .await;
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "{}",
        &text[..80.min(text.len())]
    );
    assert!(
        text.contains("0\r\nx-trailer: 1\r\n\r\nHTTP/1.1 200"),
        "trailer relayed, then the next response"
    );
    assert_eq!(
        text.matches(&"z".repeat(997)).count(),
        7,
        "every chunk's data arrived"
    );
    assert!(text.ends_with("/after"));

    // HEAD: a Content-Length but no body; the connection goes on.
    let out = blocking(move || {
        exchange(
            addr,
            b"HEAD /h HTTP/1.1\r\nHost: reviews\r\n\r\nGET /next HTTP/1.1\r\nHost: reviews\r\n\r\n",
            |o| o.ends_with(b"/next"),
        )
    })
    .await;
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.starts_with("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nHTTP/1.1 200"),
        "{text:?}"
    );
    assert!(text.ends_with("/next"), "{text:?}");

    // Close-delimited: relayed to the end, and the proxy closes the client's connection too.
    let out = blocking(move || {
        exchange(
            addr,
            b"GET /close-delimited HTTP/1.1\r\nHost: reviews\r\n\r\n",
            |_| false,
        )
    })
    .await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text:?}");
    assert!(text.contains("connection: close"), "{text:?}");
    assert!(text.ends_with("\r\n\r\nuntil the end"), "{text:?}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order_and_hop_headers_stay_behind() {
    let (up, _pilot, proxy) = raw_mesh(None).await;
    let addr = proxy.upstream;
    let out = blocking(move || {
        exchange(
            addr,
            b"GET /one HTTP/1.1\r\nHost: reviews\r\nConnection: keep-alive, x-hop\r\nX-Hop: only for the proxy\r\nKeep-Alive: timeout=5\r\nProxy-Authorization: secret\r\nX-Mine: 1\r\n\r\nPOST /two HTTP/1.1\r\nHost: reviews\r\nContent-Length: 5\r\n\r\nhelloGET /three HTTP/1.1\r\nHost: reviews\r\nConnection: close\r\n\r\n",
            |_| false,
        )
    })
    .await;
    let text = String::from_utf8_lossy(&out);
    assert_eq!(text.matches("X-Path: /").count(), 3, "{text:?}");
    assert!(text.find("/one").unwrap() < text.find("/two").unwrap());
    assert!(text.find("/two").unwrap() < text.find("/three").unwrap());
    assert!(
        text.contains("connection: close"),
        "the last one closes: {text:?}"
    );
    let seen = up.seen();
    assert_eq!(seen.len(), 3);
    let first = seen[0].head.to_ascii_lowercase();
    assert!(
        first.contains("x-mine: 1") && first.contains("traceparent: 00-"),
        "{first}"
    );
    for hop in ["keep-alive:", "proxy-authorization", "connection:", "x-hop"] {
        assert!(!first.contains(hop), "{hop} forwarded: {first}");
    }
    assert_eq!(seen[1].body_len, 5);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_the_fast_path_hands_over_still_arrive_whole() {
    let (up, _pilot, proxy) = raw_mesh(None).await;
    let addr = proxy.upstream;
    // A 200 KiB body (over the fast path's 64 KiB), after a fast-path request on the same
    // connection; then HTTP/1.0 and Expect: 100-continue on connections of their own.
    let big = 200 * 1024;
    let out = blocking(move || {
        let mut req = b"GET /small HTTP/1.1\r\nHost: reviews\r\n\r\n".to_vec();
        req.extend_from_slice(format!("PUT /big HTTP/1.1\r\nHost: reviews\r\nContent-Length: {big}\r\nConnection: close\r\n\r\n").as_bytes());
        req.extend_from_slice(&vec![b'x'; big]);
        exchange(addr, &req, |o| o.ends_with(b"/big"))
    })
    .await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.ends_with("/big"), "{text:?}");
    let out = blocking(move || {
        exchange(addr, b"GET /old HTTP/1.0\r\nHost: reviews\r\n\r\n", |o| {
            o.ends_with(b"/old")
        })
    })
    .await;
    assert!(String::from_utf8_lossy(&out).ends_with("/old"));
    let out = blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"POST /expect HTTP/1.1\r\nHost: reviews\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n").unwrap();
        let mut out = vec![0u8; 1024];
        let n = s.read(&mut out).unwrap();
        let interim = String::from_utf8_lossy(&out[..n]).into_owned();
        s.write_all(b"abc").unwrap();
        let mut rest = Vec::new();
        let mut chunk = [0u8; 1024];
        while !rest.ends_with(b"/expect") {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => rest.extend_from_slice(&chunk[..n]),
            }
        }
        (interim, String::from_utf8_lossy(&rest).into_owned())
    })
    .await;
    assert!(out.0.starts_with("HTTP/1.1 100"), "{out:?}");
    assert!(out.1.ends_with("/expect"), "{out:?}");
    let seen = up.seen();
    let big_seen = seen
        .iter()
        .find(|s| s.head.starts_with("PUT /big"))
        .unwrap();
    assert_eq!(big_seen.body_len, big);
    assert_eq!(
        seen.iter()
            .find(|s| s.head.starts_with("POST /expect"))
            .unwrap()
            .body_len,
        3
    );
    proxy.stop().await;
}
