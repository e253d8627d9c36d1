//! The telemetry an `analysis` step reads: per (service, version), what the mesh's proxies
//! counted over a window (requests, 5xx, gRPC calls and errors, p99), behind
//! [`graymesh_release::analysis::MetricsSource`].
//!
//! Two sources answer the same question: [`EmbeddedSource`] (the default: pilot scrapes the
//! connected proxies itself, `embedded.rs`) and [`PrometheusSource`] (`--prometheus URL`).
//! Both count the `outbound` side only, so each request is counted once, by its caller's proxy
//! (ARCHITECTURE.md, "Telemetry for analysis"). This module only reads: it never changes a
//! proxy or the config.

mod counters;
mod embedded;
mod prometheus;
#[cfg(test)]
mod tests;
mod text;

pub use embedded::{EmbeddedSource, EmbeddedTelemetry};
pub use prometheus::PrometheusSource;

use counters::SeriesKey;
use graymesh_release::analysis::{MetricsSource, VersionRef, VersionStats};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// The label value the proxies write for a version's host: a host as written in an
/// Application (`reviews` in `default`) resolved the way the config resolves it
/// (`reviews.default.svc.cluster.local`), from the config being served.
pub type ResolveHost = Arc<dyn Fn(&VersionRef) -> String + Send + Sync>;

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(connector)
}

/// GET `url`, the whole exchange bounded by `timeout` and the body by `limit` bytes; a non-2xx
/// status is an error carrying the start of the body (where Prometheus says what was wrong).
async fn http_get(
    client: &HttpClient,
    url: &str,
    timeout: Duration,
    limit: usize,
) -> Result<Bytes, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{url}: bad URL: {e}"))?;
    let exchange = async {
        let response = client
            .get(uri)
            .await
            .map_err(|e| format!("{url}: {}", error_chain(&e)))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), limit)
            .collect()
            .await
            .map_err(|e| format!("{url}: reading the answer: {e}"))?
            .to_bytes();
        if !status.is_success() {
            let start = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
            return Err(format!("{url}: HTTP {status}: {}", start.trim()));
        }
        Ok(body)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("{url}: no answer within {timeout:?}"))?
}

/// hyper's errors say little at the top ("client error (Connect)"); the causes say why.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

// === Telemetry: what pilot's admin shows ===

/// The source pilot built, and what /debug/telemetryz can say about it.
#[derive(Clone)]
pub struct Telemetry {
    pub source: Arc<dyn MetricsSource>,
    /// The scraper's state, when the source is the embedded one.
    pub embedded: Option<EmbeddedTelemetry>,
    /// The same source, when it is Prometheus.
    pub prometheus: Option<Arc<PrometheusSource>>,
    pub resolve: ResolveHost,
}

impl Telemetry {
    pub fn source_name(&self) -> &'static str {
        if self.prometheus.is_some() {
            "prometheus"
        } else {
            "embedded"
        }
    }

    /// /debug/telemetryz without a query: every (service, version) with traffic in the last
    /// `window`, with that window, and who scraped which proxy when: pilot's own scrapes, or
    /// Prometheus' targets.
    pub async fn overview(&self, window: Duration) -> serde_json::Value {
        let mut answer = json!({
            "source": self.source_name(),
            "window_seconds": window.as_secs_f64(),
        });
        if let Some(embedded) = &self.embedded {
            let now = tokio::time::Instant::now();
            let versions: Vec<serde_json::Value> = embedded
                .series()
                .into_iter()
                .map(|key| version_json(&key, &embedded.window_at(&key, window, now)))
                .collect();
            answer["scrape_period_ms"] = json!(embedded.period().as_millis() as u64);
            answer["versions"] = json!(versions);
            answer["proxies"] = json!(embedded.proxies());
        }
        if let Some(prometheus) = &self.prometheus {
            answer["prometheus_url"] = json!(prometheus.url());
            answer["versions"] = match prometheus.series(window).await {
                Ok(keys) => {
                    let mut versions = Vec::new();
                    for key in keys {
                        let stats = prometheus.stats(&key, window).await;
                        versions.push(version_json(&key, &stats));
                    }
                    json!(versions)
                }
                Err(e) => json!({ "error": e }),
            };
            answer["prometheus_targets"] = match prometheus.targets().await {
                Ok(targets) => targets,
                Err(e) => json!({ "error": e }),
            };
        }
        answer
    }

    /// One version's window from the source pilot uses (what the controller would get).
    pub async fn query(&self, version: &VersionRef, window: Duration) -> serde_json::Value {
        let stats = self.source.window(version, window).await;
        json!({
            "source": self.source_name(),
            "host": version.host,
            "namespace": version.namespace,
            "service": (self.resolve)(version),
            "version": version.version,
            "window_seconds": window.as_secs_f64(),
            "window": result_json(&stats),
        })
    }
}

fn version_json(key: &SeriesKey, stats: &Result<VersionStats, String>) -> serde_json::Value {
    json!({
        "service": key.service,
        "version": key.version,
        "window": result_json(stats),
    })
}

fn result_json(stats: &Result<VersionStats, String>) -> serde_json::Value {
    match stats {
        Ok(s) => stats_json(s),
        Err(e) => json!({ "error": e }),
    }
}

/// The stats with the rates the thresholds use, percentages as numbers.
pub fn stats_json(s: &VersionStats) -> serde_json::Value {
    let percent = |part: u64, whole: u64| (whole > 0).then(|| part as f64 * 100.0 / whole as f64);
    json!({
        "requests": s.requests,
        "server_errors": s.server_errors,
        "grpc_requests": s.grpc_requests,
        "grpc_errors": s.grpc_errors,
        "success_rate_percent": percent(s.requests.saturating_sub(s.server_errors), s.requests),
        "grpc_error_rate_percent": percent(s.grpc_errors, s.grpc_requests),
        "p99_ms": s.p99.map(|d| d.as_secs_f64() * 1000.0),
    })
}
