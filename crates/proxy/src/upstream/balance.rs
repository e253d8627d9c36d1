//! Picking an endpoint of a cluster: weighted round robin, least request (power of two choices),
//! weighted random, or consistent hashing (rendezvous hashing: a key keeps its endpoint while that
//! endpoint stays, and only the keys of a removed endpoint move).
//!
//! Ejected endpoints are skipped; when every endpoint is ejected all of them are used again
//! (Envoy's panic mode), since sending somewhere beats failing everything.

use super::stable_hash::{fnv1a_64, fnv1a_64_extend, mix64};
use super::ClusterState;
use crate::table::{ClusterSpec, Endpoint, LbPolicy};
use rand::Rng;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;

/// `avoid` lists endpoints a retry already tried: they are skipped while others remain (as
/// Istio's default `previous_hosts` retry predicate does).
pub fn pick(
    spec: &ClusterSpec,
    state: &ClusterState,
    hash_key: Option<u64>,
    now: u64,
    avoid: &[SocketAddr],
) -> Option<SocketAddr> {
    if spec.endpoints.is_empty() {
        return None;
    }
    let healthy = |e: &Endpoint| {
        state
            .endpoint(&e.addr)
            .is_none_or(|s| !s.health.is_ejected(now))
    };
    // The common case (nothing ejected, a first attempt) picks among all endpoints without
    // collecting them: no allocation per request.
    if avoid.is_empty() && spec.endpoints.iter().all(healthy) {
        return Some(choose(spec, state, hash_key, spec.endpoints.as_slice()).addr);
    }
    let mut candidates: Vec<&Endpoint> = spec.endpoints.iter().filter(|e| healthy(e)).collect();
    if !avoid.is_empty() && candidates.iter().any(|e| !avoid.contains(&e.addr)) {
        candidates.retain(|e| !avoid.contains(&e.addr));
    }
    if candidates.is_empty() {
        return Some(choose(spec, state, hash_key, spec.endpoints.as_slice()).addr);
    }
    Some(choose(spec, state, hash_key, candidates.as_slice()).addr)
}

/// Endpoints to choose from: all of a cluster's (`[Endpoint]`) or a filtered few (`[&Endpoint]`).
trait Candidates {
    fn len(&self) -> usize;
    fn at(&self, i: usize) -> &Endpoint;
    fn iter(&self) -> impl Iterator<Item = &Endpoint> {
        (0..self.len()).map(|i| self.at(i))
    }
}

impl Candidates for [Endpoint] {
    fn len(&self) -> usize {
        <[Endpoint]>::len(self)
    }
    fn at(&self, i: usize) -> &Endpoint {
        &self[i]
    }
}

impl Candidates for [&Endpoint] {
    fn len(&self) -> usize {
        <[&Endpoint]>::len(self)
    }
    fn at(&self, i: usize) -> &Endpoint {
        self[i]
    }
}

/// The endpoint the cluster's policy picks among `c` (never empty).
fn choose<'a, C: Candidates + ?Sized>(
    spec: &ClusterSpec,
    state: &ClusterState,
    hash_key: Option<u64>,
    c: &'a C,
) -> &'a Endpoint {
    match (spec.lb, hash_key) {
        (LbPolicy::RingHash, Some(key)) => rendezvous(c, key),
        (LbPolicy::LeastRequest, _) => least_request(c, state),
        (LbPolicy::Random, _) | (LbPolicy::RingHash, None) => weighted_random(c),
        (LbPolicy::RoundRobin, _) => round_robin(c, state),
    }
}

fn round_robin<'a, C: Candidates + ?Sized>(c: &'a C, state: &ClusterState) -> &'a Endpoint {
    let n = state.counters.round_robin.fetch_add(1, Ordering::Relaxed);
    let first = c.at(0);
    if c.iter().all(|e| e.weight == first.weight) {
        return c.at((n % c.len() as u64) as usize);
    }
    // Unequal weights: a scrambled counter over the cumulative weights spreads picks evenly.
    let total: u64 = c.iter().map(|e| u64::from(e.weight)).sum();
    let mut slot = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) % total;
    for e in c.iter() {
        if slot < u64::from(e.weight) {
            return e;
        }
        slot -= u64::from(e.weight);
    }
    first
}

fn weighted_random<C: Candidates + ?Sized>(c: &C) -> &Endpoint {
    let total: u64 = c.iter().map(|e| u64::from(e.weight)).sum();
    let mut slot = rand::rng().random_range(0..total.max(1));
    for e in c.iter() {
        if slot < u64::from(e.weight) {
            return e;
        }
        slot -= u64::from(e.weight);
    }
    c.at(0)
}

fn least_request<'a, C: Candidates + ?Sized>(c: &'a C, state: &ClusterState) -> &'a Endpoint {
    if c.len() == 1 {
        return c.at(0);
    }
    let mut rng = rand::rng();
    let a = c.at(rng.random_range(0..c.len()));
    let b = c.at(rng.random_range(0..c.len()));
    let load = |e: &Endpoint| {
        state
            .endpoint(&e.addr)
            .map(|s| s.in_flight.load(Ordering::Relaxed))
            .unwrap_or(0)
    };
    if load(b) < load(a) {
        b
    } else {
        a
    }
}

/// Stable hashes on both sides (the key's and the endpoint's), so every proxy with the same
/// endpoints sends a key to the same one.
fn rendezvous<C: Candidates + ?Sized>(c: &C, key: u64) -> &Endpoint {
    let score = |e: &Endpoint| {
        let endpoint = fnv1a_64_extend(hash_ip(e.addr.ip()), &e.addr.port().to_be_bytes());
        let h = mix64(key ^ mix64(endpoint));
        // Weighted rendezvous: -w / ln(u), compared without floats' NaN issues.
        let u = (h >> 11) as f64 / (1u64 << 53) as f64;
        f64::from(e.weight) / -(u.max(f64::MIN_POSITIVE)).ln()
    };
    c.iter()
        .max_by(|a, b| score(a).total_cmp(&score(b)))
        .unwrap_or(c.at(0))
}

/// The hash of a request's hash-policy key (FNV-1a 64): the same in every proxy, on every
/// machine and build, since it chooses the user's version and endpoint mesh-wide.
pub fn hash_of(value: &[u8]) -> u64 {
    fnv1a_64(value)
}

/// [`hash_of`] a value handed out in pieces (a rewritten header value), without a buffer.
pub fn hash_of_pieces(write: impl FnOnce(&mut dyn FnMut(&str))) -> u64 {
    let mut state = fnv1a_64(b"");
    write(&mut |piece| state = fnv1a_64_extend(state, piece.as_bytes()));
    state
}

/// The hash of a key made of several values (the lines of one header), in the given order: one
/// value hashes as [`hash_of`] it; values are joined by a NUL, which no header value holds, so
/// `["ab", "c"]` and `["a", "bc"]` differ.
pub fn hash_of_values<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> u64 {
    let mut state = fnv1a_64(b"");
    for (i, value) in values.into_iter().enumerate() {
        if i > 0 {
            state = fnv1a_64_extend(state, &[0]);
        }
        state = fnv1a_64_extend(state, value);
    }
    state
}

/// The hash of an address by its octets (4 or 16), without formatting it.
pub fn hash_ip(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => fnv1a_64(&v4.octets()),
        IpAddr::V6(v6) => fnv1a_64(&v6.octets()),
    }
}
