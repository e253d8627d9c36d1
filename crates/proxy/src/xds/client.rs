//! The xDS client: one state-of-the-world ADS stream at a time, to the first pilot of a list that
//! answers, with typed handlers per resource type.
//!
//! It owns the protocol: what to request and when, ACK or NACK of every response (in one place,
//! `session`), reconnection with jittered backoff, and the status the admin page shows. It never
//! interprets a resource: handlers do, and they keep what they accepted, so a NACK or a lost pilot
//! leaves the proxy on its last-known-good config. It must never block the stream on anything but
//! a handler's (fast, synchronous) `handle`.

mod backoff;
mod decode;
mod session;
mod status;
mod subscriptions;
#[cfg(test)]
mod tests;

pub use status::{TypeStatus, XdsStatus, XdsStatusSnapshot};
pub use subscriptions::{Subscriptions, CLUSTER, ENDPOINT, LISTENER, ROUTE};

use crate::xds::Handler;
use backoff::Backoff;
use decode::{DecodingHandler, Typed};
use envoy_types::pb::envoy::config::core::v3::Node;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct XdsClientConfig {
    /// `host:port` of each pilot, tried in order; a failure moves on to the next, round-robin.
    pub pilots: Vec<String>,
    /// Sent on the first request of every stream.
    pub node: Node,
    /// For the TCP connection and for the pilot to open the stream.
    pub connect_timeout: Duration,
    /// The first reconnection delay (before jitter); doubles per failed attempt.
    pub backoff_initial: Duration,
    /// The ceiling of the reconnection delay.
    pub backoff_max: Duration,
}

impl XdsClientConfig {
    /// A config with the default timings: 5 s to connect, backoff from 100 ms up to 5 s.
    pub fn new(pilots: Vec<String>, node: Node) -> Self {
        Self {
            pilots,
            node,
            connect_timeout: Duration::from_secs(5),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
        }
    }
}

/// Accepted `version_info` by type URL. Outlives streams: it is what the proxy runs on.
type AcceptedVersions = BTreeMap<String, String>;

pub struct XdsClient {
    config: XdsClientConfig,
    handlers: BTreeMap<&'static str, Box<dyn DecodingHandler>>,
    subscriptions: Subscriptions,
    status: XdsStatus,
}

// === impl XdsClient ===

impl XdsClient {
    pub fn new(config: XdsClientConfig) -> Self {
        Self {
            config,
            handlers: BTreeMap::new(),
            subscriptions: Subscriptions::default(),
            status: XdsStatus::default(),
        }
    }

    /// Handle responses of `type_url` with `handler`, decoding each resource into `M`. A later
    /// handler for the same type replaces the earlier one.
    pub fn with_handler<M, H>(mut self, type_url: &'static str, handler: Arc<H>) -> Self
    where
        M: prost::Message + Default + prost::Name + 'static,
        H: Handler<M>,
    {
        debug_assert_eq!(
            M::type_url(),
            type_url,
            "handler message type and type URL differ"
        );
        self.handlers
            .insert(type_url, Box::new(Typed::<M, H>::new(type_url, handler)));
        self
    }

    pub fn subscriptions(&self) -> Subscriptions {
        self.subscriptions.clone()
    }

    pub fn status(&self) -> XdsStatus {
        self.status.clone()
    }

    /// Keep one ADS stream open, forever: on any failure or end, wait (jittered exponential
    /// backoff, reset by a stream that delivered something) and try the next pilot.
    pub async fn run(self) {
        if self.config.pilots.is_empty() {
            tracing::error!("no pilot address configured: the xDS client stays idle");
            self.status
                .update(|s| s.last_error = Some("no pilot address configured".into()));
            return std::future::pending().await;
        }
        let mut backoff = Backoff::new(self.config.backoff_initial, self.config.backoff_max);
        let mut accepted = AcceptedVersions::new();
        for pilot in self.config.pilots.iter().cycle() {
            let responses = session::run(&self, pilot, &mut accepted).await;
            if responses > 0 {
                backoff.reset();
            }
            let delay = backoff.next_delay(&mut rand::rng());
            tracing::debug!(?delay, "waiting before the next xDS connection attempt");
            tokio::time::sleep(delay).await;
        }
    }
}
