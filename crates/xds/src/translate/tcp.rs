//! Non-HTTP service ports (TCP, and protocols carried over it: MONGO, MYSQL, REDIS, TLS
//! passthrough). A sidecar's explicit upstream for such a port gets a `tcp_proxy` listener whose
//! destinations come from the first VirtualService `tcp` route that applies (weights as in
//! `http` routes), else the service's own cluster.

use super::routes::destination_cluster;
use super::{cluster_name, pb, Context};
use envoy_types::pb::envoy::config::listener::v3::{filter, Filter, FilterChain, Listener};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    tcp_proxy::{weighted_cluster::ClusterWeight, ClusterSpecifier, WeightedCluster},
    TcpProxy,
};
use graymesh_model::istio::TcpRoute;
use graymesh_sources::Service;

pub const TCP_PROXY_FILTER: &str = "envoy.filters.network.tcp_proxy";

/// Protocols served as opaque bytes.
pub fn is_tcp(protocol: &str) -> bool {
    matches!(protocol, "TCP" | "MONGO" | "MYSQL" | "REDIS" | "TLS")
}

pub fn listener(
    ctx: &Context<'_>,
    service: &Service,
    port: u32,
    bind_ip: &str,
    bind_port: u32,
) -> Listener {
    let proxy = TcpProxy {
        stat_prefix: format!("{}:{port}", service.host),
        cluster_specifier: Some(destinations(ctx, service, port)),
        ..Default::default()
    };
    Listener {
        name: format!("{bind_ip}_{bind_port}"),
        address: Some(pb::socket_address(bind_ip, bind_port)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: TCP_PROXY_FILTER.into(),
                config_type: Some(filter::ConfigType::TypedConfig(pb::any(&proxy))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn destinations(ctx: &Context<'_>, service: &Service, port: u32) -> ClusterSpecifier {
    let route = ctx
        .virtual_services(&service.host)
        .into_iter()
        .flat_map(|vs| vs.spec.tcp.iter().map(move |r| (vs, r)))
        .find(|(_, r)| applies(ctx, r, port));
    let Some((vs, route)) = route else {
        return ClusterSpecifier::Cluster(cluster_name(port, None, &service.host));
    };
    let live: Vec<_> = route.route.iter().filter(|d| d.weight != Some(0)).collect();
    let name = |d: &graymesh_model::istio::RouteDestination| {
        destination_cluster(
            ctx,
            &d.destination,
            &vs.meta.namespace,
            Some(&service.host),
            port,
        )
    };
    match live.as_slice() {
        [only] => ClusterSpecifier::Cluster(name(only)),
        _ => ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: live
                .iter()
                .map(|d| ClusterWeight {
                    name: name(d),
                    weight: d.weight.unwrap_or(0),
                    ..Default::default()
                })
                .collect(),
        }),
    }
}

/// A route with no match applies everywhere; otherwise one of its matches must name this port
/// (or none) and labels the node has.
fn applies(ctx: &Context<'_>, route: &TcpRoute, port: u32) -> bool {
    route.matches.is_empty()
        || route
            .matches
            .iter()
            .any(|m| m.port.is_none_or(|p| p == port) && ctx.node_has_labels(&m.source_labels))
}
