//! A real etcd for tests: [`EtcdServer::start`] runs the `etcd` binary (Debian `etcd-server`,
//! installed by `scripts/test`) on free loopback ports with a fresh data directory, waits for
//! `/health` with a bound, and kills the process and removes the directory on drop.
//!
//! It never binds anything but 127.0.0.1 and never waits without a bound. A port picked free can
//! be taken by a parallel test before etcd binds it; start-up then fails fast and is retried on
//! new ports.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long etcd gets to answer `/health` after it was started.
const START_BOUND: Duration = Duration::from_secs(20);
const START_ATTEMPTS: usize = 3;

/// One etcd process with its own data directory.
#[derive(Debug)]
pub struct EtcdServer {
    child: Option<Child>,
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("cannot run `etcd` (install the Debian package etcd-server; scripts/test does): {0}")]
    Spawn(std::io::Error),
    #[error("etcd test directory {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("no free loopback port: {0}")]
    Port(std::io::Error),
    #[error("etcd on 127.0.0.1:{port} not healthy within {bound:?}; its log ends with:\n{log}")]
    NotHealthy {
        port: u16,
        bound: Duration,
        log: String,
    },
}

impl EtcdServer {
    /// Start etcd on free loopback ports with an empty data directory and wait until healthy.
    pub fn start() -> Result<Self, EtcdError> {
        let mut server = Self {
            child: None,
            dir: unique_dir()?,
            client_port: 0,
            peer_port: 0,
        };
        let mut attempt = 1;
        loop {
            server.client_port = free_port()?;
            server.peer_port = free_port()?;
            match server.spawn_and_wait() {
                Err(EtcdError::NotHealthy { .. }) if attempt < START_ATTEMPTS => {
                    server.kill();
                    let _ = std::fs::remove_dir_all(server.data_dir());
                    attempt += 1;
                }
                Err(e) => return Err(e), // dropping `server` kills etcd and removes the dir
                Ok(()) => return Ok(server),
            }
        }
    }

    /// The client URL, e.g. `http://127.0.0.1:40123`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// SIGKILL etcd (its data stays), as a crash or a lost connection would look to clients.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start etcd again on the same ports and data directory (after [`Self::kill`]).
    pub fn restart(&mut self) -> Result<(), EtcdError> {
        self.kill();
        self.spawn_and_wait()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("etcd.log")
    }

    fn spawn_and_wait(&mut self) -> Result<(), EtcdError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|source| dir_error(&self.log_path(), source))?;
        let log_err = log
            .try_clone()
            .map_err(|source| dir_error(&self.log_path(), source))?;
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new("etcd")
            .arg("--name=graymesh-test")
            .arg(format!("--data-dir={}", self.data_dir().display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=graymesh-test={peer}"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(EtcdError::Spawn)?;
        self.child = Some(child);
        self.wait_healthy()
    }

    fn wait_healthy(&mut self) -> Result<(), EtcdError> {
        let deadline = Instant::now() + START_BOUND;
        while Instant::now() < deadline {
            let exited = self
                .child
                .as_mut()
                .is_none_or(|c| c.try_wait().ok().flatten().is_some());
            if exited {
                break; // e.g. the port was taken
            }
            if health_ok(self.client_port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(EtcdError::NotHealthy {
            port: self.client_port,
            bound: START_BOUND,
            log: log_tail(&self.log_path()),
        })
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `GET /health` answered with `"health":"true"`.
fn health_ok(port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.contains("\"health\":\"true\"")
}

fn free_port() -> Result<u16, EtcdError> {
    crate::ports::try_free_port().map_err(EtcdError::Port)
}

fn unique_dir() -> Result<PathBuf, EtcdError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let name = format!(
        "graymesh-etcd-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let dir = std::env::temp_dir().join(name);
    std::fs::create_dir_all(&dir).map_err(|source| dir_error(&dir, source))?;
    Ok(dir)
}

fn dir_error(path: &Path, source: std::io::Error) -> EtcdError {
    EtcdError::Dir {
        path: path.display().to_string(),
        source,
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}
