//! `graymesh pilot`: wires the config store and registry into the snapshot cache, and serves xDS
//! and the admin API until told to stop.

use crate::admin::{self, AdminState};
use crate::telemetry::{
    EmbeddedSource, EmbeddedTelemetry, PrometheusSource, ResolveHost, Telemetry,
};
use anyhow::Context as _;
use clap::Args;
use graymesh_model::ConfigSet;
use graymesh_release::analysis::{MetricsSource, VersionRef};
use graymesh_release::controller::Controller;
use graymesh_sources::etcd::leader::Election;
use graymesh_sources::{
    ConfigState, ConfigStore, DirStore, EmbeddedRegistry, EtcdRegistry, EtcdStore, Registration,
    Registry, RegistrySnapshot,
};
use graymesh_xds::metrics::XdsMetrics;
use graymesh_xds::{AdsServer, SnapshotCache, SyncStatus};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The release controller's leader lease: a crashed leader is replaced within this.
const LEADER_TTL: Duration = Duration::from_secs(5);

#[derive(Debug, Args)]
pub struct PilotArgs {
    /// Directory (or file) of Istio objects to serve; watched for edits.
    #[arg(
        long,
        env = "GRAYMESH_CONFIG_DIR",
        required_unless_present = "etcd",
        conflicts_with = "etcd"
    )]
    pub config_dir: Option<PathBuf>,
    /// etcd endpoints (`http://host:port`, comma separated): config is read from and written to
    /// etcd under /graymesh/config/ instead of a directory.
    #[arg(long, env = "GRAYMESH_ETCD", value_delimiter = ',')]
    pub etcd: Vec<String>,
    /// With --etcd: also publish every instance as an etcd gRPC naming record
    /// (`<prefix>/<service>/<ip:port>` ⇒ `{"Op":0,"Addr":"ip:port","Metadata":…}`) and import the
    /// records other programs register there, e.g. `/services`.
    #[arg(long, requires = "etcd")]
    pub etcd_naming_prefix: Option<String>,
    /// Address of the xDS (ADS over gRPC, plaintext) server.
    #[arg(long, default_value = "127.0.0.1:15010")]
    pub xds_addr: SocketAddr,
    /// Address of the admin HTTP server (metrics, debug, registration API).
    #[arg(long, default_value = "127.0.0.1:15014")]
    pub http_addr: SocketAddr,
    /// Quiet time after a config or registry change before pushing (milliseconds).
    #[arg(long, default_value_t = 100)]
    pub debounce_ms: u64,
    /// How often pilot scrapes every connected proxy's /metrics for the analysis step (the
    /// embedded telemetry source; not used with --prometheus).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub scrape_period: graymesh_model::Duration,
    /// How much scraped history pilot keeps; an analysis window longer than this is an error.
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    pub telemetry_history: graymesh_model::Duration,
    /// Read the analysis step's telemetry from this Prometheus server (`http://host:port`),
    /// which must scrape the proxies' admin ports, instead of scraping the proxies from pilot.
    #[arg(long, env = "GRAYMESH_PROMETHEUS")]
    pub prometheus: Option<String>,
}

fn parse_duration(text: &str) -> Result<graymesh_model::Duration, String> {
    let d: graymesh_model::Duration = text.parse()?;
    if d.as_std().is_zero() {
        return Err(format!("{text:?}: must be more than 0"));
    }
    Ok(d)
}

pub async fn run(args: PilotArgs) -> anyhow::Result<()> {
    let store = open_store(&args).await?;
    let registry = open_registry(&args).await?;
    let config_rx = store.subscribe();
    let initial = config_rx.borrow().config.clone();
    // The registrations already loaded (from etcd) go into the first generation: the rebuild
    // task only wakes on later changes, so a restarted pilot would serve none of them until one.
    let cache = SnapshotCache::new(
        initial.clone(),
        Arc::new(RegistrySnapshot::build(&initial, &registry.list())),
    );
    let status = SyncStatus::default();
    let xds_metrics = XdsMetrics::default();

    let xds_listener = tokio::net::TcpListener::bind(args.xds_addr)
        .await
        .with_context(|| format!("cannot listen for xDS on {}", args.xds_addr))?;
    let http_listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("cannot listen for admin HTTP on {}", args.http_addr))?;
    tracing::info!(xds = %args.xds_addr, http = %args.http_addr, objects = initial.len(), "pilot serving");

    let telemetry = telemetry(&args, &cache, &status)?;
    // What the release controller's analysis steps read (embedded scraper or Prometheus);
    // /debug/telemetryz asks the very same source.
    let metrics_source: Arc<dyn MetricsSource> = telemetry.source.clone();
    tracing::info!(source = telemetry.source_name(), "analysis telemetry");
    let controller = Controller::new(store.clone(), metrics_source.clone());
    let state = AdminState::new(
        store.clone(),
        registry.clone(),
        cache.clone(),
        status.clone(),
        &xds_metrics,
        controller.clone(),
    )
    .with_telemetry(Telemetry {
        source: metrics_source.clone(),
        ..telemetry
    });
    // The campaign (with etcd) lasts as long as this function; its lease lapses if pilot dies.
    let (leader, _campaign) = leadership(&store, args.http_addr);
    tokio::spawn(controller.run(leader));
    match &store {
        ConfigStore::Dir(dir) => tokio::spawn(
            dir.clone()
                .watch_logged(Duration::from_millis(args.debounce_ms)),
        ),
        ConfigStore::Etcd(etcd) => tokio::spawn(etcd.clone().watch()),
    };
    match &registry {
        Registry::Embedded(embedded) => {
            tokio::spawn(embedded.clone().run_expiry(Duration::from_millis(500)))
        }
        Registry::Etcd(etcd) => tokio::spawn(etcd.clone().watch()),
    };
    tokio::spawn(rebuild_on_change(
        config_rx,
        registry.subscribe(),
        cache.clone(),
        Duration::from_millis(args.debounce_ms),
    ));

    let ads = AdsServer::new(cache, status, xds_metrics).into_service();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(xds_listener);
    let xds = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(ads)
        .serve_with_incoming_shutdown(incoming, shutdown_signal());
    let http = admin::serve(http_listener, state.clone());
    state.set_ready(true);
    tokio::select! {
        r = xds => r.context("xDS server failed")?,
        r = http => r.context("admin server failed")?,
    }
    tracing::info!("pilot stopped");
    Ok(())
}

/// Whether this pilot runs the release controller: always with a directory store; with etcd,
/// while it holds the `release-controller` lease (one leader among the replicas).
fn leadership(
    store: &ConfigStore,
    http_addr: SocketAddr,
) -> (watch::Receiver<bool>, Option<Election>) {
    match store {
        ConfigStore::Dir(_) => (watch::channel(true).1, None),
        ConfigStore::Etcd(etcd) => {
            let candidate = format!("pilot-{}-{http_addr}", std::process::id());
            let election =
                Election::start(etcd.client(), "release-controller", &candidate, LEADER_TTL);
            (election.subscribe(), Some(election))
        }
    }
}

/// The telemetry source the flags ask for: Prometheus (`--prometheus`), or pilot scraping the
/// proxies connected to it (started here). Hosts resolve against the config being served.
fn telemetry(
    args: &PilotArgs,
    cache: &SnapshotCache,
    status: &SyncStatus,
) -> anyhow::Result<Telemetry> {
    let config = cache.clone();
    let resolve: ResolveHost =
        Arc::new(move |v: &VersionRef| config.current().config.resolve_host(&v.host, &v.namespace));
    if let Some(url) = &args.prometheus {
        let source = PrometheusSource::new(url, resolve.clone()).map_err(anyhow::Error::msg)?;
        let source = Arc::new(source);
        return Ok(Telemetry {
            prometheus: Some(source.clone()),
            source,
            embedded: None,
            resolve,
        });
    }
    let embedded =
        EmbeddedTelemetry::new(args.scrape_period.as_std(), args.telemetry_history.as_std());
    tokio::spawn(embedded.clone().run(status.clone()));
    Ok(Telemetry {
        source: Arc::new(EmbeddedSource {
            telemetry: embedded.clone(),
            resolve: resolve.clone(),
        }),
        embedded: Some(embedded),
        prometheus: None,
        resolve,
    })
}

/// The config store the flags ask for, loaded: a directory, or etcd (`--etcd`).
async fn open_store(args: &PilotArgs) -> anyhow::Result<ConfigStore> {
    if !args.etcd.is_empty() {
        let store = EtcdStore::open(args.etcd.clone())
            .await
            .context("cannot load the config from etcd; not starting")?;
        return Ok(ConfigStore::Etcd(Arc::new(store)));
    }
    let Some(dir) = &args.config_dir else {
        anyhow::bail!("give --config-dir DIR or --etcd URL");
    };
    let store = DirStore::open(dir).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
        anyhow::anyhow!(
            "config in {} is invalid; not starting:\n{}",
            dir.display(),
            lines.join("\n")
        )
    })?;
    Ok(ConfigStore::Dir(Arc::new(store)))
}

/// With `--etcd`, registrations live in etcd under leases (shared by every replica); otherwise
/// in this pilot's memory.
async fn open_registry(args: &PilotArgs) -> anyhow::Result<Registry> {
    if args.etcd.is_empty() {
        return Ok(Registry::Embedded(EmbeddedRegistry::new()));
    }
    if let Some(prefix) = &args.etcd_naming_prefix {
        if !prefix.starts_with('/') || prefix.starts_with("/graymesh/") {
            anyhow::bail!(
                "--etcd-naming-prefix {prefix:?}: must start with '/' and lie outside /graymesh/"
            );
        }
    }
    let registry = EtcdRegistry::open(args.etcd.clone(), args.etcd_naming_prefix.clone())
        .await
        .context("cannot load the registry from etcd; not starting")?;
    Ok(Registry::Etcd(Arc::new(registry)))
}

/// Publish a new generation whenever the config or the registrations change, once the changes
/// have been quiet for `debounce` (bursts of edits or registrations become one push).
async fn rebuild_on_change(
    mut config: watch::Receiver<ConfigState>,
    mut registrations: watch::Receiver<Arc<Vec<Registration>>>,
    cache: SnapshotCache,
    debounce: Duration,
) {
    let mut last_config: Arc<ConfigSet> = config.borrow_and_update().config.clone();
    loop {
        // A config change was already debounced by the store; registrations come in bursts.
        let config_changed = tokio::select! {
            r = config.changed() => if r.is_err() { return } else { true },
            r = registrations.changed() => if r.is_err() { return } else { false },
        };
        if !config_changed {
            loop {
                tokio::select! {
                    r = config.changed() => if r.is_err() { return },
                    r = registrations.changed() => if r.is_err() { return },
                    _ = tokio::time::sleep(debounce) => break,
                }
            }
        }
        let current = config.borrow_and_update().config.clone();
        let regs = registrations.borrow_and_update().clone();
        let changed_config = !Arc::ptr_eq(&current, &last_config);
        last_config = current.clone();
        let snapshot = RegistrySnapshot::build(&current, &regs);
        let current_gen = cache.current();
        if !changed_config && *current_gen.registry == snapshot {
            continue; // e.g. only the error list of a rejected edit changed
        }
        let version = cache.publish(current, Arc::new(snapshot));
        tracing::info!(version, "published new generation");
    }
}

pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
