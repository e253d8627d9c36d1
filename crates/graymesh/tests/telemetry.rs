//! The telemetry an analysis step reads, end to end: a real pilot, a client sidecar whose
//! `reviews` upstream splits 50/50 between two fake apps (v1 healthy, v2 answering half its
//! requests with a 500), bounded load through the sidecar, and pilot's answer on
//! `/debug/telemetryz` from its embedded scraper, or from a real Prometheus scraping the
//! sidecar (`--prometheus`). Prometheus must be installed (scripts/test installs it): the test
//! fails without it, it is never skipped.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test binary: panicking on the unexpected is the point

use graymesh_testkit::{
    run_load, FakeApp, FakeAppHandle, GrpcClient, Http1Client, LoadCall, LoadPlan, LoadReport,
    RequestCounts,
};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_graymesh");
const FQDN: &str = "reviews.default.svc.cluster.local";

use graymesh_testkit::free_addr as free;

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(program: &str, args: &[String]) -> Process {
    spawn_logged(program, args, Stdio::null())
}

fn spawn_logged(program: &str, args: &[String], stderr: impl Into<Stdio>) -> Process {
    Process(
        Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}")),
    )
}

async fn eventually<F: std::future::Future<Output = bool>>(
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

/// A directory removed when the test ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("graymesh-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// 50/50 between the versions. No retries: the proxies count a request once, with the answer
/// its caller got, so with Istio's default retries (gRPC UNAVAILABLE) the apps would see more
/// attempts than there were requests, and the exact comparisons below would not hold.
const CONFIG: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - retries: {attempts: 0}
    route:
    - {destination: {host: reviews, subset: v1}, weight: 50}
    - {destination: {host: reviews, subset: v2}, weight: 50}
";

/// Pilot, the two versions registered with it, and a client sidecar in front of them.
struct Mesh {
    http: Http1Client,
    pilot_http: SocketAddr,
    /// The sidecar's explicit `reviews:9080` port.
    upstream: SocketAddr,
    v1: FakeAppHandle,
    v2: FakeAppHandle,
    /// The client sidecar, and how to start it again.
    sidecar: Option<Process>,
    sidecar_args: Vec<String>,
    _pilot: Process,
    _dir: TempDir,
}

impl Mesh {
    /// `client_admin`: where the sidecar serves /metrics (a Prometheus may be pointed at it).
    async fn start(name: &str, pilot_args: &[String], client_admin: SocketAddr) -> Mesh {
        let dir = TempDir::new(name);
        std::fs::write(dir.0.join("reviews.yaml"), CONFIG).unwrap();
        let (xds, pilot_http) = (free(), free());
        let mut args: Vec<String> = [
            "pilot",
            "--config-dir",
            &dir.0.display().to_string(),
            "--xds-addr",
            &xds.to_string(),
            "--http-addr",
            &pilot_http.to_string(),
        ]
        .map(String::from)
        .to_vec();
        args.extend_from_slice(pilot_args);
        let log = dir.0.join("pilot.log");
        let mut pilot = spawn_logged(BIN, &args, std::fs::File::create(&log).unwrap());
        let http = Http1Client::new().with_timeout(Duration::from_secs(5));
        let started = Instant::now();
        while !http
            .get(&format!("http://{pilot_http}/ready"), &[])
            .await
            .is_ok_and(|r| r.status == 200)
        {
            let exited = pilot.0.try_wait().unwrap();
            if exited.is_some() || started.elapsed() > Duration::from_secs(20) {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                panic!(
                    "pilot not ready after {:?} ({exited:?}):\n{log}",
                    started.elapsed()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let v1 = app("v1", 0.0).await;
        let v2 = app("v2", 0.5).await;
        for a in [&v1, &v2] {
            register(&http, pilot_http, a).await;
        }
        let (upstream, client_out) = (free(), free());
        let sidecar_args: Vec<String> = [
            "proxy",
            "--pilot",
            &xds.to_string(),
            "--node-id",
            "productpage-1",
            "--no-register",
            "--concurrency",
            "1",
            "--upstream",
            &format!("reviews:9080={upstream}"),
            "--outbound-addr",
            &client_out.to_string(),
            "--admin-addr",
            &client_admin.to_string(),
        ]
        .map(String::from)
        .to_vec();
        Mesh {
            http,
            pilot_http,
            upstream,
            v1,
            v2,
            sidecar: Some(spawn(BIN, &sidecar_args)),
            sidecar_args,
            _pilot: pilot,
            _dir: dir,
        }
    }

    /// Requests through the sidecar until v1 and v2 both answered 200 and v2 failed at least
    /// once, so every series exists before the measured load (Prometheus' increase() cannot
    /// count a series' first sample). Bounded in count and time.
    async fn warm_up(&self) -> u64 {
        let url = format!("http://{}/reviews/1", self.upstream);
        let start = Instant::now();
        let mut sent = 0;
        let (mut v1_ok, mut v2_ok, mut v2_failed) = (false, false, false);
        while !(v1_ok && v2_ok && v2_failed) {
            assert!(
                sent < 400 && start.elapsed() < Duration::from_secs(20),
                "warm-up: after {sent} requests, v1 answered: {v1_ok}, v2 answered: {v2_ok}, v2 failed: {v2_failed}"
            );
            if let Ok(reply) = self.http.get(&url, &[]).await {
                sent += 1;
                let version = reply.version.as_deref();
                v1_ok |= reply.status == 200 && version == Some("v1");
                v2_ok |= reply.status == 200 && version == Some("v2");
                v2_failed |= reply.status == 500;
            } else {
                tokio::time::sleep(Duration::from_millis(50)).await; // not routed yet
            }
        }
        sent
    }

    /// `n` HTTP/1.1 requests through the sidecar, `concurrency` at a time (each takes the
    /// apps' 20 ms), bounded by 15 s.
    async fn load(&self, n: u64, concurrency: usize) -> LoadReport {
        let call = LoadCall::http1(
            Http1Client::new().with_timeout(Duration::from_secs(5)),
            format!("http://{}/reviews/1", self.upstream),
        );
        run_load(call, plan(n, concurrency)).await
    }

    /// `n` gRPC calls through the same sidecar port, 2 at a time, bounded by 15 s.
    async fn grpc_load(&self, n: u64) -> LoadReport {
        let client = GrpcClient::new(self.upstream).with_authority("reviews:9080");
        run_load(LoadCall::grpc(client), plan(n, 2)).await
    }

    async fn telemetryz(&self, query: &str) -> (u16, Value) {
        let url = format!("http://{}/debug/telemetryz{query}", self.pilot_http);
        let reply = self.http.get(&url, &[]).await.unwrap();
        (reply.status.as_u16(), reply.json().unwrap())
    }

    /// The window of `version` from pilot's configured source.
    async fn window(&self, version: &str, window: Duration) -> Value {
        let query = format!(
            "?host=reviews&namespace=default&version={version}&window={}ms",
            window.as_millis()
        );
        let (status, answer) = self.telemetryz(&query).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["service"], FQDN, "{answer}");
        answer["window"].clone()
    }

    /// How many times pilot has scraped the sidecar.
    async fn scrapes(&self) -> u64 {
        let (_, overview) = self.telemetryz("").await;
        let proxy = &overview["proxies"][0];
        assert_eq!(proxy["last_error"], Value::Null, "{overview}");
        proxy["scrapes"].as_u64().unwrap_or(0)
    }

    /// `n` requests through the sidecar that reached an app (retrying while it has no route
    /// yet, e.g. just restarted). Bounded in count and time.
    async fn answered(&self, n: u64) {
        let url = format!("http://{}/reviews/1", self.upstream);
        let start = Instant::now();
        let mut answered = 0;
        while answered < n {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "only {answered} of {n} requests answered"
            );
            match self.http.get(&url, &[]).await {
                Ok(reply) if reply.version.is_some() || reply.status == 500 => answered += 1,
                // Just restarted: no routes yet (the proxy answers 503 itself, for no version).
                Ok(reply) if reply.status == 503 && reply.text().contains("not received yet") => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Ok(reply) => panic!("an answer from no app: {} {}", reply.status, reply.text()),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    fn app_totals(&self) -> u64 {
        self.v1.requests().total + self.v2.requests().total
    }

    /// Requests to both versions over the last `window`, from pilot.
    async fn window_total(&self, window: Duration) -> u64 {
        let v1 = self.window("v1", window).await;
        let v2 = self.window("v2", window).await;
        count(&v1, "requests") + count(&v2, "requests")
    }

    /// SIGKILL the sidecar and wait until pilot no longer counts it as connected.
    async fn kill_sidecar(&mut self) {
        drop(self.sidecar.take());
        eventually(
            Duration::from_secs(10),
            "pilot to see the sidecar gone",
            || async { self.scraped_sidecar().await["connected"] == false },
        )
        .await;
    }

    /// The sidecar as pilot's scraper last saw it.
    async fn scraped_sidecar(&self) -> Value {
        let (_, overview) = self.telemetryz("").await;
        overview["proxies"][0].clone()
    }

    /// Returns once pilot has started a scrape after this call (two completed after it).
    async fn next_scrape(&self) {
        let seen = self.scrapes().await;
        eventually(Duration::from_secs(5), "two more scrapes", || async {
            self.scrapes().await >= seen + 2
        })
        .await;
    }
}

fn plan(max_requests: u64, concurrency: usize) -> LoadPlan {
    LoadPlan {
        max_requests,
        max_duration: Duration::from_secs(15),
        concurrency,
    }
}

async fn app(version: &str, error_rate: f64) -> FakeAppHandle {
    FakeApp::builder()
        .service("reviews")
        .version(version)
        .error_rate(error_rate)
        .latency(Duration::from_millis(20))
        .start()
        .await
        .unwrap()
}

async fn register(http: &Http1Client, pilot_http: SocketAddr, app: &FakeAppHandle) {
    let body = serde_json::json!({
        "id": format!("reviews-{}", app.version()),
        "service": "reviews",
        "address": "127.0.0.1",
        "ports": [{"port": 9080, "target_port": app.addr().port(), "name": "http"}],
        "labels": {"version": app.version()},
        "ttl_seconds": 120,
    });
    let reply = http
        .post(
            &format!("http://{pilot_http}/v1/registry/instances"),
            &[],
            body.to_string(),
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 201, "{}", reply.text());
}

fn count(window: &Value, field: &str) -> u64 {
    window[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {window}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pilot_sees_each_versions_requests_and_errors_http_and_grpc_from_its_scrapes() {
    let mesh = Mesh::start("telemetry-embedded", &[], free()).await;
    mesh.warm_up().await;
    // Pilot has scraped everything the warm-up sent; the measured load starts right after a
    // scrape, so the window below holds the load and nothing else.
    mesh.next_scrape().await;
    let before = (mesh.v1.requests(), mesh.v2.requests());
    let load_start = Instant::now();
    let (http, grpc) = tokio::join!(mesh.load(240, 3), mesh.grpc_load(120));
    assert_eq!(http.abandoned + grpc.abandoned, 0, "{http:?}\n{grpc:?}");
    mesh.next_scrape().await;
    let window = load_start.elapsed();
    let v1 = mesh.window("v1", window).await;
    let v2 = mesh.window("v2", window).await;

    let sent =
        |now: RequestCounts, then: RequestCounts| (now.total - then.total, now.grpc - then.grpc);
    let (sent_v1, grpc_v1) = sent(mesh.v1.requests(), before.0);
    let (sent_v2, grpc_v2) = sent(mesh.v2.requests(), before.1);
    assert_eq!(sent_v1 + sent_v2, http.sent + grpc.sent);
    assert_eq!(grpc_v1 + grpc_v2, grpc.sent);
    // Exactly what reached each version, HTTP and gRPC.
    assert_eq!(count(&v1, "requests"), sent_v1, "v1 {v1}");
    assert_eq!(count(&v2, "requests"), sent_v2, "v2 {v2}");
    assert_eq!(count(&v1, "grpc_requests"), grpc_v1, "v1 {v1}");
    assert_eq!(count(&v2, "grpc_requests"), grpc_v2, "v2 {v2}");
    // Only v2 fails: its HTTP 500s are 5xx, its gRPC UNAVAILABLEs (HTTP 200) gRPC errors.
    assert_eq!(count(&v1, "server_errors"), 0, "v1 {v1}");
    assert_eq!(count(&v1, "grpc_errors"), 0, "v1 {v1}");
    assert_eq!(
        count(&v2, "server_errors"),
        http.failed,
        "v2 {v2}, {http:?}"
    );
    assert_eq!(count(&v2, "grpc_errors"), grpc.failed, "v2 {v2}, {grpc:?}");
    let http_success =
        100.0 * (sent_v2 - grpc_v2 - http.failed) as f64 / (sent_v2 - grpc_v2) as f64;
    assert!((35.0..=65.0).contains(&http_success), "v2 {v2}");
    let grpc_rate = v2["grpc_error_rate_percent"].as_f64().unwrap();
    assert!((30.0..=70.0).contains(&grpc_rate), "v2 {v2}");
    assert_eq!(v1["success_rate_percent"], 100.0, "v1 {v1}");
    assert_eq!(v1["grpc_error_rate_percent"], 0.0, "v1 {v1}");
    assert!(v1["p99_ms"].as_f64().is_some_and(|ms| ms > 0.0), "v1 {v1}");

    // The overview: both versions over the last 60 s (warm-up included), the sidecar scraped.
    let (status, overview) = mesh.telemetryz("").await;
    assert_eq!(status, 200);
    assert_eq!(overview["source"], "embedded");
    let versions: Vec<(String, String)> = overview["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["service"].to_string(), v["version"].to_string()))
        .collect();
    let want = |v: &str| (format!("\"{FQDN}\""), format!("\"{v}\""));
    assert_eq!(versions, [want("v1"), want("v2")], "{overview}");
    assert_eq!(
        overview["proxies"][0]["node_id"], "productpage-1",
        "{overview}"
    );
    assert_eq!(overview["proxies"][0]["failures"], 0, "{overview}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_survive_a_sidecar_restart_and_its_disconnect() {
    let mut mesh = Mesh::start("telemetry-restart", &[], free()).await;
    mesh.warm_up().await;
    mesh.next_scrape().await;
    let before = mesh.app_totals();
    let start = Instant::now();
    mesh.answered(20).await;
    mesh.next_scrape().await;

    // Restarted (same node id and admin address): it counts from zero again, and pilot adds
    // what the new process counts to what the old one did, also once the new counts are past
    // the old ones (told apart by the proxy's start time, not by counters going down).
    mesh.kill_sidecar().await;
    mesh.sidecar = Some(spawn(BIN, &mesh.sidecar_args));
    mesh.answered(60).await;
    eventually(
        Duration::from_secs(10),
        "a scrape of the new sidecar",
        || async { mesh.scraped_sidecar().await["last_error"] == Value::Null },
    )
    .await;
    mesh.next_scrape().await;
    let sent = mesh.app_totals() - before;
    assert_eq!(sent, 80);
    assert_eq!(mesh.window_total(start.elapsed()).await, sent);

    // Gone for good: what it counted stays in the window.
    mesh.kill_sidecar().await;
    assert_eq!(mesh.window_total(start.elapsed()).await, sent);
}

// === Prometheus ===

struct Prometheus {
    _process: Process,
    _dir: TempDir,
    url: String,
}

impl Prometheus {
    /// A real Prometheus listening on `listen` (a free loopback port), scraping `target` every
    /// second, its data in a temp dir.
    fn start(target: SocketAddr, listen: SocketAddr) -> Prometheus {
        let dir = TempDir::new("telemetry-prometheus");
        let config = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}
scrape_configs:
- job_name: graymesh-proxies
  scrape_interval: 1s
  scrape_timeout: 1s
  static_configs: [{{targets: ['{target}']}}]
"
        );
        let config_file = dir.0.join("prometheus.yml");
        std::fs::write(&config_file, config).unwrap();
        let process = spawn(
            "prometheus",
            &[
                format!("--config.file={}", config_file.display()),
                format!("--storage.tsdb.path={}", dir.0.join("data").display()),
                format!("--web.listen-address={listen}"),
            ],
        );
        Prometheus {
            _process: process,
            _dir: dir,
            url: format!("http://{listen}"),
        }
    }

    /// The value of an instant query Prometheus answers directly (0 for an empty vector).
    async fn value(&self, http: &Http1Client, query: &str) -> Option<f64> {
        let url = format!("{}/api/v1/query?query={}", self.url, encode(query));
        let answer = http.get(&url, &[]).await.ok()?.json().ok()?;
        match answer["data"]["result"].as_array()?.as_slice() {
            [] => Some(0.0),
            [one] => one["value"][1].as_str()?.parse().ok(),
            _ => None,
        }
    }
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `measured` within `percent` of `expected` (and a few requests, for tiny counts).
fn close(measured: u64, expected: u64, percent: f64) -> bool {
    let slack = (expected as f64 * percent / 100.0).max(3.0);
    (measured as f64 - expected as f64).abs() <= slack
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prometheus_source_agrees_with_the_requests_sent() {
    let client_admin = free();
    let prometheus_port = free();
    let prometheus_url = format!("http://{prometheus_port}");
    let args = ["--prometheus".to_string(), prometheus_url.clone()];
    let mesh = Mesh::start("telemetry-prom", &args, client_admin).await;

    // No Prometheus yet: the source's error names the server and the query.
    let query = "?host=reviews&version=v2&window=10s";
    let (status, answer) = mesh.telemetryz(query).await;
    assert_eq!(status, 502, "{answer}");
    let error = answer["window"]["error"].as_str().unwrap();
    assert!(
        error.contains(&prometheus_url) && error.contains("graymesh_proxy_requests_total"),
        "{error}"
    );

    let prometheus = Prometheus::start(client_admin, prometheus_port);
    eventually(Duration::from_secs(20), "Prometheus ready", || async {
        let url = format!("{}/-/ready", prometheus.url);
        mesh.http
            .get(&url, &[])
            .await
            .is_ok_and(|r| r.status == 200)
    })
    .await;
    let warm = mesh.warm_up().await;
    let total = r#"sum(graymesh_proxy_requests_total{direction="outbound"})"#;
    eventually(
        Duration::from_secs(20),
        "Prometheus to scrape the warm-up",
        || async { prometheus.value(&mesh.http, total).await == Some(warm as f64) },
    )
    .await;
    let before = (mesh.v1.requests().total, mesh.v2.requests().total);
    let load_start = Instant::now();
    // About 4 s: several of Prometheus' scrapes.
    let report = mesh.load(400, 2).await;
    assert_eq!(report.abandoned, 0, "{report:?}");
    let all = (warm + report.sent) as f64;
    eventually(
        Duration::from_secs(10),
        "Prometheus to scrape the load",
        || async { prometheus.value(&mesh.http, total).await == Some(all) },
    )
    .await;
    // From just before the load (the scrape before it) to now.
    let window = load_start.elapsed() + Duration::from_millis(500);
    let v1 = mesh.window("v1", window).await;
    let v2 = mesh.window("v2", window).await;

    let sent_v1 = mesh.v1.requests().total - before.0;
    let sent_v2 = mesh.v2.requests().total - before.1;
    // increase() extrapolates to the window's edges: counts agree to within 20%.
    assert!(
        close(count(&v1, "requests"), sent_v1, 20.0),
        "v1 {v1}, sent {sent_v1}"
    );
    assert!(
        close(count(&v2, "requests"), sent_v2, 20.0),
        "v2 {v2}, sent {sent_v2}"
    );
    assert_eq!(count(&v1, "server_errors"), 0, "v1 {v1}");
    // Both of v2's series are scaled alike, so its error rate is what the client saw.
    let seen_v2_errors = report.failed as f64 * 100.0 / sent_v2 as f64;
    let v2_rate = 100.0 - v2["success_rate_percent"].as_f64().unwrap();
    assert!(
        (v2_rate - seen_v2_errors).abs() <= 5.0 && (35.0..=65.0).contains(&v2_rate),
        "v2 {v2}: error rate {v2_rate}%, the client saw {seen_v2_errors}%"
    );
    assert!(v1["p99_ms"].as_f64().is_some_and(|ms| ms > 0.0), "v1 {v1}");

    // The overview: the versions Prometheus has traffic for, and its view of the sidecar.
    let (status, overview) = mesh.telemetryz("").await;
    assert_eq!(status, 200, "{overview}");
    assert_eq!(overview["source"], "prometheus", "{overview}");
    assert_eq!(
        overview["prometheus_url"],
        prometheus_url.as_str(),
        "{overview}"
    );
    // Requests answered before the proxy had a route (no destination yet) form a series with
    // empty service and version labels; they belong to no version.
    let versions: Vec<(&str, &str, u64)> = overview["versions"]
        .as_array()
        .unwrap_or_else(|| panic!("{overview}"))
        .iter()
        .filter(|v| v["service"] != "")
        .map(|v| {
            let requests = v["window"]["requests"].as_u64().unwrap_or(0);
            (
                v["service"].as_str().unwrap(),
                v["version"].as_str().unwrap(),
                requests,
            )
        })
        .collect();
    assert_eq!(versions.len(), 2, "{overview}");
    assert!(
        versions
            .iter()
            .zip(["v1", "v2"])
            .all(|((s, v, n), want)| *s == FQDN && *v == want && *n > 0),
        "{overview}"
    );
    let target = &overview["prometheus_targets"][0];
    assert_eq!(target["health"], "up", "{overview}");
    let scrape_url = target["scrape_url"].as_str().unwrap();
    assert!(scrape_url.contains(&client_admin.to_string()), "{overview}");
}
