//! The HTTP/1.1 fast path: the common request (HTTP/1.1, no body or a small one with a
//! Content-Length) is parsed in place, routed, written to a pooled upstream connection and its
//! response relayed back, all in the downstream connection's own task, with buffers reused from
//! request to request. Everything else — HTTP/2 (prior knowledge), HTTP/1.0, chunked or large
//! request bodies, upgrades, `Expect: 100-continue`, routes that mirror — is handed, at a request
//! boundary and with the bytes already read, to the general hyper-based path, which serves the
//! rest of that connection. Both paths share the routing table, the endpoint picking, retries,
//! outlier detection, circuit breakers and metrics; only the byte handling differs.
//!
//! It must never forward a request it framed differently than the upstream would: heads whose
//! framing is ambiguous are refused with 400 (see `head`), before anything is sent.

mod chunked;
mod encode;
mod exchange;
pub(crate) mod guard;
pub mod head;
pub(crate) mod pool;
mod prefixed;
mod relay;
#[cfg(test)]
mod tests;

pub use prefixed::Prefixed;

use crate::http::select::{self, RequestView};
use crate::http::weighted;
use crate::http::{Direction, ListenerCtx, ProxyCore};
use crate::listeners::MAX_HEADER_BYTES;
use crate::metrics::source::SOURCE_HEADER;
use crate::metrics::{AccessEntry, RequestLabels};
use crate::table::{Action, Forward, Route, RouteTable, UpstreamProtocol};
use crate::upstream::{Counted, InFlight};
use arc_swap::ArcSwap;
use bytes::{Buf, Bytes, BytesMut};
use encode::{Edits, LocalReply};
use exchange::{attempts, Target, Upstream};
use head::{Framing, RequestHead, ResponseHead, View};
use http::HeaderValue;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

/// Request bodies up to this size are read whole before forwarding, so a retry can send them
/// again; larger ones take the general path, which streams them.
const MAX_FAST_BODY: u64 = 64 * 1024;
/// A client that has started a request head must finish it within this.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A client that has sent a head must send the body it announced within this.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// How the fast path left a connection.
pub enum Served {
    Closed,
    /// The general path takes over, starting with these bytes (a whole request head at least).
    Handover(Bytes),
}

/// Buffers a connection reuses from request to request.
#[derive(Default)]
struct Buffers {
    /// What is written next: the upstream request, then the downstream response head.
    out: Vec<u8>,
    /// What the upstream sent.
    up: BytesMut,
    up_head: ResponseHead,
}

/// Buffers above this size are not kept between requests.
const BIG_BUFFER: usize = 64 * 1024;

impl Buffers {
    fn shrink(&mut self) {
        if self.out.capacity() > BIG_BUFFER {
            self.out = Vec::new();
        }
        if self.up.capacity() > BIG_BUFFER {
            self.up = BytesMut::new();
        }
    }
}

/// Serves a downstream connection's HTTP/1.1 requests until it closes or needs the general path.
pub async fn serve(
    core: &ProxyCore,
    ctx: &ArcSwap<ListenerCtx>,
    stream: &mut TcpStream,
    peer: SocketAddr,
    draining: &mut watch::Receiver<bool>,
) -> Served {
    let mut input = BytesMut::with_capacity(8 * 1024);
    let mut head = RequestHead::default();
    let mut bufs = Buffers::default();
    let mut idle = crate::idle::IdleTimer::new(core.idle_timeout);
    loop {
        match read_head(stream, &mut input, &mut head, draining, &mut idle).await {
            HeadRead::Ready => {}
            HeadRead::Closed => return Served::Closed,
            HeadRead::Handover => return Served::Handover(input.freeze()),
            HeadRead::Refused(status, reason) => {
                LocalReply::new(status, reason, "DPE").write(&mut bufs.out, true);
                let _ = stream.write_all(&bufs.out).await;
                return Served::Closed;
            }
        }
        let body_len = match head.framing {
            Framing::Length(n) if n <= MAX_FAST_BODY => n as usize,
            Framing::Empty => 0,
            _ => return Served::Handover(input.freeze()),
        };
        if head.minor == 0 || head.upgrade || head.expect_continue {
            return Served::Handover(input.freeze());
        }
        let total = head.len + body_len;
        if !read_at_least(stream, &mut input, total).await {
            return Served::Closed;
        }
        let request = Request {
            view: View {
                buf: &input[..total],
                head: &head,
            },
            body_at: head.len,
            peer,
        };
        let draining_now = *draining.borrow();
        match handle(
            core,
            &ctx.load_full(),
            stream,
            &request,
            &mut bufs,
            draining_now,
        )
        .await
        {
            Next::KeepAlive => input.advance(total),
            Next::Close => return Served::Closed,
            Next::Handover => return Served::Handover(input.freeze()),
        }
        // A large request or response grew the buffers: give the memory back while idle.
        if input.is_empty() && input.capacity() > BIG_BUFFER {
            input = BytesMut::with_capacity(8 * 1024);
        }
        bufs.shrink();
    }
}

enum HeadRead {
    Ready,
    Closed,
    Handover,
    Refused(u16, &'static str),
}

/// How an HTTP/2 connection preface starts (RFC 9113 §3.4): such a connection is handed over whole.
pub(crate) const H2_PREFACE_START: &[u8] = b"PRI ";

async fn read_head(
    stream: &mut TcpStream,
    input: &mut BytesMut,
    head: &mut RequestHead,
    draining: &mut watch::Receiver<bool>,
    idle: &mut crate::idle::IdleTimer,
) -> HeadRead {
    let mut deadline: Option<Instant> = None;
    loop {
        if input.starts_with(H2_PREFACE_START) {
            return HeadRead::Handover;
        }
        let maybe_preface =
            input.len() < H2_PREFACE_START.len() && H2_PREFACE_START.starts_with(input);
        if !input.is_empty() && !maybe_preface {
            match head::parse_request(input, head) {
                Ok(true) if head.len > MAX_HEADER_BYTES => {
                    return HeadRead::Refused(431, "request headers too large")
                }
                Ok(true) => return HeadRead::Ready,
                Ok(false) if input.len() > MAX_HEADER_BYTES => {
                    return HeadRead::Refused(431, "request headers too large")
                }
                Ok(false) => {}
                Err(refusal) => return HeadRead::Refused(refusal.status, refusal.reason),
            }
        }
        input.reserve(4 * 1024);
        let read = if input.is_empty() {
            // Idle between requests: wait up to the idle timeout, unless draining.
            let idle_since = Instant::now();
            loop {
                tokio::select! {
                    biased;
                    r = stream.read_buf(input) => break r,
                    _ = draining.changed() => return HeadRead::Closed,
                    () = idle.fired() => {
                        if !idle.expired(idle_since) {
                            continue;
                        }
                        return HeadRead::Closed;
                    }
                }
            }
        } else {
            let until = *deadline.get_or_insert_with(|| Instant::now() + HEADER_READ_TIMEOUT);
            match tokio::time::timeout_at(until, stream.read_buf(input)).await {
                Ok(r) => r,
                Err(_) => return HeadRead::Closed,
            }
        };
        if !matches!(read, Ok(n) if n > 0) {
            return HeadRead::Closed;
        }
    }
}

async fn read_at_least(stream: &mut TcpStream, input: &mut BytesMut, total: usize) -> bool {
    let until = Instant::now() + BODY_READ_TIMEOUT;
    while input.len() < total {
        input.reserve(total - input.len());
        match tokio::time::timeout_at(until, stream.read_buf(input)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return false,
        }
    }
    true
}

/// A complete request: head and body, in the connection's input buffer.
struct Request<'a> {
    view: View<'a>,
    body_at: usize,
    peer: SocketAddr,
}

impl Request<'_> {
    fn body(&self) -> &[u8] {
        &self.view.buf[self.body_at..]
    }
}

enum Next {
    KeepAlive,
    Close,
    Handover,
}

/// What answers a request.
enum Reply<'t> {
    /// Not for this path (nothing was sent): the cluster takes HTTP/2 (HTTP2 and GRPC ports).
    Handover,
    Local(LocalReply),
    Redirect(u16, String),
    Upstream {
        conn: pool::Connection,
        addr: SocketAddr,
        edits: Edits<'t>,
        /// The route timeout's end: the response body must be relayed by then too.
        deadline: Option<Instant>,
        /// Held until the response is relayed: the request still counts for least-request
        /// balancing and the circuit breakers while its body flows.
        _held: Held,
    },
}

/// What a request holds while its response is relayed.
struct Held {
    _admitted: Counted,
    _in_flight: InFlight,
    _retrying: Option<Counted>,
}

async fn handle(
    core: &ProxyCore,
    ctx: &ListenerCtx,
    stream: &mut TcpStream,
    req: &Request<'_>,
    bufs: &mut Buffers,
    draining: bool,
) -> Next {
    let table = core.table.load_full();
    let route = table
        .route_config(&ctx.route_config)
        .map(|rc| select::route(rc, &req.view));
    if let Some(Some(Route {
        action: Action::Forward(f),
        ..
    })) = route
    {
        if !f.mirrors.is_empty() {
            return Next::Handover;
        }
    }
    let start = Instant::now();
    let mut labels = RequestLabels::new(ctx.direction);
    let received = || req.view.header(SOURCE_HEADER.as_str()).map(str::as_bytes);
    labels.set_source(ctx.source(received));
    if core.metrics.access_log {
        labels.access = Some(Box::new(AccessEntry::new(&req.view, "HTTP/1.1", req.peer)));
    }
    let reply = match route {
        None => Reply::Local(LocalReply::new(
            503,
            format!(
                "route configuration {:?} not received yet",
                ctx.route_config
            ),
            "NR",
        )),
        Some(None) => Reply::Local(LocalReply::new(404, "no route matched", "NR")),
        Some(Some(route)) => {
            let source = ctx.source_header();
            respond(core, &table, route, req, source, bufs, &mut labels).await
        }
    };
    let close = !req.view.head.keep_alive || draining;
    let (status, flag, keep) = match reply {
        Reply::Handover => return Next::Handover,
        Reply::Local(r) => {
            r.write(&mut bufs.out, close);
            let written = stream.write_all(&bufs.out).await.is_ok();
            (r.status, r.flag, written && !close)
        }
        Reply::Redirect(status, location) => {
            encode::redirect(&mut bufs.out, status, &location, close);
            let written = stream.write_all(&bufs.out).await.is_ok();
            (status, "", written && !close)
        }
        Reply::Upstream {
            conn,
            addr,
            edits,
            deadline,
            ..
        } => {
            let status = bufs.up_head.status;
            (
                status,
                "",
                relay::relay(stream, conn, addr, bufs, &edits, close, deadline).await,
            )
        }
    };
    if let (Some(own), Direction::Inbound) = (&ctx.identity, ctx.direction) {
        labels.set_destination(own);
    }
    core.metrics.count(labels, status, flag, start);
    if keep {
        Next::KeepAlive
    } else {
        Next::Close
    }
}

async fn respond<'t>(
    core: &ProxyCore,
    table: &'t RouteTable,
    route: &'t Route,
    req: &Request<'_>,
    source: Option<&HeaderValue>,
    bufs: &mut Buffers,
    labels: &mut RequestLabels,
) -> Reply<'t> {
    let mut hash = None;
    if let Action::Forward(f) = &route.action {
        if !f.hash.is_empty() {
            hash = select::hash_key(&f.hash, &req.view, req.peer);
            // A request that needs a cookie generated (rare: a first visit) takes the general
            // path, which sets it on the response.
            if hash.is_none() && select::generates_cookie(&f.hash) {
                return Reply::Handover;
            }
        }
        // A request the general path will take gets its fault there, not here as well.
        if route.fault.is_some() && takes_http2(table, f) {
            return Reply::Handover;
        }
    }
    if let Some(abort) = crate::http::fault_abort(route).await {
        return Reply::Local(LocalReply::new(
            abort.status.as_u16(),
            "fault injected",
            "FI",
        ));
    }
    match &route.action {
        Action::Redirect(r) => {
            let location = select::redirect_location(r, &route.path, &req.view);
            Reply::Redirect(r.status, location)
        }
        Action::Forward(f) => {
            let picked = (f, hash);
            forward(core, table, route, picked, req, source, bufs, labels).await
        }
    }
}

/// `(f, hash)`: the route's forward action and the request's consistent-hash key under it.
/// `source` is the `x-graymesh-source` value the upstream gets (see `metrics::source`).
#[allow(clippy::too_many_arguments)]
async fn forward<'t>(
    core: &ProxyCore,
    table: &'t RouteTable,
    route: &'t Route,
    (f, hash): (&'t Forward, Option<u64>),
    req: &Request<'_>,
    source: Option<&HeaderValue>,
    bufs: &mut Buffers,
    labels: &mut RequestLabels,
) -> Reply<'t> {
    let wc = weighted::pick(f, hash);
    labels.set_destination(&wc.destination);
    let (Some(spec), Some(state)) = (table.cluster(&wc.name), core.upstreams.cluster(&wc.name))
    else {
        let message = format!("cluster {:?} not received yet", wc.name);
        return Reply::Local(LocalReply::new(503, message, "NC"));
    };
    if spec.upstream == UpstreamProtocol::Http2 {
        return Reply::Handover;
    }
    let edits = Edits::new([&route.request_ops, &wc.request_ops]);
    encode::request_head(&mut bufs.out, &req.view, route, f, &edits, source);
    bufs.out.extend_from_slice(req.body());
    let target = Target {
        spec,
        state: &state,
        retry: f.retry.as_ref(),
        hash,
        head_request: req.view.method() == "HEAD",
    };
    let upstream = Upstream {
        buf: &mut bufs.up,
        head: &mut bufs.up_head,
    };
    let attempts = attempts(core, &target, &bufs.out, upstream);
    let deadline = f.timeout.map(|t| Instant::now() + t);
    let result = match deadline {
        Some(d) => tokio::time::timeout_at(d, attempts)
            .await
            .unwrap_or_else(|_| Err(LocalReply::new(504, "upstream request timeout", "UT"))),
        None => attempts.await,
    };
    match result {
        Ok((conn, addr, held)) => Reply::Upstream {
            conn,
            addr,
            edits: Edits::new([&wc.response_ops, &route.response_ops]),
            deadline,
            _held: held,
        },
        Err(local) => Reply::Local(local),
    }
}

/// Whether any cluster of `f` speaks HTTP/2 upstream (the general path's job).
fn takes_http2(table: &RouteTable, f: &Forward) -> bool {
    f.clusters.iter().any(|wc| {
        table
            .cluster(&wc.name)
            .is_some_and(|spec| spec.upstream == UpstreamProtocol::Http2)
    })
}
