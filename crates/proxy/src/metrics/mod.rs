//! The proxy's Prometheus metrics. A request is counted when its response ends (or is dropped),
//! so the duration covers the whole response and gRPC statuses sent in trailers are seen.
//! Requests carry their source (`source`) and destination service and version; upstream
//! connections and outlier ejections are counted in `upstream`.

use crate::http::body::{Body, BoxError};
use crate::http::Direction;
use bytes::Bytes;
use http::Response;
use http_body_util::BodyExt;
use hyper::body::{Frame, SizeHint};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::time::Instant;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestKey {
    pub direction: &'static str,
    /// The calling service and version; empty when unknown (see `source`).
    pub source_service: String,
    pub source_version: String,
    pub destination_service: String,
    pub destination_version: String,
    pub response_code: u16,
    pub grpc_status: String,
    /// Why the proxy answered itself (`NR` no route, `UH` no healthy upstream, `UO` overflow,
    /// `UF` connect failure, `UT` timeout, `FI` fault), empty when the upstream answered.
    pub flags: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TcpKey {
    pub destination_service: String,
    pub destination_version: String,
    /// `closed`, `reset`, `connect_failure` or `no_cluster`.
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DurationKey {
    pub direction: &'static str,
    pub source_service: String,
    pub source_version: String,
    pub destination_service: String,
    pub destination_version: String,
}

#[derive(Debug, Clone)]
pub struct ProxyMetrics {
    pub requests: Family<RequestKey, Counter>,
    pub duration: Family<DurationKey, Histogram>,
    pub retries: Counter,
    pub mirrored: Counter,
    pub connections: Gauge,
    pub config_version: Gauge,
    /// When this process started (Unix seconds, millisecond precision): a scraper that sees it
    /// change knows the counters restarted from zero, even if they have already passed their
    /// old values.
    pub start_time: Gauge<f64, AtomicU64>,
    pub tcp_connections: Family<TcpKey, Counter>,
    pub upstream: UpstreamMetrics,
    /// Print one JSON line per request to stdout (off by default).
    pub access_log: bool,
    /// Which metrics these are, for the per-thread handle cache (clones share it: they share the
    /// families).
    instance: u64,
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0001, 2.0, 18))
            }),
            retries: Counter::default(),
            mirrored: Counter::default(),
            connections: Gauge::default(),
            config_version: Gauge::default(),
            start_time: start_time(),
            tcp_connections: Family::default(),
            upstream: UpstreamMetrics::default(),
            access_log: false,
            instance: handles::next_instance(),
        }
    }
}

fn start_time() -> Gauge<f64, AtomicU64> {
    let gauge = Gauge::default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_millis() as f64 / 1000.0);
    gauge.set(now);
    gauge
}

impl ProxyMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "graymesh_proxy_requests",
            "Requests by source and destination service and version, status and gRPC status \
             (source labels are empty when the caller is unknown: a proxy without --service, \
             or an inbound request without x-graymesh-source)",
            self.requests.clone(),
        );
        registry.register(
            "graymesh_proxy_request_duration_seconds",
            "Request duration until the response ended, by source and destination",
            self.duration.clone(),
        );
        registry.register(
            "graymesh_proxy_retries",
            "Retried attempts",
            self.retries.clone(),
        );
        registry.register(
            "graymesh_proxy_mirrored_requests",
            "Requests copied to a mirror cluster",
            self.mirrored.clone(),
        );
        registry.register(
            "graymesh_proxy_downstream_connections",
            "Open downstream connections",
            self.connections.clone(),
        );
        registry.register(
            "graymesh_proxy_tcp_connections",
            "Proxied TCP connections by destination and how they ended",
            self.tcp_connections.clone(),
        );
        registry.register(
            "graymesh_proxy_start_time_seconds",
            "When this proxy process started, in Unix seconds",
            self.start_time.clone(),
        );
        registry.register(
            "graymesh_proxy_config_version",
            "Version of the routing table in use",
            self.config_version.clone(),
        );
        self.upstream.register(registry);
    }

    pub fn tcp_connection(&self, labels: &RequestLabels, result: &'static str) {
        let key = TcpKey {
            destination_service: labels.destination_parts().0.to_string(),
            destination_version: labels.destination_parts().1.to_string(),
            result,
        };
        self.tcp_connections.get_or_create(&key).inc();
    }

    /// Wrap `response` so the request is counted when its body ends.
    pub fn observe(
        self: &Arc<Self>,
        mut labels: RequestLabels,
        start: Instant,
        response: Response<Body>,
        grpc: bool,
    ) -> Response<Body> {
        labels.code = response.status().as_u16();
        labels.flags = response
            .headers()
            .get(crate::http::body::names::LOCAL_REPLY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if grpc {
            labels.grpc_status = response
                .headers()
                .get(crate::http::body::names::GRPC_STATUS)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
        }
        let (parts, body) = response.into_parts();
        let observed = ObservedBody {
            inner: body,
            record: Some(Record { labels, start }),
            metrics: self.clone(),
        };
        Response::from_parts(parts, observed.boxed_unsync())
    }
}

impl ProxyMetrics {
    /// Counts a request whose response has ended (the HTTP/1 fast path's way to report).
    pub fn count(&self, mut labels: RequestLabels, code: u16, flags: &str, start: Instant) {
        labels.code = code;
        labels.flags.clear();
        labels.flags.push_str(flags);
        Record { labels, start }.finish(self, None);
    }
}

impl AccessEntry {
    /// What the access log needs of a request, read when it arrives.
    pub fn new(
        req: &impl crate::http::select::RequestView,
        protocol: &'static str,
        peer: std::net::SocketAddr,
    ) -> Self {
        Self {
            start_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0),
            method: req.method().to_string(),
            authority: req.authority().to_string(),
            path: req.path_and_query().to_string(),
            protocol,
            peer: peer.to_string(),
        }
    }
}

/// What the access log says of a request besides its labels.
#[derive(Debug, Clone)]
pub struct AccessEntry {
    pub start_unix_ms: u128,
    pub method: String,
    pub authority: String,
    pub path: String,
    pub protocol: &'static str,
    pub peer: String,
}

/// What a request will be counted as.
#[derive(Debug, Clone)]
pub struct RequestLabels {
    /// Filled only when the access log is on.
    pub access: Option<Box<AccessEntry>>,
    direction: Direction,
    source: Option<Arc<Source>>,
    destination: Option<Arc<Destination>>,
    code: u16,
    grpc_status: Option<String>,
    flags: String,
}

impl RequestLabels {
    pub fn new(direction: Direction) -> Self {
        Self {
            access: None,
            direction,
            source: None,
            destination: None,
            code: 0,
            grpc_status: None,
            flags: String::new(),
        }
    }

    /// Who sent the request; `None` leaves the source labels empty.
    pub fn set_source(&mut self, source: Option<Arc<Source>>) {
        self.source = source;
    }

    fn source_parts(&self) -> (&str, &str) {
        self.source
            .as_deref()
            .map_or(("", ""), |s| (&s.service, &s.version))
    }

    /// Where the request went: the chosen cluster's [`Destination`] (outbound), or this proxy's
    /// own service (inbound). A reference count, not a copy.
    pub fn set_destination(&mut self, destination: &Arc<Destination>) {
        self.destination = Some(destination.clone());
    }

    pub(crate) fn destination_parts(&self) -> (&str, &str) {
        self.destination
            .as_deref()
            .map_or(("", ""), |d| (&d.service, &d.version))
    }
}

/// A service and version: the labels of one side of a request. As [`Destination`]: the labels
/// of requests to one cluster (or to this proxy's own service, for inbound traffic), made once
/// when the table is compiled or the listener is set up and shared by every request that goes
/// there, so no string is split or copied per request. As [`source::Source`]: the caller's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub service: String,
    pub version: String,
}

/// The called side of a request.
pub type Destination = Workload;

impl Workload {
    pub fn new(service: &str, version: &str) -> Arc<Self> {
        Arc::new(Self {
            service: service.to_string(),
            version: version.to_string(),
        })
    }

    /// A cluster's destination: its service and version, as [`split_cluster`] reads its name.
    pub fn of_cluster(cluster: &str) -> Arc<Self> {
        let (service, version) = split_cluster(cluster);
        Self::new(service, version)
    }
}

/// `outbound|9080|v2|reviews.default.svc.cluster.local` ⇒ service and version (the subset); a
/// name not in that form is all service.
pub fn split_cluster(cluster: &str) -> (&str, &str) {
    let mut parts = cluster.splitn(4, '|');
    let (_, _, subset, host) = (parts.next(), parts.next(), parts.next(), parts.next());
    match host {
        Some(h) if !h.is_empty() => (h, subset.unwrap_or("")),
        _ => (cluster, ""),
    }
}

struct Record {
    labels: RequestLabels,
    start: Instant,
}

impl Record {
    fn finish(self, metrics: &ProxyMetrics, trailer_status: Option<String>) {
        let l = self.labels;
        let grpc_status = trailer_status
            .or_else(|| l.grpc_status.clone())
            .unwrap_or_default();
        if let Some(entry) = &l.access {
            access_line(entry, &l, &grpc_status, self.start.elapsed());
        }
        let took = self.start.elapsed().as_secs_f64();
        handles::with(metrics, &l, &grpc_status, |counter, histogram| {
            counter.inc();
            histogram.observe(took);
        });
    }
}

/// One JSON line per request on stdout, written whole so lines never interleave.
fn access_line(e: &AccessEntry, l: &RequestLabels, grpc_status: &str, took: std::time::Duration) {
    use std::io::Write;
    let (source_service, source_version) = l.source_parts();
    let line = serde_json::json!({
        "start_time_unix_ms": e.start_unix_ms,
        "direction": l.direction.as_str(),
        "method": e.method,
        "authority": e.authority,
        "path": e.path,
        "protocol": e.protocol,
        "response_code": l.code,
        "grpc_status": grpc_status,
        "flags": l.flags,
        "duration_ms": took.as_secs_f64() * 1000.0,
        "source_service": source_service,
        "source_version": source_version,
        "destination_service": l.destination_parts().0,
        "destination_version": l.destination_parts().1,
        "downstream_peer": e.peer,
    });
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// A response body that records its request when it ends or is dropped.
struct ObservedBody {
    inner: Body,
    record: Option<Record>,
    metrics: Arc<ProxyMetrics>,
}

impl hyper::body::Body for ObservedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let status = trailers
                        .get(crate::http::body::names::GRPC_STATUS)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    if let Some(r) = self.record.take() {
                        r.finish(&self.metrics, status);
                    }
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => {
                if let Some(r) = self.record.take() {
                    r.finish(&self.metrics, None);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        if let Some(r) = self.record.take() {
            r.finish(&self.metrics, None);
        }
    }
}

mod handles;
pub mod source;
#[cfg(test)]
mod tests;
pub mod upstream;

pub use source::Source;
pub use upstream::UpstreamMetrics;
