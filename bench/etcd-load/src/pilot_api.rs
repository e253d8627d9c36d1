//! Pilot's registration API as sidecars use it: register (POST), heartbeat (PUT), and a
//! heartbeater that renews every instance once per period, spread evenly over the period.

use anyhow::{bail, Context as _};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct PilotApi {
    base: String,
    http: Client<HttpConnector, Full<Bytes>>,
}

/// Instance `n` of the benchmark: service `svc-<n % services>`, its own loopback address.
pub fn registration(n: usize, services: usize, target_port: u16, ttl: u64) -> String {
    let address = format!("127.{}.{}.{}", 1 + n / 62_500, (n / 250) % 250, n % 250 + 1);
    serde_json::json!({
        "id": format!("i-{n}"),
        "service": format!("svc-{}", n % services),
        "address": address,
        "ports": [{"port": 9080, "target_port": target_port}],
        "labels": {"version": "v1"},
        "ttl_seconds": ttl,
    })
    .to_string()
}

impl PilotApi {
    pub fn new(http_addr: &str) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let http = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(256)
            .build(connector);
        Self {
            base: format!("http://{http_addr}"),
            http,
        }
    }

    /// One request; returns the status and body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: String,
    ) -> anyhow::Result<(u16, Bytes)> {
        let request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let call = async {
            let response = self.http.request(request).await?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, body))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, call)
            .await
            .with_context(|| format!("{path}: no answer within {REQUEST_TIMEOUT:?}"))?
    }

    pub async fn ready(&self) -> bool {
        matches!(
            self.call(Method::GET, "/ready", String::new()).await,
            Ok((200, _))
        )
    }

    /// Register; returns the id to heartbeat with (the lease id).
    pub async fn register(&self, body: String) -> anyhow::Result<String> {
        let (status, reply) = self
            .call(Method::POST, "/v1/registry/instances", body)
            .await?;
        if status != 201 {
            bail!(
                "register: HTTP {status}: {}",
                String::from_utf8_lossy(&reply)
            );
        }
        let reply: serde_json::Value = serde_json::from_slice(&reply)?;
        reply["id"]
            .as_str()
            .map(str::to_string)
            .context("register: no id in the answer")
    }

    pub async fn heartbeat(&self, id: &str) -> anyhow::Result<u16> {
        let path = format!("/v1/registry/instances/{id}/heartbeat");
        Ok(self.call(Method::PUT, &path, String::new()).await?.0)
    }
}

/// Heartbeat outcomes, counted.
#[derive(Debug, Default)]
pub struct Beats {
    pub ok: AtomicU64,
    pub not_found: AtomicU64,
    pub unavailable: AtomicU64,
    pub failed: AtomicU64,
    /// The last failure other than 404/503, for the report.
    pub last_error: Mutex<String>,
    /// Every failure other than 404/503 and the 503s, counted by kind (the message with its
    /// numbers taken out), so a run that fails says how.
    pub errors: Mutex<std::collections::BTreeMap<String, u64>>,
}

impl Beats {
    pub fn snapshot(&self) -> serde_json::Value {
        serde_json::json!({
            "ok": self.ok.load(Ordering::Relaxed),
            "not_found": self.not_found.load(Ordering::Relaxed),
            "unavailable": self.unavailable.load(Ordering::Relaxed),
            "failed": self.failed.load(Ordering::Relaxed),
            "last_error": self.last_error.lock().map(|e| e.clone()).unwrap_or_default(),
            "errors": self.errors.lock().map(|e| e.clone()).unwrap_or_default(),
        })
    }

    fn count_error(&self, why: &str) {
        // Ids, ports and durations differ from call to call; the kind is what is left.
        let kind: String = why
            .chars()
            .map(|c| if c.is_ascii_digit() { '#' } else { c })
            .take(160)
            .collect();
        if let Ok(mut errors) = self.errors.lock() {
            *errors.entry(kind).or_default() += 1;
        }
    }
}

/// Heartbeat every id of `ids` once per `period`, spread evenly, at most `concurrency` in flight,
/// until the task is dropped. Ids can be replaced while it runs (a re-registration).
pub async fn heartbeat_forever(
    api: PilotApi,
    ids: Arc<Mutex<Vec<String>>>,
    period: Duration,
    concurrency: usize,
    beats: Arc<Beats>,
) {
    let limit = Arc::new(Semaphore::new(concurrency));
    let tick = Duration::from_millis(10);
    let mut ticks = tokio::time::interval(tick);
    let mut next = 0usize;
    let mut credit = 0.0f64;
    loop {
        ticks.tick().await;
        let count = ids.lock().map(|v| v.len()).unwrap_or(0);
        if count == 0 {
            continue;
        }
        credit += count as f64 * tick.as_secs_f64() / period.as_secs_f64();
        while credit >= 1.0 {
            credit -= 1.0;
            let id = ids.lock().ok().and_then(|v| v.get(next % count).cloned());
            next = next.wrapping_add(1);
            let (Some(id), Ok(permit)) = (id, limit.clone().acquire_owned().await) else {
                continue;
            };
            let (api, beats) = (api.clone(), beats.clone());
            tokio::spawn(async move {
                let counter = match api.heartbeat(&id).await {
                    Ok(204) => &beats.ok,
                    Ok(404) => &beats.not_found,
                    Ok(503) => {
                        beats.count_error("HTTP 503 (registry unavailable)");
                        &beats.unavailable
                    }
                    other => {
                        let why = match other {
                            Ok(status) => format!("HTTP {status}"),
                            Err(e) => format!("{e:#}"),
                        };
                        beats.count_error(&why);
                        if let Ok(mut last) = beats.last_error.lock() {
                            *last = why;
                        }
                        &beats.failed
                    }
                };
                counter.fetch_add(1, Ordering::Relaxed);
                drop(permit);
            });
        }
    }
}
