//! The proxy's admin port (default 127.0.0.1:15000): Prometheus metrics, a config dump, readiness
//! and liveness. Served with hyper directly: it is small and must not share the data path's fate.

use crate::config::ConfigStore;
use crate::http::body::{full, Body};
use crate::http::ProxyCore;
use crate::listeners::Listeners;
use crate::xds::XdsStatus;
use http::{Request, Response, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::registry::Registry;
use serde_json::json;
use std::convert::Infallible;
use std::sync::Arc;

#[derive(Clone)]
pub struct Admin {
    pub core: Arc<ProxyCore>,
    pub store: Arc<ConfigStore>,
    pub listeners: Arc<Listeners>,
    pub xds: XdsStatus,
    pub registry: Arc<Registry>,
    /// Set once the control plane has delivered a complete config; stays set (a proxy that lost
    /// its control plane keeps serving its last config).
    pub ready: Arc<std::sync::atomic::AtomicBool>,
    /// Set when shutdown starts: readiness then fails at once, so whatever checks it stops
    /// sending new work while the proxy deregisters and drains.
    pub stopping: Arc<std::sync::atomic::AtomicBool>,
}

impl Admin {
    pub async fn serve(self, listener: tokio::net::TcpListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let admin = self.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(admin.route(req)) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }

    fn route(&self, req: Request<hyper::body::Incoming>) -> Response<Body> {
        match req.uri().path() {
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/ready" if self.stopping.load(std::sync::atomic::Ordering::SeqCst) => {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining: shutting down\n")
            }
            "/ready" => {
                if !self.ready.load(std::sync::atomic::Ordering::SeqCst) && self.store.complete() {
                    self.ready.store(true, std::sync::atomic::Ordering::SeqCst);
                }
                if self.ready.load(std::sync::atomic::Ordering::SeqCst) {
                    text(StatusCode::OK, "ready\n")
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, "not ready: waiting for listeners, routes, clusters and endpoints from the control plane\n")
                }
            }
            "/metrics" => {
                let mut body = String::new();
                match prometheus_client::encoding::text::encode(&mut body, &self.registry) {
                    Ok(()) => text(StatusCode::OK, &body),
                    Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
                }
            }
            "/config_dump" => text(StatusCode::OK, &self.config_dump().to_string()),
            _ => text(
                StatusCode::NOT_FOUND,
                "paths: /metrics /config_dump /ready /healthz\n",
            ),
        }
    }

    fn config_dump(&self) -> serde_json::Value {
        use std::sync::atomic::Ordering::Relaxed;
        let table = self.core.table.load_full();
        let latest = self.store.latest();
        let now = crate::upstream::outlier::now_ms();
        let clusters: serde_json::Map<String, serde_json::Value> = table
            .clusters
            .iter()
            .map(|(name, spec)| {
                let state = self.core.upstreams.cluster(name);
                let endpoints: Vec<_> = spec
                    .endpoints
                    .iter()
                    .map(|e| {
                        let st = state.as_ref().and_then(|s| s.endpoint(&e.addr).cloned());
                        json!({
                            "address": e.addr.to_string(),
                            "weight": e.weight,
                            "ejected": st.as_ref().is_some_and(|s| s.health.is_ejected(now)),
                            "times_ejected": st.as_ref().map(|s| s.health.times_ejected()).unwrap_or(0),
                            "active_requests": st.as_ref().map(|s| s.in_flight.load(Relaxed)).unwrap_or(0),
                        })
                    })
                    .collect();
                let counters = state.as_ref().map(|s| s.counters.clone()).unwrap_or_default();
                (name.clone(), json!({
                    "lb": format!("{:?}", spec.lb),
                    "endpoints": endpoints,
                    "active_requests": counters.requests_in_flight.load(Relaxed),
                    "active_retries": counters.retries_in_flight.load(Relaxed),
                    "active_tcp_connections": counters.tcp_connections.load(Relaxed),
                }))
            })
            .collect();
        let routes: serde_json::Map<String, serde_json::Value> = table
            .routes
            .iter()
            .map(|(name, rc)| {
                let vhosts: Vec<_> = rc.vhosts.iter().map(|v| json!({ "name": v.name, "routes": v.routes.iter().map(|r| r.name.clone()).collect::<Vec<_>>() })).collect();
                (name.clone(), json!(vhosts))
            })
            .collect();
        json!({
            "version": table.version,
            "xds": self.xds,
            "listeners": self.listeners.addresses().iter().map(|(n, a)| json!({ "name": n, "address": a.to_string() })).collect::<Vec<_>>(),
            "routes": routes,
            "clusters": clusters,
            "received": {
                "listeners": latest.listeners.keys().collect::<Vec<_>>(),
                "routes": latest.routes.keys().collect::<Vec<_>>(),
                "clusters": latest.clusters.keys().collect::<Vec<_>>(),
                "endpoints": latest.endpoints.keys().collect::<Vec<_>>(),
            },
        })
    }
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .body(full(body.to_string()))
        .unwrap_or_else(|_| Response::new(full("")))
}
