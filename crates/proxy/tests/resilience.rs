//! The proxy's resilience end to end (real pilot in process, real proxy, testkit fake apps, real
//! traffic on loopback): per-try timeouts, counts that come down however a request ends, faults
//! applied once, bodies refused before they are forwarded, idle connections closed, and the
//! catch-all outbound port. Every load is bounded in count and time.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test binary: panicking on the unexpected is the point

mod mesh;

use graymesh_testkit::{Http1Client, Http2Client};
use mesh::{app, free_addr, mesh_yaml, sidecar_options, Pilot, Proxy};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

const ONE_ROUTE_NO_RETRIES: &str =
    "  - route: [{destination: {host: reviews, subset: v1}}]\n    retries: {attempts: 0}\n";

/// GET `url` over HTTP/2 (prior knowledge) or HTTP/1.1.
async fn get(h2: bool, url: &str) -> Result<graymesh_testkit::Reply, String> {
    let reply = if h2 {
        Http2Client::new().get(url, &[]).await
    } else {
        Http1Client::new().get(url, &[]).await
    };
    reply.map_err(|e| format!("{e:#}"))
}

/// Send raw bytes, return everything the proxy answers until it closes (or 5 s pass).
fn raw(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_try_timeout_moves_a_request_to_another_endpoint() {
    let (slow, fast) = (app("v1").await, app("v1").await);
    slow.set_latency(Duration::from_secs(3));
    let vs = "  - route: [{destination: {host: reviews, subset: v1}}]\n    retries: {attempts: 2, perTryTimeout: 200ms, retryOn: 5xx}\n";
    let pilot = Pilot::start(free_addr(), &mesh_yaml(&[&slow, &fast], "", vs)).await;
    let proxy = Proxy::start(vec![pilot.addr]).await;
    for (name, h2) in [("http1", false), ("http2", true)] {
        for _ in 0..10 {
            let started = Instant::now();
            let reply = get(h2, &proxy.url("/")).await.unwrap();
            assert_eq!(reply.status, 200, "{name}: {}", reply.text());
            assert!(
                started.elapsed() < Duration::from_millis(1500),
                "{name}: the slow endpoint's try was cut at 200 ms, not waited for: {:?}",
                started.elapsed()
            );
        }
    }
    assert!(slow.requests().total > 0, "the slow endpoint was tried");
    proxy.stop().await;
}

/// Least-request balancing reads each endpoint's count of requests in progress: a request cut by
/// the route timeout must not stay counted (over HTTP/1 and HTTP/2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_cut_by_a_timeout_are_no_longer_counted_in_progress() {
    let slow = app("v1").await;
    slow.set_latency(Duration::from_secs(2));
    let dr = "  trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}\n";
    let vs = "  - route: [{destination: {host: reviews, subset: v1}}]\n    timeout: 200ms\n    retries: {attempts: 0}\n";
    let pilot = Pilot::start(free_addr(), &mesh_yaml(&[&slow], dr, vs)).await;
    let proxy = Proxy::start(vec![pilot.addr]).await;
    for _ in 0..3 {
        let h1 = Http1Client::new().get(&proxy.url("/"), &[]).await.unwrap();
        assert_eq!(h1.status, 504);
        let h2 = Http2Client::new().get(&proxy.url("/"), &[]).await.unwrap();
        assert_eq!(h2.status, 504);
    }
    let active = |dump: &serde_json::Value| -> Vec<u64> {
        dump["clusters"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(name, _)| name.contains("|v1|reviews"))
            .flat_map(|(_, c)| {
                let endpoints = c["endpoints"].as_array().unwrap().clone();
                endpoints
                    .into_iter()
                    .map(|e| e["active_requests"].as_u64().unwrap())
                    .chain([c["active_requests"].as_u64().unwrap()])
            })
            .collect()
    };
    let counts = active(&proxy.config_dump().await);
    assert!(!counts.is_empty(), "the v1 cluster is in the dump");
    assert!(
        counts.iter().all(|&n| n == 0),
        "nothing counted in progress once every request ended: {counts:?}"
    );
    proxy.stop().await;
}

/// An HTTP/1.1 request to an HTTP2 port goes through the general path: its fault (a 300 ms
/// delay) is applied there, once, not also on the fast path first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_is_applied_once_to_a_request_for_an_http2_port() {
    let v1 = app("v1").await;
    let vs = "  - route: [{destination: {host: reviews, subset: v1}}]\n    fault: {delay: {fixedDelay: 300ms, percentage: {value: 100}}}\n";
    let yaml = mesh_yaml(&[&v1], "", vs)
        .replace(
            "name: http, protocol: HTTP}",
            "name: http2, protocol: HTTP2}",
        )
        .replace("ports: {http:", "ports: {http2:");
    let pilot = Pilot::start(free_addr(), &yaml).await;
    let proxy = Proxy::start(vec![pilot.addr]).await;
    for _ in 0..3 {
        let started = Instant::now();
        let reply = Http1Client::new().get(&proxy.url("/"), &[]).await.unwrap();
        let took = started.elapsed();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json().unwrap()["protocol"], "HTTP/2.0");
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_millis(600),
            "one 300 ms delay, not two: {took:?}"
        );
    }
    proxy.stop().await;
}

/// Bad chunking is refused with 400 on a route that does not retry too (its body is not needed
/// for a replay): a small body is checked before anything is forwarded; in a large one, a bad
/// chunk past the read-ahead is still the client's 400, not an upstream failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_chunking_is_refused_on_a_route_without_retries() {
    let v1 = app("v1").await;
    let pilot = Pilot::start(free_addr(), &mesh_yaml(&[&v1], "", ONE_ROUTE_NO_RETRIES)).await;
    let proxy = Proxy::start(vec![pilot.addr]).await;
    let addr = proxy.upstream;
    let small = b"POST / HTTP/1.1\r\nHost: r\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nhello\r\n0\r\n\r\n";
    let answer = tokio::task::spawn_blocking(move || raw(addr, small))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    assert_eq!(v1.requests().total, 0, "nothing of it reached the app");

    let mut large = b"POST / HTTP/1.1\r\nHost: r\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..20 {
        large.extend_from_slice(b"1000\r\n");
        large.extend_from_slice(&[b'x'; 0x1000]);
        large.extend_from_slice(b"\r\n");
    }
    large.extend_from_slice(b"zz\r\nhello\r\n0\r\n\r\n");
    let answer = tokio::task::spawn_blocking(move || raw(addr, &large))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    assert!(answer.contains("invalid request body"), "{answer:?}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let v1 = app("v1").await;
    let pilot = Pilot::start(free_addr(), &mesh_yaml(&[&v1], "", ONE_ROUTE_NO_RETRIES)).await;
    let listen = free_addr();
    let opts = graymesh_proxy::run::ProxyOptions {
        idle_timeout: Duration::from_secs(1),
        ..sidecar_options(&[pilot.addr], "reviews:9080", listen)
    };
    let proxy = Proxy::spawn(opts, listen).await;

    // HTTP/1.1: a kept-alive connection, then silence.
    let closed_after = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(listen).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: r\r\n\r\n").unwrap();
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        let idle = Instant::now();
        // Read the rest of the response (if any), then wait for the close.
        loop {
            match s.read(&mut buf) {
                Ok(0) => return idle.elapsed(),
                Ok(_) => continue,
                Err(e) => panic!("not closed: {e}"),
            }
        }
    })
    .await
    .unwrap();
    assert!(
        closed_after >= Duration::from_millis(900) && closed_after < Duration::from_secs(4),
        "HTTP/1.1 connection closed after {closed_after:?} idle"
    );

    // HTTP/2 prior knowledge: one stream, then no stream open; the proxy sends GOAWAY and closes.
    let tcp = tokio::net::TcpStream::connect(listen).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    let connection = tokio::spawn(connection);
    let request = http::Request::get(format!("http://{listen}/"))
        .body(())
        .unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    assert_eq!(response.await.unwrap().status(), 200);
    let idle = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(10), connection).await;
    assert!(ended.is_ok(), "HTTP/2 connection not closed");
    let took = idle.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "HTTP/2 connection closed after {took:?} idle"
    );
    proxy.stop().await;
}

/// `http_proxy=http://127.0.0.1:15001 curl http://reviews:9080/`: the catch-all outbound port
/// routes by Host, origin-form or absolute-form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catch_all_outbound_port_routes_by_host() {
    let v1 = app("v1").await;
    let pilot = Pilot::start(free_addr(), &mesh_yaml(&[&v1], "", ONE_ROUTE_NO_RETRIES)).await;
    let proxy = Proxy::start(vec![pilot.addr]).await;
    let outbound = proxy.outbound;
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(outbound).await.is_err() {
        assert!(Instant::now() < deadline, "no outbound port");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let as_proxy = Http1Client::via(outbound)
        .get("http://reviews:9080/a", &[])
        .await
        .unwrap();
    assert_eq!(as_proxy.status, 200, "{}", as_proxy.text());
    assert_eq!(as_proxy.json().unwrap()["version"], "v1");
    let fqdn = Http1Client::via(outbound)
        .get(&format!("http://{}:9080/b", mesh::HOST), &[])
        .await
        .unwrap();
    assert_eq!(fqdn.status, 200, "{}", fqdn.text());
    let by_host = tokio::task::spawn_blocking(move || {
        raw(
            outbound,
            b"GET /c HTTP/1.1\r\nHost: reviews:9080\r\nConnection: close\r\n\r\n",
        )
    })
    .await
    .unwrap();
    assert!(by_host.starts_with("HTTP/1.1 200"), "{by_host:?}");
    let unknown = Http1Client::via(outbound)
        .get("http://nowhere:9080/", &[])
        .await
        .unwrap();
    assert_eq!(unknown.status, 404, "{}", unknown.text());
    assert_eq!(v1.requests().total, 3);
    proxy.stop().await;
}

/// Once shutdown starts, `/ready` fails at once (while open requests still finish), so a health
/// checker in front of the proxy stops sending it new work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_as_soon_as_the_proxy_drains() {
    let v1 = app("v1").await;
    let pilot = Pilot::start(free_addr(), &mesh_yaml(&[&v1], "", ONE_ROUTE_NO_RETRIES)).await;
    let proxy = Proxy::start(vec![pilot.addr]).await;
    let ready_url = format!("http://{}/ready", proxy.admin);
    let admin = Http1Client::new();
    assert_eq!(admin.get(&ready_url, &[]).await.unwrap().status, 200);
    let slow = tokio::spawn({
        let url = proxy.url("/delay/1500");
        async move { Http1Client::new().get(&url, &[]).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopping = tokio::spawn(proxy.stop());
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let ready = admin.get(&ready_url, &[]).await.unwrap();
        if ready.status == 503 {
            assert!(ready.text().contains("draining"), "{}", ready.text());
            break;
        }
        assert!(Instant::now() < deadline, "still ready while draining");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reply = slow.await.unwrap().unwrap();
    assert_eq!(reply.status, 200, "the open request finished");
    stopping.await.unwrap();
}

/// A route timeout covers the whole response: a body still streaming when it runs out is cut
/// (the connection or stream ends early), rather than relayed for as long as the upstream likes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_timeout_cuts_a_response_body_that_is_too_slow() {
    let v1 = app("v1").await;
    let vs = "  - route: [{destination: {host: reviews, subset: v1}}]\n    timeout: 500ms\n    retries: {attempts: 0}\n";
    let pilot = Pilot::start(free_addr(), &mesh_yaml(&[&v1], "", vs)).await;
    let proxy = Proxy::start(vec![pilot.addr]).await;
    // Within the timeout: whole.
    let quick = Http1Client::new()
        .get(&proxy.url("/drip/100"), &[])
        .await
        .unwrap();
    assert_eq!(quick.text(), "first\nlast\n");
    for (name, h2) in [("http1", false), ("http2", true)] {
        let started = Instant::now();
        let reply = get(h2, &proxy.url("/drip/3000")).await;
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(2000),
            "{name}: cut at the 500 ms timeout, not relayed for 3 s: {took:?}"
        );
        if let Ok(r) = reply {
            assert!(
                !r.text().contains("last"),
                "{name}: the late part never arrives"
            );
        }
    }
    proxy.stop().await;
}

/// The cluster's connect timeout (`connectionPool.tcp.connectTimeout`) bounds a connection
/// attempt to an endpoint that never answers (its accept queue full: SYNs are dropped), on
/// every path: HTTP/1.1's fast path, HTTP/2, and hyper's client (HTTP/1.0 here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clusters_connect_timeout_bounds_a_connection_attempt() {
    let blackhole = tokio::net::TcpSocket::new_v4().unwrap();
    blackhole.bind(free_addr()).unwrap();
    let blackhole = blackhole.listen(1).unwrap();
    let addr = blackhole.local_addr().unwrap();
    // Fill the accept queue; nothing is ever accepted.
    let mut fillers = Vec::new();
    for _ in 0..8 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            fillers.push(s);
        }
    }
    let yaml = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: reviews}}\nspec:\n  hosts: [{host}]\n  ports: [{{number: 9080, name: http, protocol: HTTP}}]\n  resolution: STATIC\n  endpoints:\n  - {{address: 127.0.0.1, ports: {{http: {port}}}, labels: {{version: v1}}}}\n---\n\
apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: reviews}}\nspec:\n  host: reviews\n  trafficPolicy: {{connectionPool: {{tcp: {{connectTimeout: 300ms}}}}}}\n  subsets: [{{name: v1, labels: {{version: v1}}}}]\n---\n\
apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews}}\nspec:\n  hosts: [reviews]\n  http:\n{ONE_ROUTE_NO_RETRIES}",
        host = mesh::HOST,
        port = addr.port()
    );
    let pilot = Pilot::start(free_addr(), &yaml).await;
    let proxy = Proxy::start(vec![pilot.addr]).await;
    for (name, h2) in [("http1", false), ("http2", true)] {
        let started = Instant::now();
        let reply = get(h2, &proxy.url("/")).await.unwrap();
        let took = started.elapsed();
        assert_eq!(reply.status, 503, "{name}: {}", reply.text());
        assert_eq!(reply.headers.get("x-graymesh-local-reply").unwrap(), "UF");
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_millis(2000),
            "{name}: gave up after the 300 ms connect timeout, not 5 s: {took:?}"
        );
    }
    // An HTTP/1.0 request takes the general path and hyper's client: the same bound.
    let addr = proxy.upstream;
    let started = Instant::now();
    let answer =
        tokio::task::spawn_blocking(move || raw(addr, b"GET / HTTP/1.0\r\nHost: r\r\n\r\n"))
            .await
            .unwrap();
    let took = started.elapsed();
    assert!(answer.starts_with("HTTP/1.0 503"), "{answer:?}");
    assert!(answer.contains("x-graymesh-local-reply: UF"), "{answer:?}");
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(2000),
        "HTTP/1.0: gave up after the 300 ms connect timeout, not 5 s: {took:?}"
    );
    drop(fillers);
    proxy.stop().await;
}

/// gRPC calls are mirrored too: the copy (a gRPC call to the mirror) goes once the call's
/// request has ended, and never delays the real call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_are_mirrored() {
    let (v1, v2) = (app("v1").await, app("v2").await);
    v2.set_latency(Duration::from_secs(2));
    let vs = "  - route: [{destination: {host: reviews, subset: v1}}]\n    mirror: {host: reviews, subset: v2}\n    mirrorPercentage: {value: 100}\n";
    let pilot = Pilot::start(free_addr(), &mesh_yaml(&[&v1, &v2], "", vs)).await;
    let proxy = Proxy::start(vec![pilot.addr]).await;
    let grpc = graymesh_testkit::GrpcClient::new(proxy.upstream).with_authority("reviews:9080");
    let options = graymesh_testkit::CallOptions::default();
    for _ in 0..10 {
        let started = Instant::now();
        assert_eq!(grpc.version(&options).await.unwrap(), "v1");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "the slow mirror never delays the call"
        );
    }
    let mirrored = v2
        .wait_for_requests(10, Duration::from_secs(10))
        .await
        .expect("every call mirrored to v2");
    assert_eq!(mirrored.grpc, mirrored.total, "as gRPC calls: {mirrored:?}");
    proxy.stop().await;
}

/// Bodies too large to read ahead (over 64 KiB: streamed to the upstream) are mirrored too, in
/// full, once the request has ended; over 1 MiB they are not (nothing is held for them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_are_mirrored_in_full() {
    let (v1, v2) = (app("v1").await, app("v2").await);
    let vs = "  - route: [{destination: {host: reviews, subset: v1}}]\n    mirror: {host: reviews, subset: v2}\n    mirrorPercentage: {value: 100}\n";
    let pilot = Pilot::start(free_addr(), &mesh_yaml(&[&v1, &v2], "", vs)).await;
    let proxy = Proxy::start(vec![pilot.addr]).await;
    let body = vec![b'x'; 300 * 1024];
    let h1 = Http1Client::new()
        .post(&proxy.url("/"), &[], body.clone())
        .await
        .unwrap();
    let h2 = Http2Client::new()
        .post(&proxy.url("/"), &[], body.clone())
        .await
        .unwrap();
    assert_eq!(
        (h1.status.as_u16(), h2.status.as_u16()),
        (200u16, 200u16),
        "{} {}",
        h1.text(),
        h2.text()
    );
    let mirrored = v2.wait_for_requests(2, Duration::from_secs(10)).await;
    let mirrored = mirrored.unwrap_or_else(|e| panic!("{e}: {:?}", v2.requests()));
    assert_eq!((mirrored.http1, mirrored.http2), (1, 1), "{mirrored:?}");
    // Counted once each body has been read in full.
    let deadline = Instant::now() + Duration::from_secs(5);
    while v2.requests().body_bytes < 2 * body.len() as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        v2.requests().body_bytes,
        2 * body.len() as u64,
        "both copies whole"
    );
    assert_eq!(v1.requests().body_bytes, 2 * body.len() as u64);

    let huge = vec![b'x'; 1200 * 1024];
    let reply = Http1Client::new()
        .post(&proxy.url("/"), &[], huge)
        .await
        .unwrap();
    assert_eq!(
        reply.status,
        200,
        "the request itself goes on: {}",
        reply.text()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(v2.requests().total, 2, "a body over 1 MiB is not mirrored");
    proxy.stop().await;
}

/// A cookie hash policy with a TTL gives a first-time client its cookie (as Envoy generates
/// one), and with it the client keeps the version it got: over HTTP/1.1 (that first request
/// takes the general path) and HTTP/2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cookie_policy_with_a_ttl_gives_new_clients_a_sticky_cookie() {
    let (v1, v2) = (app("v1").await, app("v2").await);
    let dr = "  trafficPolicy:\n    loadBalancer:\n      consistentHash: {httpCookie: {name: user, ttl: 3600s, path: /}}\n";
    let yaml = mesh_yaml(&[&v1, &v2], dr, &mesh::split(50, 50));
    let pilot = Pilot::start(free_addr(), &yaml).await;
    let proxy = Proxy::start(vec![pilot.addr]).await;
    let url = proxy.url("/");
    for (name, h2) in [("http1", false), ("http2", true)] {
        for _ in 0..6 {
            let first = get(h2, &url).await.unwrap();
            assert_eq!(first.status, 200, "{name}");
            let set = first
                .headers
                .get("set-cookie")
                .unwrap_or_else(|| panic!("{name}: no cookie set: {:?}", first.headers))
                .to_str()
                .unwrap()
                .to_string();
            assert!(
                set.starts_with("user=")
                    && set.contains("; Max-Age=3600")
                    && set.contains("; Path=/")
                    && set.ends_with("; HttpOnly"),
                "{name}: {set}"
            );
            let cookie = set.split(';').next().unwrap().to_string();
            let version = first.json().unwrap()["version"].clone();
            for _ in 0..5 {
                let again = if h2 {
                    Http2Client::new().get(&url, &[("cookie", &cookie)]).await
                } else {
                    Http1Client::new().get(&url, &[("cookie", &cookie)]).await
                }
                .unwrap();
                assert_eq!(again.json().unwrap()["version"], version, "{name}: sticky");
                assert!(
                    again.headers.get("set-cookie").is_none(),
                    "{name}: set once"
                );
            }
        }
    }
    proxy.stop().await;
}
