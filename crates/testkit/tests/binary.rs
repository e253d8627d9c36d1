#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The `graymesh-testkit app` process: announces its address, serves, and exits on SIGTERM.
#![cfg(unix)]

use graymesh_testkit::{CallOptions, GrpcClient, Http1Client};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

const BOUND: Duration = Duration::from_secs(10);

#[tokio::test]
async fn app_subcommand_serves_until_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_graymesh-testkit"))
        .args([
            "app",
            "--service",
            "reviews",
            "--version",
            "v2",
            "--port",
            "0",
        ])
        .args(["--error-rate", "0", "--latency-ms", "1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // The process prints its line once bound, or exits and closes stdout: the read is bounded.
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    });
    let line = tokio::time::timeout(BOUND, line)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .parse()
        .unwrap();

    let reply = Http1Client::new()
        .get(&format!("http://{addr}/"), &[])
        .await
        .unwrap();
    assert_eq!(reply.version.as_deref(), Some("v2"));
    assert_eq!(reply.json().unwrap()["instance"], "reviews-v2");
    let grpc = GrpcClient::new(addr).version(&CallOptions::default()).await;
    assert_eq!(grpc.unwrap(), "v2");

    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(term.unwrap().success());
    let exited = tokio::task::spawn_blocking(move || child.wait());
    let status = tokio::time::timeout(BOUND, exited)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn bad_error_rate_is_refused() {
    let output = Command::new(env!("CARGO_BIN_EXE_graymesh-testkit"))
        .args([
            "app",
            "--service",
            "s",
            "--version",
            "v1",
            "--error-rate",
            "2",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("out of range"));
}
