//! The general path's HTTP/1 client: hyper's, one per cluster connect timeout in use, and its
//! connector: hyper's own, with each connection counted in the upstream connection metrics for
//! as long as hyper keeps it (pooled, in use, or upgraded into a tunnel), and each failed
//! connect counted as a failure.

use super::body::Body;
use crate::metrics::upstream::{ConnectionMetrics, OpenConnection};
use arc_swap::ArcSwap;
use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;
use tower_service::Service;

pub type H1Client = Client<CountedConnector, Body>;

/// Distinct connect timeouts kept; past this many (a control plane varying them without end)
/// the clients start over (requests in progress keep theirs).
const MAX_CLIENTS: usize = 32;

/// hyper's HTTP/1 client for requests the general path sends as HTTP/1 (from HTTP/2 clients,
/// handed-over connections, upgrades, mirrors). Its connect timeout is set per connector, so
/// there is one client (and pool) per cluster connect timeout: few distinct values in practice.
#[derive(Debug)]
pub struct H1Clients {
    metrics: ConnectionMetrics,
    by_timeout: ArcSwap<Vec<(Duration, H1Client)>>,
    adding: Mutex<()>,
}

impl H1Clients {
    pub fn new(metrics: ConnectionMetrics) -> Self {
        Self {
            metrics,
            by_timeout: ArcSwap::default(),
            adding: Mutex::new(()),
        }
    }

    /// The client whose new connections give up after `connect_timeout`.
    pub fn get(&self, connect_timeout: Duration) -> H1Client {
        if let Some(client) = find(&self.by_timeout.load(), connect_timeout) {
            return client;
        }
        let _one_at_a_time = self.adding.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.by_timeout.load_full();
        if let Some(client) = find(&current, connect_timeout) {
            return client;
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect_timeout).filter(|t| !t.is_zero()));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(CountedConnector::new(connector, self.metrics.clone()));
        let mut next = if current.len() < MAX_CLIENTS {
            (*current).clone()
        } else {
            Vec::new()
        };
        next.push((connect_timeout, client.clone()));
        self.by_timeout.store(Arc::new(next));
        client
    }
}

fn find(clients: &[(Duration, H1Client)], timeout: Duration) -> Option<H1Client> {
    clients
        .iter()
        .find(|(t, _)| *t == timeout)
        .map(|(_, c)| c.clone())
}

type ConnectError = <HttpConnector as Service<Uri>>::Error;

#[derive(Debug, Clone)]
pub struct CountedConnector {
    inner: HttpConnector,
    metrics: ConnectionMetrics,
}

impl CountedConnector {
    pub fn new(inner: HttpConnector, metrics: ConnectionMetrics) -> Self {
        Self { inner, metrics }
    }
}

impl Service<Uri> for CountedConnector {
    type Response = Counted;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Counted, ConnectError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let connecting = self.inner.call(dst);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            match connecting.await {
                Ok(io) => Ok(Counted {
                    io,
                    _open: metrics.opened(),
                }),
                Err(e) => {
                    metrics.failed();
                    Err(e)
                }
            }
        })
    }
}

/// A connection counted open until hyper drops it.
#[derive(Debug)]
pub struct Counted {
    io: TokioIo<TcpStream>,
    _open: OpenConnection,
}

impl Connection for Counted {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}

impl Read for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl Write for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}
