//! `release-load`: the gray release benchmark (bench/release.sh).
//!
//! Runs the mesh itself (pilot on a config directory, N client sidecars, the two fake apps in
//! this process) and measures, under load through every sidecar:
//! 1. rollback latency: from `POST …/rollback` at a 50/50 gate to the moment after which every
//!    new request through a sidecar answers v1, per sidecar and the max, over `--rounds` rounds;
//! 2. failed requests during `--shifts` consecutive full shifts 0 → 100 at `--shift-rate` req/s.
//!
//! It only measures (the figures go to stdout and `--json`); every load worker is bounded in
//! requests and time, every wait by `--timeout-s`, the shifts by `--budget-s`. Loopback only.

mod application;
mod client;
mod load;
mod mesh;
mod rollback;
mod shifts;

use clap::Parser;
use load::{Load, LoadPlan};
use mesh::{Mesh, MeshPlan, ProxyCounters};
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
#[command(name = "release-load", about = "graymesh gray release benchmark")]
struct Args {
    /// The graymesh binary (pilot and proxy).
    #[arg(long)]
    graymesh: PathBuf,
    /// Scratch directory: pilot's config directory and every process's log.
    #[arg(long)]
    work: PathBuf,
    #[arg(long, default_value_t = 10)]
    sidecars: usize,
    /// Rollback rounds (0: skip benchmark 1).
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    /// Requests per second through each sidecar during the rollback rounds (one worker each).
    #[arg(long, default_value_t = 200.0)]
    rollback_rate: f64,
    /// Full shifts (0: skip benchmark 2).
    #[arg(long, default_value_t = 100)]
    shifts: usize,
    /// Total requests per second through all sidecars during the shifts.
    #[arg(long, default_value_t = 2500.0)]
    shift_rate: f64,
    /// How long each weight step of a shift holds (a `suspend` gate with this timeout; 0: none).
    #[arg(long, default_value_t = 100)]
    hold_ms: u64,
    /// Keep-alive connections per sidecar during the shifts.
    #[arg(long, default_value_t = 2)]
    shift_workers: usize,
    /// Bound of every wait (pilot ready, a rollout step, a switch to v1).
    #[arg(long, default_value_t = 30)]
    timeout_s: u64,
    /// Bound of the whole shift phase.
    #[arg(long, default_value_t = 900)]
    budget_s: u64,
    /// A control, not a figure: the fraction of answers the fake apps fail (500), to check
    /// that the load counts failures.
    #[arg(long, default_value_t = 0.0)]
    app_error_rate: f64,
    #[arg(long)]
    json: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let limit = Duration::from_secs(args.timeout_s);
    let mesh = Mesh::start(MeshPlan {
        graymesh: &args.graymesh,
        dir: &args.work.join("config"),
        logs: &args.work.join("logs"),
        sidecars: args.sidecars,
        app_error_rate: args.app_error_rate,
        timeout: limit,
    })
    .await?;
    eprintln!(
        "mesh up: pilot, {} sidecars, reviews v1 + v2",
        mesh.sidecars.len()
    );
    let mut out = serde_json::Map::new();
    out.insert("sidecars".into(), json!(args.sidecars));
    if args.rounds > 0 {
        out.insert(
            "rollback".into(),
            rollback_phase(&args, &mesh, limit).await?,
        );
    }
    if args.shifts > 0 {
        out.insert("shifts".into(), shift_phase(&args, &mesh, limit).await?);
    }
    let out = serde_json::Value::Object(out);
    std::fs::write(&args.json, serde_json::to_vec_pretty(&out)?)?;
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

async fn rollback_phase(
    args: &Args,
    mesh: &Mesh,
    limit: Duration,
) -> anyhow::Result<serde_json::Value> {
    // Generous bounds: each round takes about a second.
    let plan = LoadPlan {
        rate_per_worker: args.rollback_rate,
        workers_per_sidecar: 1,
        max_requests: (args.rollback_rate * 20.0 * args.rounds as f64 + 10_000.0) as u64,
        max_duration: Duration::from_secs(20 * args.rounds as u64 + 60),
    };
    let load = Load::start(&mesh.locals(), plan);
    let cpu = Cpu::sample(mesh);
    let counters = mesh.proxy_counters().await?;
    let mut rounds = Vec::new();
    for round in 0..args.rounds {
        let figures = rollback::round(&mesh.pilot, &load, round, limit).await?;
        let worst = figures.switches.iter().map(|s| s.at).max();
        eprintln!(
            "rollback round {round}: every sidecar on v1 after {worst:?} (v2 share before {:.2})",
            figures.v2_share_before
        );
        rounds.push(figures);
    }
    let cpu = cpu.since(mesh);
    let proxies = proxies_since(mesh, counters).await?;
    let (totals, elapsed, failures) = load.stop().await;
    let mut summary = rollback::summary(&rounds);
    summary["proxies"] = proxies;
    summary["load"] = json!({
        "requests": totals.requests(),
        "failed": totals.failed,
        "rate_per_s": totals.requests() as f64 / elapsed.as_secs_f64(),
        "first_failures": failures,
    });
    summary["cpu_s"] = cpu;
    Ok(summary)
}

async fn shift_phase(
    args: &Args,
    mesh: &Mesh,
    limit: Duration,
) -> anyhow::Result<serde_json::Value> {
    let workers = args.sidecars * args.shift_workers;
    let rate_per_worker = args.shift_rate / workers as f64;
    let budget = Duration::from_secs(args.budget_s);
    let plan = LoadPlan {
        rate_per_worker,
        workers_per_sidecar: args.shift_workers,
        max_requests: (rate_per_worker * (args.budget_s + 30) as f64) as u64,
        max_duration: budget + Duration::from_secs(30),
    };
    let load = Load::start(&mesh.locals(), plan);
    // A second of load before the first shift, and one after the last: requests in flight
    // across the first and last config change count too.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu = Cpu::sample(mesh);
    let counters = mesh.proxy_counters().await?;
    let deadline = Instant::now() + budget;
    let shifts = shifts::run(
        &mesh.pilot,
        &load,
        args.shifts,
        args.rounds,
        args.hold_ms,
        limit,
        deadline,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu = cpu.since(mesh);
    let proxies = proxies_since(mesh, counters).await?;
    let (totals, elapsed, failures) = load.stop().await;
    let shifts = shifts?;
    let mut summary = shifts::summary(&shifts, &totals, elapsed, &failures);
    summary["proxies"] = proxies;
    summary["cpu_s"] = cpu;
    Ok(summary)
}

async fn proxies_since(mesh: &Mesh, before: ProxyCounters) -> anyhow::Result<serde_json::Value> {
    let now = mesh.proxy_counters().await?;
    Ok(json!({
        "retries": now.retries - before.retries,
        "tables_installed": now.tables - before.tables,
    }))
}

// === CPU of pilot and the sidecars ===

/// utime + stime of pilot and of all sidecars together, from `/proc/<pid>/stat`.
struct Cpu {
    pilot: f64,
    sidecars: f64,
    at: Instant,
}

impl Cpu {
    fn sample(mesh: &Mesh) -> Cpu {
        let (pilot, sidecars) = mesh.pids();
        Cpu {
            pilot: pilot.map_or(0.0, cpu_seconds),
            sidecars: sidecars.into_iter().map(cpu_seconds).sum(),
            at: Instant::now(),
        }
    }

    fn since(self, mesh: &Mesh) -> serde_json::Value {
        let now = Cpu::sample(mesh);
        json!({
            "wall": now.at.duration_since(self.at).as_secs_f64(),
            "pilot": now.pilot - self.pilot,
            "sidecars": now.sidecars - self.sidecars,
        })
    }
}

/// CPU seconds used by `pid` (10 ms resolution); 0 when it cannot be read.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    // utime and stime are fields 14 and 15 of stat; `rest` starts at field 3.
    match (ticks(11), ticks(12)) {
        (Some(u), Some(s)) => (u + s) / 100.0,
        _ => 0.0,
    }
}
