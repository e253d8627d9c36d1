//! `xds-load`: the load client of the pilot scale benchmark (bench/pilot-scale.sh).
//!
//! Opens N state-of-the-world ADS streams to a running pilot over a few shared HTTP/2
//! connections, each behaving like a proxyless gRPC client (LDS → RDS → CDS → EDS, ACKing every
//! response), reports how long the initial sync took, then performs each config edit itself and
//! measures, per stream, the time from the edit until the stream has the new route and has ACKed
//! it. It only measures: it never judges the figures (the script does) and it always ends by
//! itself, every wait bounded by --timeout-s.

mod chain;
mod collector;
mod load;
mod pilot_stats;
mod report;
mod stream;

use anyhow::{bail, Context as _};
use clap::Parser;
use load::{EditStep, Edited, Plan};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "xds-load",
    about = "ADS load client for the graymesh pilot scale benchmark"
)]
struct Args {
    /// Pilot's xDS address (loopback).
    #[arg(long, default_value = "127.0.0.1:15010")]
    xds: String,
    /// Number of ADS streams to open.
    #[arg(long, default_value_t = 1000)]
    streams: usize,
    /// Number of services the streams spread over (stream i asks for service i % services).
    #[arg(long, default_value_t = 1000)]
    services: usize,
    /// Streams multiplexed over one HTTP/2 connection.
    #[arg(long, default_value_t = 100)]
    streams_per_connection: usize,
    /// Listener each stream subscribes to; `{}` stands for the service index.
    #[arg(long, default_value = "svc-{}.bench.test:8080")]
    listener_template: String,
    /// Bound on each wait: the initial sync, and each edit's propagation.
    #[arg(long, default_value_t = 60)]
    timeout_s: u64,
    /// Pause after the sync (and between edits) so pilot is idle when an edit starts.
    #[arg(long, default_value_t = 2000)]
    settle_ms: u64,
    /// After an edit has reached every concerned stream, keep listening this long to count
    /// pushes nobody needed.
    #[arg(long, default_value_t = 1000)]
    quiet_ms: u64,
    /// Pilot's pid: CPU time and RSS are read from /proc around each phase.
    #[arg(long)]
    pilot_pid: Option<u32>,
    /// Pilot's admin address (host:port): its push-latency histogram is read around each edit.
    #[arg(long)]
    metrics_addr: Option<String>,
    /// The config file each edit replaces.
    #[arg(long)]
    edit_file: Option<PathBuf>,
    /// New content for --edit-file, one per edit step, applied in order.
    #[arg(long)]
    edit_content_file: Vec<PathBuf>,
    /// Services whose route each step changes (`all`, `0`, `0,3`, `0-9`), one per step;
    /// missing ones mean `all`.
    #[arg(long)]
    edited: Vec<String>,
    /// Write the figures as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Runtime worker threads of this client.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

impl Args {
    fn plan(&self) -> anyhow::Result<Plan> {
        if self.streams == 0 || self.services == 0 || self.streams_per_connection == 0 {
            bail!("--streams, --services and --streams-per-connection must be positive");
        }
        if self.edited.len() > self.edit_content_file.len() {
            bail!("more --edited than --edit-content-file");
        }
        let steps = self
            .edit_content_file
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let spec = self.edited.get(i).map(String::as_str).unwrap_or("all");
                Ok(EditStep {
                    content_file: f.clone(),
                    edited: Edited::parse(spec).with_context(|| format!("--edited {spec}"))?,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Plan {
            xds: self.xds.clone(),
            streams: self.streams,
            services: self.services,
            per_connection: self.streams_per_connection,
            listener_template: self.listener_template.clone(),
            timeout: Duration::from_secs(self.timeout_s),
            settle: Duration::from_millis(self.settle_ms),
            quiet: Duration::from_millis(self.quiet_ms),
            pilot_pid: self.pilot_pid,
            metrics_addr: self.metrics_addr.clone(),
            edit_file: self.edit_file.clone(),
            steps,
        })
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let plan = args.plan()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(load::run(&plan))?;
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&outcome.json)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    // Streams are still open: end them with the runtime rather than waiting for the server.
    runtime.shutdown_timeout(Duration::from_secs(1));
    if !outcome.complete {
        eprintln!("xds-load: incomplete: some streams did not sync or did not see an edit in time");
        std::process::exit(2);
    }
    Ok(())
}
