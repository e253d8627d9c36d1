//! The ports the proxy serves. `reconcile` makes the running listeners match the table's: new
//! ones are bound at once (so a port that cannot be bound rejects the config), changed route
//! configurations are switched without rebinding, removed listeners stop accepting.
//!
//! Connections serve HTTP/1.x and HTTP/2 (prior knowledge, detected per connection). On drain,
//! listeners stop accepting and every connection finishes its in-flight requests, within a bound.

use crate::http::{Direction, ListenerCtx, ProxyCore};
use crate::metrics::source::OwnSource;
use crate::metrics::Destination;
use crate::table::ListenerSpec;
use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// Requests whose headers exceed this get 431; HTTP/1 requests with more than `MAX_HEADERS`
/// header fields too.
pub const MAX_HEADER_BYTES: usize = 60 * 1024;
pub const MAX_HEADERS: usize = 100;
/// A client that has not sent a full request head within this is disconnected.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

struct Running {
    addr: SocketAddr,
    ctx: Arc<ArcSwap<ListenerCtx>>,
    stop: watch::Sender<bool>,
}

/// Identity of the local service: the destination of inbound requests and the source of
/// outbound ones (empty when `--service` / `--service-version` are not given).
#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub service: String,
    pub version: String,
}

pub struct Listeners {
    core: Arc<ProxyCore>,
    identity: Identity,
    /// The identity as outbound listeners announce it: built once, shared by every request.
    own_source: Option<OwnSource>,
    running: Mutex<HashMap<String, Running>>,
    draining: watch::Sender<bool>,
    /// Downstream connections being served (a drain waits for them).
    connections: Arc<OpenCount>,
}

impl std::fmt::Debug for Listeners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listeners").finish_non_exhaustive()
    }
}

impl Listeners {
    pub fn new(core: Arc<ProxyCore>, identity: Identity) -> Arc<Self> {
        let (draining, _) = watch::channel(false);
        let own_source = OwnSource::new(&identity.service, &identity.version);
        Arc::new(Self {
            core,
            identity,
            own_source,
            running: Mutex::default(),
            draining,
            connections: Arc::default(),
        })
    }

    /// The addresses being served, by listener name.
    pub fn addresses(&self) -> Vec<(String, SocketAddr)> {
        let running = self.lock();
        let mut out: Vec<_> = running.iter().map(|(n, r)| (n.clone(), r.addr)).collect();
        out.sort();
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Make the running listeners match `specs`. Binding errors reject the whole change.
    pub fn reconcile(&self, specs: &[ListenerSpec]) -> Result<(), String> {
        let mut running = self.lock();
        let mut bound = Vec::new();
        for spec in specs {
            match running.get(&spec.name) {
                Some(r) if r.addr == spec.addr => continue,
                _ => {}
            }
            let std_listener = std::net::TcpListener::bind(spec.addr)
                .map_err(|e| format!("Listener {}: cannot bind {}: {e}", spec.name, spec.addr))?;
            std_listener
                .set_nonblocking(true)
                .map_err(|e| format!("Listener {}: {e}", spec.name))?;
            bound.push((spec, std_listener));
        }
        let wanted: HashMap<&str, &ListenerSpec> =
            specs.iter().map(|s| (s.name.as_str(), s)).collect();
        running.retain(|name, r| {
            let keep = wanted.get(name.as_str()).is_some_and(|s| s.addr == r.addr);
            if !keep {
                let _ = r.stop.send(true);
                tracing::info!(listener = %name, addr = %r.addr, "listener removed");
            }
            keep
        });
        for (name, r) in running.iter() {
            if let Some(spec) = wanted.get(name.as_str()) {
                if r.ctx.load().route_config != spec.route_config || r.ctx.load().tcp != spec.tcp {
                    r.ctx.store(Arc::new(self.ctx(spec)));
                }
            }
        }
        for (spec, std_listener) in bound {
            let listener = tokio::net::TcpListener::from_std(std_listener)
                .map_err(|e| format!("Listener {}: {e}", spec.name))?;
            let ctx = Arc::new(ArcSwap::from_pointee(self.ctx(spec)));
            let (stop, stop_rx) = watch::channel(false);
            tokio::spawn(self.accept_loop(listener, ctx.clone(), stop_rx));
            tracing::info!(listener = %spec.name, addr = %spec.addr, route = %spec.route_config, "listening");
            running.insert(
                spec.name.clone(),
                Running {
                    addr: spec.addr,
                    ctx,
                    stop,
                },
            );
        }
        Ok(())
    }

    fn ctx(&self, spec: &ListenerSpec) -> ListenerCtx {
        let inbound = spec.name.starts_with("inbound");
        ListenerCtx {
            route_config: spec.route_config.clone(),
            direction: if inbound {
                Direction::Inbound
            } else {
                Direction::Outbound
            },
            identity: inbound
                .then(|| Destination::new(&self.identity.service, &self.identity.version)),
            own_source: if inbound {
                None
            } else {
                self.own_source.clone()
            },
            tcp: spec.tcp.clone(),
        }
    }

    fn accept_loop(
        &self,
        listener: tokio::net::TcpListener,
        ctx: Arc<ArcSwap<ListenerCtx>>,
        mut stop: watch::Receiver<bool>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let core = self.core.clone();
        let mut draining = self.draining.subscribe();
        let connections = self.connections.clone();
        async move {
            loop {
                let (stream, peer) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                    _ = stop.changed() => return,
                    _ = draining.changed() => return,
                };
                let conn = Connection {
                    core: core.clone(),
                    ctx: ctx.clone(),
                    draining: draining.clone(),
                    connections: connections.clone(),
                };
                tokio::spawn(conn.serve(stream, peer));
            }
        }
    }

    /// Stop accepting everywhere and let open connections finish, and the tunnels upgraded
    /// connections became, waiting at most `limit`.
    pub async fn drain(&self, limit: Duration) -> bool {
        let _ = self.draining.send(true);
        let wait = async {
            // A tunnel is counted before its connection ends, so none starts after this.
            self.connections.until_none().await;
            self.core.tunnels.until_none().await;
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }
}

/// How many of something are open (connections, tunnels), and a wake-up as each closes.
#[derive(Debug, Default)]
pub struct OpenCount {
    open: AtomicUsize,
    closed: Notify,
}

impl OpenCount {
    /// Counts one open until the returned guard is dropped.
    pub fn open(self: &Arc<Self>) -> OpenGuard {
        self.open.fetch_add(1, Ordering::SeqCst);
        OpenGuard(self.clone())
    }

    pub fn count(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Resolves once none is open.
    pub async fn until_none(&self) {
        loop {
            let notified = self.closed.notified();
            tokio::pin!(notified);
            // Registered before the check, so a close in between is not missed.
            notified.as_mut().enable();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

pub struct OpenGuard(Arc<OpenCount>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
        self.0.closed.notify_waiters();
    }
}

struct Connection {
    core: Arc<ProxyCore>,
    ctx: Arc<ArcSwap<ListenerCtx>>,
    draining: watch::Receiver<bool>,
    connections: Arc<OpenCount>,
}

impl Connection {
    async fn serve(mut self, mut stream: tokio::net::TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let _open = self.connections.open();
        self.core.metrics.connections.inc();
        if let Some(route) = self.ctx.load().tcp.clone() {
            crate::tcp::serve(self.core.clone(), route, stream).await;
            self.core.metrics.connections.dec();
            return;
        }
        let served =
            crate::h1::serve(&self.core, &self.ctx, &mut stream, peer, &mut self.draining).await;
        if let crate::h1::Served::Handover(read) = served {
            let h2 = read.starts_with(crate::h1::H2_PREFACE_START);
            let stream = crate::h1::Prefixed::new(read, stream);
            if h2 {
                let (core, ctx) = (self.core.clone(), self.ctx.clone());
                crate::h2::server::serve(core, ctx, stream, peer, &mut self.draining).await;
            } else {
                self.serve_general(stream, peer).await;
            }
        }
        self.core.metrics.connections.dec();
    }

    /// The general path (hyper): the HTTP/1 requests the fast path hands over.
    async fn serve_general(
        &mut self,
        stream: crate::h1::Prefixed<tokio::net::TcpStream>,
        peer: SocketAddr,
    ) {
        let core = self.core.clone();
        let ctx = self.ctx.clone();
        let service = service_fn(move |req| {
            let core = core.clone();
            let ctx = ctx.load_full();
            async move {
                let req = req.map(crate::http::body::incoming);
                Ok::<_, Infallible>(core.handle(ctx, req, peer).await)
            }
        });
        // hyper reads through the fast path's framing rules (see h1/guard.rs).
        let (stream, refused) = crate::h1::guard::Guarded::new(stream);
        // HTTP/2 never gets here (the fast path hands it to h2/), so this is hyper's HTTP/1.
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .max_buf_size(MAX_HEADER_BYTES.max(8192))
            .max_headers(MAX_HEADERS)
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        tokio::pin!(conn);
        let draining_now = *self.draining.borrow();
        if draining_now {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        } else {
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = self.draining.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
                () = refused.notified() => {
                    // Answers to the requests before the refused one still go out, then the
                    // refusal (written at shutdown).
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        }
    }
}
