//! What an Envoy resource points at: the route configurations and clusters a listener names,
//! the clusters a route configuration names, the load assignment an EDS cluster reads. The ADS
//! server orders its pushes by these (`server/ordering.rs`); nothing here knows of Istio.
//!
//! Read from the typed resources once per translation, never per stream. A filter or field this
//! module does not know contributes nothing: it only ever makes the server wait less.

use envoy_types::pb::envoy::config::cluster::v3::{
    cluster::{ClusterDiscoveryType, DiscoveryType},
    Cluster,
};
use envoy_types::pb::envoy::config::listener::v3::{filter, Filter, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    route::Action, route_action::ClusterSpecifier, RouteConfiguration,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    tcp_proxy::ClusterSpecifier as TcpClusterSpecifier, TcpProxy,
};
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};
use std::collections::BTreeSet;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct References {
    /// Clusters named directly (route actions, mirrors, TCP proxies, inline route configs).
    pub clusters: BTreeSet<String>,
    /// Route configurations fetched over RDS.
    pub routes: BTreeSet<String>,
    /// The load assignment an EDS cluster waits for.
    pub endpoints: Option<String>,
}

impl References {
    pub fn of_listener(listener: &Listener) -> Self {
        let mut refs = Self::default();
        let chains = listener
            .filter_chains
            .iter()
            .chain(listener.default_filter_chain.as_ref());
        for f in chains.flat_map(|c| &c.filters) {
            refs.add_filter(f);
        }
        if let Some(any) = listener
            .api_listener
            .as_ref()
            .and_then(|a| a.api_listener.as_ref())
        {
            refs.add_typed(any);
        }
        refs
    }

    pub fn of_route(route: &RouteConfiguration) -> Self {
        let mut refs = Self::default();
        refs.add_route_config(route);
        refs
    }

    pub fn of_cluster(cluster: &Cluster) -> Self {
        let eds = cluster.cluster_discovery_type
            == Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32));
        let endpoints = eds.then(|| match &cluster.eds_cluster_config {
            Some(c) if !c.service_name.is_empty() => c.service_name.clone(),
            _ => cluster.name.clone(),
        });
        Self {
            endpoints,
            ..Self::default()
        }
    }

    fn add_filter(&mut self, f: &Filter) {
        if let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type {
            self.add_typed(any);
        }
    }

    fn add_typed(&mut self, any: &Any) {
        if any.type_url == HttpConnectionManager::type_url() {
            if let Ok(hcm) = HttpConnectionManager::decode(any.value.as_slice()) {
                match hcm.route_specifier {
                    Some(RouteSpecifier::Rds(rds)) => {
                        self.routes.insert(rds.route_config_name);
                    }
                    Some(RouteSpecifier::RouteConfig(rc)) => self.add_route_config(&rc),
                    _ => {}
                }
            }
        } else if any.type_url == TcpProxy::type_url() {
            if let Ok(tcp) = TcpProxy::decode(any.value.as_slice()) {
                match tcp.cluster_specifier {
                    Some(TcpClusterSpecifier::Cluster(c)) => {
                        self.clusters.insert(c);
                    }
                    Some(TcpClusterSpecifier::WeightedClusters(w)) => {
                        self.clusters.extend(w.clusters.into_iter().map(|c| c.name));
                    }
                    None => {}
                }
            }
        }
    }

    fn add_route_config(&mut self, rc: &RouteConfiguration) {
        let actions = rc
            .virtual_hosts
            .iter()
            .flat_map(|vh| &vh.routes)
            .filter_map(|r| match &r.action {
                Some(Action::Route(a)) => Some(a),
                _ => None,
            });
        for action in actions {
            match &action.cluster_specifier {
                Some(ClusterSpecifier::Cluster(c)) => {
                    self.clusters.insert(c.clone());
                }
                Some(ClusterSpecifier::WeightedClusters(w)) => {
                    self.clusters
                        .extend(w.clusters.iter().map(|c| c.name.clone()));
                }
                _ => {}
            }
            let mirrors = action.request_mirror_policies.iter();
            self.clusters.extend(mirrors.map(|m| m.cluster.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::ProxyClass;
    use crate::translate::translate;
    use graymesh_model::{build_config_set, parse_str};
    use graymesh_sources::RegistrySnapshot;

    const YAML: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: echo}
spec:
  hosts: [echo.test]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, labels: {version: v1}}, {address: 127.0.0.2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo}
spec:
  host: echo.test
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo}
spec:
  hosts: [echo.test]
  http:
  - route:
    - {destination: {host: echo.test, subset: v1}, weight: 70}
    - {destination: {host: echo.test, subset: v2}, weight: 30}
    mirror: {host: echo.test}
"#;

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn routes_name_their_weighted_and_mirror_clusters_and_clusters_their_endpoints() {
        let config = build_config_set(parse_str("t.yaml", YAML).unwrap()).unwrap();
        let registry = RegistrySnapshot::build(&config, &[]);
        let class = ProxyClass::proxyless("default");
        let out = translate(&config, &registry, &class);

        let route = out
            .routes
            .iter()
            .find(|r| r.name == "echo.test:80")
            .unwrap();
        assert_eq!(
            References::of_route(route).clusters,
            names(&[
                "outbound|80|v1|echo.test",
                "outbound|80|v2|echo.test",
                "outbound|80||echo.test"
            ])
        );
        let listener = out
            .listeners
            .iter()
            .find(|l| l.name == "echo.test:80")
            .unwrap();
        let refs = References::of_listener(listener);
        assert_eq!(
            refs.routes,
            names(&["echo.test:80"]),
            "an API listener over RDS"
        );
        assert!(refs.clusters.is_empty());
        let cluster = out
            .clusters
            .iter()
            .find(|c| c.name.contains("|v2|"))
            .unwrap();
        assert_eq!(
            References::of_cluster(cluster).endpoints.as_deref(),
            Some("outbound|80|v2|echo.test")
        );
    }

    #[test]
    fn a_tcp_proxy_listener_names_its_clusters_and_a_static_cluster_no_endpoints() {
        let tcp = TcpProxy {
            cluster_specifier: Some(TcpClusterSpecifier::Cluster("db".into())),
            ..Default::default()
        };
        let listener = Listener {
            filter_chains: vec![envoy_types::pb::envoy::config::listener::v3::FilterChain {
                filters: vec![Filter {
                    name: "tcp".into(),
                    config_type: Some(filter::ConfigType::TypedConfig(Any {
                        type_url: TcpProxy::type_url(),
                        value: tcp.encode_to_vec(),
                    })),
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(References::of_listener(&listener).clusters, names(&["db"]));
        let static_cluster = Cluster {
            name: "dns".into(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(
                DiscoveryType::StrictDns as i32,
            )),
            ..Default::default()
        };
        assert_eq!(References::of_cluster(&static_cluster).endpoints, None);
    }
}
