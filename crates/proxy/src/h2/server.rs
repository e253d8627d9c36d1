//! Downstream HTTP/2 (cleartext, prior knowledge): the `h2` crate driven directly. A connection
//! is one task: it accepts streams and runs every stream's request to its end in that same task
//! (no task spawned per stream, no per-stream channel), so a response wakes only the connection
//! it belongs to.

use super::body::{self, SendError};
use crate::http::{forward, ListenerCtx, ProxyCore};
use crate::idle::IdleTimer;
use crate::listeners::{MAX_HEADERS, MAX_HEADER_BYTES};
use arc_swap::ArcSwap;
use bytes::Bytes;
use futures::future::poll_fn;
use futures::stream::{FuturesUnordered, StreamExt};
use h2::server::SendResponse;
use h2::RecvStream;
use http::{Request, Response};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;

/// Streams one client may have open at once (hyper's default, which the proxy used before).
const MAX_CONCURRENT_STREAMS: u32 = 200;
/// Receive windows: large enough that a stream is rarely held back on loopback.
const STREAM_WINDOW: u32 = 1024 * 1024;
const CONNECTION_WINDOW: u32 = 2 * 1024 * 1024;
const MAX_SEND_BUFFER: usize = 400 * 1024;
/// A client must complete the connection preface and settings within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves one downstream HTTP/2 connection until the client closes it, or until it drains: on
/// drain a GOAWAY is sent and the streams already open finish.
pub async fn serve<S>(
    core: Arc<ProxyCore>,
    ctx: Arc<ArcSwap<ListenerCtx>>,
    io: S,
    peer: SocketAddr,
    draining: &mut watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let handshake = h2::server::Builder::new()
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .handshake::<_, Bytes>(io);
    let mut conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "HTTP/2 handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "HTTP/2 handshake timed out");
            return;
        }
    };
    let mut streams = FuturesUnordered::new();
    let mut shutting_down = false;
    if *draining.borrow() {
        conn.graceful_shutdown();
        shutting_down = true;
    }
    let mut idle = IdleTimer::new(core.idle_timeout);
    let mut idle_since = Instant::now();
    loop {
        tokio::select! {
            accepted = conn.accept() => match accepted {
                Some(Ok((request, respond))) => {
                    streams.push(stream(core.clone(), ctx.load_full(), request, respond, peer));
                }
                Some(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "HTTP/2 connection error");
                    break;
                }
                None => break,
            },
            Some(()) = streams.next(), if !streams.is_empty() => {
                if streams.is_empty() {
                    idle_since = Instant::now();
                }
            }
            _ = draining.changed(), if !shutting_down => {
                conn.graceful_shutdown();
                shutting_down = true;
            }
            () = idle.fired(), if streams.is_empty() && !shutting_down => {
                if idle.expired(idle_since) {
                    tracing::debug!(%peer, "HTTP/2 connection idle: closing");
                    conn.graceful_shutdown();
                    shutting_down = true;
                }
            }
        }
    }
    // The connection has stopped taking streams; the ones open may still be sending. They make
    // progress only while the connection is polled, so drive both to the end.
    let rest = async { while streams.next().await.is_some() {} };
    let closed = poll_fn(|cx| conn.poll_closed(cx));
    let _ = futures::future::join(rest, closed).await;
}

/// One stream: route the request, then relay the response (head, data, trailers) into it. A
/// client that resets the stream cancels the request where it is.
async fn stream(
    core: Arc<ProxyCore>,
    ctx: Arc<ListenerCtx>,
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    peer: SocketAddr,
) {
    if request.headers().len() > MAX_HEADERS {
        // The same limit as HTTP/1's (the size limit is the codec's SETTINGS_MAX_HEADER_LIST_SIZE).
        let reply = Response::builder()
            .status(http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
            .body(())
            .unwrap_or_default();
        let _ = respond.send_response(reply, true);
        return;
    }
    let (parts, recv) = request.into_parts();
    let request = Request::from_parts(parts, body::recv(recv));
    let response = tokio::select! {
        biased;
        response = core.handle(ctx, request, peer) => response,
        _ = poll_fn(|cx| respond.poll_reset(cx)) => return,
    };
    let (mut head, response_body) = response.into_parts();
    if head.version != http::Version::HTTP_2 {
        // From an HTTP/1 upstream or a local reply (an HTTP/2 upstream's codec refuses these):
        // HTTP/2 has no connection-specific fields, so they are dropped rather than making the
        // response malformed.
        let names = &forward::HOP_BY_HOP[..forward::CONNECTION_SPECIFIC];
        forward::remove_headers(&mut head.headers, names);
    }
    let end = hyper::body::Body::is_end_stream(&response_body);
    let tx = match respond.send_response(Response::from_parts(head, ()), end) {
        Ok(tx) => tx,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "HTTP/2 response not sent");
            return;
        }
    };
    if end {
        return;
    }
    if let Err(e) = body::send(tx, response_body).await {
        match e {
            SendError::Body(e) => tracing::debug!(%peer, error = %e, "upstream body failed"),
            SendError::Stream(e) => tracing::debug!(%peer, error = %e, "HTTP/2 stream ended"),
        }
    }
}
