//! gRPC answers of the fake app: `Version` answers the version string, `Metadata` the request
//! metadata as JSON, `Fail` and injected failures answer trailers-only `UNAVAILABLE`, anything
//! else `UNIMPLEMENTED`.
//!
//! Request messages are read and ignored; the testkit never decodes protobuf.

use super::http::header_map;
use super::state::AppState;
use super::{full_body, AppBody, X_VERSION};
use crate::grpc::{
    code, encode_message, CONTENT_TYPE, FAIL_METHOD, METADATA_METHOD, VERSION_METHOD,
};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{HeaderMap, Request, Response};

pub(crate) async fn respond(req: Request<Incoming>, state: &AppState) -> Response<AppBody> {
    let (parts, body) = req.into_parts();
    if let Err(e) = body.collect().await {
        return trailers_only(code::INTERNAL, &format!("reading request: {e}"), state);
    }
    state.delay().await;
    if state.inject_failure() {
        let message = format!("injected failure from {}", state.identity.instance);
        return trailers_only(code::UNAVAILABLE, &message, state);
    }
    match parts.uri.path() {
        VERSION_METHOD => message(state.identity.version.as_bytes(), state),
        METADATA_METHOD => {
            let metadata = serde_json::to_vec(&header_map(&parts.headers)).unwrap_or_default();
            message(&metadata, state)
        }
        FAIL_METHOD => trailers_only(code::UNAVAILABLE, "Fail always fails", state),
        other => trailers_only(
            code::UNIMPLEMENTED,
            &format!("unknown method {other}"),
            state,
        ),
    }
}

/// One message, then `grpc-status: 0` in the trailers.
fn message(payload: &[u8], state: &AppState) -> Response<AppBody> {
    let frame = encode_message(payload);
    let trailers = status_headers(code::OK, "");
    let body = http_body_util::Full::new(frame)
        .with_trailers(std::future::ready(Some(Ok(trailers))))
        .boxed();
    with_grpc_headers(Response::new(body), state)
}

/// The status in the response headers and an empty body, as servers answer early failures.
fn trailers_only(status: u32, message: &str, state: &AppState) -> Response<AppBody> {
    let mut response = with_grpc_headers(Response::new(full_body(Default::default())), state);
    response
        .headers_mut()
        .extend(status_headers(status, message));
    response
}

fn with_grpc_headers(mut response: Response<AppBody>, state: &AppState) -> Response<AppBody> {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    headers.insert(X_VERSION, state.identity.version_header.clone());
    response
}

fn status_headers(status: u32, message: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("grpc-status", HeaderValue::from(status));
    if let Ok(value) = HeaderValue::from_str(&percent_encode(message)) {
        if !message.is_empty() {
            headers.insert("grpc-message", value);
        }
    }
    headers
}

/// gRPC's percent-encoding of `grpc-message`: printable ASCII except `%` passes as is.
fn percent_encode(message: &str) -> String {
    message
        .bytes()
        .map(|b| match b {
            b' '..=b'~' if b != b'%' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
