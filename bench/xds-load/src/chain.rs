//! The resource chain a proxyless gRPC client follows: a listener names its route configuration
//! (RDS), routes name clusters (CDS), clusters name their endpoint sets (EDS).
//!
//! Pure decoding only: this module never talks to a server. It reads just the fields gRPC's xDS
//! resolver reads to decide what to subscribe to next.

use anyhow::{bail, Context as _};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::{
    route::Action, route_action::ClusterSpecifier, RouteConfiguration,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager,
};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use std::collections::BTreeSet;

/// The four xDS types, in the order a client discovers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum XdsType {
    Listener,
    Route,
    Cluster,
    Endpoint,
}

impl XdsType {
    pub const ALL: [XdsType; 4] = [Self::Listener, Self::Route, Self::Cluster, Self::Endpoint];

    pub fn url(self) -> &'static str {
        match self {
            Self::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            Self::Route => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
            Self::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            Self::Endpoint => "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
        }
    }

    pub fn from_url(url: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.url() == url)
    }

    pub fn short(self) -> &'static str {
        match self {
            Self::Listener => "LDS",
            Self::Route => "RDS",
            Self::Cluster => "CDS",
            Self::Endpoint => "EDS",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// The type whose names this type's resources reference.
    pub fn next(self) -> Option<Self> {
        match self {
            Self::Listener => Some(Self::Route),
            Self::Route => Some(Self::Cluster),
            Self::Cluster => Some(Self::Endpoint),
            Self::Endpoint => None,
        }
    }
}

/// The name a resource is known by in subscriptions.
pub fn resource_name(t: XdsType, any: &Any) -> anyhow::Result<String> {
    let bytes = any.value.as_slice();
    Ok(match t {
        XdsType::Listener => Listener::decode(bytes)?.name,
        XdsType::Route => RouteConfiguration::decode(bytes)?.name,
        XdsType::Cluster => Cluster::decode(bytes)?.name,
        XdsType::Endpoint => ClusterLoadAssignment::decode(bytes)?.cluster_name,
    })
}

/// The names of `t.next()` that `resources` (all of type `t`) reference.
pub fn referenced_names(t: XdsType, resources: &[Any]) -> anyhow::Result<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    for any in resources {
        let bytes = any.value.as_slice();
        match t {
            XdsType::Listener => {
                names.insert(route_name_of(&Listener::decode(bytes)?)?);
            }
            XdsType::Route => names.extend(clusters_of(&RouteConfiguration::decode(bytes)?)),
            XdsType::Cluster => {
                names.insert(eds_name_of(Cluster::decode(bytes)?));
            }
            XdsType::Endpoint => {}
        }
    }
    Ok(names)
}

/// The RDS name in a listener's API listener (an HttpConnectionManager), as gRPC reads it.
fn route_name_of(listener: &Listener) -> anyhow::Result<String> {
    let any = listener
        .api_listener
        .as_ref()
        .and_then(|a| a.api_listener.as_ref())
        .with_context(|| format!("listener {} has no api_listener", listener.name))?;
    let hcm = HttpConnectionManager::decode(any.value.as_slice())
        .with_context(|| format!("listener {}: api_listener is no HCM", listener.name))?;
    match hcm.route_specifier {
        Some(RouteSpecifier::Rds(rds)) => Ok(rds.route_config_name),
        _ => bail!("listener {}: HCM does not use RDS", listener.name),
    }
}

/// Every cluster a route of any virtual host sends to (single or weighted).
fn clusters_of(config: &RouteConfiguration) -> impl Iterator<Item = String> + '_ {
    config
        .virtual_hosts
        .iter()
        .flat_map(|vh| &vh.routes)
        .filter_map(|r| match &r.action {
            Some(Action::Route(action)) => action.cluster_specifier.as_ref(),
            _ => None,
        })
        .flat_map(|spec| match spec {
            ClusterSpecifier::Cluster(name) => vec![name.clone()],
            ClusterSpecifier::WeightedClusters(w) => {
                w.clusters.iter().map(|c| c.name.clone()).collect()
            }
            _ => Vec::new(),
        })
}

/// EDS is asked for by `eds_cluster_config.service_name`, or by the cluster's name without one.
fn eds_name_of(cluster: Cluster) -> String {
    match cluster.eds_cluster_config {
        Some(eds) if !eds.service_name.is_empty() => eds.service_name,
        _ => cluster.name,
    }
}

#[cfg(test)]
mod tests;
