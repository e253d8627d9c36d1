//! Gray releases end to end, as users run them: `graymesh pilot` with its release controller, a
//! client sidecar under continuous load, two versions of a service (testkit fake apps), an OAM
//! Application applied with `graymesh apply`, and the `graymesh rollout` commands. Every request
//! of the load must succeed through every step, gate, restart and rollback.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test binary: panicking on the unexpected is the point

mod support;

use graymesh_testkit::{FakeApp, FakeAppHandle, Http1Client};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{eventually, temp_dir, ClientProxy, Pilot};

/// `reviews` on 9080 with a v1 and a v2 endpoint (the two fake apps).
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

/// Where a user's sticky key travels: the trait's `hashKey`, and the request header carrying it.
#[derive(Clone, Copy, Debug)]
enum Sticky {
    Header,
    /// The W3C baggage member `user-id`.
    Baggage,
}

impl Sticky {
    fn hash_key(self) -> &'static str {
        match self {
            Sticky::Header => "{header: x-user-id}",
            Sticky::Baggage => "{baggage: user-id}",
        }
    }

    /// The header of `user`'s request `r`. The other baggage members change from request to
    /// request, so only the member can keep the user on one version.
    fn header(self, user: &str, r: usize) -> (&'static str, String) {
        match self {
            Sticky::Header => ("x-user-id", user.to_string()),
            Sticky::Baggage => (
                "baggage",
                format!("tenant=acme;tier=gold, user-id={user};src=web, request={r}"),
            ),
        }
    }
}

fn application(key: Sticky, steps: &str) -> String {
    let hash_key = key.hash_key();
    format!(
        "apiVersion: core.oam.dev/v1beta1
kind: Application
metadata: {{name: reviews}}
spec:
  components:
  - name: reviews
    type: webservice
    properties: {{host: reviews, port: 9080, version: v1}}
    traits:
    - type: canary-traffic
      properties:
        versions: {{oldVersion: reviews, newVersion: reviews-v2}}
        header: {{matchRule: exact, key: x-canary, value: 'true'}}
        hashKey: {hash_key}
  - name: reviews-v2
    type: webservice
    properties: {{host: reviews, port: 9080, version: v2}}
  workflow:
    steps:
{steps}"
    )
}

struct Mesh {
    dir: std::path::PathBuf,
    pilot: Pilot,
    proxy: ClientProxy,
    _apps: (FakeAppHandle, FakeAppHandle),
}

async fn mesh(name: &str) -> Mesh {
    let dir = temp_dir(name);
    let v1 = FakeApp::builder()
        .service("reviews")
        .version("v1")
        .start()
        .await
        .unwrap();
    let v2 = FakeApp::builder()
        .service("reviews")
        .version("v2")
        .start()
        .await
        .unwrap();
    std::fs::write(
        dir.join("services.yaml"),
        service_entry(v1.addr(), v2.addr()),
    )
    .unwrap();
    let pilot = Pilot::start(&dir, &[]).await;
    let proxy = ClientProxy::start(&pilot, "productpage-1", "reviews:9080").await;
    let http = Http1Client::new().with_timeout(Duration::from_secs(2));
    eventually(
        Duration::from_secs(20),
        "a request through the proxy",
        || async {
            http.get(&format!("http://{}/", proxy.local), &[])
                .await
                .is_ok_and(|r| r.status == 200)
        },
    )
    .await;
    Mesh {
        dir,
        pilot,
        proxy,
        _apps: (v1, v2),
    }
}

fn apply(pilot: &Pilot, dir: &Path, steps: &str) {
    apply_keyed(pilot, dir, Sticky::Header, steps);
}

fn apply_keyed(pilot: &Pilot, dir: &Path, key: Sticky, steps: &str) {
    let file = dir.join("..").join(format!(
        "{}-app.yaml",
        dir.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&file, application(key, steps)).unwrap();
    pilot.cli_ok(&["apply", "-f", file.to_str().unwrap()]);
}

async fn rollout(pilot: &Pilot) -> serde_json::Value {
    let http = Http1Client::new().with_timeout(Duration::from_secs(5));
    let reply = http
        .get(
            &format!("http://{}/v1/rollouts/default/reviews", pilot.http),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json().unwrap()
}

async fn wait_for_step(pilot: &Pilot, step: u64, phase: &str) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let view = rollout(pilot).await;
        if view["step"] == step && view["phase"] == phase {
            return view;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "rollout never reached step {step} {phase}: {view:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// === the load ===

/// One answer of the load: when it came and which version gave it (`None`: it failed).
#[derive(Clone, Debug)]
struct Sample {
    at: Instant,
    version: Option<String>,
    failure: Option<String>,
}

/// Continuous requests through the proxy from two workers, bounded to 120 s and 400,000 requests.
struct Load {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(target: SocketAddr) -> Load {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let workers = (0..2)
            .map(|_| {
                let (samples, stop) = (samples.clone(), stop.clone());
                tokio::spawn(async move {
                    let http = Http1Client::new().with_timeout(Duration::from_secs(5));
                    let url = format!("http://{target}/reviews/1");
                    while !stop.load(Ordering::Relaxed)
                        && started.elapsed() < Duration::from_secs(120)
                        && samples.lock().unwrap().len() < 400_000
                    {
                        let sample = match http.get(&url, &[]).await {
                            Ok(r) if r.status == 200 => Sample {
                                at: Instant::now(),
                                version: r.version,
                                failure: None,
                            },
                            Ok(r) => Sample {
                                at: Instant::now(),
                                version: None,
                                failure: Some(format!("status {}", r.status)),
                            },
                            Err(e) => Sample {
                                at: Instant::now(),
                                version: None,
                                failure: Some(format!("{e:#}")),
                            },
                        };
                        samples.lock().unwrap().push(sample);
                    }
                })
            })
            .collect();
        Load {
            samples,
            stop,
            workers,
        }
    }

    /// Share of v2 among the answers in the second after `from` is at least a second old.
    async fn v2_share_after(&self, from: Instant) -> (f64, usize) {
        let window_start = from + Duration::from_millis(700);
        let end = window_start + Duration::from_millis(1500);
        tokio::time::sleep_until(end.into()).await;
        let samples = self.samples.lock().unwrap();
        let window: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.at >= window_start && s.at < end)
            .collect();
        let v2 = window
            .iter()
            .filter(|s| s.version.as_deref() == Some("v2"))
            .count();
        (v2 as f64 / window.len().max(1) as f64, window.len())
    }

    /// When every answer started to come from `version` and stayed so for 300 answers.
    async fn all_from(&self, version: &str, since: Instant) -> Duration {
        let start = Instant::now();
        loop {
            {
                let samples = self.samples.lock().unwrap();
                let after: Vec<&Sample> = samples.iter().filter(|s| s.at >= since).collect();
                if let Some(last_other) = after
                    .iter()
                    .rposition(|s| s.version.as_deref() != Some(version))
                {
                    if after.len() - last_other > 300 {
                        return after[last_other + 1].at - since;
                    }
                } else if after.len() > 300 {
                    return Duration::ZERO;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "requests never all went to {version}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            w.await.unwrap();
        }
        Arc::try_unwrap(self.samples).unwrap().into_inner().unwrap()
    }
}

fn assert_no_failures(samples: &[Sample]) {
    let failed: Vec<&Sample> = samples.iter().filter(|s| s.failure.is_some()).collect();
    assert!(
        samples.len() > 1000,
        "too little load to mean anything: {}",
        samples.len()
    );
    assert!(
        failed.is_empty(),
        "{} of {} requests failed, first: {:?}",
        failed.len(),
        samples.len(),
        failed.first()
    );
}

const SHIFTS: &str = "    - name: testers-and-20
      type: canary-rollout-content
      properties:
        traffic: [{revision: reviews, weight: 80}, {revision: reviews-v2, weight: 20}]
    - name: check-20
      type: suspend
    - name: half
      type: canary-rollout-weight
      properties: {traffic: [{revision: reviews, weight: 50}, {revision: reviews-v2, weight: 50}]}
    - name: check-50
      type: suspend
    - name: done
      type: promote
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_and_weight_then_a_gate_then_rollback_under_load_with_no_failed_request() {
    let m = mesh("rollout-back").await;
    let load = Load::start(m.proxy.local);
    apply(&m.pilot, &m.dir, SHIFTS);

    let at_gate = wait_for_step(&m.pilot, 1, "Progressing").await;
    assert_eq!(at_gate["waitingFor"], "`graymesh rollout resume`");
    assert_eq!(at_gate["contentMatch"], "header x-canary = \"true\"");
    let (share, n) = load.v2_share_after(Instant::now()).await;
    assert!(
        (share - 0.20).abs() < 0.07,
        "v2 share at 80/20: {share} over {n}"
    );
    // header AND weight on one service: testers always reach v2
    let http = Http1Client::new();
    for _ in 0..30 {
        let r = http
            .get(
                &format!("http://{}/", m.proxy.local),
                &[("x-canary", "true")],
            )
            .await
            .unwrap();
        assert_eq!(r.version.as_deref(), Some("v2"));
    }

    m.pilot.cli_ok(&["rollout", "resume", "reviews"]);
    wait_for_step(&m.pilot, 3, "Progressing").await;
    let (share, n) = load.v2_share_after(Instant::now()).await;
    assert!(
        (share - 0.50).abs() < 0.08,
        "v2 share at 50/50: {share} over {n}"
    );

    let commanded = Instant::now();
    m.pilot.cli_ok(&["rollout", "rollback", "reviews"]);
    let latency = load.all_from("v1", commanded).await;
    eprintln!("rollback: every new request on v1 {latency:?} after the command");
    assert!(
        latency < Duration::from_secs(2),
        "rollback took {latency:?}"
    );
    let view = rollout(&m.pilot).await;
    assert_eq!(view["phase"], "RolledBack");
    assert_eq!(
        view["weights"],
        serde_json::json!([{"version": "v1", "weight": 100}])
    );
    let last = view["decisions"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        (last["action"].as_str(), last["reason"].as_str()),
        (Some("rollback"), Some("rolled back by a user"))
    );
    // a pipeline gating on the rollout sees the rollback
    m.pilot.cli_exits(
        &["rollout", "status", "reviews", "--wait", "--timeout", "5s"],
        1,
    );
    let out = m.pilot.cli(&["rollout", "resume", "reviews"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("was rolled back; nothing to resume"));

    assert_no_failures(&load.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pilot_killed_mid_rollout_resumes_at_the_same_step_and_the_rollout_is_promoted() {
    let mut m = mesh("rollout-restart").await;
    let load = Load::start(m.proxy.local);
    apply(&m.pilot, &m.dir, SHIFTS);
    let before = wait_for_step(&m.pilot, 1, "Progressing").await;
    // the proxy has the step (the store had it first)
    let (share, n) = load.v2_share_after(Instant::now()).await;
    assert!(
        (share - 0.20).abs() < 0.07,
        "v2 share at 80/20: {share} over {n}"
    );

    // pilot dies: the proxy keeps routing with the config it has
    m.pilot.process.kill();
    let (share, n) = load.v2_share_after(Instant::now()).await;
    assert!(
        (share - 0.20).abs() < 0.07,
        "v2 share with pilot gone: {share} over {n}"
    );

    // back on the same ports: the same step, no step taken again
    let (xds, http) = (m.pilot.xds, m.pilot.http);
    m.pilot = Pilot::start_on(&m.dir, xds, http, &[])
        .await
        .expect("pilot restarts on its ports");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after = rollout(&m.pilot).await;
    assert_eq!(after["step"], 1);
    assert_eq!(
        after["decisions"], before["decisions"],
        "a restarted pilot must not redo or add steps"
    );
    let (share, n) = load.v2_share_after(Instant::now()).await;
    assert!(
        (share - 0.20).abs() < 0.07,
        "v2 share after the restart: {share} over {n}"
    );

    m.pilot.cli_ok(&["rollout", "resume", "reviews"]);
    wait_for_step(&m.pilot, 3, "Progressing").await;
    let out = m
        .pilot
        .cli_ok(&["rollout", "promote", "reviews", "-o", "json"]);
    let promoted: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(promoted["phase"], "Promoted");
    m.pilot.cli_exits(
        &["rollout", "status", "reviews", "--wait", "--timeout", "5s"],
        0,
    );
    load.all_from("v2", Instant::now()).await;
    let out = m.pilot.cli(&["get", "vs", "reviews-release", "-o", "json"]);
    let vs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        vs["metadata"]["annotations"]["graymesh.io/rollout-state"],
        "promoted"
    );

    assert_no_failures(&load.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_without_traffic_is_held_by_its_analysis_never_promoted() {
    let m = mesh("rollout-hold").await;
    let load = Load::start(m.proxy.local);
    // v2 gets no traffic at all: every check must hold, however long it runs
    apply(
        &m.pilot,
        &m.dir,
        "    - name: none
      type: canary-rollout-weight
      properties: {traffic: [{revision: reviews, weight: 100}, {revision: reviews-v2, weight: 0}]}
    - name: check
      type: analysis
      properties: {interval: 1s, minRequests: 10, maxFailures: 1, successRate: {min: 99}}
    - name: done
      type: promote
",
    );
    let start = Instant::now();
    let view = loop {
        let view = rollout(&m.pilot).await;
        if view["analysis"]["held"].as_u64().unwrap_or(0) >= 3 {
            break view;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no three holds: {view:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        (view["phase"].as_str(), view["step"].as_u64()),
        (Some("Progressing"), Some(1))
    );
    assert_eq!(
        (
            view["analysis"]["passed"].as_u64(),
            view["analysis"]["failed"].as_u64()
        ),
        (Some(0), Some(0))
    );
    assert!(
        view["analysis"]["lastVerdict"]
            .as_str()
            .unwrap()
            .starts_with("hold: "),
        "{view:#}"
    );
    let v1 = view["stats"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["version"] == "v1")
        .unwrap();
    assert!(
        v1["requests"].as_u64().unwrap() > 10,
        "the baseline is measured: {view:#}"
    );

    // deleting the Application takes its generated objects and its Rollout with it
    m.pilot.cli_ok(&["delete", "application", "reviews"]);
    let http = Http1Client::new();
    eventually(
        Duration::from_secs(10),
        "the generated objects to go",
        || async {
            let url = format!("http://{}/v1/config/rollouts", m.pilot.http);
            let rollouts = http.get(&url, &[]).await.unwrap().json().unwrap();
            let url = format!("http://{}/v1/config/virtualservices", m.pilot.http);
            let services = http.get(&url, &[]).await.unwrap().json().unwrap();
            rollouts["items"].as_array().is_some_and(|a| a.is_empty())
                && services["items"].as_array().is_some_and(|a| a.is_empty())
        },
    )
    .await;
    let left: Vec<String> = std::fs::read_dir(&m.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["services.yaml"]);
    assert_no_failures(&load.stop().await);
}

/// The version each of `users` gets (asked 3 times: it must be the same each time).
async fn versions_of(proxy: SocketAddr, key: Sticky, users: &[String]) -> Vec<String> {
    let http = Http1Client::new().with_timeout(Duration::from_secs(5));
    let mut out = Vec::new();
    for user in users {
        let mut seen = Vec::new();
        for request in 0..3 {
            let (name, value) = key.header(user, request);
            let r = http
                .get(&format!("http://{proxy}/"), &[(name, value.as_str())])
                .await
                .unwrap();
            assert_eq!(r.status, 200);
            seen.push(r.version.unwrap());
        }
        assert!(
            seen.iter().all(|v| *v == seen[0]),
            "user {user} flipped between versions: {seen:?}"
        );
        out.push(seen[0].clone());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_keyed_by_a_header_only_move_to_the_new_version_as_its_weight_grows() {
    users_only_move_to_the_new_version_as_its_weight_grows(Sticky::Header).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_keyed_by_a_baggage_member_only_move_to_the_new_version_as_its_weight_grows() {
    users_only_move_to_the_new_version_as_its_weight_grows(Sticky::Baggage).await;
}

/// With the trait's `hashKey`, 200 users each keep one version per level and only move from v1
/// to v2 as the controller grows the weight 5 -> 20 -> 50 (a step listing v2 first included).
async fn users_only_move_to_the_new_version_as_its_weight_grows(key: Sticky) {
    let m = mesh(&format!("rollout-sticky-{key:?}").to_lowercase()).await;
    apply_keyed(
        &m.pilot,
        &m.dir,
        key,
        "    - name: five
      type: canary-rollout-weight
      properties: {traffic: [{revision: reviews, weight: 95}, {revision: reviews-v2, weight: 5}]}
    - name: gate-5
      type: suspend
    - name: twenty
      type: canary-rollout-weight
      properties: {traffic: [{revision: reviews-v2, weight: 20}, {revision: reviews, weight: 80}]}
    - name: gate-20
      type: suspend
    - name: half
      type: canary-rollout-weight
      properties: {traffic: [{revision: reviews, weight: 50}, {revision: reviews-v2, weight: 50}]}
    - name: gate-50
      type: suspend
    - name: done
      type: promote
",
    );
    let users: Vec<String> = (0..200).map(|i| format!("user-{i}")).collect();
    let mut previous: Option<Vec<String>> = None;
    for (gate, weight) in [(1, 5.0), (3, 20.0), (5, 50.0)] {
        wait_for_step(&m.pilot, gate, "Progressing").await;
        // the proxy follows the store within milliseconds; measure once it has this level
        let start = Instant::now();
        let versions = loop {
            let versions = versions_of(m.proxy.local, key, &users).await;
            let share = 100.0 * versions.iter().filter(|v| *v == "v2").count() as f64 / 200.0;
            if (share - weight).abs() <= 6.0 {
                break versions;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{key:?}: v2 share {share}% at weight {weight}%"
            );
        };
        if let Some(before) = &previous {
            for ((user, was), now) in users.iter().zip(before).zip(&versions) {
                assert!(
                    !(was == "v2" && now == "v1"),
                    "{key:?}: {user} went back from v2 to v1 at {weight}%"
                );
            }
        }
        previous = Some(versions);
        m.pilot.cli_ok(&["rollout", "resume", "reviews"]);
    }
    m.pilot.cli_exits(
        &["rollout", "status", "reviews", "--wait", "--timeout", "5s"],
        0,
    );
}
