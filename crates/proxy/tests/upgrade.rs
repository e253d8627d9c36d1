//! `Upgrade:` requests (WebSocket and others) become a byte tunnel through the proxy once the
//! upstream switches protocols.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test binary: panicking on the unexpected is the point

mod mesh;

use mesh::{free_addr, Pilot, Proxy, HOST};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// An upstream that answers any upgrade request with 101 and then echoes bytes back upper-cased.
async fn upgrade_echo_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                let mut upgrade = false;
                loop {
                    line.clear();
                    reader.read_line(&mut line).await.unwrap();
                    upgrade |= line.to_ascii_lowercase().starts_with("upgrade: echo");
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut stream = reader.into_inner();
                if !upgrade {
                    stream
                        .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                        .await
                        .unwrap();
                    return;
                }
                stream.write_all(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: echo\r\nconnection: upgrade\r\n\r\n").await.unwrap();
                let mut buf = [0u8; 1024];
                loop {
                    let n = stream.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    stream
                        .write_all(&buf[..n].to_ascii_uppercase())
                        .await
                        .unwrap();
                }
            });
        }
    });
    addr
}

/// The mesh config: `reviews` on the upgrade echo server.
fn echo_yaml(echo: std::net::SocketAddr) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: reviews}}\nspec:\n  hosts: [{HOST}]\n  ports: [{{number: 9080, name: http, protocol: HTTP}}]\n  resolution: STATIC\n  endpoints: [{{address: 127.0.0.1, ports: {{http: {}}}}}]\n",
        echo.port()
    )
}

/// Asks the proxy to upgrade a connection; returns it once the 101's head has been read.
async fn open_tunnel(proxy: &Proxy) -> tokio::net::TcpStream {
    let mut client = tokio::net::TcpStream::connect(proxy.upstream)
        .await
        .unwrap();
    client
        .write_all(
            b"GET /chat HTTP/1.1\r\nHost: reviews\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
        )
        .await
        .unwrap();
    let mut reader = BufReader::new(client);
    let mut line = String::new();
    reader.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("HTTP/1.1 101"), "{line:?}");
    while line != "\r\n" {
        line.clear();
        reader.read_line(&mut line).await.unwrap();
    }
    reader.into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgraded_connections_are_tunnelled_both_ways() {
    let echo = upgrade_echo_server().await;
    let pilot = Pilot::start(free_addr(), &echo_yaml(echo)).await;
    let proxy = Proxy::start(vec![pilot.addr]).await;
    let mut client = open_tunnel(&proxy).await;
    for message in ["hello", "second frame"] {
        client.write_all(message.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; message.len()];
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            client.read_exact(&mut buf),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(buf, message.to_ascii_uppercase().as_bytes());
    }
    drop(client); // else the drain waits for the tunnel (see below)
    proxy.stop().await;
}

/// A drain waits for open tunnels (within its bound): the proxy stops once the tunnel closes,
/// not before and not only when the bound runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_waits_for_open_tunnels() {
    let echo = upgrade_echo_server().await;
    let pilot = Pilot::start(free_addr(), &echo_yaml(echo)).await;
    let proxy = Proxy::start(vec![pilot.addr]).await;
    let client = open_tunnel(&proxy).await;
    // The harness's drain bound is 2 s.
    let started = std::time::Instant::now();
    let stopping = tokio::spawn(proxy.stop());
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        !stopping.is_finished(),
        "the drain waits for the open tunnel"
    );
    drop(client);
    stopping.await.unwrap();
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_millis(1500),
        "the drain ended with the tunnel, not at its 2 s bound: {took:?}"
    );
}
