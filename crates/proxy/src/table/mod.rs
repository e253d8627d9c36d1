//! The routing table: everything the data path needs, compiled once from Envoy resources and
//! then only read. A new table is built on every accepted xDS change and swapped in whole
//! (arc-swap), so a request runs start to finish on the table it started with.
//!
//! Compilation is where Envoy resources are checked: a resource the proxy cannot honour is an
//! error naming the resource, which the xDS client sends back as a NACK.

mod cluster;
mod hash;
mod matcher;
mod path_rewrite;
mod regex_rewrite;
mod route;
#[cfg(test)]
mod tests;

pub use cluster::{
    eds_service_name, ClusterSpec, Endpoint, LbPolicy, OutlierSpec, RetryBudget, Thresholds,
    UpstreamProtocol,
};
pub use hash::{CookieToSet, HashKey};
pub use matcher::{HeaderMatch, PathMatch, StringMatch};
pub use path_rewrite::PathRewrite;
pub use regex_rewrite::RegexRewrite;
pub use route::{
    Action, Forward, HeaderOps, Mirror, Redirect, RedirectPath, RetrySpec, Route, RouteConfig,
    VirtualHost, WeightedCluster,
};

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager,
};
use prost::Message;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;

pub const HCM_FILTER: &str = "envoy.filters.network.http_connection_manager";

/// A port the proxy listens on: HTTP routed by a route configuration, or TCP sent as bytes to
/// one of weighted clusters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    pub name: String,
    pub addr: SocketAddr,
    /// The route configuration of an HTTP listener (empty for TCP).
    pub route_config: String,
    pub tcp: Option<Arc<TcpRoute>>,
}

/// Where a TCP listener sends its connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpRoute {
    /// (cluster, weight), weights above 0.
    pub clusters: Vec<(String, u64)>,
    pub total_weight: u64,
}

pub const TCP_PROXY_FILTER: &str = "envoy.filters.network.tcp_proxy";

/// The raw resources last accepted, per type, by name. Shared (`Arc`): the proxy keeps several
/// views of them (latest, applied, effective) and copying decoded protos was most of its memory.
#[derive(Debug, Clone, Default)]
pub struct Resources {
    pub listeners: BTreeMap<String, Arc<Listener>>,
    pub routes: BTreeMap<String, Arc<RouteConfiguration>>,
    pub clusters: BTreeMap<String, Arc<Cluster>>,
    pub endpoints: BTreeMap<String, Arc<ClusterLoadAssignment>>,
}

#[derive(Debug, Default)]
pub struct RouteTable {
    pub version: u64,
    pub listeners: Vec<ListenerSpec>,
    pub routes: foldhash::HashMap<String, Arc<RouteConfig>>,
    pub clusters: foldhash::HashMap<String, Arc<ClusterSpec>>,
}

impl RouteTable {
    /// Compile every resource; the first problem found is returned, naming the resource.
    pub fn compile(version: u64, r: &Resources) -> Result<Self, String> {
        let mut table = RouteTable {
            version,
            ..Default::default()
        };
        for l in r.listeners.values() {
            if let Some(spec) = listener(l)? {
                table.listeners.push(spec);
            }
        }
        for rc in r.routes.values() {
            let compiled =
                route::compile(rc).map_err(|e| format!("RouteConfiguration {}: {e}", rc.name))?;
            table.routes.insert(rc.name.clone(), Arc::new(compiled));
        }
        for c in r.clusters.values() {
            let eds_name = cluster::eds_service_name(c);
            let assignment = eds_name
                .as_deref()
                .and_then(|n| r.endpoints.get(n))
                .map(|a| &**a);
            let compiled =
                cluster::compile(c, assignment).map_err(|e| format!("Cluster {}: {e}", c.name))?;
            table.clusters.insert(c.name.clone(), Arc::new(compiled));
        }
        Ok(table)
    }

    pub fn route_config(&self, name: &str) -> Option<&Arc<RouteConfig>> {
        self.routes.get(name)
    }

    pub fn cluster(&self, name: &str) -> Option<&Arc<ClusterSpec>> {
        self.clusters.get(name)
    }
}

/// Route configuration names the listeners refer to (what to subscribe to over RDS).
pub fn route_names(listeners: &BTreeMap<String, Arc<Listener>>) -> BTreeSet<String> {
    listeners
        .values()
        .filter_map(|l| hcm_of(l).ok().flatten())
        .filter_map(|h| rds_name(&h))
        .collect()
}

/// The route configuration a listener's HTTP connection manager asks for over RDS, if any.
pub fn listener_route_name(listener: &Listener) -> Option<String> {
    hcm_of(listener).ok().flatten().and_then(|h| rds_name(&h))
}

/// EDS service names the clusters refer to (what to subscribe to over EDS).
pub fn eds_names(clusters: &BTreeMap<String, Arc<Cluster>>) -> BTreeSet<String> {
    clusters
        .values()
        .filter_map(|c| cluster::eds_service_name(c))
        .collect()
}

/// A listener with a socket address and either an HTTP connection manager over RDS or a TCP
/// proxy; API listeners (for proxyless clients) are not served.
fn listener(l: &Listener) -> Result<Option<ListenerSpec>, String> {
    use envoy_types::pb::envoy::config::core::v3::{address, socket_address::PortSpecifier};
    let tcp = tcp_route(l)?;
    let route_config = match (&tcp, hcm_of(l)?) {
        (Some(_), _) => String::new(),
        (None, Some(hcm)) => rds_name(&hcm).ok_or_else(|| {
            format!(
                "Listener {}: the HTTP connection manager must use RDS",
                l.name
            )
        })?,
        (None, None) => return Ok(None),
    };
    let Some(address::Address::SocketAddress(sa)) =
        l.address.as_ref().and_then(|a| a.address.as_ref())
    else {
        return Ok(None);
    };
    let Some(PortSpecifier::PortValue(port)) = sa.port_specifier else {
        return Err(format!(
            "Listener {}: named ports are not supported",
            l.name
        ));
    };
    let ip: std::net::IpAddr = sa.address.parse().map_err(|_| {
        format!(
            "Listener {}: address {:?} is not an IP address",
            l.name, sa.address
        )
    })?;
    let port = u16::try_from(port)
        .map_err(|_| format!("Listener {}: port {port} out of range", l.name))?;
    Ok(Some(ListenerSpec {
        name: l.name.clone(),
        addr: SocketAddr::new(ip, port),
        route_config,
        tcp: tcp.map(Arc::new),
    }))
}

fn tcp_route(l: &Listener) -> Result<Option<TcpRoute>, String> {
    use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
    use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
        tcp_proxy::ClusterSpecifier, TcpProxy,
    };
    let Some(filter) = l
        .filter_chains
        .iter()
        .flat_map(|fc| &fc.filters)
        .find(|f| f.name == TCP_PROXY_FILTER)
    else {
        return Ok(None);
    };
    let Some(ConfigType::TypedConfig(any)) = &filter.config_type else {
        return Err(format!(
            "Listener {}: {TCP_PROXY_FILTER} has no typed_config",
            l.name
        ));
    };
    let proxy = TcpProxy::decode(any.value.as_slice())
        .map_err(|e| format!("Listener {}: cannot decode TcpProxy: {e}", l.name))?;
    let clusters: Vec<(String, u64)> = match proxy.cluster_specifier {
        Some(ClusterSpecifier::Cluster(c)) => vec![(c, 1)],
        Some(ClusterSpecifier::WeightedClusters(w)) => w
            .clusters
            .into_iter()
            .filter(|c| c.weight > 0)
            .map(|c| (c.name, u64::from(c.weight)))
            .collect(),
        None => Vec::new(),
    };
    if clusters.is_empty() {
        return Err(format!(
            "Listener {}: the TCP proxy names no cluster with a weight above 0",
            l.name
        ));
    }
    let total_weight = clusters.iter().map(|(_, w)| w).sum();
    Ok(Some(TcpRoute {
        clusters,
        total_weight,
    }))
}

fn hcm_of(l: &Listener) -> Result<Option<HttpConnectionManager>, String> {
    use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
    let filter = l
        .filter_chains
        .iter()
        .flat_map(|fc| &fc.filters)
        .find(|f| f.name == HCM_FILTER);
    let Some(filter) = filter else {
        return Ok(None);
    };
    let Some(ConfigType::TypedConfig(any)) = &filter.config_type else {
        return Err(format!(
            "Listener {}: {HCM_FILTER} has no typed_config",
            l.name
        ));
    };
    HttpConnectionManager::decode(any.value.as_slice())
        .map(Some)
        .map_err(|e| {
            format!(
                "Listener {}: cannot decode HttpConnectionManager: {e}",
                l.name
            )
        })
}

fn rds_name(h: &HttpConnectionManager) -> Option<String> {
    match &h.route_specifier {
        Some(RouteSpecifier::Rds(rds)) => Some(rds.route_config_name.clone()),
        _ => None,
    }
}
