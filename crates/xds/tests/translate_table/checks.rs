//! What every translation case must hold whatever its input: each resource survives a prost
//! round trip, and the set has the properties an ADS client needs to accept and use it.

use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::{filter, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    route::Action, route_action::ClusterSpecifier, RouteConfiguration,
};
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, http_filter::ConfigType, HttpConnectionManager,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
use envoy_types::pb::google::protobuf::Any;
use graymesh_xds::translate::Translation;
use prost::{Message, Name};
use std::collections::BTreeSet;
use std::fmt::Debug;

const FAULT_FILTER: &str = "envoy.filters.http.fault";
const ROUTER_FILTER: &str = "envoy.filters.http.router";

// === Round trip ===

/// Encoding then decoding gives back the same message: nothing translation sets is lost on the
/// wire (an unset oneof, an out-of-range enum, a field prost cannot carry).
pub fn round_trip(t: &Translation, problems: &mut Vec<String>) {
    for l in &t.listeners {
        same_after_round_trip(&l.name, l, problems);
        for any in listener_anys(l) {
            any_round_trip(&l.name, any, problems);
        }
    }
    for r in &t.routes {
        same_after_round_trip(&r.name, r, problems);
        let per_filter = r.virtual_hosts.iter().flat_map(|v| &v.routes);
        for any in per_filter.flat_map(|route| route.typed_per_filter_config.values()) {
            any_round_trip(&r.name, any, problems);
        }
    }
    for c in &t.clusters {
        same_after_round_trip(&c.name, c, problems);
    }
    for e in &t.endpoints {
        same_after_round_trip(&e.cluster_name, e, problems);
    }
}

fn same_after_round_trip<M: Message + Default + PartialEq + Debug>(
    name: &str,
    msg: &M,
    problems: &mut Vec<String>,
) {
    match M::decode(msg.encode_to_vec().as_slice()) {
        Ok(back) if &back == msg => {}
        Ok(back) => problems.push(format!("{name}: round trip changed it: {back:?}")),
        Err(e) => problems.push(format!("{name}: does not decode after encoding: {e}")),
    }
}

/// The messages packed in an `Any` decode as their type URL says and re-encode to the same bytes,
/// down to the HTTP filters inside a connection manager.
fn any_round_trip(name: &str, any: &Any, problems: &mut Vec<String>) {
    let bytes = any.value.as_slice();
    let reencoded = if any.type_url == HttpConnectionManager::type_url() {
        HttpConnectionManager::decode(bytes).map(|hcm| {
            for filter in &hcm.http_filters {
                if let Some(ConfigType::TypedConfig(inner)) = &filter.config_type {
                    any_round_trip(name, inner, problems);
                }
            }
            hcm.encode_to_vec()
        })
    } else if any.type_url == HttpFault::type_url() {
        HttpFault::decode(bytes).map(|m| m.encode_to_vec())
    } else if any.type_url == Router::type_url() {
        Router::decode(bytes).map(|m| m.encode_to_vec())
    } else if any.type_url == TcpProxy::type_url() {
        TcpProxy::decode(bytes).map(|m| m.encode_to_vec())
    } else {
        problems.push(format!("{name}: unexpected Any type {}", any.type_url));
        return;
    };
    match reencoded {
        Ok(again) if again == any.value => {}
        Ok(_) => problems.push(format!("{name}: {} changes on re-encoding", any.type_url)),
        Err(e) => problems.push(format!("{name}: {} does not decode: {e}", any.type_url)),
    }
}

fn listener_anys(l: &Listener) -> Vec<&Any> {
    let api = l
        .api_listener
        .iter()
        .filter_map(|a| a.api_listener.as_ref());
    let chains = l.filter_chains.iter().flat_map(|fc| &fc.filters);
    let typed = chains.filter_map(|f| match &f.config_type {
        Some(filter::ConfigType::TypedConfig(a)) => Some(a),
        _ => None,
    });
    api.chain(typed).collect()
}

// === Invariants ===

/// What must hold for any input: the properties an ADS client needs to accept and use the set.
pub fn check_invariants(t: &Translation, problems: &mut Vec<String>) {
    // Resources are keyed by name on the wire: of two with one name, a client keeps one.
    unique_names(
        "listener name",
        t.listeners.iter().map(|l| &l.name),
        problems,
    );
    unique_names(
        "route configuration name",
        t.routes.iter().map(|r| &r.name),
        problems,
    );
    unique_names("cluster name", t.clusters.iter().map(|c| &c.name), problems);
    let assignments = t.endpoints.iter().map(|e| &e.cluster_name);
    unique_names("load assignment name", assignments, problems);
    let clusters: BTreeSet<&str> = t.clusters.iter().map(|c| c.name.as_str()).collect();
    for r in &t.routes {
        check_route_configuration(r, &clusters, problems);
    }
    for c in &t.clusters {
        check_cluster(c, &t.endpoints, problems);
    }
    for e in t
        .endpoints
        .iter()
        .chain(t.clusters.iter().filter_map(|c| c.load_assignment.as_ref()))
    {
        check_load_assignment(e, problems);
    }
    for l in &t.listeners {
        check_listener(l, &t.routes, problems);
    }
}

fn unique_names<'a>(
    what: &str,
    names: impl Iterator<Item = &'a String>,
    problems: &mut Vec<String>,
) {
    let mut seen = BTreeSet::new();
    for n in names {
        if !seen.insert(n) {
            problems.push(format!("duplicate {what} {n:?}"));
        }
    }
}

/// Domains unique (Envoy rejects duplicates), routed-to clusters exist, weights usable.
fn check_route_configuration(
    r: &RouteConfiguration,
    clusters: &BTreeSet<&str>,
    problems: &mut Vec<String>,
) {
    let domains = r.virtual_hosts.iter().flat_map(|v| &v.domains);
    unique_names(&format!("domain in route {}:", r.name), domains, problems);
    for route in r.virtual_hosts.iter().flat_map(|v| &v.routes) {
        let Some(Action::Route(action)) = &route.action else {
            continue;
        };
        let mut targets: Vec<&str> = action
            .request_mirror_policies
            .iter()
            .map(|m| m.cluster.as_str())
            .collect();
        match &action.cluster_specifier {
            Some(ClusterSpecifier::Cluster(c)) => targets.push(c),
            Some(ClusterSpecifier::WeightedClusters(w)) => {
                if w.clusters.len() < 2 {
                    problems.push(format!(
                        "route {}: weighted clusters with fewer than two entries",
                        route.name
                    ));
                }
                for cw in &w.clusters {
                    if cw.weight.as_ref().is_none_or(|w| w.value == 0) {
                        problems.push(format!("route {}: {} has no weight", route.name, cw.name));
                    }
                    targets.push(&cw.name);
                }
            }
            other => problems.push(format!(
                "route {}: unexpected cluster specifier {other:?}",
                route.name
            )),
        }
        for target in targets.into_iter().filter(|c| !clusters.contains(c)) {
            problems.push(format!(
                "route {} sends to cluster {target} which does not exist",
                route.name
            ));
        }
    }
}

fn check_cluster(c: &Cluster, endpoints: &[ClusterLoadAssignment], problems: &mut Vec<String>) {
    let eds = DiscoveryType::Eds as i32;
    match c.cluster_discovery_type {
        Some(ClusterDiscoveryType::Type(t)) if t == eds => {
            let Some(config) = &c.eds_cluster_config else {
                problems.push(format!("EDS cluster {} has no eds_cluster_config", c.name));
                return;
            };
            let ads = config
                .eds_config
                .as_ref()
                .and_then(|s| s.config_source_specifier.as_ref());
            if !matches!(ads, Some(ConfigSourceSpecifier::Ads(_))) {
                problems.push(format!(
                    "EDS cluster {} does not read endpoints over ADS",
                    c.name
                ));
            }
            if !endpoints
                .iter()
                .any(|e| e.cluster_name == config.service_name)
            {
                problems.push(format!(
                    "EDS cluster {} has no load assignment {}",
                    c.name, config.service_name
                ));
            }
        }
        Some(ClusterDiscoveryType::Type(_)) if c.load_assignment.is_none() => {
            problems.push(format!(
                "cluster {} is neither EDS nor has inline endpoints",
                c.name
            ));
        }
        Some(_) => {}
        None => problems.push(format!("cluster {} has no discovery type", c.name)),
    }
}

/// gRPC clients drop a locality whose weight is zero or missing.
fn check_load_assignment(e: &ClusterLoadAssignment, problems: &mut Vec<String>) {
    for l in &e.endpoints {
        if l.load_balancing_weight
            .as_ref()
            .is_none_or(|w| w.value == 0)
        {
            problems.push(format!(
                "{}: locality {:?} has no weight",
                e.cluster_name, l.locality
            ));
        }
        if l.lb_endpoints.is_empty() {
            problems.push(format!(
                "{}: locality {:?} has no endpoints",
                e.cluster_name, l.locality
            ));
        }
    }
}

/// The HCM reads an existing route configuration over ADS; the router is last; the fault filter
/// sits before it exactly when a route of that configuration injects faults.
fn check_listener(l: &Listener, routes: &[RouteConfiguration], problems: &mut Vec<String>) {
    let tcp_proxies = listener_anys(l)
        .into_iter()
        .filter(|a| a.type_url == TcpProxy::type_url())
        .count();
    if tcp_proxies > 0 {
        // A TCP listener: exactly one tcp_proxy and nothing HTTP.
        if tcp_proxies != 1 || listener_anys(l).len() != 1 {
            problems.push(format!(
                "TCP listener {} must have exactly one filter, a tcp_proxy",
                l.name
            ));
        }
        return;
    }
    let hcms: Vec<HttpConnectionManager> = listener_anys(l)
        .into_iter()
        .filter(|a| a.type_url == HttpConnectionManager::type_url())
        .filter_map(|a| HttpConnectionManager::decode(a.value.as_slice()).ok())
        .collect();
    if hcms.len() != 1 {
        problems.push(format!(
            "listener {} has {} HTTP connection managers",
            l.name,
            hcms.len()
        ));
    }
    for hcm in &hcms {
        let Some(RouteSpecifier::Rds(rds)) = &hcm.route_specifier else {
            problems.push(format!("listener {}: HCM without RDS", l.name));
            continue;
        };
        let source = rds
            .config_source
            .as_ref()
            .and_then(|c| c.config_source_specifier.as_ref());
        if !matches!(source, Some(ConfigSourceSpecifier::Ads(_))) {
            problems.push(format!("listener {}: RDS not over ADS", l.name));
        }
        let Some(route) = routes.iter().find(|r| r.name == rds.route_config_name) else {
            problems.push(format!(
                "listener {} reads route {} which does not exist",
                l.name, rds.route_config_name
            ));
            continue;
        };
        let names: Vec<&str> = hcm.http_filters.iter().map(|f| f.name.as_str()).collect();
        let uses_fault = route
            .virtual_hosts
            .iter()
            .flat_map(|v| &v.routes)
            .any(|r| r.typed_per_filter_config.contains_key(FAULT_FILTER));
        let want: &[&str] = if uses_fault {
            &[FAULT_FILTER, ROUTER_FILTER]
        } else {
            &[ROUTER_FILTER]
        };
        if names != want {
            problems.push(format!(
                "listener {}: http filters {names:?}, want {want:?}",
                l.name
            ));
        }
        let typed = hcm
            .http_filters
            .iter()
            .all(|f| matches!(f.config_type, Some(ConfigType::TypedConfig(_))));
        if !typed {
            problems.push(format!(
                "listener {}: an http filter has no typed_config",
                l.name
            ));
        }
    }
}
