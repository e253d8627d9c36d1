//! The HTTP data path: a request comes in on a listener, is matched against the listener's route
//! configuration in the current table, and is answered locally (redirect, fault, error) or
//! forwarded to an endpoint of the chosen cluster, with retries and timeouts.

pub mod body;
mod connector;
pub(crate) mod forward;
mod mirror;
mod payload;
pub mod select;
mod upgrade;
pub mod weighted;

pub use select::route as select_route;

use crate::metrics::source::{self, OwnSource, Source};
use crate::metrics::{ProxyMetrics, RequestLabels};
use crate::table::{Action, Route, RouteTable};
use crate::upstream::Upstreams;
use arc_swap::ArcSwap;
use body::{local_reply, Body};
use connector::H1Clients;
use http::request::Parts;
use http::{Request, Response, StatusCode};
use rand::Rng;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Which way traffic flows through a listener (a metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Outbound,
    Inbound,
}

impl Direction {
    pub fn as_str(&self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }
}

/// What a listener's connections need to route.
#[derive(Debug, Clone)]
pub struct ListenerCtx {
    pub route_config: String,
    pub direction: Direction,
    /// This proxy's (service, version), for inbound listeners: the destination of their traffic.
    pub identity: Option<Arc<crate::metrics::Destination>>,
    /// This proxy's service, for outbound (and gateway) listeners: the source of their traffic.
    pub own_source: Option<OwnSource>,
    /// Set for TCP listeners: connections are proxied as bytes, not parsed as HTTP.
    pub tcp: Option<Arc<crate::table::TcpRoute>>,
}

impl ListenerCtx {
    /// Who sent a request, for its labels: on an inbound listener the calling proxy, named by
    /// the `x-graymesh-source` value `received` gives (only asked there); otherwise this proxy.
    pub fn source<'a>(&self, received: impl FnOnce() -> Option<&'a [u8]>) -> Option<Arc<Source>> {
        match self.direction {
            Direction::Inbound => received().and_then(source::received),
            Direction::Outbound => self.own_source.as_ref().map(|o| o.source.clone()),
        }
    }

    /// The `x-graymesh-source` value forwarded requests carry: this proxy's, never a received one.
    pub fn source_header(&self) -> Option<&http::HeaderValue> {
        self.own_source.as_ref()?.header.as_ref()
    }
}

/// Everything shared by all requests: the current table, upstream state, pools, metrics.
#[derive(Debug)]
pub struct ProxyCore {
    pub table: ArcSwap<RouteTable>,
    /// Shared with the scrape-time count of ejected endpoints.
    pub upstreams: Arc<Upstreams>,
    pub metrics: Arc<ProxyMetrics>,
    /// hyper's HTTP/1 clients, by cluster connect timeout (the HTTP/1 fast path has its own).
    pub(crate) h1: H1Clients,
    /// Tunnels upgraded connections became: a drain waits for them too.
    pub(crate) tunnels: Arc<crate::listeners::OpenCount>,
    /// A downstream connection with no request in progress for this long is closed (HTTP/1
    /// keep-alive between requests; HTTP/2 with no open stream, after a GOAWAY).
    pub idle_timeout: Duration,
}

impl ProxyCore {
    pub fn new(metrics: ProxyMetrics, idle_timeout: Duration) -> Arc<Self> {
        let h1 = H1Clients::new(metrics.upstream.http1.clone());
        Arc::new(Self {
            table: ArcSwap::from_pointee(RouteTable::default()),
            upstreams: Arc::default(),
            metrics: Arc::new(metrics),
            h1,
            tunnels: Arc::default(),
            idle_timeout,
        })
    }

    /// Install a new routing table; requests already running finish on the old one.
    pub fn install(&self, table: RouteTable) {
        self.upstreams.sync(&table);
        self.table.store(Arc::new(table));
    }

    pub async fn handle(
        self: Arc<Self>,
        ctx: Arc<ListenerCtx>,
        mut req: Request<Body>,
        peer: SocketAddr,
    ) -> Response<Body> {
        let start = Instant::now();
        let grpc = body::is_grpc(req.headers());
        let table = self.table.load_full();
        let mut labels = RequestLabels::new(ctx.direction);
        let received = || {
            req.headers()
                .get(source::SOURCE_HEADER)
                .map(|v| v.as_bytes())
        };
        labels.set_source(ctx.source(received));
        if self.metrics.access_log {
            let (parts, body) = req.into_parts();
            let protocol = match parts.version {
                http::Version::HTTP_10 => "HTTP/1.0",
                http::Version::HTTP_2 => "HTTP/2",
                _ => "HTTP/1.1",
            };
            labels.access = Some(Box::new(crate::metrics::AccessEntry::new(
                &parts, protocol, peer,
            )));
            req = Request::from_parts(parts, body);
        }
        let response = self.route(&table, &ctx, req, peer, grpc, &mut labels).await;
        self.metrics.observe(labels, start, response, grpc)
    }

    async fn route(
        &self,
        table: &RouteTable,
        ctx: &ListenerCtx,
        req: Request<Body>,
        peer: SocketAddr,
        grpc: bool,
        labels: &mut RequestLabels,
    ) -> Response<Body> {
        let Some(rc) = table.route_config(&ctx.route_config) else {
            return local_reply(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!(
                    "route configuration {:?} not received yet",
                    ctx.route_config
                ),
                grpc,
                "NR",
            );
        };
        let (mut parts, body) = req.into_parts();
        let Some(route) = select::route(rc, &parts) else {
            return local_reply(StatusCode::NOT_FOUND, "no route matched", grpc, "NR");
        };
        if route.fault.is_some() {
            // Boxed: rare, and its timer would otherwise grow every request's future.
            if let Some(reply) = Box::pin(fault(route, grpc)).await {
                return reply;
            }
        }
        route.request_ops.apply(&mut parts.headers);
        source::replace(&mut parts.headers, ctx.source_header());
        ensure_traceparent(&mut parts.headers);
        match &route.action {
            Action::Redirect(r) => redirect(r, route, &parts),
            Action::Forward(f) => {
                rewrite(route, f, &mut parts);
                let mut response =
                    forward::forward(self, table, f, parts, body, peer, grpc, labels).await;
                if let Some(own) = &ctx.identity {
                    labels.set_destination(own);
                }
                route.response_ops.apply(response.headers_mut());
                response
            }
        }
    }
}

/// Fault injection: an added delay and/or an abort, each for its share of requests.
async fn fault(route: &Route, grpc: bool) -> Option<Response<Body>> {
    let abort = fault_abort(route).await?;
    if let (true, Some(code)) = (grpc, abort.grpc_status) {
        let mut reply = local_reply(StatusCode::OK, "fault injected", true, "FI");
        reply
            .headers_mut()
            .insert(body::names::GRPC_STATUS, http::HeaderValue::from(code));
        return Some(reply);
    }
    Some(local_reply(abort.status, "fault injected", grpc, "FI"))
}

/// The abort a route's fault injection decided on for one request.
pub(crate) struct FaultAbort {
    pub status: StatusCode,
    pub grpc_status: Option<u32>,
}

/// Applies the fault's delay (for its share of requests) and rolls for its abort.
pub(crate) async fn fault_abort(route: &Route) -> Option<FaultAbort> {
    let f = route.fault.as_ref()?;
    let roll = |ppm: u32| rand::rng().random_range(0..1_000_000) < ppm;
    if let Some((delay, ppm)) = f.delay {
        if roll(ppm) {
            tokio::time::sleep(delay).await;
        }
    }
    let (http_status, grpc_status, ppm) = f.abort?;
    if !roll(ppm) {
        return None;
    }
    let status = http_status
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    Some(FaultAbort {
        status,
        grpc_status,
    })
}

fn redirect(r: &crate::table::Redirect, route: &Route, parts: &Parts) -> Response<Body> {
    let location = select::redirect_location(r, &route.path, parts);
    Response::builder()
        .status(StatusCode::from_u16(r.status).unwrap_or(StatusCode::MOVED_PERMANENTLY))
        .header(http::header::LOCATION, location)
        .body(body::empty())
        .unwrap_or_else(|_| Response::new(body::empty()))
}

/// The route's path rewrite (the query string kept as received) and host rewrite.
fn rewrite(route: &Route, f: &crate::table::Forward, parts: &mut Parts) {
    if let Some(rewrite) = &f.path_rewrite {
        let mut joined = rewrite.rewrite(&route.path, parts.uri.path());
        if let Some(query) = parts.uri.query() {
            joined.push('?');
            joined.push_str(query);
        }
        let mut uri = http::uri::Builder::new();
        if let Some(s) = parts.uri.scheme() {
            uri = uri.scheme(s.clone());
        }
        if let Some(a) = parts.uri.authority() {
            uri = uri.authority(a.clone());
        }
        if let Ok(new_uri) = uri.path_and_query(joined).build() {
            parts.uri = new_uri;
        }
    }
    if let Some(host) = &f.host_rewrite {
        parts.headers.insert(http::header::HOST, host.clone());
    }
}

/// W3C trace context: start a trace when the caller did not. The value is marked sensitive so
/// HTTP/2 sends it as a never-indexed literal: a value unique to each request would otherwise
/// push the headers that do repeat out of both ends' HPACK tables.
fn ensure_traceparent(headers: &mut http::HeaderMap) {
    use http::header::Entry;
    if let Entry::Vacant(slot) = headers.entry(body::names::TRACEPARENT) {
        if let Ok(mut v) = http::HeaderValue::from_bytes(&new_traceparent()) {
            v.set_sensitive(true);
            slot.insert(v);
        }
    }
}

/// A fresh `traceparent` value (version 00, random trace and span ids, sampled), written without
/// allocating: `00-<32 hex>-<16 hex>-01`.
pub(crate) fn new_traceparent() -> [u8; 55] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut rng = rand::rng();
    let trace: u128 = rng.random::<u128>() | 1;
    let span: u64 = rng.random::<u64>() | 1;
    let mut out = *b"00-00000000000000000000000000000000-0000000000000000-01";
    for i in 0..32 {
        out[3 + i] = HEX[((trace >> (124 - 4 * i)) & 0xf) as usize];
    }
    for i in 0..16 {
        out[36 + i] = HEX[((span >> (60 - 4 * i)) & 0xf) as usize];
    }
    out
}
