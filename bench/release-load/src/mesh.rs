//! The mesh under test, as users run it: two fake apps (`reviews` v1 and v2, in this process),
//! `graymesh pilot --config-dir` with a ServiceEntry naming them, and N client sidecars
//! (`graymesh proxy --no-register --upstream reviews:9080=127.0.0.1:P`), each a process killed
//! when the mesh is dropped. Plus pilot's API as the CLI uses it (apply, rollout view, commands).

use anyhow::{bail, Context as _};
use graymesh_testkit::{FakeApp, FakeAppHandle, Http1Client};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

pub struct Mesh {
    pub pilot: PilotApi,
    pub sidecars: Vec<Sidecar>,
    pub pilot_process: Child,
    _apps: (FakeAppHandle, FakeAppHandle),
}

pub struct Sidecar {
    /// Where the app would call `reviews:9080`.
    pub local: SocketAddr,
    pub admin: SocketAddr,
    pub process: Child,
}

/// Counters of all sidecars together, from their `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProxyCounters {
    /// Attempts the sidecars retried (the routes carry Istio's default retry policy).
    pub retries: f64,
    /// Routing tables installed (`graymesh_proxy_config_version` goes up by one per install).
    pub tables: f64,
}

pub struct MeshPlan<'a> {
    pub graymesh: &'a Path,
    pub dir: &'a Path,
    pub logs: &'a Path,
    pub sidecars: usize,
    pub app_error_rate: f64,
    pub timeout: Duration,
}

impl Mesh {
    pub async fn start(plan: MeshPlan<'_>) -> anyhow::Result<Mesh> {
        let v1 = fake_app("v1", plan.app_error_rate).await?;
        let v2 = fake_app("v2", plan.app_error_rate).await?;
        std::fs::create_dir_all(plan.dir)?;
        std::fs::create_dir_all(plan.logs)?;
        std::fs::write(
            plan.dir.join("services.yaml"),
            service_entry(v1.addr(), v2.addr()),
        )?;
        let (xds, http) = (free()?, free()?);
        let dir = plan.dir.display().to_string();
        let args = [
            "pilot",
            "--config-dir",
            &dir,
            "--xds-addr",
            &xds.to_string(),
            "--http-addr",
            &http.to_string(),
        ];
        let pilot_process = spawn(plan.graymesh, &args, &plan.logs.join("pilot.log"))?;
        let pilot = PilotApi::new(http);
        pilot.wait_ready(plan.timeout).await?;
        let mut sidecars = Vec::new();
        for i in 0..plan.sidecars {
            sidecars.push(Sidecar::start(&plan, xds, i)?);
        }
        let probe = Http1Client::new().with_timeout(Duration::from_secs(2));
        for sidecar in &sidecars {
            let url = format!("http://{}/", sidecar.local);
            wait(
                plan.timeout,
                &format!("a request through {url}"),
                || async { probe.get(&url, &[]).await.is_ok_and(|r| r.status == 200) },
            )
            .await?;
        }
        Ok(Mesh {
            pilot,
            sidecars,
            pilot_process,
            _apps: (v1, v2),
        })
    }

    pub fn locals(&self) -> Vec<SocketAddr> {
        self.sidecars.iter().map(|s| s.local).collect()
    }

    pub async fn proxy_counters(&self) -> anyhow::Result<ProxyCounters> {
        let http = Http1Client::new().with_timeout(Duration::from_secs(5));
        let mut sum = ProxyCounters::default();
        for sidecar in &self.sidecars {
            let text = http
                .get(&format!("http://{}/metrics", sidecar.admin), &[])
                .await?
                .text();
            sum.retries += metric(&text, "graymesh_proxy_retries_total");
            sum.tables += metric(&text, "graymesh_proxy_config_version");
        }
        Ok(sum)
    }

    /// Pids of pilot and the sidecars, for CPU figures.
    pub fn pids(&self) -> (Option<u32>, Vec<u32>) {
        (
            self.pilot_process.id(),
            self.sidecars
                .iter()
                .filter_map(|s| s.process.id())
                .collect(),
        )
    }
}

impl Sidecar {
    fn start(plan: &MeshPlan<'_>, xds: SocketAddr, i: usize) -> anyhow::Result<Sidecar> {
        let (local, outbound, admin) = (free()?, free()?, free()?);
        let node = format!("productpage-{i}");
        let upstream = format!("reviews:9080={local}");
        let args = [
            "proxy",
            "--pilot",
            &xds.to_string(),
            "--node-id",
            &node,
            "--no-register",
            "--concurrency",
            "1",
            "--upstream",
            &upstream,
            "--outbound-addr",
            &outbound.to_string(),
            "--admin-addr",
            &admin.to_string(),
        ];
        let log = plan.logs.join(format!("proxy-{i}.log"));
        let process = spawn(plan.graymesh, &args, &log)?;
        Ok(Sidecar {
            local,
            admin,
            process,
        })
    }
}

/// The value of an unlabelled metric in Prometheus text (0 when absent).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .find_map(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn fake_app(version: &str, error_rate: f64) -> anyhow::Result<FakeAppHandle> {
    FakeApp::builder()
        .service("reviews")
        .version(version)
        .error_rate(error_rate)
        .start()
        .await
}

fn service_entry(v1: SocketAddr, v2: SocketAddr) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews}}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {}}}, labels: {{version: v1}}}}
  - {{address: 127.0.0.1, ports: {{http: {}}}, labels: {{version: v2}}}}
",
        v1.port(),
        v2.port()
    )
}

fn spawn(graymesh: &Path, args: &[&str], log: &PathBuf) -> anyhow::Result<Child> {
    let file = std::fs::File::create(log).with_context(|| log.display().to_string())?;
    Command::new(graymesh)
        .args(args)
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("running {}", graymesh.display()))
}

pub fn free() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Poll `check` every 20 ms until it holds; an error naming `what` after `limit`.
pub async fn wait<F: std::future::Future<Output = bool>>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> F,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    while !check().await {
        if start.elapsed() > limit {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(start.elapsed())
}

// === impl PilotApi ===

/// Pilot's admin API, as `graymesh apply` and `graymesh rollout …` use it.
#[derive(Clone)]
pub struct PilotApi {
    base: String,
    http: Http1Client,
}

impl PilotApi {
    fn new(addr: SocketAddr) -> Self {
        PilotApi {
            base: format!("http://{addr}"),
            http: Http1Client::new().with_timeout(Duration::from_secs(10)),
        }
    }

    async fn wait_ready(&self, limit: Duration) -> anyhow::Result<()> {
        let url = format!("{}/ready", self.base);
        wait(limit, "pilot /ready", || async {
            self.http
                .get(&url, &[])
                .await
                .is_ok_and(|r| r.status == 200)
        })
        .await
        .map(drop)
    }

    /// `graymesh apply`: YAML text, all or nothing.
    pub async fn apply(&self, yaml: &str) -> anyhow::Result<()> {
        let url = format!("{}/v1/config", self.base);
        let reply = self.http.post(&url, &[], yaml.to_string()).await?;
        if reply.status != 200 {
            bail!("apply: {} {}", reply.status, reply.text());
        }
        Ok(())
    }

    /// `graymesh rollout status -o json`.
    pub async fn rollout(&self) -> anyhow::Result<serde_json::Value> {
        let url = format!("{}/v1/rollouts/default/reviews", self.base);
        let reply = self.http.get(&url, &[]).await?;
        if reply.status != 200 {
            bail!("rollout status: {} {}", reply.status, reply.text());
        }
        reply.json()
    }

    /// `graymesh rollout <command> reviews`.
    pub async fn command(&self, command: &str) -> anyhow::Result<()> {
        let url = format!("{}/v1/rollouts/default/reviews/{command}", self.base);
        let reply = self.http.post(&url, &[], Vec::new()).await?;
        if reply.status != 200 {
            bail!("rollout {command}: {} {}", reply.status, reply.text());
        }
        Ok(())
    }

    /// Wait until the rollout's last decision is `action`, taken at or after `since_ms` (pilot's
    /// clock is this machine's); returns the view.
    pub async fn wait_decision(
        &self,
        action: &str,
        since_ms: u64,
        limit: Duration,
    ) -> anyhow::Result<serde_json::Value> {
        let start = Instant::now();
        loop {
            let view = self.rollout().await?;
            let last = view["decisions"].as_array().and_then(|d| d.last());
            if last.is_some_and(|d| {
                d["action"] == action && d["atMs"].as_u64().is_some_and(|at| at >= since_ms)
            }) {
                return Ok(view);
            }
            if start.elapsed() > limit {
                bail!("no {action:?} decision within {limit:?}: {view:#}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
