//! `graymesh demo`: the whole product on one machine from one command — pilot on the embedded
//! store, two services (`reviews`, `ratings`) with a v1 and a v2 each behind its own sidecar, a
//! caller's sidecar with traffic through it, and two rollouts: `reviews` (a healthy v2) is
//! promoted by its analysis, `ratings` (a v2 answering half its requests with 500) is rolled
//! back by its analysis. Every decision is printed as it is taken; `--once -o json` ends with a
//! JSON summary per rollout (outcome, steps, requests, failures, rollback latency).
//!
//! The apps are the testkit's fake app, in this process; pilot and the sidecars are this same
//! binary as child processes, on loopback, killed when the demo ends. The Applications are
//! `examples/demo/*.yaml`, compiled in.

mod traffic;

use crate::cli_http::{get_json, send_json};
use anyhow::Context as _;
use clap::Args;
use graymesh_testkit::{FakeApp, FakeAppHandle, Http1Client};
use serde_json::{json, Value};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};
use traffic::{all_to_after, count, Traffic};

const REVIEWS_APP: &str = include_str!("../../../examples/demo/reviews.yaml");
const RATINGS_APP: &str = include_str!("../../../examples/demo/ratings.yaml");
/// The demo gives up when the rollouts have not ended within this.
const ROLLOUT_BOUND: Duration = Duration::from_secs(180);

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Run the two rollouts to their end, print a summary and exit (0 when reviews was
    /// promoted and ratings rolled back).
    #[arg(long)]
    pub once: bool,
    #[arg(short = 'o', long = "output", default_value = "text", value_parser = ["text", "json"])]
    pub output: String,
    /// pilot's xDS address (the default lets `graymesh rollout …` reach the demo's pilot).
    #[arg(long, default_value = "127.0.0.1:15010")]
    pub xds_addr: SocketAddr,
    /// pilot's admin address.
    #[arg(long, default_value = "127.0.0.1:15014")]
    pub http_addr: SocketAddr,
    /// Requests per second sent to each service.
    #[arg(long, default_value_t = 100)]
    pub rate: u32,
}

/// Child processes, killed when the demo ends however it ends.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct Demo {
    args: DemoArgs,
    dir: PathBuf,
    children: Children,
    started: Instant,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let dir = std::env::temp_dir().join(format!("graymesh-demo-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("config"))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let mut demo = Demo {
        args,
        dir,
        children: Children(Vec::new()),
        started: Instant::now(),
    };
    let outcome = demo.run().await;
    drop(demo.children);
    if outcome.is_ok() {
        let _ = std::fs::remove_dir_all(&demo.dir);
    } else {
        // The logs named in the error stay for a look.
        eprintln!("the demo's logs are kept in {}", demo.dir.display());
    }
    outcome
}

impl Demo {
    async fn run(&mut self) -> anyhow::Result<ExitCode> {
        self.start_pilot().await?;
        let server = format!("http://{}", self.args.http_addr);
        let apps = self.start_services(&server).await?;
        let (reviews_port, ratings_port) = self.start_caller().await?;
        let traffic = [
            Traffic::start("reviews", reviews_port, self.args.rate),
            Traffic::start("ratings", ratings_port, self.args.rate),
        ];
        self.say(&format!(
            "productpage's sidecar sends {} req/s to each service; applying the Applications reviews (v2 healthy) and ratings (v2 answers 50% errors)",
            self.args.rate
        ));
        let body = format!("{REVIEWS_APP}\n---\n{RATINGS_APP}");
        let (status, answer) = send_json(
            &server,
            hyper::Method::POST,
            "/v1/config",
            Some(body.into_bytes()),
        )
        .await?;
        anyhow::ensure!(
            status.is_success(),
            "pilot refused the demo's Applications: {answer}"
        );
        let views = self.follow(&server, &traffic).await?;
        let summary = summarize(&views, &traffic);
        for t in &traffic {
            if self.args.once {
                t.stop();
            }
        }
        let expected = views
            .iter()
            .any(|v| v["name"] == "reviews" && v["phase"] == "Promoted")
            && views
                .iter()
                .any(|v| v["name"] == "ratings" && v["phase"] == "RolledBack");
        if self.args.output == "json" {
            println!("{}", serde_json::to_string_pretty(&summary)?);
        } else {
            self.print_summary(&summary);
        }
        if !self.args.once {
            self.say(&format!(
                "the mesh keeps running with its traffic: try `graymesh rollout list`, `graymesh get vs -o yaml`, `curl http://{reviews_port}/reviews/1`; Ctrl-C ends the demo"
            ));
            crate::pilot::shutdown_signal().await;
            for t in &traffic {
                t.stop();
            }
        }
        drop(apps);
        Ok(if expected {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }

    /// Progress lines go to stderr in JSON mode, so stdout holds the summary only.
    fn say(&self, line: &str) {
        let at = self.started.elapsed().as_secs_f64();
        if self.args.output == "json" {
            eprintln!("[{at:6.2}s] {line}");
        } else {
            println!("[{at:6.2}s] {line}");
        }
    }

    fn spawn(&mut self, name: &str, args: &[String]) -> anyhow::Result<()> {
        let exe = std::env::current_exe().context("cannot find the graymesh binary")?;
        let log = std::fs::File::create(self.dir.join(format!("{name}.log")))?;
        let child = Command::new(exe)
            .args(args)
            .env(
                "GRAYMESH_LOG",
                std::env::var("GRAYMESH_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        self.children.0.push(child);
        Ok(())
    }

    async fn start_pilot(&mut self) -> anyhow::Result<()> {
        let config = self.dir.join("config");
        let args = [
            "pilot".to_string(),
            "--config-dir".into(),
            config.display().to_string(),
            "--xds-addr".into(),
            self.args.xds_addr.to_string(),
            "--http-addr".into(),
            self.args.http_addr.to_string(),
        ];
        self.spawn("pilot", &args)?;
        let url = format!("http://{}/ready", self.args.http_addr);
        let log = self.dir.join("pilot.log");
        wait_until(Duration::from_secs(20), || async {
            Http1Client::new()
                .get(&url, &[])
                .await
                .is_ok_and(|r| r.status == 200)
        })
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "pilot did not become ready on {} (is the port taken? {}: {})",
                self.args.http_addr,
                log.display(),
                tail(&log)
            )
        })?;
        self.say(&format!(
            "pilot ready: xDS {}, admin {} (config in {})",
            self.args.xds_addr,
            self.args.http_addr,
            config.display()
        ));
        Ok(())
    }

    /// reviews v1/v2 and ratings v1/v2 (v2 faulty), each fronted by a sidecar that registers it.
    async fn start_services(&mut self, server: &str) -> anyhow::Result<Vec<FakeAppHandle>> {
        let mut apps = Vec::new();
        for (service, version, error_rate) in [
            ("reviews", "v1", 0.0),
            ("reviews", "v2", 0.0),
            ("ratings", "v1", 0.0),
            ("ratings", "v2", 0.5),
        ] {
            let app = FakeApp::builder()
                .service(service)
                .version(version)
                .error_rate(error_rate)
                .start()
                .await?;
            let name = format!("{service}-{version}");
            let args = [
                "proxy",
                "--pilot",
                &self.args.xds_addr.to_string(),
                "--node-id",
                &name,
                "--service",
                service,
                "--service-version",
                version,
                "--app-port",
                &app.addr().port().to_string(),
                "--service-port",
                "9080",
                "--inbound-port",
                &free_port()?.to_string(),
                "--outbound-addr",
                &format!("127.0.0.1:{}", free_port()?),
                "--admin-addr",
                &format!("127.0.0.1:{}", free_port()?),
                "--registry",
                server,
                "--health-path",
                "/healthz",
                "--concurrency",
                "1",
            ]
            .map(String::from);
            self.spawn(&name, &args)?;
            apps.push(app);
        }
        let url = format!("{server}/v1/registry/instances");
        wait_until(Duration::from_secs(30), || async {
            get_json(server, "/v1/registry/instances")
                .await
                .is_ok_and(|v| v.as_array().is_some_and(|a| a.len() == 4))
        })
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "the four sidecars did not register their apps at {url} (logs in {})",
                self.dir.display()
            )
        })?;
        self.say("reviews v1, v2 and ratings v1, v2 (v2: 50% errors) are up, each behind a sidecar that registered it");
        Ok(apps)
    }

    /// productpage's sidecar: one local port per upstream. Returns (reviews, ratings) ports.
    async fn start_caller(&mut self) -> anyhow::Result<(SocketAddr, SocketAddr)> {
        let reviews = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let ratings = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let args = [
            "proxy",
            "--pilot",
            &self.args.xds_addr.to_string(),
            "--node-id",
            "productpage-1",
            "--no-register",
            "--concurrency",
            "1",
            "--upstream",
            &format!("reviews:9080={reviews}"),
            "--upstream",
            &format!("ratings:9080={ratings}"),
            "--outbound-addr",
            &format!("127.0.0.1:{}", free_port()?),
            "--admin-addr",
            &format!("127.0.0.1:{}", free_port()?),
        ]
        .map(String::from);
        self.spawn("productpage-sidecar", &args)?;
        // Both versions of both services answer through it: registered, pushed, routed.
        let last = std::sync::Mutex::new(String::new());
        wait_until(Duration::from_secs(30), || async {
            let mut seen = std::collections::BTreeSet::new();
            let mut failed = None;
            let http = Http1Client::new().with_timeout(Duration::from_secs(1));
            for _ in 0..20 {
                for (service, addr) in [("reviews", reviews), ("ratings", ratings)] {
                    match http.get(&format!("http://{addr}/"), &[]).await {
                        Ok(r) => match r.version {
                            Some(version) => {
                                seen.insert(format!("{service} {version}"));
                            }
                            None => failed = Some(format!("{service}: status {}", r.status)),
                        },
                        Err(e) => failed = Some(format!("{service}: {e}")),
                    }
                }
            }
            if let Ok(mut last) = last.lock() {
                *last = format!("answered: {seen:?}; last failure: {failed:?}");
            }
            seen.len() == 4
        })
        .await
        .map_err(|_| {
            let last = last.lock().map(|l| l.clone()).unwrap_or_default();
            anyhow::anyhow!(
                "productpage's sidecar does not reach both versions of both services ({last}); its log: {}; pilot's: {}",
                tail(&self.dir.join("productpage-sidecar.log")),
                tail(&self.dir.join("pilot.log")),
            )
        })?;
        self.say(&format!(
            "productpage's sidecar routes reviews on {reviews} and ratings on {ratings}"
        ));
        Ok((reviews, ratings))
    }

    /// Print every decision as it comes until both rollouts ended; their last views.
    async fn follow(&self, server: &str, traffic: &[Traffic; 2]) -> anyhow::Result<Vec<Value>> {
        let mut printed: std::collections::BTreeMap<String, usize> = Default::default();
        let deadline = Instant::now() + ROLLOUT_BOUND;
        let mut last_traffic_line = Instant::now();
        loop {
            let list = get_json(server, "/v1/rollouts").await?;
            let views = list.as_array().cloned().unwrap_or_default();
            for view in &views {
                let name = view["name"].as_str().unwrap_or_default().to_string();
                let decisions = view["decisions"].as_array().cloned().unwrap_or_default();
                let seen = printed.entry(name.clone()).or_default();
                for d in decisions.iter().skip(*seen) {
                    self.say(&format!(
                        "{name:<8} step {} {:<16} {:<8} {}",
                        d["step"],
                        step_name(view, d["step"].as_u64()),
                        d["action"].as_str().unwrap_or_default(),
                        d["reason"].as_str().unwrap_or_default()
                    ));
                }
                *seen = decisions.len();
                if let Some(e) = view["error"].as_str() {
                    self.say(&format!("{name:<8} ERROR {e}"));
                }
            }
            if last_traffic_line.elapsed() >= Duration::from_secs(5) {
                last_traffic_line = Instant::now();
                self.say(&traffic_line(traffic));
            }
            let ended = views.len() == 2
                && views
                    .iter()
                    .all(|v| matches!(v["phase"].as_str(), Some("Promoted" | "RolledBack")));
            if ended {
                // a second of traffic after the end, so the rollback latency can be read
                tokio::time::sleep(Duration::from_millis(1500)).await;
                return Ok(views);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the rollouts did not end within {ROLLOUT_BOUND:?}: {list}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn print_summary(&self, summary: &Value) {
        for r in summary["rollouts"].as_array().into_iter().flatten() {
            let latency = r["rollbackLatencyMs"].as_u64().map_or(String::new(), |l| {
                format!(
                    ", every new request on {} {l} ms after the decision",
                    r["stableVersion"].as_str().unwrap_or("")
                )
            });
            self.say(&format!(
                "{}: {} after {} steps in {:.1}s; {} requests, {} failed {}{latency}",
                r["name"].as_str().unwrap_or(""),
                r["outcome"].as_str().unwrap_or(""),
                r["stepsTaken"],
                r["durationSeconds"].as_f64().unwrap_or(0.0),
                r["requests"]["sent"],
                r["requests"]["failed"],
                r["requests"]["failed_by_version"]
            ));
        }
    }
}

fn step_name(view: &Value, step: Option<u64>) -> String {
    step.and_then(|i| view["stepNames"].get(usize::try_from(i).ok()?))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn traffic_line(traffic: &[Traffic; 2]) -> String {
    let parts: Vec<String> = traffic
        .iter()
        .map(|t| {
            let c = count(&t.snapshot());
            let versions: Vec<String> = c
                .by_version
                .iter()
                .map(|(v, n)| format!("{v} {n}"))
                .collect();
            format!(
                "{}: {} ({} failed)",
                t.service,
                versions.join(" "),
                c.failed
            )
        })
        .collect();
    format!("traffic so far — {}", parts.join(" | "))
}

/// Per rollout: outcome, steps taken, requests and failures, rollback latency.
fn summarize(views: &[Value], traffic: &[Traffic; 2]) -> Value {
    let rollouts: Vec<Value> = views
        .iter()
        .map(|view| {
            let name = view["name"].as_str().unwrap_or_default();
            let samples = traffic
                .iter()
                .find(|t| t.service == view["service"])
                .map(|t| t.snapshot())
                .unwrap_or_default();
            let decisions = view["decisions"].as_array().cloned().unwrap_or_default();
            let entered = decisions
                .iter()
                .filter(|d| {
                    matches!(
                        d["action"].as_str(),
                        Some("start" | "advance" | "promote" | "rollback")
                    )
                })
                .count();
            let first = decisions
                .first()
                .and_then(|d| d["atMs"].as_u64())
                .unwrap_or(0);
            let last = decisions
                .last()
                .and_then(|d| d["atMs"].as_u64())
                .unwrap_or(first);
            let rolled_back = view["phase"] == "RolledBack";
            let stable = if rolled_back {
                &view["oldVersion"]
            } else {
                &view["newVersion"]
            };
            let latency = decisions
                .iter()
                .rev()
                .find(|d| d["action"] == "rollback")
                .and_then(|d| d["atMs"].as_u64())
                .and_then(|at| all_to_after(&samples, stable.as_str().unwrap_or(""), at, 1000));
            json!({
                "name": name,
                "service": view["service"],
                "outcome": view["phase"],
                "stableVersion": stable,
                "stepsTaken": entered,
                "durationSeconds": (last.saturating_sub(first)) as f64 / 1000.0,
                "requests": count(&samples),
                "rollbackLatencyMs": latency,
                "reason": decisions.last().map_or(Value::Null, |d| d["reason"].clone()),
            })
        })
        .collect();
    json!({ "rollouts": rollouts })
}

async fn wait_until<F: std::future::Future<Output = bool>>(
    limit: Duration,
    mut check: impl FnMut() -> F,
) -> Result<(), ()> {
    let start = Instant::now();
    while !check().await {
        if start.elapsed() > limit {
            return Err(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The last lines of a log, for an error message.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(5).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" / ")
}
