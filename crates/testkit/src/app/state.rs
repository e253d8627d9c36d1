//! What a running fake app knows and can be told: its identity, the behaviour flags that tests
//! flip at run time, and the request counters.
//!
//! Everything here is atomics so that request handlers never take a lock.

use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, StatusCode, Version};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::Duration;
use tokio::sync::Notify;

/// Requests served by one fake app, counted when they arrive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestCounts {
    /// Every request, whatever its protocol.
    pub total: u64,
    /// HTTP/1.0 and HTTP/1.1 requests that are not gRPC.
    pub http1: u64,
    /// HTTP/2 requests that are not gRPC.
    pub http2: u64,
    /// gRPC requests (`content-type: application/grpc*`).
    pub grpc: u64,
    /// Request body bytes read in full by plain HTTP requests (gRPC messages not included).
    pub body_bytes: u64,
}

/// Which counter a request goes to, and which handler answers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    Http1,
    Http2,
    Grpc,
}

impl Protocol {
    pub(crate) fn of<B>(req: &Request<B>) -> Self {
        let content_type = req.headers().get(CONTENT_TYPE).map(HeaderValue::as_bytes);
        if content_type.is_some_and(|ct| ct.starts_with(b"application/grpc")) {
            Protocol::Grpc
        } else if req.version() == Version::HTTP_2 {
            Protocol::Http2
        } else {
            Protocol::Http1
        }
    }
}

/// Who the app says it is; header values are checked once, when the app starts.
#[derive(Debug)]
pub(crate) struct Identity {
    pub service: String,
    pub version: String,
    pub instance: String,
    pub version_header: HeaderValue,
}

#[derive(Debug)]
pub(crate) struct AppState {
    pub identity: Identity,
    error_rate_bits: AtomicU64,
    latency_nanos: AtomicU64,
    failing: AtomicBool,
    total: AtomicU64,
    http1: AtomicU64,
    http2: AtomicU64,
    grpc: AtomicU64,
    body_bytes: AtomicU64,
    /// Woken after every counted request, for tests waiting on arrivals.
    arrived: Notify,
}

impl AppState {
    pub(crate) fn new(identity: Identity, error_rate: f64, latency: Duration) -> Self {
        let state = AppState {
            identity,
            error_rate_bits: AtomicU64::new(0),
            latency_nanos: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            total: AtomicU64::new(0),
            http1: AtomicU64::new(0),
            http2: AtomicU64::new(0),
            grpc: AtomicU64::new(0),
            body_bytes: AtomicU64::new(0),
            arrived: Notify::new(),
        };
        state.set_error_rate(error_rate);
        state.set_latency(latency);
        state
    }

    pub(crate) fn count(&self, protocol: Protocol) {
        self.total.fetch_add(1, SeqCst);
        let counter = match protocol {
            Protocol::Http1 => &self.http1,
            Protocol::Http2 => &self.http2,
            Protocol::Grpc => &self.grpc,
        };
        counter.fetch_add(1, SeqCst);
        self.arrived.notify_waiters();
    }

    pub(crate) fn count_body(&self, bytes: usize) {
        self.body_bytes.fetch_add(bytes as u64, SeqCst);
    }

    /// Resolves once `total` requests have arrived.
    pub(crate) async fn arrivals(&self, total: u64) -> RequestCounts {
        loop {
            let notified = self.arrived.notified();
            tokio::pin!(notified);
            // Registered before the check, so an arrival in between is not missed.
            notified.as_mut().enable();
            let counts = self.counts();
            if counts.total >= total {
                return counts;
            }
            notified.await;
        }
    }

    pub(crate) fn counts(&self) -> RequestCounts {
        RequestCounts {
            total: self.total.load(SeqCst),
            http1: self.http1.load(SeqCst),
            http2: self.http2.load(SeqCst),
            grpc: self.grpc.load(SeqCst),
            body_bytes: self.body_bytes.load(SeqCst),
        }
    }

    /// Callers validate the rate with [`check_error_rate`] first.
    pub(crate) fn set_error_rate(&self, rate: f64) {
        self.error_rate_bits.store(rate.to_bits(), SeqCst);
    }

    pub(crate) fn error_rate(&self) -> f64 {
        f64::from_bits(self.error_rate_bits.load(SeqCst))
    }

    pub(crate) fn set_latency(&self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.latency_nanos.store(nanos, SeqCst);
    }

    pub(crate) fn latency(&self) -> Duration {
        Duration::from_nanos(self.latency_nanos.load(SeqCst))
    }

    pub(crate) fn set_failing(&self, failing: bool) {
        self.failing.store(failing, SeqCst);
    }

    pub(crate) fn is_failing(&self) -> bool {
        self.failing.load(SeqCst)
    }

    /// Whether this request gets an injected failure: always while failing, else by error rate.
    pub(crate) fn inject_failure(&self) -> bool {
        let rate = self.error_rate();
        self.is_failing() || (rate > 0.0 && rand::random::<f64>() < rate)
    }

    /// The configured added latency; a zero latency does not yield to the scheduler.
    pub(crate) async fn delay(&self) {
        let latency = self.latency();
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
    }
}

/// Error rates are fractions: anything else is a caller's mistake, reported, never clamped.
pub(crate) fn check_error_rate(rate: f64) -> anyhow::Result<()> {
    if (0.0..=1.0).contains(&rate) {
        Ok(())
    } else {
        anyhow::bail!("error rate {rate} is out of range: it must be a fraction from 0.0 to 1.0")
    }
}

/// A status code from a `/status/<code>` path; 1xx cannot be a final answer.
pub(crate) fn final_status(code: &str) -> Result<StatusCode, String> {
    let status = code
        .parse::<u16>()
        .ok()
        .and_then(|c| StatusCode::from_u16(c).ok());
    match status {
        Some(s) if !s.is_informational() => Ok(s),
        _ => Err(format!(
            "/status/{code}: expected a status code from 200 to 999"
        )),
    }
}
