//! Mirroring: a copy of a request to each mirror cluster, for its share of requests, fire and
//! forget (never delaying or failing the real request), marked as shadow traffic.

use super::body::{self, Body};
use super::forward::{speaks_h2, upstream_request};
use super::payload::Payload;
use super::ProxyCore;
use crate::table::{Forward, RouteTable};
use crate::upstream::balance;
use crate::upstream::outlier::now_ms;
use http::request::Parts;
use http::uri::Authority;
use http::{header, HeaderValue, Request, Uri};
use rand::Rng;
use std::time::Duration;

/// Envoy marks shadow traffic by suffixing the host (before its port): the `Host` header over
/// HTTP/1, the `:authority` (the URI's) over HTTP/2.
fn mark_shadow(request: &mut Request<Body>, h2: bool) {
    if h2 {
        let uri = request.uri();
        let Some(shadow) = uri.authority().map(|a| shadow_host(a.as_str())) else {
            return;
        };
        let mut parts = uri.clone().into_parts();
        parts.authority = Authority::try_from(shadow).ok();
        if let Ok(uri) = Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    } else if let Some(host) = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
    {
        if let Ok(v) = HeaderValue::from_str(&shadow_host(host)) {
            request.headers_mut().insert(header::HOST, v);
        }
    }
}

/// `reviews:9080` ⇒ `reviews-shadow:9080`; `reviews` ⇒ `reviews-shadow`.
fn shadow_host(host: &str) -> String {
    match host.rsplit_once(':') {
        Some((name, port))
            if !name.is_empty()
                && !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!name.contains(':') || name.ends_with(']')) =>
        {
            format!("{name}-shadow:{port}")
        }
        _ => format!("{host}-shadow"),
    }
}

#[cfg(test)]
#[test]
fn shadow_hosts_keep_their_port() {
    assert_eq!(shadow_host("reviews:9080"), "reviews-shadow:9080");
    assert_eq!(shadow_host("reviews"), "reviews-shadow");
    assert_eq!(shadow_host("[::1]:80"), "[::1]-shadow:80");
    assert_eq!(shadow_host("reviews:"), "reviews:-shadow");
}

/// What a mirror sends as the body: the bytes read ahead, or, for a gRPC call (streamed while
/// a copy is kept), that copy once the call's request has ended.
#[derive(Clone)]
enum CopySource {
    Now(bytes::Bytes),
    WhenEnded(std::sync::Arc<std::sync::Mutex<body::Recording>>),
}

impl CopySource {
    async fn bytes(self) -> Option<bytes::Bytes> {
        match self {
            CopySource::Now(b) => Some(b),
            CopySource::WhenEnded(copy) => body::Recording::settled(&copy).await,
        }
    }
}

/// Send a copy to each mirror cluster (its share of requests), never waiting for it. A body
/// read ahead goes at once; a streamed one (gRPC, or over 64 KiB) once the request has ended,
/// from the copy kept as it streamed: bodies over 1 MiB are not mirrored.
pub(crate) fn mirror(
    core: &ProxyCore,
    table: &RouteTable,
    f: &Forward,
    parts: &Parts,
    payload: &Payload,
) {
    let source = match payload {
        Payload::Buffered(bytes) => CopySource::Now(bytes.clone()),
        Payload::Recorded { copy, .. } => CopySource::WhenEnded(copy.clone()),
        Payload::Stream { .. } => return,
    };
    for m in &f.mirrors {
        if rand::rng().random_range(0..1_000_000) >= m.ppm {
            continue;
        }
        let (Some(spec), Some(state)) = (
            table.cluster(&m.cluster),
            core.upstreams.cluster(&m.cluster),
        ) else {
            continue;
        };
        let Some(addr) = balance::pick(spec, &state, None, now_ms(), &[]) else {
            continue;
        };
        let copy = source.clone();
        let h2 = speaks_h2(spec, parts);
        let mut request = upstream_request(parts, body::empty(), addr, h2);
        mark_shadow(&mut request, h2);
        let client = core.h1.get(spec.connect_timeout);
        let h2_connections = core.metrics.upstream.http2.clone();
        let connect_timeout = spec.connect_timeout;
        core.metrics.mirrored.inc();
        tokio::spawn(async move {
            let send = async {
                let Some(bytes) = copy.bytes().await else {
                    return;
                };
                *request.body_mut() = body::full(bytes);
                if h2 {
                    let dial = (connect_timeout, &h2_connections);
                    let _ = crate::h2::client::send(addr, request, dial).await;
                } else {
                    let _ = client.request(request).await;
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(5), send).await;
        });
    }
}
