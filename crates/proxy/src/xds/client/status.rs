//! What the xDS client is connected to and what it accepted or rejected, per type: the data
//! behind the proxy's admin `/config_dump`. The client writes it; everyone else only reads or
//! waits for a change. Nothing here ever blocks the stream.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::watch;

/// One resource type as the client last saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TypeStatus {
    /// Names last requested; `["*"]` for a wildcard subscription.
    pub subscribed: Vec<String>,
    /// The `version_info` of the last response the handler accepted (empty if none yet).
    pub accepted_version: String,
    /// The nonce of the last response received.
    pub last_nonce: String,
    /// The error of the last NACK, until a later response of this type is accepted.
    pub nack: Option<String>,
    /// Responses received, accepted or not, over all streams.
    pub responses: u64,
}

/// A snapshot of the client.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct XdsStatusSnapshot {
    /// An ADS stream is open.
    pub connected: bool,
    /// The pilot of the open stream, or of the last attempt while disconnected.
    pub pilot: Option<String>,
    /// Connection attempts since start, successful or not.
    pub connect_attempts: u64,
    /// Why the last connection attempt or stream failed.
    pub last_error: Option<String>,
    /// Keyed by type URL.
    pub types: BTreeMap<String, TypeStatus>,
}

/// A cloneable handle on the client's status. Serializes as its current snapshot.
#[derive(Debug, Clone, Default)]
pub struct XdsStatus {
    current: Arc<watch::Sender<XdsStatusSnapshot>>,
}

impl XdsStatus {
    pub fn snapshot(&self) -> XdsStatusSnapshot {
        self.current.borrow().clone()
    }

    /// Wait until `ready` holds for the status (at once if it already does). Callers bound the
    /// wait themselves (e.g. with `tokio::time::timeout`).
    pub async fn wait_for(
        &self,
        mut ready: impl FnMut(&XdsStatusSnapshot) -> bool,
    ) -> XdsStatusSnapshot {
        let mut rx = self.current.subscribe();
        let seen = rx.wait_for(|s| ready(s)).await.map(|s| s.clone());
        // An error is unreachable (`self` holds the sender); answer with what there is.
        seen.unwrap_or_else(|_| self.snapshot())
    }

    pub(super) fn update(&self, f: impl FnOnce(&mut XdsStatusSnapshot)) {
        self.current.send_modify(f);
    }

    pub(super) fn update_type(&self, type_url: &str, f: impl FnOnce(&mut TypeStatus)) {
        self.update(|s| f(s.types.entry(type_url.to_string()).or_default()));
    }
}

impl Serialize for XdsStatus {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.current.borrow().serialize(serializer)
    }
}
