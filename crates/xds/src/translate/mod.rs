//! Istio semantics become Envoy semantics here: a pure function of the validated config, the
//! registry snapshot and the asking node's class.
//!
//! Names follow Istio's: clusters `outbound|<port>|<subset>|<host>`, route configurations and
//! proxyless listeners `<host>:<port>`, sidecar and gateway listeners `<ip>_<port>`, gateway
//! route configurations `http.<port>`.

mod clusters;
mod endpoints;
mod gateway;
mod hash_policy;
mod listeners;
pub(crate) mod pb;
mod routes;
mod tcp;
#[cfg(test)]
mod tests;

pub use hash_policy::baggage_member_rewrite;

use crate::node::{NodeKind, ProxyClass};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use graymesh_model::istio::{DestinationRule, VirtualService};
use graymesh_model::{ConfigSet, Resource};
use graymesh_sources::{RegistrySnapshot, Service};
use std::collections::HashMap;

/// The typed Envoy resources one proxy class gets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Translation {
    pub listeners: Vec<Listener>,
    pub routes: Vec<RouteConfiguration>,
    pub clusters: Vec<Cluster>,
    pub endpoints: Vec<ClusterLoadAssignment>,
}

/// `outbound|9080|v2|reviews.default.svc.cluster.local`
pub fn cluster_name(port: u32, subset: Option<&str>, host: &str) -> String {
    format!("outbound|{port}|{}|{host}", subset.unwrap_or(""))
}

/// Translate everything `class` can see.
pub fn translate(
    config: &ConfigSet,
    registry: &RegistrySnapshot,
    class: &ProxyClass,
) -> Translation {
    let ctx = Context::new(config, registry, class);
    let mut out = Translation::default();
    for service in ctx.visible_services() {
        let rule = ctx.destination_rule(&service.host);
        for port in &service.ports {
            clusters::for_service_port(&ctx, service, port.number, rule, &mut out);
            out.routes
                .push(routes::route_config(&ctx, service, port.number));
        }
    }
    match class.kind {
        NodeKind::ProxylessGrpc => listeners::proxyless(&ctx, &mut out),
        NodeKind::Sidecar => listeners::sidecar(&ctx, &mut out),
        NodeKind::Gateway => {
            gateway::gateway(&ctx, &mut out);
            // A gateway that also calls services through explicit ports is a sidecar for those.
            if !class.upstreams.is_empty() {
                listeners::sidecar(&ctx, &mut out);
            }
        }
    }
    out
}

/// What translation consults, with the lookups it repeats indexed once per translation (a
/// lookup per service must not scan every rule: that made translation cubic in services).
pub(crate) struct Context<'a> {
    pub config: &'a ConfigSet,
    pub registry: &'a RegistrySnapshot,
    pub class: &'a ProxyClass,
    /// DestinationRules visible to the node, with their resolved hosts.
    rules: Vec<(String, &'a Resource<DestinationRule>)>,
    rules_by_host: HashMap<String, Vec<usize>>,
    /// Mesh-bound, visible VirtualServices by resolved exact host; wildcard hosts apart.
    routes_by_host: HashMap<String, Vec<usize>>,
    wildcard_routes: Vec<(String, usize)>,
}

impl<'a> Context<'a> {
    fn new(config: &'a ConfigSet, registry: &'a RegistrySnapshot, class: &'a ProxyClass) -> Self {
        let ns = &class.namespace;
        let rules: Vec<_> = config
            .destination_rules
            .iter()
            .filter(|dr| exported_to(&dr.spec.export_to, &dr.meta.namespace, ns))
            .map(|dr| (config.resolve_host(&dr.spec.host, &dr.meta.namespace), dr))
            .collect();
        let mut rules_by_host: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, (host, _)) in rules.iter().enumerate() {
            rules_by_host.entry(host.clone()).or_default().push(i);
        }
        let mut routes_by_host: HashMap<String, Vec<usize>> = HashMap::new();
        let mut wildcard_routes = Vec::new();
        for (i, vs) in config.virtual_services.iter().enumerate() {
            let mesh = vs.spec.gateways.is_empty() || vs.spec.gateways.iter().any(|g| g == "mesh");
            if !mesh || !exported_to(&vs.spec.export_to, &vs.meta.namespace, ns) {
                continue;
            }
            for h in &vs.spec.hosts {
                let host = config.resolve_host(h, &vs.meta.namespace);
                if host.starts_with('*') {
                    wildcard_routes.push((host, i));
                } else {
                    routes_by_host.entry(host).or_default().push(i);
                }
            }
        }
        Self {
            config,
            registry,
            class,
            rules,
            rules_by_host,
            routes_by_host,
            wildcard_routes,
        }
    }

    /// Services the node may see: ServiceEntry `exportTo` decides, as for the other kinds.
    pub fn visible_services(&self) -> impl Iterator<Item = &'a Service> + '_ {
        let ns = &self.class.namespace;
        self.registry
            .services
            .values()
            .filter(move |s| exported_to(&s.export_to, &s.namespace, ns))
    }

    /// Look a service up by a host written in an object of `namespace`.
    pub fn service(&self, host: &str, namespace: &str) -> Option<&'a Service> {
        let fqdn = self.config.resolve_host(host, namespace);
        self.registry.services.get(&fqdn)
    }

    /// The DestinationRule for a host: rules naming it exactly win over the longest wildcard host
    /// covering it (`*.example.com`), as validation resolves subsets. Among those, one in the
    /// node's namespace wins (Istio's lookup order), then one in the service's own namespace,
    /// then any.
    pub fn destination_rule(&self, fqdn: &str) -> Option<&'a Resource<DestinationRule>> {
        let visible = &self.rules;
        let exact: Vec<_> = self
            .rules_by_host
            .get(fqdn)
            .map(|ix| ix.iter().map(|i| &visible[*i]).collect())
            .unwrap_or_default();
        let candidates = if exact.is_empty() {
            let covering = |h: &str| h.starts_with('*') && host_matches(h, fqdn);
            let longest = visible
                .iter()
                .filter(|(h, _)| covering(h))
                .map(|(h, _)| h.len())
                .max();
            visible
                .iter()
                .filter(|(h, _)| covering(h) && Some(h.len()) == longest)
                .collect()
        } else {
            exact
        };
        let service_ns = self
            .registry
            .services
            .get(fqdn)
            .map(|s| s.namespace.as_str());
        candidates
            .iter()
            .find(|(_, dr)| dr.meta.namespace == self.class.namespace)
            .or_else(|| {
                candidates
                    .iter()
                    .find(|(_, dr)| Some(dr.meta.namespace.as_str()) == service_ns)
            })
            .or_else(|| candidates.first())
            .map(|(_, dr)| *dr)
    }

    /// VirtualServices bound to the mesh (not only to gateways) that name `fqdn`, in order.
    pub fn virtual_services(&self, fqdn: &str) -> Vec<&'a Resource<VirtualService>> {
        let mut found: Vec<usize> = self.routes_by_host.get(fqdn).cloned().unwrap_or_default();
        found.extend(
            self.wildcard_routes
                .iter()
                .filter(|(h, _)| host_matches(h, fqdn))
                .map(|(_, i)| *i),
        );
        found.sort_unstable();
        found.dedup();
        found
            .into_iter()
            .map(|i| &self.config.virtual_services[i])
            .collect()
    }

    /// True when every label of `selector` is on the node.
    pub fn node_has_labels(&self, selector: &std::collections::BTreeMap<String, String>) -> bool {
        selector
            .iter()
            .all(|(k, v)| self.class.labels.get(k) == Some(v))
    }
}

/// `exportTo`: empty or `*` means everywhere, `.` the object's own namespace, else names.
fn exported_to(export_to: &[String], own: &str, to: &str) -> bool {
    export_to.is_empty()
        || export_to
            .iter()
            .any(|e| e == "*" || e == to || (e == "." && own == to))
}

/// A VirtualService host matches a service host exactly or by a leading `*.` wildcard.
fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) => host.ends_with(suffix),
        None => pattern == host,
    }
}
