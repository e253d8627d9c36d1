//! `graymesh`: one binary for the control plane and its CLI.

mod admin;
mod cli_http;
mod config_cli;
mod demo;
mod gateway;
mod kinds;
mod pilot;
mod proxy;
mod proxy_status;
mod rollout_cli;
mod telemetry;
mod validate;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "graymesh",
    version,
    about = "A lightweight service mesh for gray (canary) release"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the control plane: read Istio config, keep the registry, serve Envoy xDS v3.
    Pilot(pilot::PilotArgs),
    /// Check config files (Istio YAML/JSON) and report every error with file, object and field.
    Validate(validate::ValidateArgs),
    /// Run a sidecar proxy: explicit local ports for upstreams, an inbound port fronting the app.
    Proxy(Box<proxy::ProxyArgs>),
    /// Run an ingress gateway: serve the Gateways selecting its labels, routed by their VirtualServices.
    Gateway(gateway::GatewayArgs),
    /// Show the xDS clients connected to a pilot and what each has ACKed or NACKed.
    ProxyStatus(proxy_status::ProxyStatusArgs),
    /// Validate and write objects through pilot (directory or etcd store), all or nothing.
    Apply(config_cli::ApplyArgs),
    /// List objects (or services and endpoints from the registry) as a table, JSON or YAML.
    Get(config_cli::GetArgs),
    /// Delete one object through pilot.
    Delete(config_cli::DeleteArgs),
    /// Run the whole product on this machine: pilot, two services with v1/v2 behind sidecars,
    /// traffic, one rollout promoted and one rolled back by analysis.
    Demo(demo::DemoArgs),
    /// Follow and steer gray releases: list, status [--watch|--wait], resume, pause, promote, rollback.
    Rollout(rollout_cli::RolloutArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate(args) => validate::run(&args),
        Command::Pilot(args) => run_async(pilot::run(args)),
        Command::ProxyStatus(args) => run_async(proxy_status::run(args)),
        Command::Apply(args) => run_async(config_cli::apply(args)),
        Command::Get(args) => run_async(config_cli::get(args)),
        Command::Delete(args) => run_async(config_cli::delete(args)),
        Command::Rollout(args) => run_async_code(rollout_cli::run(args)),
        Command::Demo(args) => run_async_code(demo::run(args)),
        Command::Proxy(args) => {
            init_logging();
            proxy::run(*args)
        }
        Command::Gateway(args) => {
            init_logging();
            gateway::run(args)
        }
    }
}

fn run_async(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    init_logging();
    block_on(
        async { fut.await.map(|()| ExitCode::SUCCESS) },
        ExitCode::FAILURE,
    )
}

/// Like [`run_async`], for commands whose success has several exit codes (an error exits 3).
fn run_async_code(fut: impl std::future::Future<Output = anyhow::Result<ExitCode>>) -> ExitCode {
    block_on(fut, ExitCode::from(3))
}

fn block_on(
    fut: impl std::future::Future<Output = anyhow::Result<ExitCode>>,
    on_error: ExitCode,
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(fut) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            on_error
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GRAYMESH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
