//! ClusterLoadAssignments: a cluster's instances grouped by locality.
//!
//! Every locality gets a non-zero weight (the sum of its endpoints' weights): gRPC clients drop
//! localities whose weight is zero or missing.

use super::pb;
use envoy_types::pb::envoy::config::core::v3::{HealthStatus, Locality};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint::HostIdentifier, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use graymesh_sources::{Instance, Service};
use std::collections::BTreeMap;

/// The endpoints of `service` on `port` whose labels include `subset_labels`.
pub fn load_assignment(
    cluster_name: &str,
    service: &Service,
    port: u32,
    subset_labels: &BTreeMap<String, String>,
) -> ClusterLoadAssignment {
    let mut by_locality: BTreeMap<(String, String, String), Vec<&Instance>> = BTreeMap::new();
    for inst in &service.instances {
        let selected = subset_labels
            .iter()
            .all(|(k, v)| inst.labels.get(k) == Some(v));
        if selected && inst.ports.contains_key(&port) {
            let l = &inst.locality;
            by_locality
                .entry((l.region.clone(), l.zone.clone(), l.subzone.clone()))
                .or_default()
                .push(inst);
        }
    }
    let endpoints = by_locality
        .into_iter()
        .map(
            |((region, zone, sub_zone), instances)| LocalityLbEndpoints {
                locality: Some(Locality {
                    region,
                    zone,
                    sub_zone,
                }),
                load_balancing_weight: Some(pb::u32v(
                    instances.iter().map(|i| i.weight.max(1)).sum(),
                )),
                lb_endpoints: instances.iter().map(|i| lb_endpoint(i, port)).collect(),
                ..Default::default()
            },
        )
        .collect();
    ClusterLoadAssignment {
        cluster_name: cluster_name.to_string(),
        endpoints,
        ..Default::default()
    }
}

fn lb_endpoint(inst: &Instance, port: u32) -> LbEndpoint {
    let target = inst.ports.get(&port).copied().unwrap_or(port);
    LbEndpoint {
        health_status: HealthStatus::Healthy as i32,
        load_balancing_weight: Some(pb::u32v(inst.weight.max(1))),
        host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
            address: Some(pb::socket_address(&inst.address, target)),
            ..Default::default()
        })),
        ..Default::default()
    }
}
