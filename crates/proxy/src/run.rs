//! Running a sidecar or a gateway: wire the xDS client, the config store, the listeners, the admin
//! port and the registration together, and shut down gracefully on SIGTERM.

use crate::admin::Admin;
use crate::config::ConfigStore;
use crate::http::ProxyCore;
use crate::listeners::{Identity, Listeners};
use crate::metrics::upstream::EjectedEndpoints;
use crate::metrics::ProxyMetrics;
use crate::registration::{Registrar, RegistrationSpec};
use crate::table::Resources;
use crate::xds::client::{CLUSTER, ENDPOINT, LISTENER, ROUTE};
use crate::xds::{XdsClient, XdsClientConfig};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::google::protobuf::{value::Kind, ListValue, Struct, Value};
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct ProxyOptions {
    pub pilots: Vec<String>,
    pub node_id: String,
    pub namespace: String,
    pub service: Option<String>,
    pub service_version: Option<String>,
    /// The local app (sidecar mode); `None` for a proxy with no app (gateway, client-only).
    pub app: Option<SocketAddr>,
    /// The port other services reach the app through (defaults to the app's port).
    pub service_port: Option<u16>,
    pub inbound: SocketAddr,
    /// `host:port=ip:port` explicit outbound ports.
    pub upstreams: Vec<String>,
    pub outbound: SocketAddr,
    pub admin: SocketAddr,
    /// Pilot's admin URL for registration; `None` disables registration.
    pub registry_url: Option<String>,
    pub registration_ttl: Duration,
    pub health_path: Option<String>,
    pub drain_timeout: Duration,
    /// Downstream connections idle this long are closed.
    pub idle_timeout: Duration,
    pub labels: Vec<(String, String)>,
    /// Print one JSON line per request to stdout.
    pub access_log: bool,
    /// Ask pilot for the gateway role (`ROLE: gateway`): listeners for the servers of the
    /// Gateways selecting `labels`, bound on `gateway_addr` (`GATEWAY_ADDR`).
    pub gateway: bool,
    pub gateway_addr: std::net::IpAddr,
}

/// Run until `shutdown` resolves; then deregister and drain.
pub async fn run(
    opts: ProxyOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    let mut metrics = ProxyMetrics::default();
    metrics.access_log = opts.access_log;
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    let core = ProxyCore::new(metrics, opts.idle_timeout);
    registry.register_collector(Box::new(EjectedEndpoints(core.upstreams.clone())));
    let identity = Identity {
        service: opts.service.clone().unwrap_or_default(),
        version: opts.service_version.clone().unwrap_or_default(),
    };
    let listeners = Listeners::new(core.clone(), identity);
    let local = match opts.app {
        Some(app) => crate::local::inbound(opts.inbound, app),
        None => Resources::default(),
    };
    let store = ConfigStore::new(core.clone(), listeners.clone(), local);
    // Bound before the node is announced, so ADMIN_ADDR is the real port even for `:0`.
    let admin_listener = tokio::net::TcpListener::bind(opts.admin)
        .await
        .map_err(|e| format!("cannot bind admin address {}: {e}", opts.admin))?;
    let admin_addr = admin_listener
        .local_addr()
        .map_err(|e| format!("admin address {}: {e}", opts.admin))?;
    let node = node(&opts, admin_addr);
    let client = XdsClient::new(XdsClientConfig::new(opts.pilots.clone(), node))
        .with_handler::<Cluster, _>(CLUSTER, store.clone())
        .with_handler::<ClusterLoadAssignment, _>(ENDPOINT, store.clone())
        .with_handler::<Listener, _>(LISTENER, store.clone())
        .with_handler::<RouteConfiguration, _>(ROUTE, store.clone());
    let xds = client.status();
    tokio::spawn(client.run());

    let ready = Arc::new(AtomicBool::new(false));
    let stopping = Arc::new(AtomicBool::new(false));
    let admin = Admin {
        core: core.clone(),
        store: store.clone(),
        listeners: listeners.clone(),
        xds: xds.clone(),
        registry: Arc::new(registry),
        ready: ready.clone(),
        stopping: stopping.clone(),
    };
    tokio::spawn(admin.serve(admin_listener));
    let (stop, stop_rx) = watch::channel(false);
    let registrar = registration(&opts).map(|spec| tokio::spawn(Registrar::new(spec).run(stop_rx)));
    shutdown.await;
    stopping.store(true, std::sync::atomic::Ordering::SeqCst);
    tracing::info!("shutting down: deregistering, then draining connections");
    let _ = stop.send(true);
    if let Some(task) = registrar {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    if !listeners.drain(opts.drain_timeout).await {
        tracing::warn!(limit = ?opts.drain_timeout, "connections still open after the drain limit; closing");
    }
    Ok(())
}

fn registration(opts: &ProxyOptions) -> Option<RegistrationSpec> {
    let (url, service, app) = (opts.registry_url.clone()?, opts.service.clone()?, opts.app?);
    let mut labels: serde_json::Map<String, serde_json::Value> = opts
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().into()))
        .collect();
    if let Some(v) = &opts.service_version {
        labels.insert("version".into(), v.clone().into());
    }
    let port = opts.service_port.unwrap_or(app.port());
    let instance = serde_json::json!({
        "id": opts.node_id,
        "service": service,
        "namespace": opts.namespace,
        "address": opts.inbound.ip().to_string(),
        "ports": [{ "port": port, "target_port": opts.inbound.port(), "name": "http" }],
        "labels": labels,
        "ttl_seconds": opts.registration_ttl.as_secs().max(1),
    });
    Some(RegistrationSpec {
        registry_url: url,
        instance,
        ttl: opts.registration_ttl,
        app,
        health_path: opts.health_path.clone(),
    })
}

fn string(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_string())),
    }
}

/// The node pilot sees: Istio's metadata keys plus graymesh's explicit ports, and where this
/// proxy's admin server (and so its `/metrics`) is, for pilot's telemetry scraper.
fn node(opts: &ProxyOptions, admin: SocketAddr) -> Node {
    let mut labels = std::collections::HashMap::new();
    if let Some(s) = &opts.service {
        labels.insert("app".to_string(), string(s));
    }
    if let Some(v) = &opts.service_version {
        labels.insert("version".to_string(), string(v));
    }
    for (k, v) in &opts.labels {
        labels.insert(k.clone(), string(v));
    }
    let mut fields = std::collections::HashMap::new();
    fields.insert("NAMESPACE".to_string(), string(&opts.namespace));
    fields.insert(
        "LABELS".to_string(),
        Value {
            kind: Some(Kind::StructValue(Struct { fields: labels })),
        },
    );
    fields.insert(
        "OUTBOUND_ADDR".to_string(),
        string(&opts.outbound.to_string()),
    );
    fields.insert("ADMIN_ADDR".to_string(), string(&admin.to_string()));
    let ups = opts.upstreams.iter().map(|u| string(u)).collect();
    fields.insert(
        "UPSTREAMS".to_string(),
        Value {
            kind: Some(Kind::ListValue(ListValue { values: ups })),
        },
    );
    let mut user_agent = "graymesh-proxy";
    if opts.gateway {
        fields.insert("ROLE".to_string(), string("gateway"));
        let addr = opts.gateway_addr.to_string();
        fields.insert("GATEWAY_ADDR".to_string(), string(&addr));
        // Shown by proxy-status; pilot reads the role from ROLE only.
        user_agent = "graymesh-gateway";
    }
    Node {
        id: opts.node_id.clone(),
        user_agent_name: user_agent.into(),
        metadata: Some(Struct { fields }),
        ..Default::default()
    }
}
