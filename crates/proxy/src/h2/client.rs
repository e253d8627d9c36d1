//! Upstream HTTP/2 connections: one multiplexed connection per endpoint and worker thread, the
//! `h2` crate's own handle used directly (no dispatch channel in between), kept while it lives
//! and replaced when it closes or refuses new streams. Requests keep the `:authority` the client
//! sent. A connection is counted open (upstream connection metrics) from its handshake until its
//! task ends.

use super::body;
use crate::http::body::Body;
use crate::http::forward::{error_chain, Failure};
use crate::metrics::upstream::ConnectionMetrics;
use bytes::Bytes;
use h2::client::SendRequest;
use http::{Request, Response};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Receive windows towards upstreams (hyper's client defaults, which the proxy used before).
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;
const MAX_SEND_BUFFER: usize = 1024 * 1024;

#[derive(Clone)]
struct Upstream {
    sender: SendRequest<Bytes>,
    /// Set by the connection's task when it ends.
    closed: Arc<AtomicBool>,
}

thread_local! {
    static CONNECTIONS: RefCell<foldhash::HashMap<SocketAddr, Upstream>> = RefCell::default();
}

/// Sends `request` (its URI carrying the client's authority) on the endpoint's connection. A
/// cached connection found gone (closed, or refusing new streams after a GOAWAY) before the
/// request is on it is replaced once.
pub async fn send(
    addr: SocketAddr,
    request: Request<Body>,
    (connect_timeout, metrics): (Duration, &ConnectionMetrics),
) -> Result<Response<Body>, Failure> {
    let (parts, request_body) = request.into_parts();
    let mut sender = match cached(addr) {
        Some(u) => match ready(u.sender).await {
            Ok(sender) => sender,
            Err(_) => {
                forget(addr);
                Box::pin(connect(addr, connect_timeout, metrics)).await?
            }
        },
        // Boxed: the handshake is rare and large, and would otherwise grow every request's future.
        None => Box::pin(connect(addr, connect_timeout, metrics)).await?,
    };
    let end = hyper::body::Body::is_end_stream(&request_body);
    let (response, tx) = sender
        .send_request(Request::from_parts(parts, ()), end)
        .map_err(|e| {
            forget(addr);
            Failure::Reset(error_chain(&e))
        })?;
    if !end {
        // The request body streams on its own: a streaming call may need the response first.
        tokio::spawn(async move {
            if let Err(e) = body::send(tx, request_body).await {
                tracing::debug!(%addr, error = ?e, "request body not fully sent upstream");
            }
        });
    }
    let response = response
        .await
        .map_err(|e| Failure::Reset(error_chain(&e)))?;
    let (parts, recv) = response.into_parts();
    Ok(Response::from_parts(parts, body::recv(recv)))
}

/// The connection's handle once it can take one more stream (the upstream's
/// `SETTINGS_MAX_CONCURRENT_STREAMS` respected).
async fn ready(mut sender: SendRequest<Bytes>) -> Result<SendRequest<Bytes>, h2::Error> {
    futures::future::poll_fn(|cx| sender.poll_ready(cx)).await?;
    Ok(sender)
}

fn cached(addr: SocketAddr) -> Option<Upstream> {
    CONNECTIONS.with(|c| {
        let mut c = c.borrow_mut();
        match c.get(&addr) {
            Some(u) if !u.closed.load(Ordering::Relaxed) => Some(u.clone()),
            Some(_) => {
                c.remove(&addr);
                None
            }
            None => None,
        }
    })
}

fn forget(addr: SocketAddr) {
    CONNECTIONS.with(|c| c.borrow_mut().remove(&addr));
}

async fn connect(
    addr: SocketAddr,
    connect_timeout: Duration,
    metrics: &ConnectionMetrics,
) -> Result<SendRequest<Bytes>, Failure> {
    let failed = |e: String| {
        metrics.failed();
        Failure::Connect(e)
    };
    let stream = crate::h1::pool::dial(addr, connect_timeout)
        .await
        .map_err(failed)?;
    let (sender, connection) = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .handshake::<_, Bytes>(stream)
        .await
        .map_err(|e| failed(format!("{addr}: HTTP/2 handshake: {}", error_chain(&e))))?;
    let open = metrics.opened();
    let closed = Arc::new(AtomicBool::new(false));
    let flag = closed.clone();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(%addr, error = %e, "upstream HTTP/2 connection ended");
        }
        flag.store(true, Ordering::Relaxed);
        drop(open);
    });
    let upstream = Upstream {
        sender: sender.clone(),
        closed,
    };
    CONNECTIONS.with(|c| c.borrow_mut().insert(addr, upstream));
    ready(sender)
        .await
        .map_err(|e| Failure::Connect(format!("{addr}: HTTP/2: {}", error_chain(&e))))
}
