//! The proxy's xDS client: one ADS stream (state of the world) to one of several control planes,
//! generic over typed handlers.
//!
//! Each resource type has one [`Handler`]. A response is decoded into the handler's message type
//! and handed over whole; the handler either accepts it (ACK) or rejects it with an error (NACK,
//! with nothing of it applied). Handlers keep what they accepted, so on a NACK and across
//! disconnects the proxy runs on its last-known-good config.

pub mod client;

pub use client::{Subscriptions, XdsClient, XdsClientConfig, XdsStatus};

/// Receives the complete current set of one resource type, as the latest response carries it.
///
/// For LDS and CDS (wildcard subscriptions) a resource absent from the set has been removed. For
/// RDS and EDS the set holds the subscribed resources the server knows.
pub trait Handler<T>: Send + Sync + 'static {
    /// Validate and apply `resources`. Return `Err(message)` to reject the whole response; the
    /// message goes back to the control plane in the NACK. A handler may change what other types
    /// are subscribed to (e.g. listeners name route configurations) through `subscriptions`.
    fn handle(&self, resources: Vec<T>, subscriptions: &Subscriptions) -> Result<(), String>;
}
