//! `graymesh rollout list|status|resume|pause|promote|rollback`: the gray releases pilot runs,
//! through its rollout API (`--server`).
//!
//! `status --watch` shows a live progress bar (step, weights, success rate and p99 per version,
//! what the rollout waits for) and prints each decision as it is taken; `status --wait` (and
//! `--watch`) exit 0 when the rollout is promoted and 1 when it is rolled back, so a CI pipeline
//! can gate on them.

use crate::cli_http::{get_json, send_json, DEFAULT_SERVER};
use clap::{Args, Subcommand};
use hyper::Method;
use serde_json::Value;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct RolloutArgs {
    #[command(subcommand)]
    pub command: RolloutCommand,
    #[arg(long, env = "GRAYMESH_SERVER", default_value = DEFAULT_SERVER, global = true)]
    pub server: String,
    /// Namespace of the Application.
    #[arg(short = 'n', long, default_value = "default", global = true)]
    pub namespace: String,
    #[arg(short = 'o', long = "output", default_value = "table", value_parser = ["table", "json"], global = true)]
    pub output: String,
}

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Every Application's rollout: phase, step, weights.
    List,
    /// One rollout in detail: step, weights, telemetry per version, decisions.
    Status(StatusArgs),
    /// Pass a manual gate (suspend step), or carry on after a pause.
    Resume { name: String },
    /// Keep the traffic as it is and stop advancing.
    Pause { name: String },
    /// Skip the remaining steps: the new version takes all traffic.
    Promote { name: String },
    /// All traffic back to the stable version, mesh-wide, at once.
    Rollback { name: String },
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    pub name: String,
    /// Follow the rollout live until it ends (exit 0 promoted, 1 rolled back).
    #[arg(long)]
    pub watch: bool,
    /// Wait until the rollout ends without showing progress (exit 0 promoted, 1 rolled back).
    #[arg(long)]
    pub wait: bool,
    /// With --watch or --wait: give up after this long (exit 2), e.g. 10m, 30s.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub timeout: Duration,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    text.parse::<graymesh_model::Duration>().map(|d| d.as_std())
}

pub async fn run(args: RolloutArgs) -> anyhow::Result<ExitCode> {
    let ns = args.namespace.clone();
    match &args.command {
        RolloutCommand::List => {
            let list = get_json(&args.server, &format!("/v1/rollouts?namespace={ns}")).await?;
            print_list(&list, &args.output);
            Ok(ExitCode::SUCCESS)
        }
        RolloutCommand::Status(status) if status.watch || status.wait => {
            follow(&args, status).await
        }
        RolloutCommand::Status(status) => {
            let view = get_json(&args.server, &path(&ns, &status.name)).await?;
            print_view(&view, &args.output);
            Ok(ExitCode::SUCCESS)
        }
        RolloutCommand::Resume { name } => send(&args, name, "resume").await,
        RolloutCommand::Pause { name } => send(&args, name, "pause").await,
        RolloutCommand::Promote { name } => send(&args, name, "promote").await,
        RolloutCommand::Rollback { name } => send(&args, name, "rollback").await,
    }
}

fn path(namespace: &str, name: &str) -> String {
    format!("/v1/rollouts/{namespace}/{name}")
}

async fn send(args: &RolloutArgs, name: &str, command: &str) -> anyhow::Result<ExitCode> {
    let url = format!("{}/{command}", path(&args.namespace, name));
    let started = Instant::now();
    let (status, answer) = send_json(&args.server, Method::POST, &url, None).await?;
    if !status.is_success() {
        let message = answer["error"].as_str().unwrap_or("no reason given");
        anyhow::bail!("{command} {}/{name}: {message}", args.namespace);
    }
    if args.output == "json" {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        let decision = answer["decisions"].as_array().and_then(|d| d.last());
        println!(
            "{command}: Application {}/{name} is {} ({}) — written in {} ms",
            args.namespace,
            text(&answer["phase"]),
            weights(&answer),
            started.elapsed().as_millis()
        );
        if let Some(d) = decision {
            println!("  {}", text(&d["reason"]));
        }
    }
    Ok(ExitCode::SUCCESS)
}

// === status --watch / --wait ===

async fn follow(args: &RolloutArgs, status: &StatusArgs) -> anyhow::Result<ExitCode> {
    let url = path(&args.namespace, &status.name);
    let deadline = Instant::now() + status.timeout;
    let bar = status.watch.then(|| {
        let bar = indicatif::ProgressBar::new(1);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix:.bold} [{bar:30}] {pos}/{len} {wide_msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("{}/{}", args.namespace, status.name));
        bar
    });
    let mut seen = 0;
    loop {
        let view = get_json(&args.server, &url).await?;
        let decisions = view["decisions"].as_array().cloned().unwrap_or_default();
        // The Rollout keeps the newest decisions only: print those not printed yet.
        for d in decisions.iter().skip(seen.min(decisions.len())) {
            let line = format!(
                "{} step {}: {}: {}",
                time(&d["atMs"]),
                d["step"],
                text(&d["action"]),
                text(&d["reason"])
            );
            if let Some(bar) = &bar {
                bar.println(line);
            }
        }
        seen = decisions.len();
        if let Some(bar) = &bar {
            bar.set_length(view["steps"].as_u64().unwrap_or(1).max(1));
            let step = view["step"].as_u64().unwrap_or(0);
            let done = matches!(text(&view["phase"]).as_str(), "Promoted" | "RolledBack");
            bar.set_position(if done {
                bar.length().unwrap_or(1)
            } else {
                step
            });
            bar.set_message(summary_line(&view));
        }
        match text(&view["phase"]).as_str() {
            "Promoted" | "RolledBack" => {
                let promoted = text(&view["phase"]) == "Promoted";
                if let Some(bar) = &bar {
                    bar.finish_with_message(summary_line(&view));
                }
                if args.output == "json" {
                    println!("{}", serde_json::to_string_pretty(&view)?);
                } else if bar.is_none() {
                    print_view(&view, "table");
                }
                return Ok(if promoted {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                });
            }
            _ if Instant::now() >= deadline => {
                if let Some(bar) = &bar {
                    bar.abandon_with_message(format!(
                        "still {} after {:?}",
                        text(&view["phase"]),
                        status.timeout
                    ));
                }
                eprintln!(
                    "error: {}/{} has not ended within {:?}",
                    args.namespace, status.name, status.timeout
                );
                return Ok(ExitCode::from(2));
            }
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

// === printing ===

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn weights(view: &Value) -> String {
    let list: Vec<String> = view["weights"]
        .as_array()
        .map(|ws| {
            ws.iter()
                .map(|w| format!("{} {}%", text(&w["version"]), w["weight"]))
                .collect()
        })
        .unwrap_or_default();
    let mut out = list.join(", ");
    if let Some(m) = view["contentMatch"].as_str() {
        out.push_str(&format!("; {m} → {}", text(&view["newVersion"])));
    }
    out
}

fn stats(view: &Value) -> String {
    let list: Vec<String> = view["stats"]
        .as_array()
        .map(|all| {
            all.iter()
                .map(|s| {
                    if let Some(e) = s["error"].as_str() {
                        return format!("{}: no telemetry ({e})", text(&s["version"]));
                    }
                    let rate = s["successRate"]
                        .as_f64()
                        .map_or("-".to_string(), |r| format!("{r:.1}%"));
                    let p99 = s["p99Ms"]
                        .as_f64()
                        .map_or("-".to_string(), |p| format!("{p:.1}ms"));
                    format!(
                        "{} {} req ok {rate} p99 {p99}",
                        text(&s["version"]),
                        s["requests"]
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    list.join(" | ")
}

fn summary_line(view: &Value) -> String {
    let mut line = format!(
        "{} {} ({}) | {}",
        text(&view["phase"]),
        text(&view["stepName"]),
        text(&view["stepType"]),
        weights(view)
    );
    let stats = stats(view);
    if !stats.is_empty() {
        line.push_str(&format!(" | {stats}"));
    }
    if let Some(w) = view["waitingFor"].as_str() {
        line.push_str(&format!(" | waiting: {w}"));
    }
    if let Some(e) = view["error"].as_str() {
        line.push_str(&format!(" | ERROR: {e}"));
    }
    line
}

fn print_list(list: &Value, output: &str) {
    if output == "json" {
        println!("{}", serde_json::to_string_pretty(list).unwrap_or_default());
        return;
    }
    println!(
        "{:<12} {:<24} {:<12} {:<6} {:<20} WEIGHTS",
        "NAMESPACE", "NAME", "PHASE", "STEP", "STEP NAME"
    );
    for v in list.as_array().into_iter().flatten() {
        println!(
            "{:<12} {:<24} {:<12} {:<6} {:<20} {}",
            text(&v["namespace"]),
            text(&v["name"]),
            text(&v["phase"]),
            format!("{}/{}", v["step"].as_u64().unwrap_or(0) + 1, v["steps"]),
            text(&v["stepName"]),
            weights(v)
        );
    }
}

fn print_view(view: &Value, output: &str) {
    if output == "json" {
        println!("{}", serde_json::to_string_pretty(view).unwrap_or_default());
        return;
    }
    println!(
        "Application: {}/{}   service {}: {} → {}",
        text(&view["namespace"]),
        text(&view["name"]),
        text(&view["service"]),
        text(&view["oldVersion"]),
        text(&view["newVersion"])
    );
    println!("Phase:       {}", text(&view["phase"]));
    println!(
        "Step:        {}/{} {} ({})",
        view["step"].as_u64().unwrap_or(0) + 1,
        view["steps"],
        text(&view["stepName"]),
        text(&view["stepType"])
    );
    println!("Traffic:     {}", weights(view));
    if let Some(w) = view["waitingFor"].as_str() {
        println!("Waiting for: {w}");
    }
    if let Some(a) = view.get("analysis").filter(|a| !a.is_null()) {
        println!(
            "Analysis:    passed {} failed {} held {}; last: {}",
            a["passed"],
            a["failed"],
            a["held"],
            text(&a["lastVerdict"])
        );
    }
    let stats = stats(view);
    if !stats.is_empty() {
        println!(
            "Telemetry:   {stats} (last {}s)",
            view["statsWindowSeconds"]
        );
    }
    if let Some(e) = view["error"].as_str() {
        println!("Error:       {e}");
    }
    println!("Decisions:");
    for d in view["decisions"].as_array().into_iter().flatten() {
        println!(
            "  {} step {}: {}: {}",
            time(&d["atMs"]),
            d["step"],
            text(&d["action"]),
            text(&d["reason"])
        );
    }
}

/// `HH:MM:SS.mmm` UTC of a ms timestamp.
fn time(v: &Value) -> String {
    let ms = v.as_u64().unwrap_or(0);
    let secs = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60,
        ms % 1000
    )
}
