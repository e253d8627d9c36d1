//! The Prometheus source (`graymesh pilot --prometheus URL`): the same windows, computed by a
//! Prometheus server that scrapes the proxies, through its HTTP API (`/api/v1/query`).
//!
//! Counts are `increase()` over the window, which Prometheus extrapolates to the window's
//! edges, so they are rounded and may differ from the embedded source's by a few percent;
//! the p99 is `histogram_quantile(0.99, …)` over the summed bucket increases. Any answer that
//! is not a successful vector is an error naming the query and what came back.

use super::counters::SeriesKey;
use super::text::COUNTED_DIRECTION;
use super::{http_get, HttpClient, ResolveHost};
use graymesh_release::analysis::{MetricsSource, StatsFuture, VersionRef, VersionStats};
use std::time::Duration;

const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_ANSWER_BYTES: usize = 4 << 20;

pub struct PrometheusSource {
    base: String,
    client: HttpClient,
    resolve: ResolveHost,
}

impl PrometheusSource {
    /// `url` is the server's base URL (`http://127.0.0.1:9090`, with a path prefix if it has one).
    pub fn new(url: &str, resolve: ResolveHost) -> Result<Self, String> {
        let base = url.trim_end_matches('/').to_string();
        let uri: hyper::Uri = base
            .parse()
            .map_err(|e| format!("--prometheus {url:?}: not a URL: {e}"))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(format!(
                "--prometheus {url:?}: expected http://host:port (https is not supported)"
            ));
        }
        Ok(Self {
            base,
            client: super::http_client(),
            resolve,
        })
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    pub async fn stats(&self, key: &SeriesKey, window: Duration) -> Result<VersionStats, String> {
        let range = range(window)?;
        let q = Queries::new(key, &range);
        let requests = self.scalar(&q.count("")).await?;
        let server_errors = self.scalar(&q.count(r#",response_code=~"5..""#)).await?;
        let grpc_requests = self.scalar(&q.count(r#",grpc_status!="""#)).await?;
        let grpc_errors = self
            .scalar(&q.count(r#",grpc_status!="",grpc_status!="0""#))
            .await?;
        let p99 = self.scalar(&q.p99()).await?;
        Ok(VersionStats {
            requests: rounded(requests),
            server_errors: rounded(server_errors),
            grpc_requests: rounded(grpc_requests),
            grpc_errors: rounded(grpc_errors),
            p99: p99
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(Duration::from_secs_f64),
        })
    }

    /// The single value of an instant query; `None` for an empty vector (no such series).
    async fn scalar(&self, query: &str) -> Result<Option<f64>, String> {
        let url = format!("{}/api/v1/query?query={}", self.base, encode(query));
        let body = http_get(&self.client, &url, QUERY_TIMEOUT, MAX_ANSWER_BYTES)
            .await
            .map_err(|e| format!("Prometheus query {query:?}: {e}"))?;
        parse_answer(&body)
            .map_err(|e| format!("Prometheus at {}: query {query:?}: {e}", self.base))
    }
}

/// The PromQL of one window of one series.
struct Queries {
    selector: String,
    range: String,
}

impl Queries {
    fn new(key: &SeriesKey, range: &str) -> Self {
        let selector = format!(
            r#"direction="{}",destination_service="{}",destination_version="{}""#,
            COUNTED_DIRECTION,
            escape(&key.service),
            escape(&key.version)
        );
        Self {
            selector,
            range: range.to_string(),
        }
    }

    /// `extra` is more label matchers, starting with a comma.
    fn count(&self, extra: &str) -> String {
        format!(
            "sum(increase(graymesh_proxy_requests_total{{{}{extra}}}[{}]))",
            self.selector, self.range
        )
    }

    fn p99(&self) -> String {
        format!(
            "histogram_quantile(0.99, sum by (le) (increase(graymesh_proxy_request_duration_seconds_bucket{{{}}}[{}])))",
            self.selector, self.range
        )
    }
}

/// A PromQL range in milliseconds (PromQL takes `1500ms`).
fn range(window: Duration) -> Result<String, String> {
    let ms = window.as_millis();
    if ms == 0 {
        return Err("a window of 0 has no traffic to judge".into());
    }
    Ok(format!("{ms}ms"))
}

fn rounded(value: Option<f64>) -> u64 {
    value
        .filter(|v| v.is_finite() && *v > 0.0)
        .map_or(0, |v| v.round() as u64)
}

/// A label value inside PromQL double quotes.
fn escape(value: &str) -> String {
    value.replace('\\', r"\\").replace('"', "\\\"")
}

/// Percent-encoding for a query parameter: everything but RFC 3986's unreserved characters.
pub(super) fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `{"status":"success","data":{"resultType":"vector","result":[{"value":[t,"1.5"]}]}}` ⇒ 1.5;
/// an empty vector (no such series) or NaN (a quantile of nothing) ⇒ `None`.
pub(super) fn parse_answer(body: &[u8]) -> Result<Option<f64>, String> {
    let result = vector(body)?;
    match result.as_slice() {
        [] => Ok(None),
        [one] => {
            let text = one["value"][1]
                .as_str()
                .ok_or_else(|| format!("sample without a value: {one}"))?;
            match text {
                "NaN" => Ok(None),
                "+Inf" => Ok(Some(f64::INFINITY)),
                other => other
                    .parse::<f64>()
                    .map(Some)
                    .map_err(|_| format!("value {other:?} is not a number")),
            }
        }
        more => Err(format!("expected one sample, got {}", more.len())),
    }
}

/// The samples of a successful instant-vector answer.
fn vector(body: &[u8]) -> Result<Vec<serde_json::Value>, String> {
    let mut answer = api_answer(body)?;
    let data = &mut answer["data"];
    if data["resultType"] != "vector" {
        return Err(format!(
            "expected a vector, got resultType {}",
            data["resultType"]
        ));
    }
    match data["result"].take() {
        serde_json::Value::Array(samples) => Ok(samples),
        _ => Err("data.result is not a list".into()),
    }
}

/// Any API answer with `status: success`; otherwise Prometheus' own error.
fn api_answer(body: &[u8]) -> Result<serde_json::Value, String> {
    let answer: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        format!(
            "answer is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        )
    })?;
    if answer["status"] != "success" {
        return Err(format!(
            "status {}: {} {}",
            answer["status"], answer["errorType"], answer["error"]
        ));
    }
    Ok(answer)
}

// === what /debug/telemetryz shows of Prometheus ===

impl PrometheusSource {
    /// Every (service, version) with outbound requests in the last `window`.
    pub async fn series(&self, window: Duration) -> Result<Vec<SeriesKey>, String> {
        let query = format!(
            r#"count by (destination_service, destination_version) (increase(graymesh_proxy_requests_total{{direction="{COUNTED_DIRECTION}"}}[{}]))"#,
            range(window)?
        );
        let url = format!("{}/api/v1/query?query={}", self.base, encode(&query));
        let body = http_get(&self.client, &url, QUERY_TIMEOUT, MAX_ANSWER_BYTES).await?;
        let samples = vector(&body).map_err(|e| format!("{url}: {e}"))?;
        let mut keys: Vec<SeriesKey> = samples
            .iter()
            .map(|s| SeriesKey {
                service: s["metric"]["destination_service"]
                    .as_str()
                    .unwrap_or("")
                    .into(),
                version: s["metric"]["destination_version"]
                    .as_str()
                    .unwrap_or("")
                    .into(),
            })
            .collect();
        keys.sort();
        Ok(keys)
    }

    /// Prometheus' scrape targets: what it scraped, when, and its last error.
    pub async fn targets(&self) -> Result<serde_json::Value, String> {
        let url = format!("{}/api/v1/targets?state=active", self.base);
        let body = http_get(&self.client, &url, QUERY_TIMEOUT, MAX_ANSWER_BYTES).await?;
        let answer = api_answer(&body).map_err(|e| format!("{url}: {e}"))?;
        let targets = answer["data"]["activeTargets"]
            .as_array()
            .ok_or_else(|| format!("{url}: data.activeTargets is not a list"))?;
        Ok(targets
            .iter()
            .map(|t| {
                serde_json::json!({
                    "scrape_url": t["scrapeUrl"],
                    "job": t["labels"]["job"],
                    "health": t["health"],
                    "last_scrape": t["lastScrape"],
                    "last_scrape_duration_seconds": t["lastScrapeDuration"],
                    "last_error": t["lastError"],
                })
            })
            .collect())
    }
}

impl MetricsSource for PrometheusSource {
    fn window<'a>(&'a self, version: &'a VersionRef, window: Duration) -> StatsFuture<'a> {
        Box::pin(async move {
            let key = SeriesKey {
                service: (self.resolve)(version),
                version: version.version.clone(),
            };
            self.stats(&key, window).await
        })
    }
}
