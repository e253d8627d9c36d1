//! Compilation of Envoy resources into the routing table, and the matchers it builds.

use super::*;
use envoy_types::pb::envoy::config::core::v3::{
    address, socket_address::PortSpecifier, Address, HealthStatus, Locality, SocketAddress,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint::HostIdentifier, Endpoint as PbEndpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::config::route::v3 as rt;
use envoy_types::pb::envoy::r#type::matcher::v3::{
    string_matcher::MatchPattern, RegexMatcher, StringMatcher,
};
use envoy_types::pb::google::protobuf::UInt32Value;

fn prefix_route(name: &str, prefix: &str, cluster: &str) -> rt::Route {
    rt::Route {
        name: name.into(),
        r#match: Some(rt::RouteMatch {
            path_specifier: Some(rt::route_match::PathSpecifier::Prefix(prefix.into())),
            ..Default::default()
        }),
        action: Some(rt::route::Action::Route(rt::RouteAction {
            cluster_specifier: Some(rt::route_action::ClusterSpecifier::Cluster(cluster.into())),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn vhost(name: &str, domains: &[&str], routes: Vec<rt::Route>) -> rt::VirtualHost {
    rt::VirtualHost {
        name: name.into(),
        domains: domains.iter().map(|d| d.to_string()).collect(),
        routes,
        ..Default::default()
    }
}

fn parts(uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut b = http::Request::builder().uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

#[test]
fn virtual_hosts_are_chosen_exact_then_suffix_then_prefix_then_any() {
    let rc = rt::RouteConfiguration {
        name: "r".into(),
        virtual_hosts: vec![
            vhost("exact", &["api.example.com"], vec![]),
            vhost("suffix", &["*.example.com"], vec![]),
            vhost("prefix", &["api.*"], vec![]),
            vhost("any", &["*"], vec![]),
        ],
        ..Default::default()
    };
    let compiled = route::compile(&rc).unwrap();
    let name = |authority: &str| compiled.vhost(authority).map(|v| v.name.clone()).unwrap();
    assert_eq!(name("API.example.com"), "exact");
    assert_eq!(name("www.example.com"), "suffix");
    assert_eq!(name("api.other.org"), "prefix");
    assert_eq!(name("else"), "any");
}

#[test]
fn duplicate_domains_and_bad_regexes_are_rejected_with_names() {
    let dup = rt::RouteConfiguration {
        name: "r".into(),
        virtual_hosts: vec![vhost("a", &["x"], vec![]), vhost("b", &["x"], vec![])],
        ..Default::default()
    };
    assert_eq!(
        route::compile(&dup).unwrap_err(),
        "domain \"x\" is in more than one virtual host"
    );
    let mut bad = prefix_route("broken", "/", "c");
    bad.r#match = Some(rt::RouteMatch {
        path_specifier: Some(rt::route_match::PathSpecifier::SafeRegex(RegexMatcher {
            regex: "([".into(),
            engine_type: None,
        })),
        ..Default::default()
    });
    let rc = rt::RouteConfiguration {
        name: "r".into(),
        virtual_hosts: vec![vhost("v", &["*"], vec![bad])],
        ..Default::default()
    };
    let err = route::compile(&rc).unwrap_err();
    assert!(
        err.starts_with("virtual host v: route \"broken\": invalid regex \"([\""),
        "{err}"
    );
}

#[test]
fn routes_match_in_order_on_path_headers_and_query() {
    let mut canary = prefix_route("canary", "/", "v2");
    canary.r#match.as_mut().unwrap().headers = vec![rt::HeaderMatcher {
        name: "End-User".into(),
        header_match_specifier: Some(rt::header_matcher::HeaderMatchSpecifier::StringMatch(
            StringMatcher {
                match_pattern: Some(MatchPattern::Exact("jason".into())),
                ignore_case: false,
            },
        )),
        ..Default::default()
    }];
    let mut query = prefix_route("query", "/", "q");
    query.r#match.as_mut().unwrap().query_parameters = vec![rt::QueryParameterMatcher {
        name: "beta".into(),
        query_parameter_match_specifier: Some(
            rt::query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(StringMatcher {
                match_pattern: Some(MatchPattern::Exact("1".into())),
                ignore_case: false,
            }),
        ),
    }];
    let mut insensitive = prefix_route("api", "/API", "api");
    insensitive.r#match.as_mut().unwrap().case_sensitive =
        Some(envoy_types::pb::google::protobuf::BoolValue { value: false });
    let rc = rt::RouteConfiguration {
        name: "r".into(),
        virtual_hosts: vec![vhost(
            "v",
            &["*"],
            vec![
                canary,
                query,
                insensitive,
                prefix_route("default", "/", "v1"),
            ],
        )],
        ..Default::default()
    };
    let compiled = route::compile(&rc).unwrap();
    let pick = |uri: &str, h: &[(&str, &str)]| {
        crate::http::select_route(&compiled, &parts(uri, h))
            .map(|r| r.name.clone())
            .unwrap()
    };
    assert_eq!(pick("http://h/", &[("end-user", "jason")]), "canary");
    assert_eq!(pick("http://h/", &[("end-user", "bob")]), "default");
    assert_eq!(pick("http://h/x?a=2&beta=1", &[]), "query");
    assert_eq!(pick("http://h/x?beta=10", &[]), "default");
    assert_eq!(pick("http://h/api/items", &[]), "api");
    // A header sent twice is matched on its values joined with `,`, as Envoy does.
    let twice = [("end-user", "jason"), ("end-user", "bob")];
    assert_eq!(
        pick("http://h/", &twice),
        "default",
        "'jason,bob' is not 'jason'"
    );
}

#[test]
fn zero_weight_clusters_are_dropped_and_all_zero_is_an_error() {
    use rt::weighted_cluster::ClusterWeight;
    let weighted = |weights: &[(&str, u32)]| {
        let mut r = prefix_route("w", "/", "unused");
        if let Some(rt::route::Action::Route(a)) = &mut r.action {
            a.cluster_specifier = Some(rt::route_action::ClusterSpecifier::WeightedClusters(
                rt::WeightedCluster {
                    clusters: weights
                        .iter()
                        .map(|(n, w)| ClusterWeight {
                            name: n.to_string(),
                            weight: Some(UInt32Value { value: *w }),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                },
            ));
        }
        rt::RouteConfiguration {
            name: "r".into(),
            virtual_hosts: vec![vhost("v", &["*"], vec![r])],
            ..Default::default()
        }
    };
    let compiled = route::compile(&weighted(&[("a", 0), ("b", 100)])).unwrap();
    let Action::Forward(f) = &compiled.vhosts[0].routes[0].action else {
        panic!("not a forward")
    };
    assert_eq!(
        f.clusters
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["b"]
    );
    assert_eq!(f.total_weight, 100);
    let err = route::compile(&weighted(&[("a", 0)])).unwrap_err();
    assert!(err.contains("no cluster has a weight above 0"), "{err}");
}

fn lb_endpoint(ip: &str, port: u32, weight: u32, health: HealthStatus) -> LbEndpoint {
    LbEndpoint {
        health_status: health as i32,
        load_balancing_weight: Some(UInt32Value { value: weight }),
        host_identifier: Some(HostIdentifier::Endpoint(PbEndpoint {
            address: Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: ip.into(),
                    port_specifier: Some(PortSpecifier::PortValue(port)),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        })),
        ..Default::default()
    }
}

#[test]
fn eds_endpoints_carry_locality_shares_and_skip_unhealthy() {
    use envoy_types::pb::envoy::config::cluster::v3::cluster::{
        ClusterDiscoveryType, DiscoveryType, EdsClusterConfig,
    };
    let cluster = Cluster {
        name: "c".into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: None,
            service_name: "c".into(),
        }),
        ..Default::default()
    };
    let cla = ClusterLoadAssignment {
        cluster_name: "c".into(),
        endpoints: vec![
            LocalityLbEndpoints {
                locality: Some(Locality {
                    zone: "a".into(),
                    ..Default::default()
                }),
                load_balancing_weight: Some(UInt32Value { value: 3 }),
                lb_endpoints: vec![
                    lb_endpoint("10.0.0.1", 80, 1, HealthStatus::Healthy),
                    lb_endpoint("10.0.0.2", 80, 1, HealthStatus::Unhealthy),
                ],
                ..Default::default()
            },
            LocalityLbEndpoints {
                locality: Some(Locality {
                    zone: "b".into(),
                    ..Default::default()
                }),
                load_balancing_weight: Some(UInt32Value { value: 1 }),
                lb_endpoints: vec![lb_endpoint("10.0.0.3", 80, 1, HealthStatus::Healthy)],
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let spec = cluster::compile(&cluster, Some(&cla)).unwrap();
    let got: Vec<(String, u32)> = spec
        .endpoints
        .iter()
        .map(|e| (e.addr.to_string(), e.weight))
        .collect();
    // Locality a (weight 3) keeps its whole share on its one healthy endpoint; b (weight 1) has one.
    assert_eq!(
        got,
        [
            ("10.0.0.1:80".to_string(), 3000),
            ("10.0.0.3:80".to_string(), 1000)
        ]
    );

    let mut bad = cla.clone();
    bad.endpoints[1].lb_endpoints = vec![lb_endpoint("not-an-ip", 80, 1, HealthStatus::Healthy)];
    assert_eq!(
        cluster::compile(&cluster, Some(&bad)).unwrap_err(),
        "endpoint address \"not-an-ip\" is not an IP address"
    );
}
