#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The etcd harness: starts a healthy etcd on loopback, restarts it with its data, and cleans up.

use graymesh_testkit::EtcdServer;
use std::io::{Read, Write};
use std::net::TcpStream;

fn health(endpoint: &str) -> String {
    let addr = endpoint.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn etcd_starts_restarts_and_is_gone_after_drop() {
    let mut etcd = EtcdServer::start().unwrap();
    let endpoint = etcd.endpoint();
    assert!(endpoint.starts_with("http://127.0.0.1:"));
    assert!(health(&endpoint).contains("\"health\":\"true\""));

    etcd.kill();
    assert!(TcpStream::connect(endpoint.trim_start_matches("http://")).is_err());
    etcd.restart().unwrap();
    assert!(health(&endpoint).contains("\"health\":\"true\""));

    drop(etcd);
    assert!(TcpStream::connect(endpoint.trim_start_matches("http://")).is_err());
}
