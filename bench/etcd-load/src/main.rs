//! `etcd-load`: the load client of the etcd scale benchmark (bench/etcd-scale.sh).
//!
//! Runs pilot (`--etcd`) itself, registers N instances with leases through pilot's registration
//! API (as sidecars do), heartbeats them every TTL/3 like sidecars, and measures: etcd's request
//! rate at steady state (from etcd's `/metrics`), pilot's time to full sync after a restart with
//! the N instances present (`/ready`, and an ADS client holding every endpoint), and the time from
//! changing K instances at once to the ADS client holding the change. It only measures (the
//! script prints the verdicts) and every wait is bounded by --timeout-s.

mod ads;
mod etcd_metrics;
mod pilot_api;

use anyhow::{bail, Context as _};
use clap::Parser;
use pilot_api::{registration, Beats, PilotApi};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};
use tokio::sync::{watch, Semaphore};

#[derive(Debug, Parser)]
#[command(
    name = "etcd-load",
    about = "Load client for the graymesh etcd scale benchmark"
)]
struct Args {
    /// The graymesh binary to run pilot from.
    #[arg(long)]
    graymesh: PathBuf,
    /// etcd client URL (loopback).
    #[arg(long)]
    etcd: String,
    #[arg(long)]
    xds_addr: String,
    #[arg(long)]
    http_addr: String,
    /// Where pilot's output goes.
    #[arg(long)]
    pilot_log: PathBuf,
    #[arg(long, default_value_t = 10_000)]
    instances: usize,
    #[arg(long, default_value_t = 100)]
    services: usize,
    /// Registration TTL, seconds (heartbeats every third of it).
    #[arg(long, default_value_t = 10)]
    ttl: u64,
    /// Instances changed at once (their port moves from 9001 to 9002).
    #[arg(long, default_value_t = 1_000)]
    changed: usize,
    /// Requests to pilot's API in flight at most.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Length of the steady-state window over which etcd's rates are taken.
    #[arg(long, default_value_t = 10)]
    steady_s: u64,
    #[arg(long, default_value_t = 120)]
    timeout_s: u64,
    /// Stop after the steady-state keep-alive figures (to compare another build).
    #[arg(long)]
    keepalive_only: bool,
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
    let api = PilotApi::new(&args.http_addr);
    let etcd = PilotApi::new(args.etcd.trim_start_matches("http://"));
    let mut out = serde_json::Map::new();

    let (mut pilot, _) = start_pilot(&args, &api, limit).await?;
    let started = Instant::now();
    let ids = Arc::new(Mutex::new(
        register_all(&args, &api, 0..args.instances, 9001).await?,
    ));
    let took = started.elapsed().as_secs_f64();
    println!(
        "registered {} instances through pilot in {took:.2} s",
        args.instances
    );
    out.insert("register_s".into(), took.into());

    let beats = Arc::new(Beats::default());
    let period = Duration::from_secs_f64(args.ttl as f64 / 3.0);
    let heartbeats = tokio::spawn(pilot_api::heartbeat_forever(
        api.clone(),
        ids.clone(),
        period,
        args.concurrency,
        beats.clone(),
    ));
    // One whole heartbeat round first, so the window sees the steady state.
    tokio::time::sleep(period + Duration::from_secs(1)).await;
    out.insert(
        "steady".into(),
        steady_state(&args, &etcd, &pilot, &beats).await?,
    );
    if args.keepalive_only {
        return finish(&args, out, heartbeats, &beats, pilot).await;
    }

    pilot.kill().await.context("stopping pilot")?;
    let (held_tx, mut held) = watch::channel(ads::Held {
        endpoints: Arc::default(),
        at: Instant::now(),
    });
    let restart = Instant::now();
    let follower = tokio::spawn(ads::follow(args.xds_addr.clone(), restart + limit, held_tx));
    let (pilot, ready) = start_pilot(&args, &api, limit).await?;
    let all = args.instances;
    let synced = ads::wait_for(&mut held, limit, |e| e.len() == all).await?;
    let sync = serde_json::json!({
        "ready_s": ready.duration_since(restart).as_secs_f64(),
        "ads_holds_all_s": synced.duration_since(restart).as_secs_f64(),
        "pilot_cpu_s": cpu_seconds(&pilot),
        "pilot_rss_mib": rss_mib(&pilot),
    });
    println!("restart: {sync}");
    out.insert("restart".into(), sync);

    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu_before = cpu_seconds(&pilot);
    let edit = Instant::now();
    let changed = args.changed;
    let new_ids = register_all(&args, &api, 0..changed, 9002).await?;
    let api_done = edit.elapsed().as_secs_f64();
    ids.lock()
        .map_err(|_| anyhow::anyhow!("ids lock poisoned"))?[..changed]
        .clone_from_slice(&new_ids);
    let seen = ads::wait_for(&mut held, limit, |e| {
        e.len() == all && e.iter().filter(|a| a.ends_with(":9002")).count() == changed
    })
    .await?;
    let push = serde_json::json!({
        "changed": changed,
        "api_calls_s": api_done,
        "edit_to_ads_s": seen.duration_since(edit).as_secs_f64(),
        "pilot_cpu_s": cpu_seconds(&pilot) - cpu_before,
    });
    println!("change: {push}");
    out.insert("change".into(), push);
    follower.abort();
    finish(&args, out, heartbeats, &beats, pilot).await
}

async fn finish(
    args: &Args,
    mut out: serde_json::Map<String, serde_json::Value>,
    heartbeats: tokio::task::JoinHandle<()>,
    beats: &Beats,
    mut pilot: Child,
) -> anyhow::Result<()> {
    heartbeats.abort();
    out.insert("heartbeats".into(), beats.snapshot());
    out.insert("pilot_rss_mib_end".into(), rss_mib(&pilot).into());
    let _ = pilot.kill().await;
    std::fs::write(&args.json, serde_json::Value::Object(out).to_string())
        .with_context(|| format!("writing {}", args.json.display()))?;
    Ok(())
}

/// Start pilot and wait for `/ready`; returns it and when it was ready.
async fn start_pilot(
    args: &Args,
    api: &PilotApi,
    limit: Duration,
) -> anyhow::Result<(Child, Instant)> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.pilot_log)
        .with_context(|| format!("opening {}", args.pilot_log.display()))?;
    let mut pilot = Command::new(&args.graymesh)
        .args(["pilot", "--etcd", &args.etcd, "--xds-addr", &args.xds_addr])
        .args(["--http-addr", &args.http_addr])
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", args.graymesh.display()))?;
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = pilot.try_wait()? {
            bail!("pilot exited ({status}); see {}", args.pilot_log.display());
        }
        if api.ready().await {
            return Ok((pilot, Instant::now()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!(
        "pilot not ready within {limit:?}; see {}",
        args.pilot_log.display()
    )
}

/// Register instances `range` (target port `port`), `--concurrency` at a time; their ids in order.
async fn register_all(
    args: &Args,
    api: &PilotApi,
    range: std::ops::Range<usize>,
    port: u16,
) -> anyhow::Result<Vec<String>> {
    let limit = Arc::new(Semaphore::new(args.concurrency));
    let mut tasks = Vec::with_capacity(range.len());
    for n in range {
        let permit = limit.clone().acquire_owned().await?;
        let (api, body) = (api.clone(), registration(n, args.services, port, args.ttl));
        tasks.push(tokio::spawn(async move {
            let id = api.register(body).await;
            drop(permit);
            id.with_context(|| format!("instance {n}"))
        }));
    }
    let mut ids = Vec::with_capacity(tasks.len());
    for task in tasks {
        ids.push(task.await??);
    }
    Ok(ids)
}

async fn steady_state(
    args: &Args,
    etcd: &PilotApi,
    pilot: &Child,
    beats: &Beats,
) -> anyhow::Result<serde_json::Value> {
    let window = Duration::from_secs(args.steady_s);
    let (before, cpu, ok) = (
        etcd_metrics::scrape(etcd).await?,
        cpu_seconds(pilot),
        beats.snapshot(),
    );
    tokio::time::sleep(window).await;
    let after = etcd_metrics::scrape(etcd).await?;
    let mut figures = etcd_metrics::rates(&before, &after, window.as_secs_f64());
    let beats_now = beats.snapshot();
    let per_s = |k: &str| {
        (beats_now[k].as_f64().unwrap_or(0.0) - ok[k].as_f64().unwrap_or(0.0))
            / window.as_secs_f64()
    };
    figures["heartbeats_ok_per_s"] = per_s("ok").into();
    figures["heartbeats_failed_per_s"] =
        (per_s("not_found") + per_s("unavailable") + per_s("failed")).into();
    figures["pilot_cpu_per_s"] = ((cpu_seconds(pilot) - cpu) / window.as_secs_f64()).into();
    figures["pilot_rss_mib"] = rss_mib(pilot).into();
    figures["heartbeats"] = beats_now;
    println!("steady state: {figures}");
    Ok(figures)
}

/// utime + stime of `child`, seconds (0 when unreadable).
fn cpu_seconds(child: &Child) -> f64 {
    let Some(pid) = child.id() else { return 0.0 };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn rss_mib(child: &Child) -> f64 {
    let Some(pid) = child.id() else { return 0.0 };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}
