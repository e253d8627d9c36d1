//! Checks of one DestinationRule on its own: host, subsets, load balancer, outlier detection,
//! the baggage member its hash keys name.
//!
//! Two DestinationRules competing for one host is a set-wide question, in `references`.

use super::Findings;
use crate::baggage;
use crate::istio::{ConsistentHashLb, DestinationRule, LoadBalancerSettings, TrafficPolicy};
use crate::ObjectMeta;
use std::collections::BTreeMap;

pub(super) fn check(f: &mut Findings, meta: &ObjectMeta, dr: &DestinationRule) {
    baggage_member(f, meta, dr);
    if dr.host.trim().is_empty() {
        f.error("spec.host", "host is required, e.g. host: reviews");
    }
    if let Some(policy) = &dr.traffic_policy {
        traffic_policy(f, "spec.trafficPolicy", policy);
    }
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, subset) in dr.subsets.iter().enumerate() {
        let path = format!("spec.subsets[{i}]");
        if subset.name.trim().is_empty() {
            f.error(
                format!("{path}.name"),
                "subset name must not be empty, e.g. name: v1",
            );
        } else if let Some(first) = seen.insert(&subset.name, i) {
            f.error(
                format!("{path}.name"),
                format!(
                    "duplicate subset {:?}, already defined at spec.subsets[{first}]",
                    subset.name
                ),
            );
        }
        if let Some(policy) = &subset.traffic_policy {
            traffic_policy(f, &format!("{path}.trafficPolicy"), policy);
        }
    }
}

/// The annotation names a W3C baggage key, and only narrows a baggage hash key the spec has.
fn baggage_member(f: &mut Findings, meta: &ObjectMeta, dr: &DestinationRule) {
    let Some(member) = baggage::member(meta) else {
        return;
    };
    let field = format!("metadata.annotations.{}", baggage::MEMBER_ANNOTATION);
    if let Some(problem) = baggage::key_problem(member) {
        f.error(&field, problem);
    }
    if !baggage::hashed_by(dr) {
        f.error(
            field,
            format!("names the baggage member {member:?}, but no consistentHash here hashes on httpHeaderName: baggage; add one (top level or on a subset) or remove the annotation"),
        );
    }
}

fn traffic_policy(f: &mut Findings, path: &str, policy: &TrafficPolicy) {
    if let Some(lb) = &policy.load_balancer {
        load_balancer(f, &format!("{path}.loadBalancer"), lb);
    }
    if let Some(outlier) = &policy.outlier_detection {
        let percents = [
            ("maxEjectionPercent", outlier.max_ejection_percent),
            ("minHealthPercent", outlier.min_health_percent),
        ];
        for (name, value) in percents {
            if let Some(value) = value.filter(|v| *v > 100) {
                f.error(
                    format!("{path}.outlierDetection.{name}"),
                    format!("{value} is out of range, must be 0..=100"),
                );
            }
        }
    }
}

fn load_balancer(f: &mut Findings, path: &str, lb: &LoadBalancerSettings) {
    if lb.simple.is_some() && lb.consistent_hash.is_some() {
        f.error(path, "sets both `simple` and `consistentHash`; use one");
    }
    if let Some(hash) = &lb.consistent_hash {
        consistent_hash(f, &format!("{path}.consistentHash"), hash);
    }
}

fn consistent_hash(f: &mut Findings, path: &str, hash: &ConsistentHashLb) {
    let keys: Vec<&str> = [
        ("httpHeaderName", hash.http_header_name.is_some()),
        ("httpCookie", hash.http_cookie.is_some()),
        // `useSourceIp: false` asks for nothing, so only `true` counts as choosing this key.
        ("useSourceIp", hash.use_source_ip == Some(true)),
        (
            "httpQueryParameterName",
            hash.http_query_parameter_name.is_some(),
        ),
    ]
    .into_iter()
    .filter_map(|(name, is_set)| is_set.then_some(name))
    .collect();
    match keys.len() {
        1 => {}
        0 => f.error(
            path,
            "no hash key: set exactly one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName",
        ),
        _ => f.error(path, format!("sets {}; set exactly one hash key", keys.join(", "))),
    }
}
