//! `graymesh-testkit`: runs the fake app as a process, for demos and scripts that cannot embed
//! it (`graymesh-testkit app --service reviews --version v2 --port 9082`).
//!
//! Prints exactly one `listening on ADDR` line on stdout once bound, so scripts can wait on it
//! instead of sleeping; everything else goes to stderr.

use clap::{Parser, Subcommand};
use graymesh_testkit::FakeApp;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(name = "graymesh-testkit", about = "graymesh test tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the fake app (HTTP/1, h2c and gRPC on one port) until SIGTERM or ctrl-c.
    App(AppArgs),
}

#[derive(Debug, clap::Args)]
struct AppArgs {
    /// Service name reported in every answer.
    #[arg(long)]
    service: String,
    /// Version reported in every answer and in the `x-version` header.
    #[arg(long)]
    version: String,
    /// Instance name (default `<service>-<version>`).
    #[arg(long)]
    instance: Option<String>,
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Fraction (0.0-1.0) of requests answered 500 / gRPC UNAVAILABLE.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Milliseconds added before every answer except /healthz.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::App(args) => run_app(args).await,
    }
}

async fn run_app(args: AppArgs) -> anyhow::Result<()> {
    let mut builder = FakeApp::builder()
        .service(args.service)
        .version(args.version)
        .error_rate(args.error_rate)
        .latency(Duration::from_millis(args.latency_ms))
        .bind(SocketAddr::new(args.host, args.port));
    if let Some(instance) = args.instance {
        builder = builder.instance(instance);
    }
    let app = builder.start().await?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on {}", app.addr())?;
    stdout.flush()?;
    terminated().await?;
    app.shutdown().await;
    Ok(())
}

/// Resolves on ctrl-c, or on SIGTERM where there are signals.
async fn terminated() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            ctrl_c = tokio::signal::ctrl_c() => ctrl_c?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    Ok(())
}
