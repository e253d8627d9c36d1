//! Forwarding a matched request: pick the weighted cluster (`weighted`, sticky by the route's
//! hash key), then an endpoint, send, and retry what the route says is retriable, within per-try
//! and overall timeouts and the cluster's circuit-breaker limits. Mirrors get a copy, fire and
//! forget.

use super::body::{self, local_reply, Body};
use super::payload::{BadBody, Payload};
use super::ProxyCore;
use crate::metrics::{ProxyMetrics, RequestLabels};
use crate::table::{ClusterSpec, Forward, RetrySpec, RouteTable, UpstreamProtocol};
use crate::upstream::outlier::{now_ms, room_to_eject, Outcome};
use crate::upstream::{balance, ClusterState, Counted, EndpointState, InFlight};
use http::request::Parts;
use http::uri::{Authority, PathAndQuery};
use http::{header, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, Version};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

#[allow(clippy::too_many_arguments)]
pub async fn forward(
    core: &ProxyCore,
    table: &RouteTable,
    f: &Forward,
    mut parts: Parts,
    body: Body,
    peer: SocketAddr,
    grpc: bool,
    labels: &mut RequestLabels,
) -> Response<Body> {
    // The key is read before the cluster's header operations, which could otherwise change it.
    let mut hash = super::select::hash_key(&f.hash, &parts, peer);
    let mut set_cookie = None;
    if hash.is_none() {
        if let Some((key, cookie)) = super::select::generated_cookie(&f.hash) {
            (hash, set_cookie) = (Some(key), Some(cookie));
        }
    }
    let wc = super::weighted::pick(f, hash);
    labels.set_destination(&wc.destination);
    wc.request_ops.apply(&mut parts.headers);
    let (Some(spec), Some(state)) = (table.cluster(&wc.name), core.upstreams.cluster(&wc.name))
    else {
        return local_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("cluster {:?} not received yet", wc.name),
            grpc,
            "NC",
        );
    };
    if super::upgrade::is_upgrade(&parts) {
        return Box::pin(super::upgrade::tunnel(core, spec, &state, parts, hash)).await;
    }
    let mirrored = !f.mirrors.is_empty();
    let replay = f.retry.is_some() || mirrored;
    let mut payload = match Payload::new(body, grpc, replay, mirrored).await {
        Ok(p) => p,
        Err(BadBody::Invalid(e)) => {
            let message = format!("invalid request body: {e}");
            return local_reply(StatusCode::BAD_REQUEST, &message, grpc, "DPE");
        }
        Err(BadBody::Timeout) => {
            let message = "request body not received in time";
            return local_reply(StatusCode::REQUEST_TIMEOUT, message, grpc, "DPE");
        }
    };
    super::mirror::mirror(core, table, f, &parts, &payload);
    let attempts = attempts(
        core,
        spec,
        &state,
        f.retry.as_ref(),
        &parts,
        &mut payload,
        hash,
        grpc,
    );
    // A gRPC caller's own deadline (`grpc-timeout`) bounds the call when it is the shorter.
    let deadline = grpc.then(|| body::grpc_timeout(&parts.headers)).flatten();
    let (limit, by_deadline) = match (f.timeout, deadline) {
        (Some(t), Some(d)) if d < t => (Some(d), true),
        (None, Some(d)) => (Some(d), true),
        (t, _) => (t, false),
    };
    let mut response = match limit {
        Some(t) => {
            let deadline = tokio::time::Instant::now() + t;
            match tokio::time::timeout_at(deadline, attempts).await {
                // The limit covers the whole response: its body too.
                Ok(response) if !hyper::body::Body::is_end_stream(response.body()) => {
                    response.map(|b| body::with_deadline(b, deadline, grpc))
                }
                Ok(response) => response,
                Err(_) => timeout_reply(grpc, by_deadline),
            }
        }
        None => attempts.await,
    };
    wc.response_ops.apply(response.headers_mut());
    if let Some(cookie) = set_cookie {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

fn timeout_reply(grpc: bool, by_deadline: bool) -> Response<Body> {
    if !by_deadline {
        return local_reply(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream request timeout",
            grpc,
            "UT",
        );
    }
    let mut reply = local_reply(
        StatusCode::GATEWAY_TIMEOUT,
        "deadline exceeded (grpc-timeout)",
        true,
        "UT",
    );
    reply.headers_mut().insert(
        "grpc-status",
        HeaderValue::from(body::GRPC_DEADLINE_EXCEEDED),
    );
    reply
}

/// Why an attempt did not produce a usable response.
pub(crate) enum Failure {
    Connect(String),
    Reset(String),
    Timeout,
}

#[allow(clippy::too_many_arguments)]
async fn attempts(
    core: &ProxyCore,
    spec: &ClusterSpec,
    state: &ClusterState,
    retry: Option<&RetrySpec>,
    parts: &Parts,
    payload: &mut Payload,
    hash: Option<u64>,
    grpc: bool,
) -> Response<Body> {
    let h2 = speaks_h2(spec, parts);
    let Some(_admitted) = admit(spec, state, h2) else {
        let mut reply = local_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream overflow: circuit breaker open",
            grpc,
            "UO",
        );
        reply.headers_mut().insert(
            "x-graymesh-overflow",
            HeaderValue::from_str(&spec.name).unwrap_or(HeaderValue::from_static("cluster")),
        );
        return reply;
    };
    let mut tried = 0u32;
    let mut previous: Vec<SocketAddr> = Vec::new();
    let mut retrying: Option<Counted> = None;
    loop {
        let Some(addr) = balance::pick(spec, state, hash, now_ms(), &previous) else {
            return local_reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "no healthy upstream",
                grpc,
                "UH",
            );
        };
        let endpoint = state.endpoint(&addr).cloned().unwrap_or_default();
        let result = attempt(
            core,
            &endpoint,
            parts,
            payload.take(),
            addr,
            (spec, h2),
            retry.and_then(|r| r.per_try_timeout),
        )
        .await;
        if result.is_err() && payload.client_failed() {
            // The client broke its own body: not the endpoint's failure, and not retriable.
            let message = "invalid request body (the client's body failed while it was forwarded)";
            return local_reply(StatusCode::BAD_REQUEST, message, grpc, "DPE");
        }
        let (outcome, retriable) = classify(&result, retry);
        record_outlier(&core.metrics, spec, state, &endpoint, outcome);
        let budget_ok = retry.is_some_and(|r| tried < r.num_retries)
            && payload.replayable()
            && retry_budget(spec, state, retrying.is_some());
        if retriable && budget_ok {
            tried += 1;
            previous.push(addr);
            core.metrics.retries.inc();
            retrying.get_or_insert_with(|| Counted::retrying(&state.counters));
            if let Some(r) = retry {
                Box::pin(backoff(r, tried)).await;
            }
            continue;
        }
        return match result {
            Ok(response) => response,
            Err(Failure::Connect(e)) => local_reply(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("upstream connect error: {e}"),
                grpc,
                "UF",
            ),
            Err(Failure::Reset(e)) => local_reply(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("upstream reset: {e}"),
                grpc,
                "UR",
            ),
            Err(Failure::Timeout) => local_reply(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream per-try timeout",
                grpc,
                "UT",
            ),
        };
    }
}

/// One try at `addr`; `h2`: whether it goes as HTTP/2 ([`speaks_h2`], decided once per request).
async fn attempt(
    core: &ProxyCore,
    endpoint: &Arc<EndpointState>,
    parts: &Parts,
    body: Body,
    addr: SocketAddr,
    (spec, h2): (&ClusterSpec, bool),
    per_try: Option<Duration>,
) -> Result<Response<Body>, Failure> {
    let request = upstream_request(parts, body, addr, h2);
    let _in_flight = InFlight::new(endpoint.clone());
    let call = async {
        if h2 {
            let dial = (spec.connect_timeout, &core.metrics.upstream.http2);
            crate::h2::client::send(addr, request, dial).await
        } else {
            let response = core
                .h1
                .get(spec.connect_timeout)
                .request(request)
                .await
                .map_err(|e| {
                    if e.is_connect() {
                        Failure::Connect(error_chain(&e))
                    } else {
                        Failure::Reset(error_chain(&e))
                    }
                })?;
            Ok(response.map(body::incoming))
        }
    };
    let result = match per_try {
        Some(t) => tokio::time::timeout(t, call)
            .await
            .map_err(|_| Failure::Timeout),
        None => Ok(call.await),
    };
    result?
}

/// Whether requests to `spec`'s endpoints go as HTTP/2: always for HTTP2 and GRPC ports'
/// clusters, never for explicit HTTP/1 ones, otherwise as the client spoke.
pub(crate) fn speaks_h2(spec: &ClusterSpec, parts: &Parts) -> bool {
    match spec.upstream {
        UpstreamProtocol::Http2 => true,
        UpstreamProtocol::Http1 => false,
        UpstreamProtocol::Downstream => parts.version == Version::HTTP_2,
    }
}

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Headers that describe one hop, not the request. The first [`CONNECTION_SPECIFIC`] are
/// HTTP/1's connection-specific fields, which HTTP/2 has none of (RFC 9113 §8.2.2): the h2 codec
/// refuses them on the way in and must not be given them on the way out.
pub(crate) const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
];
pub(crate) const CONNECTION_SPECIFIC: usize = 5;

/// Removes every header named in `names`.
pub(crate) fn remove_headers(headers: &mut http::HeaderMap, names: &[HeaderName]) {
    for name in names {
        if headers.contains_key(name) {
            headers.remove(name);
        }
    }
}

pub(crate) fn upstream_request(
    parts: &Parts,
    body: Body,
    addr: SocketAddr,
    h2: bool,
) -> Request<Body> {
    let mut request = Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.version_mut() = if h2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    // HTTP/2 connections are the endpoint's own, so the URI keeps the client's authority (the
    // upstream's `:authority`); the HTTP/1 client finds its connection by the URI's address.
    let client_authority = parts
        .uri
        .authority()
        .cloned()
        .or_else(|| Authority::try_from(super::select::RequestView::authority(parts)).ok());
    let authority = match client_authority {
        Some(a) if h2 => a,
        _ => Authority::try_from(addr.to_string())
            .unwrap_or_else(|_| Authority::from_static("localhost")),
    };
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(http::uri::Scheme::HTTP);
    uri.authority = Some(authority);
    uri.path_and_query = Some(
        parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    );
    if let Ok(uri) = Uri::from_parts(uri) {
        *request.uri_mut() = uri;
    }
    // The map is copied whole (its values are shared bytes); what must not cross is removed.
    let headers = request.headers_mut();
    *headers = parts.headers.clone();
    let first = if parts.version == Version::HTTP_2 {
        CONNECTION_SPECIFIC
    } else {
        0
    };
    remove_headers(headers, &HOP_BY_HOP[first..]);
    if headers.get(header::TE).is_some_and(|te| te != "trailers") {
        headers.remove(header::TE);
    }
    if let Some(tp) = headers.get_mut(body::names::TRACEPARENT) {
        // Unique per request: never worth an HPACK table entry.
        tp.set_sensitive(true);
    }
    if h2 {
        headers.remove(header::HOST);
    } else if !headers.contains_key(header::HOST) {
        if let Some(a) = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            headers.insert(header::HOST, a);
        }
    }
    request
}

/// The outlier outcome of an attempt, and whether the route's retry policy retries it.
fn classify(
    result: &Result<Response<Body>, Failure>,
    retry: Option<&RetrySpec>,
) -> (Outcome, bool) {
    match result {
        Err(failure) => classify_failure(failure, retry),
        Ok(response) => {
            let grpc_status = response
                .headers()
                .get(body::names::GRPC_STATUS)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u32>().ok());
            classify_status(response.status().as_u16(), grpc_status, retry)
        }
    }
}

pub(crate) fn classify_failure(failure: &Failure, retry: Option<&RetrySpec>) -> (Outcome, bool) {
    let Some(r) = retry else {
        return (Outcome::LocalFailure, false);
    };
    let retriable = match failure {
        Failure::Connect(_) => r.on_connect_failure || r.on_5xx || r.on_gateway_error,
        Failure::Reset(_) => r.on_reset || r.on_5xx || r.on_gateway_error,
        Failure::Timeout => r.on_5xx || r.on_gateway_error,
    };
    (Outcome::LocalFailure, retriable)
}

pub(crate) fn classify_status(
    code: u16,
    grpc_status: Option<u32>,
    retry: Option<&RetrySpec>,
) -> (Outcome, bool) {
    let gateway = matches!(code, 502..=504);
    let outcome = if code >= 500 {
        Outcome::ServerError { gateway }
    } else {
        Outcome::Success
    };
    let Some(r) = retry else {
        return (outcome, false);
    };
    let retriable = (code >= 500 && r.on_5xx)
        || (gateway && r.on_gateway_error)
        || (r.on_retriable_codes && r.retriable_codes.contains(&code))
        || (r.on_conflict && code == 409)
        || grpc_status.is_some_and(|g| r.grpc_codes.contains(&g));
    (outcome, retriable)
}

/// Records an attempt's outcome for outlier detection, counting the ejection it may cause.
pub(crate) fn record_outlier(
    metrics: &ProxyMetrics,
    spec: &ClusterSpec,
    state: &ClusterState,
    endpoint: &EndpointState,
    outcome: Outcome,
) {
    let Some(outlier) = &spec.outlier else { return };
    let now = now_ms();
    let ejected_now = endpoint.health.record(outcome, outlier, || {
        let ejected = state
            .endpoints
            .values()
            .filter(|e| e.health.is_ejected(now))
            .count();
        room_to_eject(ejected, state.endpoints.len(), outlier.max_ejection_percent)
    });
    if ejected_now {
        metrics.upstream.ejected(&spec.name);
    }
}

/// Whether one more request may start retrying under the cluster's `max_retries` or
/// `retry_budget`; a request already retrying (`holding`) is not counted against itself.
pub(crate) fn retry_budget(spec: &ClusterSpec, state: &ClusterState, holding: bool) -> bool {
    let counters = &state.counters;
    let others = counters
        .retries_in_flight
        .load(Ordering::Relaxed)
        .saturating_sub(usize::from(holding));
    let active = counters.requests_in_flight.load(Ordering::Relaxed);
    others < spec.thresholds.retry_limit(active)
}

/// The route's back-off before try `n + 1` (Envoy's: base × 2^(n-1), capped, full jitter).
pub(crate) async fn backoff(retry: &RetrySpec, n: u32) {
    tokio::time::sleep(retry.back_off(n)).await;
}

/// A request counted against the cluster's circuit breaker while it lives, if the breaker
/// admits it. HTTP/1 requests are limited by connections plus pending requests, HTTP/2
/// requests by concurrent requests.
pub(crate) fn admit(spec: &ClusterSpec, state: &ClusterState, h2: bool) -> Option<Counted> {
    let t = &spec.thresholds;
    let limit = if h2 {
        t.max_requests as usize
    } else {
        t.max_connections as usize + t.max_pending_requests as usize
    };
    Counted::within(&state.counters, |c| &c.requests_in_flight, limit)
}
