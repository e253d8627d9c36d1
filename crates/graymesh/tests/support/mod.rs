//! What the end-to-end tests of the binary share: `graymesh` processes (pilot, proxies, the
//! CLI) on free loopback ports, killed when dropped, and bounded waits.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // each test binary uses a part; panics are the point

use graymesh_testkit::Http1Client;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_graymesh");

pub use graymesh_testkit::free_addr as free;

/// A child process, killed when dropped.
pub struct Process(pub Child);

impl Process {
    pub fn spawn(args: &[String]) -> Self {
        let log = std::env::var_os("GRAYMESH_TEST_LOGS").is_some();
        let stderr = if log { Stdio::inherit() } else { Stdio::null() };
        Process(
            Command::new(BIN)
                .args(args)
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .unwrap(),
        )
    }

    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    pub fn exited(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Wait until `check` holds, polling every 50 ms; panics naming `what` after `limit`.
pub async fn eventually<F: std::future::Future<Output = bool>>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `graymesh pilot` on a config directory.
pub struct Pilot {
    pub xds: SocketAddr,
    pub http: SocketAddr,
    pub process: Process,
}

impl Pilot {
    /// Start pilot on `dir` and wait until it is ready (again on fresh ports if a parallel
    /// test took the picked ones).
    pub async fn start(dir: &Path, extra: &[&str]) -> Pilot {
        for _ in 0..3 {
            let (xds, http) = (free(), free());
            if let Some(pilot) = Self::start_on(dir, xds, http, extra).await {
                return pilot;
            }
        }
        panic!("pilot did not start on {}", dir.display());
    }

    /// Start pilot on given ports; `None` if it exited before it was ready.
    pub async fn start_on(
        dir: &Path,
        xds: SocketAddr,
        http: SocketAddr,
        extra: &[&str],
    ) -> Option<Pilot> {
        let mut args = vec!["--config-dir".to_string(), dir.display().to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::start_with(xds, http, &args).await
    }

    /// Start pilot on etcd (`--etcd endpoint`), on fresh ports, and wait until it is ready.
    pub async fn start_etcd(endpoint: &str) -> Pilot {
        for _ in 0..3 {
            let args = ["--etcd".to_string(), endpoint.to_string()];
            if let Some(pilot) = Self::start_with(free(), free(), &args).await {
                return pilot;
            }
        }
        panic!("pilot did not start on etcd {endpoint}");
    }

    /// `graymesh pilot --xds-addr X --http-addr H ARGS…`, ready; `None` if it exited first.
    pub async fn start_with(xds: SocketAddr, http: SocketAddr, extra: &[String]) -> Option<Pilot> {
        let mut args: Vec<String> = [
            "pilot",
            "--xds-addr",
            &xds.to_string(),
            "--http-addr",
            &http.to_string(),
        ]
        .map(String::from)
        .to_vec();
        args.extend(extra.iter().cloned());
        let mut process = Process::spawn(&args);
        let client = Http1Client::new().with_timeout(Duration::from_secs(2));
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if process.exited() {
                return None;
            }
            if client
                .get(&format!("http://{http}/ready"), &[])
                .await
                .is_ok_and(|r| r.status == 200)
            {
                return Some(Pilot { xds, http, process });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// GET a JSON document from pilot's admin API.
    pub async fn get(&self, path: &str) -> serde_json::Value {
        let client = Http1Client::new().with_timeout(Duration::from_secs(5));
        let reply = client
            .get(&format!("http://{}{path}", self.http), &[])
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        reply.json().unwrap()
    }

    pub fn server(&self) -> String {
        format!("http://{}", self.http)
    }

    /// Run a CLI command that must succeed (its stderr is the failure message).
    pub fn cli_ok(&self, args: &[&str]) -> Output {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "graymesh {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Run a CLI command that must exit with `code` (its stdout is the failure message).
    pub fn cli_exits(&self, args: &[&str], code: i32) -> Output {
        let out = self.cli(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "graymesh {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        );
        out
    }

    /// Run a `graymesh` CLI command against this pilot.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("GRAYMESH_SERVER", self.server())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

/// A client-side sidecar (no app of its own) reaching `upstream` (`host:port`) on a local port.
pub struct ClientProxy {
    pub local: SocketAddr,
    pub admin: SocketAddr,
    pub process: Process,
}

impl ClientProxy {
    pub async fn start(pilot: &Pilot, node: &str, upstream: &str) -> ClientProxy {
        let (local, admin, outbound) = (free(), free(), free());
        let process = Process::spawn(
            &[
                "proxy",
                "--pilot",
                &pilot.xds.to_string(),
                "--node-id",
                node,
                "--no-register",
                "--concurrency",
                "1",
                "--upstream",
                &format!("{upstream}={local}"),
                "--outbound-addr",
                &outbound.to_string(),
                "--admin-addr",
                &admin.to_string(),
            ]
            .map(String::from),
        );
        let client = Http1Client::new().with_timeout(Duration::from_secs(2));
        eventually(
            Duration::from_secs(20),
            "the client proxy to be ready",
            || async {
                client
                    .get(&format!("http://{admin}/ready"), &[])
                    .await
                    .is_ok_and(|r| r.status == 200)
            },
        )
        .await;
        ClientProxy {
            local,
            admin,
            process,
        }
    }
}

/// A fresh temporary directory for one test.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("graymesh-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
