//! The fake app: one TCP port answering HTTP/1.0, HTTP/1.1, h2c (prior knowledge) and gRPC, as
//! the backend behind every graymesh proxy test and canary demo.
//!
//! It owns the listener, its connections and the behaviour flags tests flip at run time
//! (error rate, latency, failing). It must never decide anything on a timer of its own: it
//! answers requests and counts them, and stops when told to or when its handle is dropped.

mod grpc;
mod http;
mod state;

pub use state::RequestCounts;

use anyhow::Context;
use http_body_util::BodyExt;
use hyper::body::{Bytes, Incoming};
use hyper::header::HeaderValue;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use state::{check_error_rate, AppState, Identity, Protocol};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

/// The response header naming the version that answered.
pub const X_VERSION: &str = "x-version";

/// How long a graceful shutdown waits for in-flight requests before dropping them.
const GRACE: Duration = Duration::from_secs(5);

pub(crate) type AppBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

pub(crate) fn full_body(bytes: Bytes) -> AppBody {
    http_body_util::Full::new(bytes).boxed()
}

/// Entry point: `FakeApp::builder()....start().await`.
#[derive(Debug)]
pub struct FakeApp;

impl FakeApp {
    pub fn builder() -> FakeAppBuilder {
        FakeAppBuilder::default()
    }
}

// === impl FakeAppBuilder ===

/// How a fake app starts; defaults: service `app`, version `v1`, instance `<service>-<version>`,
/// no errors, no latency, bound to `127.0.0.1:0`.
#[derive(Clone, Debug)]
pub struct FakeAppBuilder {
    service: String,
    version: String,
    instance: Option<String>,
    error_rate: f64,
    latency: Duration,
    bind: SocketAddr,
}

impl Default for FakeAppBuilder {
    fn default() -> Self {
        FakeAppBuilder {
            service: "app".into(),
            version: "v1".into(),
            instance: None,
            error_rate: 0.0,
            latency: Duration::ZERO,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }
}

impl FakeAppBuilder {
    pub fn service(mut self, service: impl Into<String>) -> Self {
        self.service = service.into();
        self
    }

    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    pub fn instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = Some(instance.into());
        self
    }

    /// Fraction (0.0–1.0) of requests answered 500 / gRPC `UNAVAILABLE`; checked by `start`.
    pub fn error_rate(mut self, rate: f64) -> Self {
        self.error_rate = rate;
        self
    }

    /// Delay added before every answer except `/healthz`.
    pub fn latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// Binds the port and serves in the background until the handle shuts it down or is dropped.
    pub async fn start(self) -> anyhow::Result<FakeAppHandle> {
        check_error_rate(self.error_rate)?;
        let identity = self.identity()?;
        let listener = TcpListener::bind(self.bind)
            .await
            .with_context(|| format!("fake app {}: binding {}", identity.instance, self.bind))?;
        let addr = listener.local_addr()?;
        let state = Arc::new(AppState::new(identity, self.error_rate, self.latency));
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(serve(listener, state.clone(), stopped));
        Ok(FakeAppHandle {
            addr,
            state,
            stop: Some(stop),
            task: Some(task),
        })
    }

    fn identity(&self) -> anyhow::Result<Identity> {
        let instance = match &self.instance {
            Some(instance) => instance.clone(),
            None => format!("{}-{}", self.service, self.version),
        };
        let version_header = HeaderValue::from_str(&self.version).with_context(|| {
            format!(
                "fake app version {:?} is not a valid header value",
                self.version
            )
        })?;
        Ok(Identity {
            service: self.service.clone(),
            version: self.version.clone(),
            instance,
            version_header,
        })
    }
}

// === impl FakeAppHandle ===

/// A running fake app. Dropping it stops the app at once; `shutdown` stops it gracefully.
#[derive(Debug)]
pub struct FakeAppHandle {
    addr: SocketAddr,
    state: Arc<AppState>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl FakeAppHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr><path>`, for clients that talk to the app directly.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn service(&self) -> &str {
        &self.state.identity.service
    }

    pub fn version(&self) -> &str {
        &self.state.identity.version
    }

    pub fn instance(&self) -> &str {
        &self.state.identity.instance
    }

    /// Requests counted so far, total and by protocol.
    pub fn requests(&self) -> RequestCounts {
        self.state.counts()
    }

    /// Waits until `total` requests have arrived (not necessarily been answered), at most `within`.
    pub async fn wait_for_requests(
        &self,
        total: u64,
        within: Duration,
    ) -> anyhow::Result<RequestCounts> {
        let arrivals = self.state.arrivals(total);
        let waited = tokio::time::timeout(within, arrivals).await;
        waited.map_err(|_| {
            let seen = self.state.counts().total;
            anyhow::anyhow!(
                "{}: {seen} of {total} requests within {within:?}",
                self.instance()
            )
        })
    }

    /// Changes the injected error rate; rejects anything outside 0.0–1.0.
    pub fn set_error_rate(&self, rate: f64) -> anyhow::Result<()> {
        check_error_rate(rate)?;
        self.state.set_error_rate(rate);
        Ok(())
    }

    pub fn error_rate(&self) -> f64 {
        self.state.error_rate()
    }

    pub fn set_latency(&self, latency: Duration) {
        self.state.set_latency(latency);
    }

    pub fn latency(&self) -> Duration {
        self.state.latency()
    }

    /// While failing, every request (`/healthz` too) is answered 500 / gRPC `UNAVAILABLE`.
    pub fn set_failing(&self, failing: bool) {
        self.state.set_failing(failing);
    }

    pub fn is_failing(&self) -> bool {
        self.state.is_failing()
    }

    /// Stops accepting, lets in-flight requests finish (bounded by a grace period), then returns.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for FakeAppHandle {
    fn drop(&mut self) {
        // Aborting the accept task drops the listener and the set owning every connection.
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

// === serving ===

async fn serve(listener: TcpListener, state: Arc<AppState>, mut stop: oneshot::Receiver<()>) {
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => {
                if let Ok((stream, _peer)) = accepted {
                    connections.spawn(connection(&builder, &graceful, stream, state.clone()));
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(GRACE, graceful.shutdown()).await;
}

fn connection(
    builder: &auto::Builder<TokioExecutor>,
    graceful: &GracefulShutdown,
    stream: TcpStream,
    state: Arc<AppState>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let _ = stream.set_nodelay(true);
    let service = hyper::service::service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(answer(req, &state).await) }
    });
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    let conn = graceful.watch(conn.into_owned());
    async move {
        // A peer resetting the connection is normal in proxy tests, not an app error.
        let _ = conn.await;
    }
}

async fn answer(req: Request<Incoming>, state: &AppState) -> Response<AppBody> {
    let protocol = Protocol::of(&req);
    state.count(protocol);
    match protocol {
        Protocol::Grpc => grpc::respond(req, state).await,
        Protocol::Http1 | Protocol::Http2 => http::respond(req, state).await,
    }
}
