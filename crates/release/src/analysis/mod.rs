//! What an `analysis` step compares: the traffic each version of the released service got over
//! one interval, and where those numbers come from.
//!
//! The controller asks a [`MetricsSource`] for the [`VersionStats`] of the old and the new
//! version over the step's interval and turns the pair into a [`Verdict`] with
//! [`judge`]. A source is either pilot's own aggregation of the proxies' counters (the
//! embedded default) or a Prometheus server; both answer the same question. Judging is pure.

mod judge;
#[cfg(test)]
mod tests;

pub use judge::{judge, Verdict};

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// One version of one service, as the proxies' metrics label it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VersionRef {
    /// The namespace of the Application (hosts written short resolve in it).
    pub namespace: String,
    /// The component's `host` as written (`reviews`, or a full name).
    pub host: String,
    /// The component's `version` (the instances' `version` label, the subset name).
    pub version: String,
}

/// What the mesh saw of one version over one interval (requests counted when they ended).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct VersionStats {
    /// HTTP and gRPC requests.
    pub requests: u64,
    /// Requests answered with a 5xx (by the app or by a proxy on its behalf).
    pub server_errors: u64,
    /// gRPC calls (requests with a grpc-status).
    pub grpc_requests: u64,
    /// gRPC calls whose grpc-status was not OK.
    pub grpc_errors: u64,
    /// 99th percentile of the request duration; `None` without requests.
    pub p99: Option<Duration>,
}

pub type StatsFuture<'a> = Pin<Box<dyn Future<Output = Result<VersionStats, String>> + Send + 'a>>;

/// Where an analysis step reads the mesh's telemetry from.
pub trait MetricsSource: Send + Sync {
    /// The stats of `version` over the last `window`. An error (source unreachable) makes the
    /// check a hold, never a pass or a fail.
    fn window<'a>(&'a self, version: &'a VersionRef, window: Duration) -> StatsFuture<'a>;
}
