//! Pilot's admin HTTP server (default 127.0.0.1:15014): health, readiness, Prometheus metrics,
//! debug views of the config and the xDS clients, the config API the CLI writes through, and the
//! registration API sidecars use.

use crate::telemetry::Telemetry;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use graymesh_release::analysis::VersionRef;
use graymesh_release::controller::Controller;
use graymesh_sources::{ConfigStore, Registration, Registry as InstanceRegistry, RegistryError};
use graymesh_xds::metrics::XdsMetrics;
use graymesh_xds::node::NodeKind;
use graymesh_xds::{json as xds_json, ProxyClass, SnapshotCache, SyncStatus};
use prometheus_client::registry::Registry;
use serde::Deserialize;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

mod config_api;
mod config_metrics;
mod rollout_api;

#[derive(Clone)]
pub struct AdminState {
    store: ConfigStore,
    registry: InstanceRegistry,
    cache: SnapshotCache,
    status: SyncStatus,
    metrics: Arc<Registry>,
    ready: Arc<AtomicBool>,
    controller: Controller,
    telemetry: Option<Telemetry>,
}

impl AdminState {
    pub fn new(
        store: ConfigStore,
        registry: InstanceRegistry,
        cache: SnapshotCache,
        status: SyncStatus,
        xds: &XdsMetrics,
        controller: Controller,
    ) -> Self {
        let mut metrics = Registry::default();
        xds.register(&mut metrics);
        config_metrics::register(&mut metrics, store.subscribe(), cache.clone());
        Self {
            store,
            registry,
            cache,
            status,
            metrics: Arc::new(metrics),
            ready: Arc::default(),
            controller,
            telemetry: None,
        }
    }

    /// The analysis telemetry source, for /debug/telemetryz.
    pub fn with_telemetry(mut self, telemetry: Telemetry) -> Self {
        self.telemetry = Some(telemetry);
        self
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }
}

pub async fn serve(listener: tokio::net::TcpListener, state: AdminState) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/debug/syncz", get(syncz))
        .route("/debug/configz", get(configz))
        .route("/debug/config_dump", get(config_dump))
        .route("/debug/registryz", get(registryz))
        .route("/debug/telemetryz", get(telemetryz))
        .route("/v1/config", post(config_api::apply))
        .route("/v1/config/{kind}", get(config_api::list))
        .route(
            "/v1/config/{kind}/{namespace}/{name}",
            get(config_api::get_one).delete(config_api::delete),
        )
        .route("/v1/rollouts", get(rollout_api::list))
        .route("/v1/rollouts/{namespace}/{name}", get(rollout_api::get_one))
        .route(
            "/v1/rollouts/{namespace}/{name}/{command}",
            post(rollout_api::command),
        )
        .route("/v1/registry/instances", post(register).get(list_instances))
        .route(
            "/v1/registry/instances/{id}",
            axum::routing::delete(deregister),
        )
        .route("/v1/registry/instances/{id}/heartbeat", put(heartbeat))
        .with_state(state);
    axum::serve(listener, app).await
}

async fn ready(State(s): State<AdminState>) -> Response {
    if !s.ready.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response();
    }
    if !s.store.writable() {
        let message = format!(
            "not ready for writes: {} is unreachable (xDS keeps serving the config it has)\n",
            s.store.source()
        );
        return (StatusCode::SERVICE_UNAVAILABLE, message).into_response();
    }
    "ready\n".into_response()
}

async fn metrics(State(s): State<AdminState>) -> Response {
    let mut body = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut body, &s.metrics) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode metrics: {e}\n"),
        )
            .into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// The xDS clients, and the config values and registrations the stores skipped (broken values in
/// etcd), so `proxy-status` users see why something they wrote is not served.
async fn syncz(State(s): State<AdminState>) -> Json<serde_json::Value> {
    let errors: Vec<String> = s
        .store
        .subscribe()
        .borrow()
        .errors
        .iter()
        .map(|e| e.to_string())
        .collect();
    Json(json!({
        "version": s.cache.current().version,
        "clients": s.status.clients(),
        "config_errors": errors,
        "registry_errors": s.registry.errors(),
        "release_controller": {"leading": s.controller.is_leading()},
    }))
}

/// The config being served and why the latest edit did not apply, if it did not.
async fn configz(State(s): State<AdminState>) -> Json<serde_json::Value> {
    let state = s.store.subscribe().borrow().clone();
    let objects: serde_json::Map<String, serde_json::Value> = state
        .config
        .counts()
        .iter()
        .map(|(k, n)| (k.to_string(), json!(n)))
        .collect();
    let applied_at = state
        .applied_at
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs());
    Json(json!({
        "source": s.store.source(),
        "writable": s.store.writable(),
        "version": state.version,
        "applied_at_unix": applied_at,
        "objects": objects,
        "errors": state.errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
        "error_details": state.errors,
    }))
}

#[derive(Debug, Deserialize)]
struct DumpQuery {
    node: Option<String>,
    /// Without a connected node: dump what a node of this kind would get.
    kind: Option<String>,
    namespace: Option<String>,
}

async fn config_dump(State(s): State<AdminState>, Query(q): Query<DumpQuery>) -> Response {
    let class = match (&q.node, q.kind.as_deref()) {
        (Some(node), _) => match s.status.class_of(node) {
            Some(c) => c,
            None => return error(StatusCode::NOT_FOUND, format!("node {node:?} is not connected; see /debug/syncz, or ask with ?kind=proxyless|sidecar&namespace=NS")),
        },
        (None, Some(kind)) => {
            let ns = q.namespace.as_deref().unwrap_or("default");
            match kind {
                "proxyless" | "grpc" => ProxyClass::proxyless(ns),
                "sidecar" => ProxyClass::sidecar(ns),
                other => return error(StatusCode::BAD_REQUEST, format!("kind {other:?}: expected proxyless or sidecar")),
            }
        }
        (None, None) => return error(StatusCode::BAD_REQUEST, "give ?node=ID (a connected node) or ?kind=proxyless|sidecar".into()),
    };
    let generation = s.cache.current();
    let mut dump = xds_json::translation(&generation.translation(&class));
    if let Some(obj) = dump.as_object_mut() {
        obj.insert("version".into(), json!(generation.version));
        obj.insert("node".into(), json!(q.node));
        obj.insert("class".into(), json!(class));
        obj.insert(
            "proxyless".into(),
            json!(class.kind == NodeKind::ProxylessGrpc),
        );
    }
    Json(dump).into_response()
}

async fn registryz(State(s): State<AdminState>) -> Json<serde_json::Value> {
    Json(json!(s.cache.current().registry.as_ref()))
}

#[derive(Debug, Deserialize)]
struct TelemetryQuery {
    /// With `version`: ask the source for this host's version (`reviews`, resolved in
    /// `namespace` like an Application's host), as the analysis step would.
    host: Option<String>,
    namespace: Option<String>,
    version: Option<String>,
    /// The window (`60s` by default, Istio duration syntax).
    window: Option<String>,
}

/// The telemetry the analysis reads. Without a query: per service and version the last
/// window (60 s) and every proxy's scrapes. With `?host=H&version=V[&namespace=NS][&window=D]`:
/// that version's window from the configured source (502 with the source's error).
async fn telemetryz(State(s): State<AdminState>, Query(q): Query<TelemetryQuery>) -> Response {
    let Some(telemetry) = &s.telemetry else {
        return error(
            StatusCode::NOT_FOUND,
            "this pilot has no telemetry source".into(),
        );
    };
    let window = match q
        .window
        .as_deref()
        .map(str::parse::<graymesh_model::Duration>)
    {
        None => Duration::from_secs(60),
        Some(Ok(d)) if !d.as_std().is_zero() => d.as_std(),
        Some(Ok(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "window: must be more than 0".into(),
            )
        }
        Some(Err(e)) => return error(StatusCode::BAD_REQUEST, format!("window: {e}")),
    };
    let (host, version) = match (q.host, q.version) {
        (None, None) => return Json(telemetry.overview(window).await).into_response(),
        (Some(host), Some(version)) => (host, version),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "give both ?host= and ?version= (or neither, for the overview)".into(),
            )
        }
    };
    let version = VersionRef {
        namespace: q
            .namespace
            .unwrap_or_else(|| graymesh_model::object::DEFAULT_NAMESPACE.into()),
        host,
        version,
    };
    let answer = telemetry.query(&version, window).await;
    let code = if answer["window"].get("error").is_some() {
        StatusCode::BAD_GATEWAY
    } else {
        StatusCode::OK
    };
    (code, Json(answer)).into_response()
}

async fn register(State(s): State<AdminState>, body: axum::body::Bytes) -> Response {
    let registration: Registration = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("registration body: {e}")),
    };
    match s.registry.register(registration).await {
        Ok(id) => (StatusCode::CREATED, Json(json!({ "id": id }))).into_response(),
        Err(e) => registry_error(e),
    }
}

async fn list_instances(State(s): State<AdminState>) -> Json<Vec<Registration>> {
    Json(s.registry.list())
}

async fn heartbeat(State(s): State<AdminState>, Path(id): Path<String>) -> Response {
    match s.registry.heartbeat(&id).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => error(
            StatusCode::NOT_FOUND,
            format!(
                "instance {id:?} is not registered (expired or never registered): register again"
            ),
        ),
        Err(e) => registry_error(e),
    }
}

async fn deregister(State(s): State<AdminState>, Path(id): Path<String>) -> Response {
    match s.registry.deregister(&id).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => error(
            StatusCode::NOT_FOUND,
            format!("instance {id:?} is not registered"),
        ),
        Err(e) => registry_error(e),
    }
}

fn registry_error(e: RegistryError) -> Response {
    let code = match e {
        RegistryError::Invalid(_) => StatusCode::BAD_REQUEST,
        RegistryError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(code, e.to_string())
}

fn error(code: StatusCode, message: String) -> Response {
    (code, Json(json!({ "error": message }))).into_response()
}
