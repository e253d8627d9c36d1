//! `graymesh gateway`: the proxy in the gateway role. It has no local app, no inbound port and
//! registers nothing; pilot gives it a listener for each HTTP server of the Gateways whose
//! selector its `--label`s match, routed by the VirtualServices bound to those Gateways.

use clap::Args;
use graymesh_proxy::run::ProxyOptions;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// Pilot xDS addresses (host:port), comma separated; the next is tried when one fails.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:15010")]
    pub pilot: Vec<String>,
    /// This gateway's node id (unique per instance).
    #[arg(long)]
    pub node_id: String,
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// The gateway's own service, e.g. istio-ingressgateway: the source service of the requests
    /// it sends, in /metrics and in `x-graymesh-source` (none by default).
    #[arg(long)]
    pub service: Option<String>,
    /// The version of that service (the source version label).
    #[arg(long)]
    pub service_version: Option<String>,
    /// The gateway's labels, KEY=VALUE, matched against Gateway selectors. Repeatable; giving
    /// any replaces the default.
    #[arg(long = "label", default_value = "istio=ingressgateway")]
    pub labels: Vec<String>,
    /// The IP the Gateway servers' listeners bind (a server's `bind` overrides it).
    #[arg(long, default_value = "127.0.0.1")]
    pub gateway_addr: IpAddr,
    #[arg(long, default_value = "127.0.0.1:15000")]
    pub admin_addr: SocketAddr,
    /// Worker threads (default: the number of cores, as Envoy's --concurrency).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// How long SIGTERM waits for in-flight requests, in seconds.
    #[arg(long, default_value_t = 10)]
    pub drain_timeout: u64,
    /// Close a downstream connection idle this long, in seconds (no request in progress).
    #[arg(long, default_value_t = 300)]
    pub idle_timeout: u64,
    /// Print one JSON line per request to stdout.
    #[arg(long)]
    pub access_log: bool,
}

fn options(args: GatewayArgs) -> Result<ProxyOptions, String> {
    Ok(ProxyOptions {
        pilots: args.pilot,
        node_id: args.node_id,
        namespace: args.namespace,
        service: args.service,
        service_version: args.service_version,
        app: None,
        service_port: None,
        // Unused without an app; the outbound port is served only if pilot is told of upstreams.
        inbound: SocketAddr::from(([127, 0, 0, 1], 15006)),
        upstreams: Vec::new(),
        outbound: SocketAddr::from(([127, 0, 0, 1], 15001)),
        admin: args.admin_addr,
        registry_url: None,
        registration_ttl: Duration::from_secs(10),
        health_path: None,
        drain_timeout: Duration::from_secs(args.drain_timeout),
        idle_timeout: Duration::from_secs(args.idle_timeout.max(1)),
        labels: crate::proxy::parse_labels(&args.labels)?,
        access_log: args.access_log,
        gateway: true,
        gateway_addr: args.gateway_addr,
    })
}

pub fn run(args: GatewayArgs) -> ExitCode {
    let concurrency = args.concurrency;
    crate::proxy::run_with(options(args), concurrency)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: GatewayArgs,
    }

    fn parse(flags: &[&str]) -> ProxyOptions {
        let cli = Cli::try_parse_from(std::iter::once("gateway").chain(flags.iter().copied()))
            .unwrap_or_else(|e| panic!("{e}"));
        options(cli.args).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn defaults_make_an_ingress_gateway_on_loopback() {
        let opts = parse(&["--node-id", "ingress-1"]);
        assert!(opts.gateway);
        assert_eq!(opts.gateway_addr.to_string(), "127.0.0.1");
        assert_eq!(opts.labels, [("istio".into(), "ingressgateway".into())]);
        assert_eq!(opts.pilots, ["127.0.0.1:15010"]);
        assert!(opts.registry_url.is_none() && opts.app.is_none() && opts.upstreams.is_empty());
        assert!(opts.service.is_none() && opts.service_version.is_none());
        let named = parse(&["--node-id=g", "--service=ingress", "--service-version=v3"]);
        assert_eq!(named.service.as_deref(), Some("ingress"));
        assert_eq!(named.service_version.as_deref(), Some("v3"));
        assert!(named.registry_url.is_none(), "a gateway registers nothing");
    }

    #[test]
    fn labels_replace_the_default_and_must_be_pairs() {
        let opts = parse(&[
            "--node-id=g",
            "--label=istio=eastwestgateway",
            "--label=zone=a",
            "--gateway-addr=127.0.0.9",
        ]);
        assert_eq!(opts.labels.len(), 2);
        assert_eq!(opts.labels[0].1, "eastwestgateway");
        assert_eq!(opts.gateway_addr.to_string(), "127.0.0.9");
        let cli = Cli::try_parse_from(["gateway", "--node-id=g", "--label=oops"])
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(options(cli.args)
            .unwrap_err()
            .contains("expected KEY=VALUE"));
    }
}
