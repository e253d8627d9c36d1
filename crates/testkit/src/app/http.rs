//! Plain HTTP answers of the fake app: the echo JSON on any path, `/healthz`, `/status/<code>`,
//! `/delay/<ms>` and `/drip/<ms>` (the head and a first line at once, the last line `ms` later),
//! plus injected failures.
//!
//! The echo body is what proxy tests assert on (which instance answered, which headers arrived),
//! so its field names are a contract: never rename them.

use super::state::{final_status, AppState};
use super::{full_body, AppBody, X_VERSION};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::http::request::Parts;
use hyper::{Request, Response, StatusCode};
use serde::Serialize;
use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

/// The JSON body of every echo answer.
#[derive(Serialize)]
struct Echo<'a> {
    service: &'a str,
    version: &'a str,
    instance: &'a str,
    /// `:authority` for HTTP/2, the `Host` header for HTTP/1.
    authority: Option<&'a str>,
    path: &'a str,
    query: Option<&'a str>,
    method: &'a str,
    protocol: String,
    headers: BTreeMap<&'a str, String>,
    body_len: usize,
}

pub(crate) async fn respond(req: Request<Incoming>, state: &AppState) -> Response<AppBody> {
    let (parts, body) = req.into_parts();
    // Reading the whole body is also what makes hyper answer `Expect: 100-continue`.
    let body_len = match body.collect().await {
        Ok(collected) => collected.to_bytes().len(),
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("reading body: {e}"), state),
    };
    state.count_body(body_len);
    if parts.uri.path() == "/healthz" {
        return healthz(state);
    }
    state.delay().await;
    if state.inject_failure() {
        return injected_failure(state);
    }
    if let Some(ms) = parts.uri.path().strip_prefix("/drip/") {
        return match ms.parse() {
            Ok(ms) => drip(Duration::from_millis(ms), state),
            Err(_) => text(
                StatusCode::BAD_REQUEST,
                format!("/drip/{ms}: expected milliseconds"),
                state,
            ),
        };
    }
    match route(parts.uri.path()).await {
        Ok(status) => echo(&parts, body_len, status, state),
        Err(message) => text(StatusCode::BAD_REQUEST, message, state),
    }
}

/// A 200 whose body is `first\n` at once and `last\n` after `gap`: a slow response body.
fn drip(gap: Duration, state: &AppState) -> Response<AppBody> {
    let body = Drip {
        first: Some(hyper::body::Bytes::from_static(b"first\n")),
        wait: Box::pin(tokio::time::sleep(gap)),
        last: Some(hyper::body::Bytes::from_static(b"last\n")),
    };
    let mut response = Response::new(http_body_util::BodyExt::boxed(body));
    let version = HeaderValue::from_str(&state.identity.version);
    if let Ok(v) = version {
        response.headers_mut().insert(X_VERSION, v);
    }
    response
}

struct Drip {
    first: Option<hyper::body::Bytes>,
    wait: std::pin::Pin<Box<tokio::time::Sleep>>,
    last: Option<hyper::body::Bytes>,
}

impl hyper::body::Body for Drip {
    type Data = hyper::body::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<hyper::body::Bytes>, Self::Error>>> {
        use std::task::Poll;
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(hyper::body::Frame::data(first))));
        }
        if self.last.is_none() {
            return Poll::Ready(None);
        }
        match self.wait.as_mut().poll(cx) {
            Poll::Ready(()) => {
                Poll::Ready(self.last.take().map(|b| Ok(hyper::body::Frame::data(b))))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Health ignores latency and error rate (scripts wait on it) but not the failing switch.
fn healthz(state: &AppState) -> Response<AppBody> {
    if state.is_failing() {
        injected_failure(state)
    } else {
        text(StatusCode::OK, "ok".into(), state)
    }
}

/// The status a path asks for, after the delay it asks for.
async fn route(path: &str) -> Result<StatusCode, String> {
    if let Some(code) = path.strip_prefix("/status/") {
        return final_status(code);
    }
    if let Some(ms) = path.strip_prefix("/delay/") {
        let ms: u64 = ms
            .parse()
            .map_err(|_| format!("/delay/{ms}: expected milliseconds"))?;
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    Ok(StatusCode::OK)
}

fn echo(parts: &Parts, body_len: usize, status: StatusCode, state: &AppState) -> Response<AppBody> {
    let id = &state.identity;
    let echo = Echo {
        service: &id.service,
        version: &id.version,
        instance: &id.instance,
        authority: authority(parts),
        path: parts.uri.path(),
        query: parts.uri.query(),
        method: parts.method.as_str(),
        protocol: format!("{:?}", parts.version),
        headers: header_map(&parts.headers),
        body_len,
    };
    let json = serde_json::to_vec(&echo).unwrap_or_default();
    let mut response = reply(status, json, state);
    let json_type = HeaderValue::from_static("application/json");
    response.headers_mut().insert(CONTENT_TYPE, json_type);
    response
}

fn authority(parts: &Parts) -> Option<&str> {
    let host = parts.headers.get(hyper::header::HOST);
    let host = host.and_then(|h| h.to_str().ok());
    parts.uri.authority().map(|a| a.as_str()).or(host)
}

/// Header names arrive lowercased from hyper; repeated headers are joined as HTTP allows.
pub(crate) fn header_map(headers: &hyper::HeaderMap) -> BTreeMap<&str, String> {
    let mut map = BTreeMap::<&str, String>::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        map.entry(name.as_str())
            .and_modify(|joined| {
                joined.push_str(", ");
                joined.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    map
}

fn injected_failure(state: &AppState) -> Response<AppBody> {
    let id = &state.identity;
    let message = format!("injected failure from {} {}", id.instance, id.version);
    text(StatusCode::INTERNAL_SERVER_ERROR, message, state)
}

fn text(status: StatusCode, message: String, state: &AppState) -> Response<AppBody> {
    reply(status, message.into_bytes(), state)
}

fn reply(status: StatusCode, body: Vec<u8>, state: &AppState) -> Response<AppBody> {
    // 204 and 304 must not carry a body.
    let body = match status.as_u16() {
        204 | 304 => Vec::new(),
        _ => body,
    };
    let mut response = Response::new(full_body(body.into()));
    *response.status_mut() = status;
    let version = state.identity.version_header.clone();
    response.headers_mut().insert(X_VERSION, version);
    response
}
