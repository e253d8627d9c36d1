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
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, RwLock};

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

/// All clusters' run-time state, rebuilt (keeping existing entries) when the table changes.
#[derive(Debug, Default)]
pub struct Upstreams {
    clusters: RwLock<foldhash::HashMap<String, Arc<ClusterState>>>,
}

impl Upstreams {
    /// Keep state for the clusters and endpoints of `table`, create what is new, drop the rest.
    pub fn sync(&self, table: &RouteTable) {
        let mut clusters = self.clusters.write().unwrap_or_else(|e| e.into_inner());
        let mut next =
            foldhash::HashMap::with_capacity_and_hasher(table.clusters.len(), Default::default());
        for (name, spec) in &table.clusters {
            let old = clusters.remove(name);
            next.insert(name.clone(), Arc::new(carry_over(old.as_deref(), spec)));
        }
        *clusters = next;
    }

    pub fn cluster(&self, name: &str) -> Option<Arc<ClusterState>> {
        self.clusters
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// For each cluster that has had an endpoint ejected (and still has that endpoint), how
    /// many of its endpoints are ejected at `now`. Walks every endpoint: for scrapes, not
    /// requests.
    pub fn ejected(&self, now: u64) -> Vec<(String, usize)> {
        let clusters = self.clusters.read().unwrap_or_else(|e| e.into_inner());
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
