//! Per-thread handles to each label set's counter and histogram: once a label set has been seen
//! on a thread, counting a request there takes no lock and no allocation (the families are only
//! consulted, and their keys built, the first time).

use super::{DurationKey, ProxyMetrics, RequestKey, RequestLabels};
use crate::upstream::stable_hash::fnv1a_64_extend;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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
            && self.key.destination_service == l.destination_parts().0
            && self.key.destination_version == l.destination_parts().1
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

/// The source and destination are hashed by identity (the address of their shared, immutable
/// labels), not by content: no string is walked per request. Entries still compare contents,
/// so a reused address only costs a miss, never a wrong counter.
fn hash(instance: u64, l: &RequestLabels, grpc_status: &str) -> u64 {
    let identity = |p: Option<*const u8>| p.map_or(0, |p| p as usize as u64);
    let mut h = fnv1a_64_extend(0xcbf2_9ce4_8422_2325, &instance.to_le_bytes());
    for n in [
        u64::from(l.code),
        l.direction as u64,
        identity(l.source.as_ref().map(|s| Arc::as_ptr(s).cast())),
        identity(l.destination.as_ref().map(|d| Arc::as_ptr(d).cast())),
    ] {
        h = fnv1a_64_extend(h, &n.to_le_bytes());
    }
    for part in [grpc_status, &l.flags] {
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
            destination_service: l.destination_parts().0.to_string(),
            destination_version: l.destination_parts().1.to_string(),
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
                destination_service: l.destination_parts().0.to_string(),
                destination_version: l.destination_parts().1.to_string(),
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
