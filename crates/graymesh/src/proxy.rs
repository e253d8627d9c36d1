//! `graymesh proxy`: the sidecar. Flags follow Envoy's and Istio's where they exist.

use clap::Args;
use graymesh_proxy::run::ProxyOptions;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Pilot xDS addresses (host:port), comma separated; the next is tried when one fails.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:15010")]
    pub pilot: Vec<String>,
    /// This proxy's node id (unique per instance).
    #[arg(long)]
    pub node_id: String,
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// The service of the local app (registers it in pilot's registry); also the source service
    /// of this proxy's outbound requests in /metrics and in `x-graymesh-source`.
    #[arg(long)]
    pub service: Option<String>,
    /// The version label of the local app (`version`), e.g. v1.
    #[arg(long)]
    pub service_version: Option<String>,
    /// The local app's port on 127.0.0.1; the inbound port fronts it.
    #[arg(long)]
    pub app_port: Option<u16>,
    /// The port other services use for this service (default: the app port).
    #[arg(long)]
    pub service_port: Option<u16>,
    /// Inbound port: traffic for the local app comes in here.
    #[arg(long, default_value_t = 15006)]
    pub inbound_port: u16,
    /// An explicit outbound port: HOST:PORT[=LOCAL_ADDR:PORT] (default 127.0.0.1:PORT). Repeatable.
    #[arg(long = "upstream")]
    pub upstreams: Vec<String>,
    /// The catch-all outbound port, routing by Host (usable as http_proxy).
    #[arg(long, default_value = "127.0.0.1:15001")]
    pub outbound_addr: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:15000")]
    pub admin_addr: SocketAddr,
    /// Worker threads (default: the number of cores, as Envoy's --concurrency).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Pilot's admin URL for registration (default: the first pilot's host, port 15014); several,
    /// comma-separated, to fail over between pilot replicas (they share an etcd registry).
    #[arg(long)]
    pub registry: Option<String>,
    /// Do not register the local app.
    #[arg(long)]
    pub no_register: bool,
    /// Registration TTL in seconds (renewed every third of it).
    #[arg(long, default_value_t = 10)]
    pub registration_ttl: u64,
    /// HTTP path of the app's health check (default: a TCP connect).
    #[arg(long)]
    pub health_path: Option<String>,
    /// How long SIGTERM waits for in-flight requests and upgrade tunnels, in seconds.
    #[arg(long, default_value_t = 10)]
    pub drain_timeout: u64,
    /// Close a downstream connection idle this long, in seconds (no request in progress).
    #[arg(long, default_value_t = 300)]
    pub idle_timeout: u64,
    /// Print one JSON line per request to stdout.
    #[arg(long)]
    pub access_log: bool,
    /// Extra labels for the instance, KEY=VALUE. Repeatable.
    #[arg(long = "label")]
    pub labels: Vec<String>,
}

/// `reviews:9080` ⇒ `reviews:9080=127.0.0.1:9080`; a given bind address is kept.
fn normalize_upstream(text: &str) -> Result<String, String> {
    let (target, bind) = match text.split_once('=') {
        Some((t, b)) => (t, Some(b)),
        None => (text, None),
    };
    let (host, port) = target
        .rsplit_once(':')
        .ok_or_else(|| format!("--upstream {text:?}: expected HOST:PORT[=ADDR:PORT]"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("--upstream {text:?}: {port:?} is not a port"))?;
    let bind: SocketAddr = match bind {
        Some(b) => b
            .parse()
            .map_err(|_| format!("--upstream {text:?}: {b:?} is not an ADDR:PORT"))?,
        None => SocketAddr::from(([127, 0, 0, 1], port)),
    };
    Ok(format!("{host}:{port}={bind}"))
}

fn options(args: ProxyArgs) -> Result<ProxyOptions, String> {
    let upstreams = args
        .upstreams
        .iter()
        .map(|u| normalize_upstream(u))
        .collect::<Result<Vec<_>, _>>()?;
    let labels = parse_labels(&args.labels)?;
    let first_pilot_host = args
        .pilot
        .first()
        .and_then(|p| p.rsplit_once(':'))
        .map(|(h, _)| h.to_string())
        .unwrap_or_else(|| "127.0.0.1".into());
    let registry_url = if args.no_register {
        None
    } else {
        Some(
            args.registry
                .unwrap_or_else(|| format!("http://{first_pilot_host}:15014")),
        )
    };
    let inbound_ip = args.outbound_addr.ip();
    Ok(ProxyOptions {
        pilots: args.pilot,
        node_id: args.node_id,
        namespace: args.namespace,
        service: args.service,
        service_version: args.service_version,
        app: args
            .app_port
            .map(|p| SocketAddr::new([127, 0, 0, 1].into(), p)),
        service_port: args.service_port,
        inbound: SocketAddr::new(inbound_ip, args.inbound_port),
        upstreams,
        outbound: args.outbound_addr,
        admin: args.admin_addr,
        registry_url,
        registration_ttl: Duration::from_secs(args.registration_ttl.max(1)),
        health_path: args.health_path,
        drain_timeout: Duration::from_secs(args.drain_timeout),
        idle_timeout: Duration::from_secs(args.idle_timeout.max(1)),
        labels,
        access_log: args.access_log,
        gateway: false,
        gateway_addr: [127, 0, 0, 1].into(),
    })
}

/// `--label KEY=VALUE` flags.
pub(crate) fn parse_labels(flags: &[String]) -> Result<Vec<(String, String)>, String> {
    flags
        .iter()
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| format!("--label {l:?}: expected KEY=VALUE"))
        })
        .collect()
}

pub fn run(args: ProxyArgs) -> ExitCode {
    let concurrency = args.concurrency;
    run_with(options(args), concurrency)
}

/// Run the proxy (sidecar or gateway) on its own runtime until SIGTERM or Ctrl-C.
pub(crate) fn run_with(opts: Result<ProxyOptions, String>, concurrency: Option<usize>) -> ExitCode {
    let threads = concurrency
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
        .max(1);
    let opts = match opts {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(graymesh_proxy::run::run(
        opts,
        crate::pilot::shutdown_signal(),
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::normalize_upstream;

    #[test]
    fn upstreams_default_to_loopback_on_the_service_port() {
        assert_eq!(
            normalize_upstream("reviews:9080").unwrap(),
            "reviews:9080=127.0.0.1:9080"
        );
        assert_eq!(
            normalize_upstream("reviews:9080=127.0.0.1:19080").unwrap(),
            "reviews:9080=127.0.0.1:19080"
        );
        assert!(normalize_upstream("reviews")
            .unwrap_err()
            .contains("expected HOST:PORT"));
        assert!(normalize_upstream("reviews:x")
            .unwrap_err()
            .contains("is not a port"));
    }
}
