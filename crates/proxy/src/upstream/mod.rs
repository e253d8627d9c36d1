//! Upstream clusters at run time: per-endpoint state (requests in flight, consecutive errors,
//! ejection) that outlives routing-table swaps, endpoint picking, and the connection pools.
//!
//! State is keyed by (cluster, endpoint address) so a new table with the same endpoints keeps
//! their counters and ejections; endpoints that disappear are dropped on the next sync.

pub mod balance;
pub mod outlier;
pub mod stable_hash;
#[cfg(test)]
mod tests;

pub use balance::pick;
pub use outlier::EndpointHealth;

use crate::table::{ClusterSpec, RouteTable};
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Run-time state of one endpoint.
#[derive(Debug, Default)]
pub struct EndpointState {
    pub in_flight: AtomicUsize,
    pub health: EndpointHealth,
}

/// Counters of one cluster that in-flight requests update: shared by every generation of the
/// cluster's state, so a request that started before a table swap still counts after it.
#[derive(Debug, Default)]
pub struct ClusterCounters {
    pub requests_in_flight: AtomicUsize,
    /// TCP proxy connections open to the cluster (its circuit breaker's `max_connections`).
    pub tcp_connections: AtomicUsize,
    pub retries_in_flight: AtomicUsize,
    pub round_robin: AtomicU64,
}

/// Run-time state of one cluster: its endpoints' states and its circuit-breaker counters.
#[derive(Debug, Default)]
pub struct ClusterState {
    pub endpoints: foldhash::HashMap<SocketAddr, Arc<EndpointState>>,
    pub counters: Arc<ClusterCounters>,
}

impl ClusterState {
    pub fn endpoint(&self, addr: &SocketAddr) -> Option<&Arc<EndpointState>> {
        self.endpoints.get(addr)
    }
}

/// A request (or TCP connection) counted in its endpoint's `in_flight` while this lives. Least
/// request balancing reads that count, so it must come down however the request ends: answered,
/// failed, timed out, or dropped when the client went away.
#[derive(Debug)]
pub struct InFlight(Arc<EndpointState>);

impl InFlight {
    pub fn new(endpoint: Arc<EndpointState>) -> Self {
        endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(endpoint)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One of a cluster's counters, by which it is.
pub type Counter = fn(&ClusterCounters) -> &AtomicUsize;

/// One counted in a cluster counter while this lives, however what it counts ends: a request
/// against the circuit breaker (`requests_in_flight`), a request being retried from its first
/// retry (`retries_in_flight`, Envoy's `max_retries` breaker), a TCP connection
/// (`tcp_connections`).
#[derive(Debug)]
pub struct Counted {
    counters: Arc<ClusterCounters>,
    counter: Counter,
}

impl Counted {
    /// Counted if fewer than `limit` were before it (a circuit breaker's check); otherwise the
    /// count goes back down at once.
    pub fn within(counters: &Arc<ClusterCounters>, counter: Counter, limit: usize) -> Option<Self> {
        let previous = counter(counters).fetch_add(1, Ordering::AcqRel);
        let counted = Self {
            counters: counters.clone(),
            counter,
        };
        (previous < limit).then_some(counted)
    }

    /// A request being retried (counted whatever the limit: the retry budget reads the count).
    pub fn retrying(counters: &Arc<ClusterCounters>) -> Self {
        counters.retries_in_flight.fetch_add(1, Ordering::AcqRel);
        Self {
            counters: counters.clone(),
            counter: |c| &c.retries_in_flight,
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        (self.counter)(&self.counters).fetch_sub(1, Ordering::AcqRel);
    }
}

type ClusterStates = foldhash::HashMap<String, Arc<ClusterState>>;

/// All clusters' run-time state, rebuilt (keeping existing entries) when the table changes.
/// Requests read it without a lock (the map is swapped whole, like the routing table).
#[derive(Debug, Default)]
pub struct Upstreams {
    clusters: ArcSwap<ClusterStates>,
    /// Serialises `sync` calls, so no table's state is built from a map another sync replaced.
    syncing: Mutex<()>,
}

impl Upstreams {
    /// Keep state for the clusters and endpoints of `table`, create what is new, drop the rest.
    pub fn sync(&self, table: &RouteTable) {
        let _one_at_a_time = self.syncing.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.clusters.load_full();
        let mut next =
            ClusterStates::with_capacity_and_hasher(table.clusters.len(), Default::default());
        for (name, spec) in &table.clusters {
            let old = current.get(name);
            next.insert(name.clone(), Arc::new(carry_over(old.map(|o| &**o), spec)));
        }
        self.clusters.store(Arc::new(next));
    }

    pub fn cluster(&self, name: &str) -> Option<Arc<ClusterState>> {
        self.clusters.load().get(name).cloned()
    }

    /// For each cluster that has had an endpoint ejected (and still has that endpoint), how
    /// many of its endpoints are ejected at `now`. Walks every endpoint: for scrapes, not
    /// requests.
    pub fn ejected(&self, now: u64) -> Vec<(String, usize)> {
        let clusters = self.clusters.load();
        clusters
            .iter()
            .filter(|(_, c)| c.endpoints.values().any(|e| e.health.times_ejected() > 0))
            .map(|(name, c)| {
                let n = c.endpoints.values().filter(|e| e.health.is_ejected(now));
                (name.clone(), n.count())
            })
            .collect()
    }
}

fn carry_over(old: Option<&ClusterState>, spec: &ClusterSpec) -> ClusterState {
    let endpoints = spec
        .endpoints
        .iter()
        .map(|e| {
            let state = old
                .and_then(|o| o.endpoints.get(&e.addr).cloned())
                .unwrap_or_default();
            (e.addr, state)
        })
        .collect();
    ClusterState {
        endpoints,
        counters: old.map(|o| o.counters.clone()).unwrap_or_default(),
    }
}
