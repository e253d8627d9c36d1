#![allow(clippy::unwrap_used, clippy::expect_used)] // a test binary: panicking on the unexpected is the point
//! `graymesh apply`, `get` and `delete` as a user runs them, against pilot on a real etcd and on
//! a config directory; and two pilots sharing one etcd serving the same resources.

use graymesh_testkit::EtcdServer;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_graymesh");
const BOUND: Duration = Duration::from_secs(20);

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/bookinfo")
}

fn temp_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("graymesh-config-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

use graymesh_testkit::free_port;

/// GET on pilot's admin port: (status, body).
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.get(9..12)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

struct Pilot {
    child: Child,
    http: u16,
}

impl Pilot {
    /// Start pilot with `source` (`--etcd URL` or `--config-dir DIR`) and wait for /ready, on
    /// fresh ports again if a parallel test took the picked one.
    fn start(source: &[&str]) -> Self {
        for _ in 0..3 {
            let http = free_port();
            let mut child = Command::new(BIN)
                .arg("pilot")
                .args(source)
                .args(["--xds-addr", "127.0.0.1:0"])
                .args(["--http-addr", &format!("127.0.0.1:{http}")])
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let start = Instant::now();
            while start.elapsed() < BOUND {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                if http_get(http, "/ready").is_some_and(|(s, _)| s == 200) {
                    return Self { child, http };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("pilot {source:?} did not become ready in 3 attempts");
    }

    fn server(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }

    /// Run a CLI command against this pilot.
    fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("GRAYMESH_SERVER", self.server())
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The resources a default-namespace sidecar gets, without the generation number.
    fn sidecar_dump(&self) -> serde_json::Value {
        let (status, body) = http_get(
            self.http,
            "/debug/config_dump?kind=sidecar&namespace=default",
        )
        .unwrap();
        assert_eq!(status, 200, "{body}");
        let mut dump: serde_json::Value = serde_json::from_str(&body).unwrap();
        dump.as_object_mut().unwrap().remove("version");
        dump
    }
}

impl Drop for Pilot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const BAD_SET: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: new-one}
spec:
  hosts: [new-one.example]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 90}
    - {destination: {host: reviews, subset: v2}, weight: 20}
"#;

/// The round trip every store must pass: apply, get (table, yaml, json), an all-or-nothing
/// refusal, optimistic concurrency, delete.
fn round_trip(pilot: &Pilot, scratch: &Path) {
    let applied = pilot.ok(&["apply", "-f", examples().to_str().unwrap()]);
    assert!(applied.contains("virtualservice/reviews "), "{applied}");
    let table = pilot.ok(&["get", "virtualservices"]);
    assert!(table.starts_with("NAMESPACE"), "{table}");
    assert_eq!(table.lines().count(), 1 + 5, "{table}");

    // YAML out is YAML in: applying it back changes nothing.
    let yaml = pilot.ok(&["get", "destinationrules", "-o", "yaml"]);
    let file = scratch.join("drs.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let again = pilot.ok(&["apply", "-f", file.to_str().unwrap()]);
    assert!(again.lines().all(|l| l.ends_with(" unchanged")), "{again}");

    // One bad object: nothing applied, the error names object and field.
    let bad = scratch.join("bad.yaml");
    std::fs::write(&bad, BAD_SET).unwrap();
    let before = pilot.ok(&["get", "vs", "-o", "json"]);
    let out = pilot.cli(&["apply", "-f", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("VirtualService default/reviews: spec.http[0].route: weights sum to 110"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was applied"), "{stderr}");
    assert_eq!(pilot.ok(&["get", "vs", "-o", "json"]), before);

    // Optimistic concurrency on one object.
    let reviews: serde_json::Value =
        serde_json::from_str(&pilot.ok(&["get", "vs", "reviews", "-o", "json"])).unwrap();
    let version = reviews["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let stale = pilot.cli(&["delete", "vs", "reviews", "--resource-version", "0"]);
    assert_eq!(stale.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&stale.stderr).contains("409"),
        "{stale:?}"
    );
    let deleted = pilot.ok(&[
        "delete",
        "virtualservice",
        "reviews",
        "--resource-version",
        &version,
    ]);
    assert_eq!(deleted.trim(), "virtualservice/reviews deleted");
    let gone = pilot.cli(&["get", "vs", "reviews"]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&gone.stderr).contains("does not exist"));

    let services = pilot.ok(&["get", "services", "-n", "default"]);
    assert!(
        services.contains("reviews.default.svc.cluster.local"),
        "{services}"
    );
}

#[test]
fn apply_get_delete_against_etcd() {
    let etcd = EtcdServer::start().unwrap();
    let pilot = Pilot::start(&["--etcd", &etcd.endpoint()]);
    round_trip(&pilot, &temp_dir("etcd"));
}

#[test]
fn apply_get_delete_against_a_config_directory() {
    let dir = temp_dir("dir-config");
    let scratch = temp_dir("dir-scratch");
    let pilot = Pilot::start(&["--config-dir", dir.to_str().unwrap()]);
    round_trip(&pilot, &scratch);
    assert!(dir
        .join("default-virtualservice-productpage.yaml")
        .is_file());
}

#[test]
fn two_pilots_on_one_etcd_serve_the_same_resources() {
    let etcd = EtcdServer::start().unwrap();
    let a = Pilot::start(&["--etcd", &etcd.endpoint()]);
    let b = Pilot::start(&["--etcd", &etcd.endpoint()]);
    a.ok(&["apply", "-f", examples().to_str().unwrap()]);
    // The write went through `a`; `b` learns it from its watch.
    let start = Instant::now();
    while b.sidecar_dump() != a.sidecar_dump() {
        assert!(
            start.elapsed() < BOUND,
            "pilots still differ after {BOUND:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(a.sidecar_dump()["routes"].to_string().contains("reviews"));
    b.ok(&["delete", "vs", "reviews"]);
    let start = Instant::now();
    while a.sidecar_dump() != b.sidecar_dump() {
        assert!(
            start.elapsed() < BOUND,
            "pilots still differ after a delete"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn pilot_reports_broken_etcd_values_and_unreachable_etcd() {
    let out = Command::new(BIN)
        .args([
            "pilot",
            "--etcd",
            "http://127.0.0.1:1",
            "--xds-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("etcd at http://127.0.0.1:1 is unreachable"),
        "{stderr}"
    );

    let etcd = EtcdServer::start().unwrap();
    let pilot = Pilot::start(&["--etcd", &etcd.endpoint()]);
    pilot.ok(&["apply", "-f", examples().to_str().unwrap()]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut client = etcd_client::Client::connect([etcd.endpoint()], None)
            .await
            .unwrap();
        client
            .put(
                "/graymesh/config/default/VirtualService/hand-made",
                "kind: [",
                None,
            )
            .await
            .unwrap();
    });
    let start = Instant::now();
    loop {
        let (_, body) = http_get(pilot.http, "/debug/syncz").unwrap();
        let syncz: serde_json::Value = serde_json::from_str(&body).unwrap();
        if syncz["config_errors"]
            .to_string()
            .contains("etcd:/graymesh/config/default/VirtualService/hand-made")
        {
            break;
        }
        assert!(
            start.elapsed() < BOUND,
            "broken value not reported: {syncz}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = pilot.cli(&["get", "vs"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        table.lines().count(),
        1 + 5,
        "the valid objects are still served: {table}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let hand_made = "etcd:/graymesh/config/default/VirtualService/hand-made";
    assert!(
        stderr.contains(&format!("warning: not served: {hand_made}")),
        "{stderr}"
    );
}
