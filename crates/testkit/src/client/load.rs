//! Bounded load: many calls of one kind at a fixed concurrency, stopped by a request count *and*
//! a time limit, summarised by version, failures and latency.
//!
//! It must never run unbounded: both bounds are required, and a call still in flight when time
//! is up is abandoned, not waited for.

use super::{CallOptions, GrpcClient, Http1Client, Http2Client};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Failures kept verbatim in a report; the rest are only counted.
const KEPT_FAILURES: usize = 20;

/// The call every worker repeats.
#[derive(Clone, Debug)]
pub enum LoadCall {
    Http1 {
        client: Http1Client,
        url: String,
        headers: Vec<(String, String)>,
    },
    Http2 {
        client: Http2Client,
        url: String,
        headers: Vec<(String, String)>,
    },
    Grpc {
        client: GrpcClient,
        options: CallOptions,
    },
}

impl LoadCall {
    /// `GET url` over HTTP/1.1, no extra headers.
    pub fn http1(client: Http1Client, url: impl Into<String>) -> Self {
        let url = url.into();
        LoadCall::Http1 {
            client,
            url,
            headers: Vec::new(),
        }
    }

    /// `GET url` over h2c, no extra headers.
    pub fn http2(client: Http2Client, url: impl Into<String>) -> Self {
        let url = url.into();
        LoadCall::Http2 {
            client,
            url,
            headers: Vec::new(),
        }
    }

    /// `graymesh.test.Echo/Version` with default call options.
    pub fn grpc(client: GrpcClient) -> Self {
        let options = CallOptions::default();
        LoadCall::Grpc { client, options }
    }
}

/// Both bounds are required: the run ends at whichever comes first.
#[derive(Clone, Copy, Debug)]
pub struct LoadPlan {
    pub max_requests: u64,
    pub max_duration: Duration,
    /// Workers calling at once; at least one runs.
    pub concurrency: usize,
}

/// Which bound ended the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    Count,
    Time,
}

#[derive(Clone, Debug)]
pub struct LoadReport {
    /// Calls that finished, ok or not: `ok + failed`.
    pub sent: u64,
    /// HTTP 2xx, or gRPC OK.
    pub ok: u64,
    pub failed: u64,
    /// Calls in flight when the time bound hit; abandoned, not in `sent`.
    pub abandoned: u64,
    /// Successful answers by the version that gave them (`unknown` when none was named).
    pub by_version: BTreeMap<String, u64>,
    /// The first failures, described.
    pub failures: Vec<String>,
    pub latency_p50: Duration,
    pub latency_p99: Duration,
    pub elapsed: Duration,
    pub stopped_by: StopReason,
}

/// Runs `call` until `plan.max_requests` calls were started or `plan.max_duration` passed.
pub async fn run_load(call: LoadCall, plan: LoadPlan) -> LoadReport {
    let started = Instant::now();
    let deadline = started + plan.max_duration;
    let call = Arc::new(call);
    let tickets = Arc::new(AtomicU64::new(0));
    let mut workers = JoinSet::new();
    for _ in 0..plan.concurrency.max(1) {
        let worker = worker(call.clone(), tickets.clone(), plan.max_requests, deadline);
        workers.spawn(worker);
    }
    let mut total = WorkerStats::default();
    while let Some(stats) = workers.join_next().await {
        total.merge(stats.unwrap_or_default());
    }
    let count_reached = tickets.load(Ordering::SeqCst) >= plan.max_requests && total.abandoned == 0;
    let stopped_by = if count_reached {
        StopReason::Count
    } else {
        StopReason::Time
    };
    total.report(started.elapsed(), stopped_by)
}

async fn worker(
    call: Arc<LoadCall>,
    tickets: Arc<AtomicU64>,
    max_requests: u64,
    deadline: Instant,
) -> WorkerStats {
    let mut stats = WorkerStats::default();
    while Instant::now() < deadline && tickets.fetch_add(1, Ordering::SeqCst) < max_requests {
        let started = Instant::now();
        match tokio::time::timeout_at(deadline, call_once(&call)).await {
            Ok(outcome) => stats.record(outcome, started.elapsed()),
            Err(_) => {
                stats.abandoned += 1;
                break;
            }
        }
    }
    stats
}

/// `Ok(version)` for a success, `Err(description)` for a failure.
async fn call_once(call: &LoadCall) -> Result<String, String> {
    let reply = match call {
        LoadCall::Http1 {
            client,
            url,
            headers,
        } => client.get(url, &pairs(headers)).await,
        LoadCall::Http2 {
            client,
            url,
            headers,
        } => client.get(url, &pairs(headers)).await,
        LoadCall::Grpc { client, options } => {
            return client.version(options).await.map_err(|e| e.to_string());
        }
    };
    let reply = reply.map_err(|e| format!("{e:#}"))?;
    let version = reply.version.unwrap_or_else(|| "unknown".into());
    if reply.status.is_success() {
        Ok(version)
    } else {
        Err(format!("HTTP {} from version {version}", reply.status))
    }
}

fn pairs(headers: &[(String, String)]) -> Vec<(&str, &str)> {
    headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

// === impl WorkerStats ===

#[derive(Debug, Default)]
struct WorkerStats {
    ok: u64,
    failed: u64,
    abandoned: u64,
    by_version: BTreeMap<String, u64>,
    failures: Vec<String>,
    latencies: Vec<Duration>,
}

impl WorkerStats {
    fn record(&mut self, outcome: Result<String, String>, latency: Duration) {
        self.latencies.push(latency);
        match outcome {
            Ok(version) => {
                self.ok += 1;
                *self.by_version.entry(version).or_default() += 1;
            }
            Err(failure) => {
                self.failed += 1;
                if self.failures.len() < KEPT_FAILURES {
                    self.failures.push(failure);
                }
            }
        }
    }

    fn merge(&mut self, other: WorkerStats) {
        self.ok += other.ok;
        self.failed += other.failed;
        self.abandoned += other.abandoned;
        for (version, count) in other.by_version {
            *self.by_version.entry(version).or_default() += count;
        }
        self.failures.extend(other.failures);
        self.failures.truncate(KEPT_FAILURES);
        self.latencies.extend(other.latencies);
    }

    fn report(mut self, elapsed: Duration, stopped_by: StopReason) -> LoadReport {
        self.latencies.sort_unstable();
        LoadReport {
            sent: self.ok + self.failed,
            ok: self.ok,
            failed: self.failed,
            abandoned: self.abandoned,
            latency_p50: percentile(&self.latencies, 50),
            latency_p99: percentile(&self.latencies, 99),
            by_version: self.by_version,
            failures: self.failures,
            elapsed,
            stopped_by,
        }
    }
}

/// Nearest-rank percentile of sorted latencies; zero when there are none.
fn percentile(sorted: &[Duration], pct: usize) -> Duration {
    let rank = (sorted.len() * pct).div_ceil(100).max(1);
    sorted.get(rank - 1).copied().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let ms: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&ms, 50), Duration::from_millis(50));
        assert_eq!(percentile(&ms, 99), Duration::from_millis(99));
        assert_eq!(percentile(&ms[..1], 99), Duration::from_millis(1));
        assert_eq!(percentile(&[], 50), Duration::ZERO);
    }
}
