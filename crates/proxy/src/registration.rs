//! A sidecar registers its local app in pilot's registry (the admin API's
//! `/v1/registry/instances`) once the app answers its health check, renews the registration
//! every third of its TTL while the app keeps answering it, registers again if pilot forgot it
//! (restart, expiry), deregisters an app that failed [`UNHEALTHY_AFTER`] checks in a row (and
//! registers it again once healthy), and deregisters when the proxy shuts down. Given several pilots (`registry_url` a comma-separated list), it
//! sticks to the one that answered last and moves on to the next when that one is unreachable or
//! answers 5xx; pilots sharing an etcd registry accept each other's ids.

use crate::http::body::{empty, full, Body};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// Consecutive failed health checks (one per renewal) after which a registered app is
/// deregistered, so callers stop being sent to an instance whose app is down.
pub const UNHEALTHY_AFTER: u32 = 3;

#[derive(Debug, Clone)]
pub struct RegistrationSpec {
    /// Pilot's admin base URL, e.g. `http://127.0.0.1:15014`, or several, comma-separated.
    pub registry_url: String,
    /// The JSON pilot's registration API takes (service, namespace, address, ports, labels...).
    pub instance: serde_json::Value,
    pub ttl: Duration,
    /// The local app: registered only once it accepts connections (and answers `health_path`
    /// with a 2xx, when given).
    pub app: SocketAddr,
    pub health_path: Option<String>,
}

pub struct Registrar {
    spec: RegistrationSpec,
    client: Client<HttpConnector, Body>,
    /// Which of the registry URLs answered last: calls start there.
    current: AtomicUsize,
}

impl Registrar {
    pub fn new(spec: RegistrationSpec) -> Self {
        Self {
            spec,
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
            current: AtomicUsize::new(0),
        }
    }

    /// Keep the instance registered until `shutdown` turns true, then deregister.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut id: Option<String> = None;
        let mut failed_checks = 0u32;
        loop {
            id = match id.take() {
                Some(current) => {
                    if self.app_healthy().await {
                        failed_checks = 0;
                    } else {
                        failed_checks += 1;
                    }
                    if failed_checks >= UNHEALTHY_AFTER {
                        tracing::warn!(app = %self.spec.app, checks = failed_checks, "the app failed its health checks: deregistering it until it is healthy again");
                        failed_checks = 0;
                        self.deregister(&current).await;
                        None
                    } else if self.heartbeat(&current).await {
                        Some(current)
                    } else {
                        self.register_when_healthy().await
                    }
                }
                None => self.register_when_healthy().await,
            };
            // Renew at a third of the TTL; until registered, try again soon.
            let wait = if id.is_some() {
                (self.spec.ttl / 3).max(Duration::from_millis(200))
            } else {
                Duration::from_millis(250)
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => break,
            }
        }
        if let Some(id) = id {
            self.deregister(&id).await;
        }
    }

    async fn deregister(&self, id: &str) {
        let path = format!("/v1/registry/instances/{id}");
        match self.call(Method::DELETE, &path, None).await {
            Ok((status, _)) if status.is_success() => {
                tracing::info!(%id, "deregistered from pilot")
            }
            Ok((status, body)) => tracing::warn!(%id, %status, %body, "deregistration refused"),
            Err(e) => tracing::warn!(%id, error = %e, "deregistration failed"),
        }
    }

    async fn register_when_healthy(&self) -> Option<String> {
        if !self.app_healthy().await {
            tracing::debug!(app = %self.spec.app, "app not healthy yet; not registering");
            return None;
        }
        let body = self.spec.instance.to_string();
        match self
            .call(Method::POST, "/v1/registry/instances", Some(body))
            .await
        {
            Ok((StatusCode::CREATED, answer)) => {
                let id = serde_json::from_str::<serde_json::Value>(&answer)
                    .ok()?
                    .get("id")?
                    .as_str()?
                    .to_string();
                tracing::info!(%id, "registered with pilot");
                Some(id)
            }
            Ok((status, answer)) => {
                tracing::error!(%status, %answer, "pilot refused the registration");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach pilot's registry");
                None
            }
        }
    }

    async fn heartbeat(&self, id: &str) -> bool {
        matches!(self.call(Method::PUT, &format!("/v1/registry/instances/{id}/heartbeat"), None).await, Ok((s, _)) if s.is_success())
    }

    async fn app_healthy(&self) -> bool {
        let connect = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect(self.spec.app),
        )
        .await;
        if !matches!(connect, Ok(Ok(_))) {
            return false;
        }
        let Some(path) = &self.spec.health_path else {
            return true;
        };
        let uri = format!("http://{}{path}", self.spec.app);
        let Ok(req) = Request::get(uri).body(empty()) else {
            return false;
        };
        matches!(tokio::time::timeout(Duration::from_secs(2), self.client.request(req)).await, Ok(Ok(r)) if r.status().is_success())
    }

    /// Call the registry, starting with the pilot that answered last and trying the others in
    /// turn while one is unreachable or answers 5xx. The last outcome is returned if none do.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<(StatusCode, String), String> {
        let urls = registry_urls(&self.spec.registry_url);
        let start = self.current.load(Ordering::Relaxed);
        let mut outcome = Err("no registry URL given".to_string());
        for at in failover_order(start, urls.len()) {
            outcome = self
                .call_one(urls[at], method.clone(), path, body.clone())
                .await
                .map_err(|e| format!("{}: {e}", urls[at]));
            if matches!(&outcome, Ok((status, _)) if !status.is_server_error()) {
                self.current.store(at, Ordering::Relaxed);
                return outcome;
            }
        }
        outcome
    }

    async fn call_one(
        &self,
        base: &str,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<(StatusCode, String), String> {
        let uri = format!("{}{path}", base.trim_end_matches('/'));
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body.map(full).unwrap_or_else(empty))
            .map_err(|e| e.to_string())?;
        let response = tokio::time::timeout(Duration::from_secs(5), self.client.request(req))
            .await
            .map_err(|_| "no answer within 5 s".to_string())?
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
    }
}

fn registry_urls(list: &str) -> Vec<&str> {
    list.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect()
}

/// Indexes of `count` URLs, beginning at `start` and wrapping around.
fn failover_order(start: usize, count: usize) -> impl Iterator<Item = usize> {
    (0..count).map(move |i| (start + i) % count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_registries_are_tried_from_the_last_good_one() {
        let urls = registry_urls("http://a:15014, http://b:15114,");
        assert_eq!(urls, ["http://a:15014", "http://b:15114"]);
        assert_eq!(failover_order(1, 3).collect::<Vec<_>>(), [1, 2, 0]);
        assert_eq!(failover_order(0, 0).count(), 0);
    }
}
