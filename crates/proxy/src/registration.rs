//! A sidecar registers its local app in pilot's registry (the admin API's
//! `/v1/registry/instances`) once the app answers its health check, renews the registration
//! every third of its TTL, registers again if pilot forgot it (restart, expiry), and deregisters
//! when the proxy shuts down.

use crate::http::body::{empty, full, Body};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct RegistrationSpec {
    /// Pilot's admin base URL, e.g. `http://127.0.0.1:15014`.
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
}

impl Registrar {
    pub fn new(spec: RegistrationSpec) -> Self {
        Self {
            spec,
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
        }
    }

    /// Keep the instance registered until `shutdown` turns true, then deregister.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut id: Option<String> = None;
        loop {
            id = match id.take() {
                Some(current) if self.heartbeat(&current).await => Some(current),
                _ => self.register_when_healthy().await,
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
            match self
                .call(
                    Method::DELETE,
                    &format!("/v1/registry/instances/{id}"),
                    None,
                )
                .await
            {
                Ok((status, _)) if status.is_success() => {
                    tracing::info!(%id, "deregistered from pilot")
                }
                Ok((status, body)) => tracing::warn!(%id, %status, %body, "deregistration refused"),
                Err(e) => tracing::warn!(%id, error = %e, "deregistration failed"),
            }
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

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<(StatusCode, String), String> {
        let uri = format!("{}{path}", self.spec.registry_url.trim_end_matches('/'));
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
