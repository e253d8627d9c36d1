//! Checks of one ServiceEntry on its own: hosts, ports, endpoints and how they are resolved.

use super::{fields, Findings};
use crate::istio::{Resolution, ServiceEntry, ServicePort, WorkloadEntry};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// `region/zone/subzone`.
const MAX_LOCALITY_PARTS: usize = 3;

pub(super) fn check(f: &mut Findings, se: &ServiceEntry) {
    fields::hosts(
        f,
        "spec.hosts",
        &se.hosts,
        "hosts: [reviews.default.svc.cluster.local]",
    );
    ports(f, &se.ports);
    let is_static = se.resolution == Some(Resolution::Static);
    if is_static && se.endpoints.is_empty() {
        f.error(
            "spec.endpoints",
            "resolution STATIC needs at least one endpoint (or use resolution DNS for a host name)",
        );
    }
    for (i, endpoint) in se.endpoints.iter().enumerate() {
        self::endpoint(
            f,
            &format!("spec.endpoints[{i}]"),
            endpoint,
            &se.ports,
            is_static,
        );
    }
}

fn ports(f: &mut Findings, ports: &[ServicePort]) {
    let mut numbers: BTreeMap<u32, usize> = BTreeMap::new();
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, port) in ports.iter().enumerate() {
        let path = format!("spec.ports[{i}]");
        fields::port(f, format!("{path}.number"), port.number);
        fields::optional_port(f, format!("{path}.targetPort"), port.target_port);
        if let Some(first) = numbers.insert(port.number, i) {
            f.error(
                format!("{path}.number"),
                format!(
                    "duplicate port number {}, already declared at spec.ports[{first}]",
                    port.number
                ),
            );
        }
        // Unnamed ports cannot be referred to by name, so only names that were given must differ.
        if port.name.is_empty() {
            continue;
        }
        if let Some(first) = names.insert(&port.name, i) {
            f.error(
                format!("{path}.name"),
                format!(
                    "duplicate port name {:?}, already declared at spec.ports[{first}]",
                    port.name
                ),
            );
        }
    }
}

fn endpoint(
    f: &mut Findings,
    path: &str,
    endpoint: &WorkloadEntry,
    declared: &[ServicePort],
    is_static: bool,
) {
    if is_static && endpoint.address.parse::<IpAddr>().is_err() {
        f.error(
            format!("{path}.address"),
            format!("{:?} is not an IP address; resolution STATIC needs IP addresses (use resolution DNS for host names)", endpoint.address),
        );
    }
    endpoint_ports(f, path, endpoint, declared);
    if endpoint.weight == Some(0) {
        f.error(
            format!("{path}.weight"),
            "weight must be greater than 0 (leave it out for the default)",
        );
    }
    if let Some(locality) = &endpoint.locality {
        let parts: Vec<&str> = locality.split('/').collect();
        if parts.len() > MAX_LOCALITY_PARTS || parts.iter().any(|p| p.is_empty()) {
            f.error(
                format!("{path}.locality"),
                format!("{locality:?} is not a locality, expected region[/zone[/subzone]], e.g. us-east/us-east-1a"),
            );
        }
    }
}

/// An endpoint's `ports` map renames the ServiceEntry's ports, so each key must name one of them.
fn endpoint_ports(
    f: &mut Findings,
    path: &str,
    endpoint: &WorkloadEntry,
    declared: &[ServicePort],
) {
    for (name, number) in &endpoint.ports {
        let field = format!("{path}.ports.{name}");
        if !declared.iter().any(|p| &p.name == name) {
            let names: Vec<&str> = declared
                .iter()
                .map(|p| p.name.as_str())
                .filter(|n| !n.is_empty())
                .collect();
            let known = if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            };
            f.error(
                field.as_str(),
                format!("port name {name:?} is not declared in spec.ports (declared: {known})"),
            );
        }
        fields::port(f, field, *number);
    }
}
