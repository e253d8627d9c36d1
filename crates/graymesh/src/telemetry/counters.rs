//! The arithmetic of the embedded source: cumulative counters as a proxy reports them, the
//! increase between two scrapes (a decrease means the proxy restarted and counts from zero),
//! and the sum of increases over a window with its p99, interpolated inside the bucket the way
//! Prometheus' `histogram_quantile` does.

use graymesh_release::analysis::VersionStats;
use std::collections::BTreeMap;
use std::time::Duration;

/// One (destination service, destination version) as the proxies label it: the service is the
/// cluster's host (`reviews.default.svc.cluster.local`), the version its subset.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct SeriesKey {
    pub service: String,
    pub version: String,
}

/// What a proxy has counted for one series since it started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    pub requests: u64,
    pub server_errors: u64,
    pub grpc_requests: u64,
    pub grpc_errors: u64,
    /// Cumulative histogram buckets `(le, observations <= le)`, sorted by `le`, ending at +Inf.
    pub buckets: Vec<(f64, u64)>,
}

impl Counters {
    /// Adds `count` to the bucket bounded by `le` (series that differ only in labels we do not
    /// key on, e.g. `flags`, add up).
    pub fn add_bucket(&mut self, le: f64, count: u64) {
        match self.buckets.binary_search_by(|(b, _)| b.total_cmp(&le)) {
            Ok(i) => self.buckets[i].1 += count,
            Err(i) => self.buckets.insert(i, (le, count)),
        }
    }

    /// What happened between `earlier` and `self`, or `None` if nothing did. Without an
    /// earlier scrape, or when any counter went down (the proxy restarted), everything `self`
    /// holds is new.
    pub fn increase_since(&self, earlier: Option<&Counters>) -> Option<Increase> {
        let base = earlier.filter(|e| !self.went_down_from(e));
        let zero = Counters::default();
        let base = base.unwrap_or(&zero);
        let increase = Increase {
            requests: self.requests - base.requests,
            server_errors: self.server_errors - base.server_errors,
            grpc_requests: self.grpc_requests - base.grpc_requests,
            grpc_errors: self.grpc_errors - base.grpc_errors,
            buckets: self.bucket_increase(base),
        };
        (!increase.is_empty()).then_some(increase)
    }

    fn went_down_from(&self, e: &Counters) -> bool {
        self.requests < e.requests
            || self.server_errors < e.server_errors
            || self.grpc_requests < e.grpc_requests
            || self.grpc_errors < e.grpc_errors
            || e.buckets.iter().any(|(le, n)| self.cumulative_at(*le) < *n)
    }

    fn cumulative_at(&self, le: f64) -> u64 {
        self.buckets
            .iter()
            .find(|(b, _)| *b == le)
            .map_or(0, |(_, n)| *n)
    }

    /// Per-bucket (not cumulative) increases, only the non-zero ones.
    fn bucket_increase(&self, base: &Counters) -> Vec<(f64, u64)> {
        let mut previous = 0;
        let mut out = Vec::new();
        for (le, n) in &self.buckets {
            let cumulative = n.saturating_sub(base.cumulative_at(*le));
            let in_bucket = cumulative.saturating_sub(previous);
            previous = previous.max(cumulative);
            if in_bucket > 0 {
                out.push((*le, in_bucket));
            }
        }
        out
    }
}

/// The increase of one series between two scrapes of one proxy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Increase {
    pub requests: u64,
    pub server_errors: u64,
    pub grpc_requests: u64,
    pub grpc_errors: u64,
    /// `(le, observations in this bucket alone)`, non-zero ones only, sorted by `le`.
    pub buckets: Vec<(f64, u64)>,
}

impl Increase {
    fn is_empty(&self) -> bool {
        self.requests == 0 && self.grpc_requests == 0 && self.buckets.is_empty()
    }
}

/// Increases added up over a window (and over proxies).
#[derive(Debug, Default)]
pub struct WindowSum {
    requests: u64,
    server_errors: u64,
    grpc_requests: u64,
    grpc_errors: u64,
    /// Keyed by the bound's bits: for non-negative floats their order is the numbers' order.
    buckets: BTreeMap<u64, u64>,
}

impl WindowSum {
    pub fn add(&mut self, i: &Increase) {
        self.requests += i.requests;
        self.server_errors += i.server_errors;
        self.grpc_requests += i.grpc_requests;
        self.grpc_errors += i.grpc_errors;
        for (le, n) in &i.buckets {
            *self.buckets.entry(le.to_bits()).or_default() += n;
        }
    }

    pub fn stats(&self) -> VersionStats {
        let mut cumulative = 0;
        let buckets: Vec<(f64, u64)> = self
            .buckets
            .iter()
            .map(|(bits, n)| {
                cumulative += n;
                (f64::from_bits(*bits), cumulative)
            })
            .collect();
        VersionStats {
            requests: self.requests,
            server_errors: self.server_errors,
            grpc_requests: self.grpc_requests,
            grpc_errors: self.grpc_errors,
            p99: quantile(0.99, &buckets)
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(Duration::from_secs_f64),
        }
    }
}

/// The `q` quantile of cumulative `buckets` (sorted by `le`), as Prometheus'
/// `histogram_quantile` computes it: find the bucket the rank falls in and interpolate linearly
/// inside it; a rank in the +Inf bucket answers the highest finite bound. `None` without
/// observations.
pub fn quantile(q: f64, buckets: &[(f64, u64)]) -> Option<f64> {
    let &(_, total) = buckets.last()?;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let b = buckets.iter().position(|(_, n)| *n as f64 >= rank)?;
    let (end, count) = buckets[b];
    if end.is_infinite() {
        // Everything above the last finite bound: that bound is the best we know.
        return b.checked_sub(1).map(|prev| buckets[prev].0);
    }
    let (start, below) = match b.checked_sub(1) {
        Some(prev) => buckets[prev],
        None if end > 0.0 => (0.0, 0),
        None => return Some(end),
    };
    let in_bucket = (count - below) as f64;
    Some(start + (end - start) * (rank - below as f64) / in_bucket)
}
