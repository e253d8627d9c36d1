//! Non-HTTP ports: a VirtualService tcp route splits connections between versions, byte for byte.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test binary: panicking on the unexpected is the point

mod mesh;

use mesh::{free_addr, sample_sum, Pilot, Proxy};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// A TCP server that greets with its version and then echoes lines.
async fn tcp_app(version: &'static str) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                write
                    .write_all(format!("{version}\n").as_bytes())
                    .await
                    .unwrap();
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    write
                        .write_all(format!("{line}\n").as_bytes())
                        .await
                        .unwrap();
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_routes_split_connections_and_carry_bytes_both_ways() {
    let (v1, v2) = (tcp_app("v1").await, tcp_app("v2").await);
    let yaml = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: cache}}\nspec:\n  hosts: [cache.default.svc.cluster.local]\n  ports: [{{number: 6379, name: redis, protocol: REDIS}}]\n  resolution: STATIC\n  endpoints:\n  - {{address: 127.0.0.1, ports: {{redis: {}}}, labels: {{version: v1}}}}\n  - {{address: 127.0.0.1, ports: {{redis: {}}}, labels: {{version: v2}}}}\n---\n\
apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: cache}}\nspec:\n  host: cache\n  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]\n---\n\
apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: cache}}\nspec:\n  hosts: [cache]\n  tcp:\n  - route:\n    - {{destination: {{host: cache, subset: v1}}, weight: 80}}\n    - {{destination: {{host: cache, subset: v2}}, weight: 20}}\n",
        v1.port(),
        v2.port()
    );
    let pilot = Pilot::start(free_addr(), &yaml).await;
    let proxy = Proxy::start_for(vec![pilot.addr], "cache:6379").await;
    let mut by_version: BTreeMap<String, u32> = BTreeMap::new();
    // 1,000 connections, as the split check asks: at 500, ±5 points was 2.5 standard
    // deviations of the random pick and failed about once in a hundred runs.
    for i in 0..1000 {
        let stream = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect(proxy.upstream),
        )
        .await
        .unwrap()
        .unwrap();
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        let version = lines.next_line().await.unwrap().unwrap();
        write
            .write_all(format!("ping {i}\n").as_bytes())
            .await
            .unwrap();
        assert_eq!(
            lines.next_line().await.unwrap().unwrap(),
            format!("ping {i}")
        );
        *by_version.entry(version).or_default() += 1;
    }
    let v2_share = f64::from(by_version["v2"]) / 1000.0;
    assert!((0.15..=0.25).contains(&v2_share), "{by_version:?}");
    let metrics = proxy.metrics().await;
    assert!(metrics.contains("graymesh_proxy_tcp_connections_total{destination_service=\"cache.default.svc.cluster.local\",destination_version=\"v2\""), "{metrics}");
    let tcp = [("protocol", "tcp")];
    let opened = "graymesh_proxy_upstream_connections_opened_total";
    // The harness's readiness probe connected too.
    assert!(sample_sum(&metrics, opened, &tcp) >= 1000.0, "{metrics}");
    proxy.stop().await;
}

/// The cluster's `maxConnections` limits the TCP connections open through it at once: past it,
/// a new connection is closed at once (counted as `overflow`); once one closes, a new one goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_limits_tcp_connections() {
    let v1 = tcp_app("v1").await;
    let yaml = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: cache}}\nspec:\n  hosts: [cache.default.svc.cluster.local]\n  ports: [{{number: 6379, name: redis, protocol: REDIS}}]\n  resolution: STATIC\n  endpoints:\n  - {{address: 127.0.0.1, ports: {{redis: {}}}, labels: {{version: v1}}}}\n---\n\
apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: cache}}\nspec:\n  host: cache\n  trafficPolicy: {{connectionPool: {{tcp: {{maxConnections: 2}}}}}}\n",
        v1.port()
    );
    let pilot = Pilot::start(free_addr(), &yaml).await;
    let proxy = Proxy::start_for(vec![pilot.addr], "cache:6379").await;
    // A connection whose greeting arrived: open through the proxy to the app.
    let open = || async {
        let stream = tokio::net::TcpStream::connect(proxy.upstream)
            .await
            .unwrap();
        let mut lines = BufReader::new(stream);
        let mut greeting = String::new();
        let read = tokio::time::timeout(Duration::from_secs(5), lines.read_line(&mut greeting));
        let n = read.await.unwrap().unwrap();
        (n > 0).then_some(lines)
    };
    let first = open().await.expect("the first connection goes through");
    let second = open().await.expect("the second connection goes through");
    assert!(open().await.is_none(), "a third is closed at once");
    drop(first);
    // The proxy sees the close and the count comes down.
    let mut again = None;
    for _ in 0..50 {
        again = open().await;
        if again.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        again.is_some(),
        "after one closed, a new connection goes through"
    );
    let metrics = proxy.metrics().await;
    let overflow = [("result", "overflow")];
    assert!(
        sample_sum(&metrics, "graymesh_proxy_tcp_connections_total", &overflow) >= 1.0,
        "{metrics}"
    );
    drop((second, again));
    proxy.stop().await;
}
