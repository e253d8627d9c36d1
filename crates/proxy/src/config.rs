//! The proxy's side of xDS: one store that handles all four resource types, compiles them (plus
//! the proxy's own inbound resources) into a routing table, and installs it.
//!
//! Warming: a route configuration that points at a cluster whose endpoints have not arrived yet
//! is held back (the previous version stays in use) until they do, and a cluster removed while a
//! route in use still points at it stays until no route does. So no request fails because config
//! arrived in pieces.

use crate::http::ProxyCore;
use crate::listeners::Listeners;
use crate::table::{self, Resources, RouteTable};
use crate::xds::client::{ENDPOINT, ROUTE};
use crate::xds::{Handler, Subscriptions};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::{
    route::Action, route_action::ClusterSpecifier, RouteConfiguration,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

/// Resources the proxy makes for itself (its inbound side); never subject to warming.
pub type LocalResources = Resources;

#[derive(Debug, Default)]
struct State {
    /// What the control plane sent last, per type.
    latest: Resources,
    /// Route configurations in use (may lag `latest.routes` while clusters warm).
    applied_routes: BTreeMap<String, Arc<RouteConfiguration>>,
    /// What was compiled last (for clusters that linger while routes still use them).
    effective: Resources,
    version: u64,
    /// A listener and a cluster response were accepted (possibly empty): a first response that
    /// was NACKed (a port that cannot be bound, say) keeps the proxy not ready.
    listeners_accepted: bool,
    clusters_accepted: bool,
}

pub struct ConfigStore {
    state: Mutex<State>,
    local: LocalResources,
    core: Arc<ProxyCore>,
    listeners: Arc<Listeners>,
}

impl std::fmt::Debug for ConfigStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigStore").finish_non_exhaustive()
    }
}

impl ConfigStore {
    pub fn new(
        core: Arc<ProxyCore>,
        listeners: Arc<Listeners>,
        local: LocalResources,
    ) -> Arc<Self> {
        let store = Arc::new(Self {
            state: Mutex::default(),
            local,
            core,
            listeners,
        });
        // The inbound side works before the control plane answers.
        if let Err(e) = store.update(|_| {}, None) {
            tracing::error!(error = %e, "the proxy's own inbound config does not compile");
        }
        store
    }

    /// True once listeners and clusters have arrived and everything they refer to is in use:
    /// each listener's route configuration, and each cluster's endpoints.
    pub fn complete(&self) -> bool {
        let state = self.lock();
        let latest = &state.latest;
        if !state.listeners_accepted || !state.clusters_accepted {
            return false;
        }
        let routes_in = table::route_names(&latest.listeners)
            .iter()
            .all(|r| state.applied_routes.contains_key(r));
        let endpoints_in = latest.clusters.keys().all(|c| is_warm(latest, c));
        routes_in && endpoints_in
    }

    /// The resources last received from the control plane.
    pub fn latest(&self) -> Resources {
        self.lock().latest.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Apply a change to the received resources; on any error nothing changes (NACK).
    fn update(
        &self,
        change: impl FnOnce(&mut Resources),
        subscriptions: Option<&Subscriptions>,
    ) -> Result<(), String> {
        let mut state = self.lock();
        let mut latest = state.latest.clone();
        change(&mut latest);
        let applied_routes = warm_routes(&latest, &state.applied_routes);
        let effective = effective(&latest, &applied_routes, &state.effective, &self.local);
        let version = state.version + 1;
        let table = RouteTable::compile(version, &effective)?;
        self.listeners.reconcile(&table.listeners)?;
        if let Some(subs) = subscriptions {
            subs.set(ROUTE, table::route_names(&latest.listeners));
            subs.set(ENDPOINT, table::eds_names(&latest.clusters));
        }
        self.core
            .metrics
            .config_version
            .set(i64::try_from(version).unwrap_or(i64::MAX));
        self.core.install(table);
        *state = State {
            latest,
            applied_routes,
            effective,
            version,
            ..*state
        };
        Ok(())
    }
}

/// The route configurations to use: each latest one whose clusters are all warm, else the one in
/// use before (if any).
fn warm_routes(
    latest: &Resources,
    applied: &BTreeMap<String, Arc<RouteConfiguration>>,
) -> BTreeMap<String, Arc<RouteConfiguration>> {
    let mut out = BTreeMap::new();
    for (name, rc) in &latest.routes {
        if clusters_of(rc).iter().all(|c| is_warm(latest, c)) {
            out.insert(name.clone(), rc.clone());
        } else if let Some(previous) = applied.get(name) {
            tracing::debug!(route = %name, "holding a route configuration until its clusters have endpoints");
            out.insert(name.clone(), previous.clone());
        }
    }
    out
}

/// A cluster is warm when it is known and, for EDS, its endpoints have arrived.
fn is_warm(r: &Resources, cluster: &str) -> bool {
    let Some(c) = r.clusters.get(cluster) else {
        return false;
    };
    match table::eds_service_name(c) {
        Some(service) => r.endpoints.contains_key(&service),
        None => true,
    }
}

fn clusters_of(rc: &RouteConfiguration) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for route in rc.virtual_hosts.iter().flat_map(|v| &v.routes) {
        if let Some(Action::Route(a)) = &route.action {
            match &a.cluster_specifier {
                Some(ClusterSpecifier::Cluster(c)) => {
                    out.insert(c.clone());
                }
                Some(ClusterSpecifier::WeightedClusters(w)) => {
                    out.extend(w.clusters.iter().map(|c| c.name.clone()))
                }
                _ => {}
            }
            out.extend(a.request_mirror_policies.iter().map(|m| m.cluster.clone()));
        }
    }
    out
}

/// What gets compiled: latest listeners, clusters and endpoints, the applied routes, clusters
/// that were removed but that an applied route still uses (with their last endpoints), and the
/// proxy's own resources.
fn effective(
    latest: &Resources,
    applied_routes: &BTreeMap<String, Arc<RouteConfiguration>>,
    previous: &Resources,
    local: &LocalResources,
) -> Resources {
    let mut r = latest.clone();
    r.routes = applied_routes.clone();
    // A listener switching to a route configuration that is not in use yet keeps its previous
    // version until it is (Envoy's listener warming): it never serves "no route" in between.
    for (name, listener) in &latest.listeners {
        let waiting = table::listener_route_name(listener)
            .is_some_and(|route| !applied_routes.contains_key(&route));
        if let (true, Some(before)) = (waiting, previous.listeners.get(name)) {
            let ready_before = table::listener_route_name(before)
                .is_none_or(|route| applied_routes.contains_key(&route));
            if ready_before {
                r.listeners.insert(name.clone(), before.clone());
            }
        }
    }
    let used: BTreeSet<String> = applied_routes
        .values()
        .flat_map(|rc| clusters_of(rc))
        .collect();
    for name in used.iter().filter(|n| !latest.clusters.contains_key(*n)) {
        let Some(c) = previous.clusters.get(name) else {
            continue;
        };
        r.clusters.insert(name.clone(), c.clone());
        if let Some(service) = table::eds_service_name(c) {
            if let Some(e) = previous.endpoints.get(&service) {
                r.endpoints.entry(service).or_insert_with(|| e.clone());
            }
        }
    }
    r.listeners.extend(local.listeners.clone());
    r.routes.extend(local.routes.clone());
    r.clusters.extend(local.clusters.clone());
    r.endpoints.extend(local.endpoints.clone());
    r
}

fn by_name<T>(items: Vec<T>, name: impl Fn(&T) -> &str) -> BTreeMap<String, Arc<T>> {
    items
        .into_iter()
        .map(|i| (name(&i).to_string(), Arc::new(i)))
        .collect()
}

impl Handler<Listener> for ConfigStore {
    fn handle(
        &self,
        resources: Vec<Listener>,
        subscriptions: &Subscriptions,
    ) -> Result<(), String> {
        self.update(
            |r| r.listeners = by_name(resources, |l| &l.name),
            Some(subscriptions),
        )?;
        self.lock().listeners_accepted = true;
        Ok(())
    }
}

impl Handler<RouteConfiguration> for ConfigStore {
    fn handle(
        &self,
        resources: Vec<RouteConfiguration>,
        subscriptions: &Subscriptions,
    ) -> Result<(), String> {
        self.update(
            |r| r.routes = by_name(resources, |x| &x.name),
            Some(subscriptions),
        )
    }
}

impl Handler<Cluster> for ConfigStore {
    fn handle(&self, resources: Vec<Cluster>, subscriptions: &Subscriptions) -> Result<(), String> {
        self.update(
            |r| r.clusters = by_name(resources, |c| &c.name),
            Some(subscriptions),
        )?;
        self.lock().clusters_accepted = true;
        Ok(())
    }
}

impl Handler<ClusterLoadAssignment> for ConfigStore {
    fn handle(
        &self,
        resources: Vec<ClusterLoadAssignment>,
        subscriptions: &Subscriptions,
    ) -> Result<(), String> {
        self.update(
            |r| r.endpoints = by_name(resources, |e| &e.cluster_name),
            Some(subscriptions),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 15006))
    }

    /// The same listener (by name) on route configuration `inbound|<app_port>`, with that route.
    fn serving(app_port: u16) -> Resources {
        crate::local::inbound(listen(), SocketAddr::from(([127, 0, 0, 1], app_port)))
    }

    fn route_of(r: &Resources) -> Option<String> {
        r.listeners
            .values()
            .next()
            .and_then(|l| table::listener_route_name(l))
    }

    #[test]
    fn a_listener_keeps_its_route_until_the_new_one_is_in_use() {
        let before = serving(1000);
        let mut latest = serving(2000);
        latest.routes.clear(); // the new route configuration has not arrived
        let none = LocalResources::default();
        let applied = before.routes.clone();
        let r = effective(&latest, &applied, &before, &none);
        assert_eq!(route_of(&r).as_deref(), Some("inbound|1000"), "kept");

        let applied = serving(2000).routes;
        let r = effective(&latest, &applied, &before, &none);
        assert_eq!(route_of(&r).as_deref(), Some("inbound|2000"), "switched");
    }

    #[test]
    fn a_new_listener_is_used_at_once() {
        let latest = serving(2000);
        let none = LocalResources::default();
        let r = effective(&latest, &BTreeMap::new(), &Resources::default(), &none);
        assert_eq!(route_of(&r).as_deref(), Some("inbound|2000"));
    }
}
