//! The connector under every testkit client: dial the URL's own host, or always one fixed
//! address (`via`) while the URL keeps naming the service, the way a sidecar's client sees it.
//!
//! It must never resolve names through anything but the standard resolver or dial anything
//! beyond what the test asked for.

use hyper::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::net::TcpStream;

type Connecting = Pin<Box<dyn Future<Output = Result<TokioIo<TcpStream>, ConnectError>> + Send>>;
/// hyper-util does not export its connect error by name.
type ConnectError = <HttpConnector as tower_service::Service<Uri>>::Error;

/// Dials `via` when set, else the host named in the request URI.
#[derive(Clone, Debug)]
pub(crate) struct ViaConnector {
    inner: HttpConnector,
    via: Option<SocketAddr>,
}

impl ViaConnector {
    pub(crate) fn new(via: Option<SocketAddr>) -> Self {
        let mut inner = HttpConnector::new();
        inner.set_nodelay(true);
        ViaConnector { inner, via }
    }
}

impl tower_service::Service<Uri> for ViaConnector {
    type Response = TokioIo<TcpStream>;
    type Error = ConnectError;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let target = match self.via {
            Some(addr) => Uri::try_from(format!("http://{addr}")).unwrap_or(uri),
            None => uri,
        };
        Box::pin(self.inner.call(target))
    }
}

/// A pooled keep-alive client; `http2_only` speaks h2c with prior knowledge.
pub(crate) fn pooled_client<B>(http2_only: bool, via: Option<SocketAddr>) -> Client<ViaConnector, B>
where
    B: hyper::body::Body + Send,
    B::Data: Send,
{
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .http2_only(http2_only)
        .build(ViaConnector::new(via))
}

/// An error with its causes, which hyper keeps out of `Display`.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
