//! `graymesh`: one binary for the control plane and its CLI.

mod admin;
mod cli_http;
mod config_cli;
mod gateway;
mod kinds;
mod pilot;
mod proxy;
mod proxy_status;
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
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
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
