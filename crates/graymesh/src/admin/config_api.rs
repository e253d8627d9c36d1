//! The config API the CLI's `apply`, `get` and `delete` use. It validates and writes through the
//! [`ConfigStore`] (directory or etcd), so the CLI works the same against both.
//!
//! - `POST /v1/config`: a JSON array of objects (or YAML/JSON text); every object of the resulting
//!   config is validated first, then all are written or none (one etcd transaction). An object's
//!   `metadata.resourceVersion`, when given, must be the current one (409 otherwise).
//! - `GET /v1/config/{kind}[?namespace=NS]`, `GET /v1/config/{kind}/{ns}/{name}`
//! - `DELETE /v1/config/{kind}/{ns}/{name}[?resourceVersion=N]`

use super::{error, AdminState};
use crate::kinds;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use graymesh_model::{parse_str, Object};
use graymesh_sources::{ObjectKey, WriteError};
use serde::Deserialize;
use serde_json::json;

/// The name parse errors give the request body (there is no file).
const BODY: &str = "request body";

pub async fn apply(State(s): State<AdminState>, body: axum::body::Bytes) -> Response {
    let Ok(text) = std::str::from_utf8(&body) else {
        return error(StatusCode::BAD_REQUEST, format!("{BODY}: not UTF-8"));
    };
    let objects = match parse_str(BODY, text) {
        Ok(objects) if objects.is_empty() => {
            return error(StatusCode::BAD_REQUEST, format!("{BODY}: no objects"))
        }
        Ok(objects) => objects,
        Err(errors) => return write_error(WriteError::Invalid(errors)),
    };
    match s.store.apply(objects).await {
        Ok(applied) => Json(applied).into_response(),
        Err(e) => write_error(e),
    }
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    namespace: Option<String>,
}

pub async fn list(
    State(s): State<AdminState>,
    Path(kind): Path<String>,
    Query(q): Query<ListQuery>,
) -> Response {
    let kind = match kinds::parse_config(&kind) {
        Ok(kind) => kind,
        Err(e) => return error(StatusCode::NOT_FOUND, e),
    };
    let items: Vec<serde_json::Value> = s
        .store
        .objects()
        .iter()
        .filter(|o| o.kind() == kind)
        .filter(|o| {
            q.namespace
                .as_ref()
                .is_none_or(|ns| *ns == o.meta.namespace)
        })
        .map(Object::to_json)
        .collect();
    // Values the store could not serve (broken by hand in etcd): a listing would hide them.
    let skipped: Vec<String> = s
        .store
        .subscribe()
        .borrow()
        .errors
        .iter()
        .map(|e| e.to_string())
        .collect();
    Json(json!({ "kind": kind.as_str(), "items": items, "skipped": skipped })).into_response()
}

pub async fn get_one(
    State(s): State<AdminState>,
    Path((kind, namespace, name)): Path<(String, String, String)>,
) -> Response {
    let key = match object_key(&kind, namespace, name) {
        Ok(key) => key,
        Err(response) => return *response,
    };
    match s.store.objects().iter().find(|o| ObjectKey::of(o) == key) {
        Some(object) => Json(object.to_json()).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("{key} does not exist")),
    }
}

#[derive(Debug, Deserialize)]
pub struct DeleteQuery {
    #[serde(rename = "resourceVersion")]
    resource_version: Option<String>,
}

pub async fn delete(
    State(s): State<AdminState>,
    Path((kind, namespace, name)): Path<(String, String, String)>,
    Query(q): Query<DeleteQuery>,
) -> Response {
    let key = match object_key(&kind, namespace, name) {
        Ok(key) => key,
        Err(response) => return *response,
    };
    match s.store.delete(&key, q.resource_version.as_deref()).await {
        Ok(()) => Json(json!({ "object": key.to_string(), "action": "deleted" })).into_response(),
        Err(e) => write_error(e),
    }
}

fn object_key(kind: &str, namespace: String, name: String) -> Result<ObjectKey, Box<Response>> {
    let kind = kinds::parse_config(kind).map_err(|e| Box::new(error(StatusCode::NOT_FOUND, e)))?;
    Ok(ObjectKey {
        kind,
        namespace,
        name,
    })
}

fn write_error(e: WriteError) -> Response {
    let code = match &e {
        WriteError::Invalid(_) => StatusCode::BAD_REQUEST,
        WriteError::Conflict(_) => StatusCode::CONFLICT,
        WriteError::NotFound(_) => StatusCode::NOT_FOUND,
        WriteError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        WriteError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        WriteError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let errors: Vec<String> = match &e {
        WriteError::Invalid(errors) => errors.iter().map(|e| e.to_string()).collect(),
        other => vec![other.to_string()],
    };
    (
        code,
        Json(json!({ "error": e.to_string(), "errors": errors })),
    )
        .into_response()
}
