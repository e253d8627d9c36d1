//! WeightedPick: which of a route's weighted clusters gets a request.
//!
//! Envoy picks a weighted cluster at random in proportion to the weights, even when the route has
//! a hash policy (that only chooses the endpoint inside the cluster), so a user would flip between
//! versions from one request to the next. graymesh extends this: when the route has a hash policy
//! and the request yields a key, the key's hash fixes a point `u` in [0, 1), and the request goes
//! to the cluster whose range of the cumulative weights, walked in the listed order, holds
//! `u × total`. The point depends on the key alone, so a user keeps one version while the weights
//! stay, in every proxy (the hash is stable, see `upstream::stable_hash`). A user is on the last
//! cluster exactly when `u ≥ 1 − its share`, so raising the last cluster's share only moves users
//! onto it, never off it: listed last (as the release model lists the new version), a canary's
//! cohort only grows. That holds while the order stays from one config to the next: a split that
//! lists the versions the other way round deals the cohorts anew. Without a key the pick stays
//! random.
//!
//! Runs once per request: it must never allocate or lock.

use crate::table::{Forward, WeightedCluster};
use crate::upstream::stable_hash::mix64;
use rand::Rng;

/// The cluster for a request whose hash-policy key hashed to `key` (`None`: the route has no
/// hash policy, or the request does not carry its key).
pub fn pick(f: &Forward, key: Option<u64>) -> &WeightedCluster {
    if f.clusters.len() == 1 {
        return &f.clusters[0];
    }
    let slot = match key {
        Some(key) => point(key, f.total_weight),
        None => rand::rng().random_range(0..f.total_weight.max(1)),
    };
    walk(&f.clusters, slot)
}

/// The key's place in [0, total): `floor(u × total)` with `u = mix64(key) / 2^64`, computed
/// exactly, so `point < w` holds exactly when `u < w / total`, whatever the total.
pub fn point(key: u64, total: u64) -> u64 {
    let scaled = (u128::from(mix64(key)) * u128::from(total)) >> 64;
    // Below `total` by construction, so it fits.
    u64::try_from(scaled).unwrap_or(total.saturating_sub(1))
}

/// The cluster whose cumulative weight range holds `slot`, in the listed order.
fn walk(clusters: &[WeightedCluster], mut slot: u64) -> &WeightedCluster {
    for c in clusters {
        if slot < c.weight {
            return c;
        }
        slot -= c.weight;
    }
    // Only reached with `slot ≥ total`, which neither caller makes.
    &clusters[clusters.len() - 1]
}

#[cfg(test)]
mod tests;
