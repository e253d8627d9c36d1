//! Upstream HTTP/2 connections: one multiplexed connection per endpoint and worker thread, kept
//! while it lives and replaced when it closes. Requests go straight to the endpoint's connection
//! (no pool checkout keyed by scheme and authority), and keep the `:authority` the client sent.

use super::body::Body;
use super::forward::{error_chain, Failure};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;

thread_local! {
    static CONNECTIONS: RefCell<HashMap<SocketAddr, SendRequest<Body>>> = RefCell::default();
}

/// Sends `request` (an absolute URI with the client's authority) on the endpoint's connection.
pub async fn send(addr: SocketAddr, request: Request<Body>) -> Result<Response<Incoming>, Failure> {
    let mut sender = match cached(addr) {
        Some(sender) => sender,
        // Boxed: the handshake is rare and large, and would otherwise grow every request's future.
        None => Box::pin(connect(addr)).await?,
    };
    if let Err(e) = sender.ready().await {
        forget(addr);
        return Err(Failure::Reset(error_chain(&e)));
    }
    sender
        .send_request(request)
        .await
        .map_err(|e| Failure::Reset(error_chain(&e)))
}

fn cached(addr: SocketAddr) -> Option<SendRequest<Body>> {
    CONNECTIONS.with(|c| {
        let mut c = c.borrow_mut();
        match c.get(&addr) {
            Some(sender) if !sender.is_closed() => Some(sender.clone()),
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

async fn connect(addr: SocketAddr) -> Result<SendRequest<Body>, Failure> {
    let stream = crate::h1::pool::connect(addr)
        .await
        .map_err(Failure::Connect)?;
    let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Failure::Connect(format!("{addr}: HTTP/2 handshake: {}", error_chain(&e))))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(%addr, error = %e, "upstream HTTP/2 connection ended");
        }
    });
    CONNECTIONS.with(|c| c.borrow_mut().insert(addr, sender.clone()));
    Ok(sender)
}
