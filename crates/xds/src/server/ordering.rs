//! Make-before-break, per stream. Given the resources a stream should converge to and what its
//! client subscribed, was sent and ACKed, [`PushOrder::plan`] says which listeners and routes
//! must not be sent yet (a cluster they point at, or its endpoints, is not ACKed by this client)
//! and which clusters and load assignments the target no longer has must stay (a listener or
//! route the client holds, or was sent, still points at them). Both protocols apply the plan the
//! same way: a held resource keeps the client's current version, a kept one is not removed.
//!
//! Pure: the caller passes the time and sends the responses. It must never hold a resource back
//! for longer than [`HOLD_TIMEOUT`], after a NACK of what it waits for, or for a cluster the
//! client cannot be given (outside a by-name CDS subscription, or absent from the target): a
//! client that subscribes clusters by name (gRPC) asks for one only after it sees the route.

use crate::resources::{NamedResource, ResourceSet};
use crate::types::TypeUrl;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::time::Instant;

#[cfg(test)]
mod tests;

/// The longest a listener or route waits for this client's ACK of its clusters.
pub(super) const HOLD_TIMEOUT: Duration = Duration::from_secs(5);

/// What one stream knows of its client; each protocol answers from its own per-type state.
pub(super) trait ClientView {
    /// Whether the client subscribed `t` at all.
    fn subscribed(&self, t: TypeUrl) -> bool;
    /// Whether a response of `t` would carry `name` (a wildcard or by-name subscription).
    fn delivers(&self, t: TypeUrl, name: &str) -> bool;
    /// Whether the client ACKed a response holding `name` of `t`, in any version.
    fn acked(&self, t: TypeUrl, name: &str) -> bool;
    /// The version of `name` the client was last sent, or said it holds.
    fn sent_version(&self, t: TypeUrl, name: &str) -> Option<&str>;
    /// Clusters named by the listeners and routes the client holds or was sent, ACKed or not;
    /// `None` when some are known by version only (a reconnecting delta client's).
    fn referenced_clusters(&self) -> Option<BTreeSet<String>>;
    /// Clusters the client holds or was sent, each with the load assignment it reads (EDS).
    fn clusters(&self) -> Vec<(String, Option<String>)>;
}

/// What to do now; see the module docs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Plan {
    held: BTreeSet<(TypeUrl, String)>,
    kept: BTreeSet<(TypeUrl, String)>,
    /// Plan again then if no ACK came first: the earliest hold that runs out.
    pub wake_at: Option<Instant>,
    /// Clusters given up on in this plan (not ACKed within the timeout), each reported once.
    pub expired: Vec<String>,
}

impl Plan {
    /// `name` of `t` must not be sent in its target version yet.
    pub fn holds(&self, t: TypeUrl, name: &str) -> bool {
        self.held.contains(&(t, name.to_string()))
    }

    /// `name` of `t` is gone from the target but must not be removed from the client yet.
    pub fn keeps(&self, t: TypeUrl, name: &str) -> bool {
        self.kept.contains(&(t, name.to_string()))
    }

    /// Nothing held or kept: the client gets the target as it is.
    pub fn is_quiet(&self) -> bool {
        self.held.is_empty() && self.kept.is_empty()
    }

    pub fn held(&self) -> impl Iterator<Item = (TypeUrl, &str)> {
        self.held.iter().map(|(t, n)| (*t, n.as_str()))
    }
}

/// One cluster this client has not ACKed yet while something waits for it.
#[derive(Debug)]
struct Wait {
    since: Instant,
    /// The cluster's version when it was NACKed: a new version is waited for again.
    version: String,
    nacked: bool,
    expired: bool,
}

/// A stream's memory between plans: since when each cluster has been waited for.
#[derive(Debug)]
pub(super) struct PushOrder {
    timeout: Duration,
    waits: BTreeMap<String, Wait>,
}

impl PushOrder {
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            waits: BTreeMap::new(),
        }
    }

    pub fn plan(&mut self, target: &ResourceSet, client: &impl ClientView, now: Instant) -> Plan {
        let mut plan = Plan::default();
        let mut waited = BTreeSet::new();
        for t in [TypeUrl::Listener, TypeUrl::Route] {
            for (name, r) in target.of(t) {
                let has_it = client.sent_version(t, name) == Some(r.version.as_str());
                if has_it || !client.delivers(t, name) {
                    continue;
                }
                let deps = deps(target, r);
                if self.blocks(target, client, &deps, now, &mut plan, &mut waited) {
                    plan.held.insert((t, name.clone()));
                }
            }
        }
        // A cluster nothing waits for any more is forgotten; one given up on stays given up.
        self.waits.retain(|c, _| waited.contains(c));
        plan.wake_at = self
            .waits
            .values()
            .filter(|w| !w.nacked && !w.expired)
            .map(|w| w.since + self.timeout)
            .min();
        plan.kept = kept(target, client);
        plan
    }

    /// The client rejected a response of `t`: stop waiting for what it may have rejected.
    /// Returns whether anything was waiting.
    pub fn nacked(&mut self, t: TypeUrl) -> bool {
        if !matches!(t, TypeUrl::Cluster | TypeUrl::Endpoint) {
            return false;
        }
        self.waits.values_mut().for_each(|w| w.nacked = true);
        !self.waits.is_empty()
    }

    /// Whether any of `deps` is still worth waiting for. Every cluster not ready yet goes into
    /// `waited`, blocking or not.
    fn blocks(
        &mut self,
        target: &ResourceSet,
        client: &impl ClientView,
        deps: &BTreeSet<&str>,
        now: Instant,
        plan: &mut Plan,
        waited: &mut BTreeSet<String>,
    ) -> bool {
        let mut blocks = false;
        for &c in deps {
            let Some(cluster) = target.of(TypeUrl::Cluster).get(c) else {
                continue; // never coming: waiting would not help
            };
            if !client.delivers(TypeUrl::Cluster, c) || ready(target, client, cluster) {
                continue;
            }
            waited.insert(c.to_string());
            let wait = self.waits.entry(c.to_string()).or_insert_with(|| Wait {
                since: now,
                version: cluster.version.clone(),
                nacked: false,
                expired: false,
            });
            if wait.version != cluster.version {
                wait.version.clone_from(&cluster.version);
                wait.nacked = false;
            }
            if !wait.expired && now >= wait.since + self.timeout {
                wait.expired = true;
                plan.expired.push(c.to_string());
            }
            blocks |= !wait.nacked && !wait.expired;
        }
        blocks
    }
}

/// The clusters a listener or route needs: its own, and a listener's those of its routes.
fn deps<'a>(target: &'a ResourceSet, r: &'a NamedResource) -> BTreeSet<&'a str> {
    let routes = r
        .refs
        .routes
        .iter()
        .filter_map(|n| target.of(TypeUrl::Route).get(n));
    r.refs
        .clusters
        .iter()
        .chain(routes.flat_map(|route| &route.refs.clusters))
        .map(String::as_str)
        .collect()
}

/// The client ACKed the cluster and, if it reads endpoints it can be sent, those endpoints.
fn ready(target: &ResourceSet, client: &impl ClientView, cluster: &NamedResource) -> bool {
    if !client.acked(TypeUrl::Cluster, &cluster.name) {
        return false;
    }
    match &cluster.refs.endpoints {
        Some(e)
            if client.subscribed(TypeUrl::Endpoint)
                && target.of(TypeUrl::Endpoint).contains_key(e) =>
        {
            client.acked(TypeUrl::Endpoint, e)
        }
        _ => true,
    }
}

/// Clusters (and their load assignments) gone from the target that something the client holds
/// or was sent still points at.
fn kept(target: &ResourceSet, client: &impl ClientView) -> BTreeSet<(TypeUrl, String)> {
    let mut gone = client.clusters();
    gone.retain(|(c, _)| !target.of(TypeUrl::Cluster).contains_key(c));
    if gone.is_empty() {
        return BTreeSet::new(); // the usual case: no walk over the routes
    }
    let referenced = client.referenced_clusters();
    let mut kept = BTreeSet::new();
    for (c, endpoints) in gone {
        if referenced.as_ref().is_some_and(|r| !r.contains(&c)) {
            continue;
        }
        if let Some(e) = endpoints.filter(|e| !target.of(TypeUrl::Endpoint).contains_key(e)) {
            kept.insert((TypeUrl::Endpoint, e));
        }
        kept.insert((TypeUrl::Cluster, c));
    }
    kept
}
