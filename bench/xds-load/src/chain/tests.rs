use super::*;
use envoy_types::pb::envoy::config::cluster::v3::cluster::EdsClusterConfig;
use envoy_types::pb::envoy::config::listener::v3::ApiListener;
use envoy_types::pb::envoy::config::route::v3::{
    weighted_cluster::ClusterWeight, Route, RouteAction, VirtualHost, WeightedCluster,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::Rds;

fn any<M: Message>(type_url: &str, msg: &M) -> Any {
    Any {
        type_url: type_url.to_string(),
        value: msg.encode_to_vec(),
    }
}

fn listener(name: &str, route: &str) -> Any {
    let hcm = HttpConnectionManager {
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            route_config_name: route.to_string(),
            ..Default::default()
        })),
        ..Default::default()
    };
    let l = Listener {
        name: name.to_string(),
        api_listener: Some(ApiListener {
            api_listener: Some(any("hcm", &hcm)),
        }),
        ..Default::default()
    };
    any(XdsType::Listener.url(), &l)
}

fn route_to(spec: ClusterSpecifier) -> Route {
    Route {
        action: Some(Action::Route(RouteAction {
            cluster_specifier: Some(spec),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn weighted(names: &[&str]) -> ClusterSpecifier {
    ClusterSpecifier::WeightedClusters(WeightedCluster {
        clusters: names
            .iter()
            .map(|n| ClusterWeight {
                name: n.to_string(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    })
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn listener_names_its_route_configuration() -> anyhow::Result<()> {
    let resources = [listener("svc-1.bench.test:8080", "svc-1.bench.test:8080")];
    let got = referenced_names(XdsType::Listener, &resources)?;
    assert_eq!(got, names(&["svc-1.bench.test:8080"]));
    assert_eq!(
        resource_name(XdsType::Listener, &resources[0])?,
        "svc-1.bench.test:8080"
    );
    Ok(())
}

#[test]
fn listener_without_rds_is_an_error() {
    let l = Listener {
        name: "x:1".into(),
        ..Default::default()
    };
    let resources = [any(XdsType::Listener.url(), &l)];
    assert!(referenced_names(XdsType::Listener, &resources).is_err());
}

#[test]
fn routes_name_single_and_weighted_clusters() -> anyhow::Result<()> {
    let config = RouteConfiguration {
        name: "r".into(),
        virtual_hosts: vec![VirtualHost {
            routes: vec![
                route_to(ClusterSpecifier::Cluster("a".into())),
                route_to(weighted(&["b", "c"])),
                Route::default(),
            ],
            ..Default::default()
        }],
        ..Default::default()
    };
    let resources = [any(XdsType::Route.url(), &config)];
    let got = referenced_names(XdsType::Route, &resources)?;
    assert_eq!(got, names(&["a", "b", "c"]));
    Ok(())
}

#[test]
fn clusters_name_their_eds_service_or_themselves() -> anyhow::Result<()> {
    let with_service = Cluster {
        name: "c1".into(),
        eds_cluster_config: Some(EdsClusterConfig {
            service_name: "eds-1".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let without = Cluster {
        name: "c2".into(),
        ..Default::default()
    };
    let resources = [
        any(XdsType::Cluster.url(), &with_service),
        any(XdsType::Cluster.url(), &without),
    ];
    let got = referenced_names(XdsType::Cluster, &resources)?;
    assert_eq!(got, names(&["c2", "eds-1"]));
    Ok(())
}

#[test]
fn types_round_trip_through_their_urls() {
    for t in XdsType::ALL {
        assert_eq!(XdsType::from_url(t.url()), Some(t));
    }
    assert_eq!(XdsType::from_url("type.googleapis.com/x"), None);
    assert_eq!(XdsType::Endpoint.next(), None);
}
