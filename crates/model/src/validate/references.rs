//! Set-wide checks: what no single object can know about, i.e. references between objects and
//! objects competing for the same thing.
//!
//! Hosts on both sides of a reference are resolved the way Istio does (`ConfigSet::resolve_host`,
//! each in its own object's namespace), so `reviews` in namespace `default` and
//! `reviews.default.svc.cluster.local` are the same host.

use super::describe_origin;
use crate::error::ModelError;
use crate::istio::{Destination, DestinationRule, VirtualService};
use crate::oam::{Application, ApplicationSpec, GENERATED_SUFFIX};
use crate::object::{ConfigSet, Resource};
use std::collections::{BTreeMap, BTreeSet};

pub(super) fn check(set: &ConfigSet, errors: &mut Vec<ModelError>) {
    let rules = HostRules::new(set);
    competing_destination_rules(&rules, errors);
    for vs in &set.virtual_services {
        undefined_subsets(set, &rules, vs, errors);
    }
    for app in &set.applications {
        released_host_taken(set, app, errors);
    }
}

/// A host being released belongs to its Application's generated `<app>-release` VirtualService
/// and DestinationRule: a hand-written one for the same host in the same namespace would compete
/// with them (and the store refuses two DestinationRules for one host), so it is refused here,
/// up front, rather than when the controller writes its first step.
fn released_host_taken(
    set: &ConfigSet,
    app: &Resource<ApplicationSpec>,
    errors: &mut Vec<ModelError>,
) {
    let app = Application::from_resource(app);
    let Some((component, canary)) = app.canary_traffic() else {
        return;
    };
    let Some(index) = app
        .spec
        .components
        .iter()
        .position(|c| c.name == component.name)
    else {
        return;
    };
    let host = set.resolve_host(&component.properties.host, &app.meta.namespace);
    let namespace = canary.namespace.as_deref().unwrap_or(&app.meta.namespace);
    let generated = format!("{}{GENERATED_SUFFIX}", app.meta.name);
    let ours = |meta: &crate::ObjectMeta| meta.namespace == namespace && meta.name == generated;
    let rules = set
        .destination_rules
        .iter()
        .filter(|dr| dr.meta.namespace == namespace && !ours(&dr.meta))
        .filter(|dr| set.resolve_host(&dr.spec.host, &dr.meta.namespace) == host)
        .map(|dr| (name_of("DestinationRule", dr), describe_origin(&dr.origin)));
    let services = set
        .virtual_services
        .iter()
        .filter(|vs| vs.meta.namespace == namespace && !ours(&vs.meta) && in_mesh(&vs.spec))
        .filter(|vs| {
            vs.spec
                .hosts
                .iter()
                .any(|h| set.resolve_host(h, &vs.meta.namespace) == host)
        })
        .map(|vs| (name_of("VirtualService", vs), describe_origin(&vs.origin)));
    for (object, place) in rules.chain(services) {
        let message = format!(
            "host {host:?} is released by this Application, whose controller writes VirtualService and DestinationRule {namespace}/{generated} for it; {object} in {place} competes with them: delete it (the Application's components carry the versions) or release another host"
        );
        errors.push(ModelError::in_object(
            &app.origin.file,
            app.display_name(),
            format!("spec.components[{index}].properties.host"),
            message,
        ));
    }
}

/// Every DestinationRule with the resolved host it applies to, in the set's (sorted) order.
struct HostRules<'a> {
    rules: Vec<(String, &'a Resource<DestinationRule>)>,
}

impl<'a> HostRules<'a> {
    fn new(set: &'a ConfigSet) -> Self {
        let rules = set
            .destination_rules
            .iter()
            .map(|dr| (set.resolve_host(&dr.spec.host, &dr.meta.namespace), dr))
            .collect();
        Self { rules }
    }

    /// The rules for a resolved host: those naming it exactly or, failing that, those with the
    /// longest wildcard host covering it (`*.example.com` covers `api.example.com`).
    fn for_host(&self, host: &str) -> Vec<&'a Resource<DestinationRule>> {
        let exact: Vec<_> = self
            .rules
            .iter()
            .filter(|(h, _)| h == host)
            .map(|(_, r)| *r)
            .collect();
        if !exact.is_empty() {
            return exact;
        }
        let covering = |rule_host: &str| {
            rule_host
                .strip_prefix('*')
                .is_some_and(|suffix| host.ends_with(suffix))
        };
        let longest = self
            .rules
            .iter()
            .filter(|(h, _)| covering(h))
            .map(|(h, _)| h.len())
            .max();
        self.rules
            .iter()
            .filter(|(h, _)| covering(h) && Some(h.len()) == longest)
            .map(|(_, r)| *r)
            .collect()
    }
}

/// Istio merges nothing here: with two rules for one host in one namespace, one silently loses.
fn competing_destination_rules(rules: &HostRules, errors: &mut Vec<ModelError>) {
    let mut first: BTreeMap<(&str, &str), &Resource<DestinationRule>> = BTreeMap::new();
    for (host, dr) in &rules.rules {
        let key = (dr.meta.namespace.as_str(), host.as_str());
        let Some(winner) = first.get(&key) else {
            first.insert(key, dr);
            continue;
        };
        let message = format!(
            "host {host:?} already has DestinationRule {}/{} in {}; one host gets one DestinationRule per namespace, merge the two",
            winner.meta.namespace,
            winner.meta.name,
            describe_origin(&winner.origin)
        );
        errors.push(ModelError::in_object(
            &dr.origin.file,
            name_of("DestinationRule", dr),
            "spec.host",
            message,
        ));
    }
}

fn undefined_subsets(
    set: &ConfigSet,
    rules: &HostRules,
    vs: &Resource<VirtualService>,
    errors: &mut Vec<ModelError>,
) {
    for (path, destination) in destinations(&vs.spec) {
        let Some(subset) = destination.subset.as_deref().filter(|s| !s.is_empty()) else {
            continue;
        };
        let host = set.resolve_host(&destination.host, &vs.meta.namespace);
        if let Some(message) = missing_subset(subset, &host, &rules.for_host(&host)) {
            let object = name_of("VirtualService", vs);
            let field = format!("{path}.subset");
            errors.push(ModelError::in_object(
                &vs.origin.file,
                object,
                field,
                message,
            ));
        }
    }
}

/// Why `subset` of `host` cannot be routed to given the rules for that host, if it cannot.
fn missing_subset(
    subset: &str,
    host: &str,
    rules: &[&Resource<DestinationRule>],
) -> Option<String> {
    let defined: BTreeSet<&str> = rules
        .iter()
        .flat_map(|dr| dr.spec.subsets.iter().map(|s| s.name.as_str()))
        .collect();
    if defined.contains(subset) {
        return None;
    }
    let known = match (rules.is_empty(), defined.is_empty()) {
        (true, _) => "no DestinationRule has this host".to_string(),
        (false, true) => "defined: none".to_string(),
        (false, false) => format!("defined: {}", Vec::from_iter(defined).join(", ")),
    };
    Some(format!(
        "subset {subset:?} of host {host:?} is not defined by any DestinationRule ({known})"
    ))
}

/// Every destination a VirtualService sends traffic to, with its field path.
fn destinations(vs: &VirtualService) -> Vec<(String, &Destination)> {
    let mut found = Vec::new();
    for (i, http) in vs.http.iter().enumerate() {
        for (j, route) in http.route.iter().enumerate() {
            found.push((
                format!("spec.http[{i}].route[{j}].destination"),
                &route.destination,
            ));
        }
        if let Some(mirror) = &http.mirror {
            found.push((format!("spec.http[{i}].mirror"), mirror));
        }
    }
    for (i, tcp) in vs.tcp.iter().enumerate() {
        for (j, route) in tcp.route.iter().enumerate() {
            found.push((
                format!("spec.tcp[{i}].route[{j}].destination"),
                &route.destination,
            ));
        }
    }
    found
}

fn name_of<T>(kind: &str, resource: &Resource<T>) -> String {
    format!("{kind} {}/{}", resource.meta.namespace, resource.meta.name)
}

/// Whether a VirtualService applies to sidecars (no `gateways`, or `mesh` among them).
fn in_mesh(vs: &VirtualService) -> bool {
    vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh")
}
