//! The general path's HTTP/1 client connector: hyper's own, with each connection counted in the
//! upstream connection metrics for as long as hyper keeps it (pooled, in use, or upgraded into
//! a tunnel), and each failed connect counted as a failure.

use crate::metrics::upstream::{ConnectionMetrics, OpenConnection};
use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::net::TcpStream;
use tower_service::Service;

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
