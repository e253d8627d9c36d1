//! Per-thread handles to each label set's counter and histogram: once a label set has been seen
//! on a thread, counting a request there takes no lock and no allocation (the families are only
//! consulted, and their keys built, the first time).

use super::{DurationKey, ProxyMetrics, RequestKey, RequestLabels};
use crate::upstream::stable_hash::fnv1a_64_extend;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

/// A thread keeps at most this many label sets; past it the cache starts over (the counts
/// live in the families, never here).
const MAX_ENTRIES: usize = 4096;

static INSTANCES: AtomicU64 = AtomicU64::new(0);

pub(super) fn next_instance() -> u64 {
    INSTANCES.fetch_add(1, Ordering::Relaxed)
}

struct Entry {
    instance: u64,
    key: RequestKey,
    counter: Counter,
    duration: Histogram,
}

impl Entry {
    fn is(&self, instance: u64, l: &RequestLabels, grpc_status: &str) -> bool {
        let (source_service, source_version) = l.source_parts();
        self.instance == instance
            && self.key.response_code == l.code
            && self.key.direction == l.direction.as_str()
            && self.key.source_service == source_service
            && self.key.source_version == source_version
            && self.key.destination_service == l.service
            && self.key.destination_version == l.version
            && self.key.grpc_status == grpc_status
            && self.key.flags == l.flags
    }
}

#[derive(Default)]
struct Cache {
    /// By the FNV hash of the labels: a lookup builds no key.
    by_hash: foldhash::HashMap<u64, Vec<Entry>>,
    len: usize,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::default();
}

fn hash(instance: u64, l: &RequestLabels, grpc_status: &str) -> u64 {
    let mut h = fnv1a_64_extend(0xcbf2_9ce4_8422_2325, &instance.to_le_bytes());
    h = fnv1a_64_extend(h, &l.code.to_le_bytes());
    let (source_service, source_version) = l.source_parts();
    for part in [
        l.direction.as_str(),
        source_service,
        source_version,
        &l.service,
        &l.version,
        grpc_status,
        &l.flags,
    ] {
        h = fnv1a_64_extend(h, part.as_bytes());
        h = fnv1a_64_extend(h, &[0xff]);
    }
    h
}

/// Calls `f` with the counter and histogram of the request's labels.
pub(super) fn with(
    metrics: &ProxyMetrics,
    l: &RequestLabels,
    grpc_status: &str,
    f: impl FnOnce(&Counter, &Histogram),
) {
    let h = hash(metrics.instance, l, grpc_status);
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(e) = cache
            .by_hash
            .get(&h)
            .and_then(|b| b.iter().find(|e| e.is(metrics.instance, l, grpc_status)))
        {
            return f(&e.counter, &e.duration);
        }
        let (source_service, source_version) = l.source_parts();
        let key = RequestKey {
            direction: l.direction.as_str(),
            source_service: source_service.to_string(),
            source_version: source_version.to_string(),
            destination_service: l.service.clone(),
            destination_version: l.version.clone(),
            response_code: l.code,
            grpc_status: grpc_status.to_string(),
            flags: l.flags.clone(),
        };
        let counter = metrics.requests.get_or_create(&key).clone();
        let duration = metrics
            .duration
            .get_or_create(&DurationKey {
                direction: l.direction.as_str(),
                source_service: source_service.to_string(),
                source_version: source_version.to_string(),
                destination_service: l.service.clone(),
                destination_version: l.version.clone(),
            })
            .clone();
        f(&counter, &duration);
        if cache.len >= MAX_ENTRIES {
            *cache = Cache::default();
        }
        cache.len += 1;
        cache.by_hash.entry(h).or_default().push(Entry {
            instance: metrics.instance,
            key,
            counter,
            duration,
        });
    });
}
