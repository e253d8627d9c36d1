//! The fast path's upstream side: a request's attempts on the cluster's endpoints (retries,
//! per-try timeouts, outlier and circuit-breaker accounting), each an exchange on a pooled
//! connection (a new one when the pooled ones turn out closed) up to the response head.

use super::encode::LocalReply;
use super::head::{self, ResponseHead};
use super::{pool, Held, MAX_RESPONSE_HEAD};
use crate::http::forward::{self, Failure};
use crate::http::ProxyCore;
use crate::metrics::upstream::ConnectionMetrics;
use crate::table::{ClusterSpec, RetrySpec};
use crate::upstream::outlier::now_ms;
use crate::upstream::{balance, ClusterState, Counted, InFlight};
use bytes::{Buf, BytesMut};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where a request goes: the cluster and how to treat its attempts.
pub(super) struct Target<'a> {
    pub(super) spec: &'a ClusterSpec,
    pub(super) state: &'a ClusterState,
    pub(super) retry: Option<&'a RetrySpec>,
    pub(super) hash: Option<u64>,
    pub(super) head_request: bool,
}

/// Where the upstream's response head lands.
pub(super) struct Upstream<'a> {
    pub(super) buf: &'a mut BytesMut,
    pub(super) head: &'a mut ResponseHead,
}

/// Sends `request` to endpoints of the cluster until a response is not retried: the connection
/// it came on (its head parsed into `up`), or the proxy's own reply.
pub(super) async fn attempts(
    core: &ProxyCore,
    t: &Target<'_>,
    request: &[u8],
    mut up: Upstream<'_>,
) -> Result<(pool::Connection, SocketAddr, Held), LocalReply> {
    let Some(admitted) = forward::admit(t.spec, t.state, false) else {
        let mut reply = LocalReply::new(503, "upstream overflow: circuit breaker open", "UO");
        reply.extra = Some(("x-graymesh-overflow", t.spec.name.as_bytes().to_vec()));
        return Err(reply);
    };
    let mut tried = 0u32;
    let mut previous: Vec<SocketAddr> = Vec::new();
    let mut retrying: Option<Counted> = None;
    loop {
        let Some(addr) = balance::pick(t.spec, t.state, t.hash, now_ms(), &previous) else {
            return Err(LocalReply::new(503, "no healthy upstream", "UH"));
        };
        let endpoint = t.state.endpoint(&addr).cloned().unwrap_or_default();
        let in_flight = InFlight::new(endpoint.clone());
        let result = {
            let connections = &core.metrics.upstream.http1;
            let dial = (t.spec.connect_timeout, connections);
            let exchange = exchange(addr, dial, request, t.head_request, &mut up);
            match t.retry.and_then(|r| r.per_try_timeout) {
                Some(limit) => tokio::time::timeout(limit, exchange)
                    .await
                    .unwrap_or(Err(Failure::Timeout)),
                None => exchange.await,
            }
        };
        let (outcome, retriable) = match &result {
            Ok(_) => forward::classify_status(up.head.status, None, t.retry),
            Err(failure) => forward::classify_failure(failure, t.retry),
        };
        forward::record_outlier(&core.metrics, t.spec, t.state, &endpoint, outcome);
        let may_retry = t.retry.is_some_and(|r| tried < r.num_retries)
            && forward::retry_budget(t.spec, t.state, retrying.is_some());
        if retriable && may_retry {
            drop(in_flight);
            tried += 1;
            previous.push(addr);
            core.metrics.retries.inc();
            retrying.get_or_insert_with(|| Counted::retrying(&t.state.counters));
            if let Some(r) = t.retry {
                forward::backoff(r, tried).await;
            }
            continue;
        }
        let held = Held {
            _admitted: admitted,
            _in_flight: in_flight,
            _retrying: retrying,
        };
        return match result {
            Ok(conn) => Ok((conn, addr, held)),
            Err(Failure::Connect(e)) => Err(LocalReply::new(
                503,
                format!("upstream connect error: {e}"),
                "UF",
            )),
            Err(Failure::Reset(e)) => {
                Err(LocalReply::new(503, format!("upstream reset: {e}"), "UR"))
            }
            Err(Failure::Timeout) => Err(LocalReply::new(504, "upstream per-try timeout", "UT")),
        };
    }
}

/// Why one send on one connection failed.
enum SendError {
    /// Nothing came back: on a pooled connection, the upstream had closed it while idle.
    Nothing(String),
    Broken(String),
}

/// One attempt on one endpoint: a pooled connection (or, when those turn out closed, a new one).
async fn exchange(
    addr: SocketAddr,
    (connect_timeout, connections): (Duration, &ConnectionMetrics),
    request: &[u8],
    head_request: bool,
    up: &mut Upstream<'_>,
) -> Result<pool::Connection, Failure> {
    loop {
        let (mut conn, reused) = match pool::checkout(addr) {
            Some(conn) => (conn, true),
            None => {
                let conn = pool::connect(addr, connect_timeout, connections).await;
                (conn.map_err(Failure::Connect)?, false)
            }
        };
        match send(&mut conn.stream, request, head_request, up).await {
            Ok(()) => return Ok(conn),
            Err(SendError::Nothing(_)) if reused => continue,
            Err(SendError::Nothing(e) | SendError::Broken(e)) => return Err(Failure::Reset(e)),
        }
    }
}

async fn send(
    conn: &mut TcpStream,
    request: &[u8],
    head_request: bool,
    up: &mut Upstream<'_>,
) -> Result<(), SendError> {
    up.buf.clear();
    conn.write_all(request)
        .await
        .map_err(|e| SendError::Nothing(e.to_string()))?;
    loop {
        up.buf.reserve(8 * 1024);
        let received = conn.read_buf(up.buf).await;
        let lost = |e: String| {
            if up.buf.is_empty() {
                SendError::Nothing(e)
            } else {
                SendError::Broken(e)
            }
        };
        match received {
            Ok(0) => return Err(lost("upstream closed the connection".into())),
            Err(e) => return Err(lost(e.to_string())),
            Ok(_) => {}
        }
        loop {
            match head::parse_response(up.buf, head_request, up.head) {
                // An interim response (100 Continue, 103 Early Hints): not relayed.
                Ok(Some(len)) if (100..200).contains(&up.head.status) && up.head.status != 101 => {
                    up.buf.advance(len);
                }
                Ok(Some(_)) => return Ok(()),
                Ok(None) if up.buf.len() > MAX_RESPONSE_HEAD => {
                    return Err(SendError::Broken("response head too large".into()))
                }
                Ok(None) => break,
                Err(e) => return Err(SendError::Broken(e.into())),
            }
        }
    }
}
