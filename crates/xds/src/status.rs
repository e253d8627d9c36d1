//! What each connected xDS client has been sent, has ACKed and has NACKed: the data behind
//! `/debug/syncz` and `graymesh proxy-status`.

use crate::node::{NodeKind, ProxyClass};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Default, Serialize)]
pub struct TypeSync {
    /// Names the client asked for; `["*"]` for a wildcard subscription.
    pub subscribed: Vec<String>,
    pub resources_sent: usize,
    pub sent_version: String,
    pub sent_nonce: String,
    pub acked_version: String,
    pub acked_nonce: String,
    /// The error of the last NACK, until a later response is ACKed.
    pub nack: Option<String>,
    pub pushes: u64,
    /// Resources whose newest version is held back until the client ACKs the clusters (and
    /// endpoints) they point at (make-before-break; at most the hold timeout).
    pub held_back: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClientSync {
    pub stream_id: u64,
    pub node_id: String,
    pub user_agent: String,
    pub kind: NodeKind,
    pub namespace: String,
    /// `sotw` or `delta`.
    pub protocol: &'static str,
    pub peer: Option<String>,
    /// Where the proxy serves its admin API and `/metrics` (node metadata `ADMIN_ADDR`), for
    /// pilot's telemetry scraper. Kept per stream, not in the [`ProxyClass`]: it does not change
    /// what the node is sent.
    pub admin_addr: Option<SocketAddr>,
    pub connected_at_unix: u64,
    /// Keyed by type URL.
    pub types: BTreeMap<String, TypeSync>,
    /// What the node's resources depend on (for config dumps of this node).
    pub class: ProxyClass,
}

/// A connected proxy's admin server, as pilot's telemetry scraper needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdminTarget {
    pub node_id: String,
    pub kind: NodeKind,
    pub namespace: String,
    pub admin_addr: SocketAddr,
}

#[derive(Debug, Clone, Default)]
pub struct SyncStatus {
    clients: Arc<Mutex<BTreeMap<u64, ClientSync>>>,
    next_id: Arc<AtomicU64>,
}

/// Removes its client from the status when the stream ends.
#[derive(Debug)]
pub struct ClientHandle {
    status: SyncStatus,
    pub id: u64,
}

impl Drop for ClientHandle {
    fn drop(&mut self) {
        self.status.lock().remove(&self.id);
    }
}

impl SyncStatus {
    pub fn connect(&self, mut client: ClientSync) -> ClientHandle {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        client.stream_id = id;
        client.connected_at_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.lock().insert(id, client);
        ClientHandle {
            status: self.clone(),
            id,
        }
    }

    pub fn update(&self, id: u64, type_url: &str, f: impl FnOnce(&mut TypeSync)) {
        if let Some(c) = self.lock().get_mut(&id) {
            f(c.types.entry(type_url.to_string()).or_default());
        }
    }

    pub fn clients(&self) -> Vec<ClientSync> {
        self.lock().values().cloned().collect()
    }

    /// The class of a connected node, by node id.
    pub fn class_of(&self, node_id: &str) -> Option<ProxyClass> {
        self.lock()
            .values()
            .find(|c| c.node_id == node_id)
            .map(|c| c.class.clone())
    }

    /// The proxies (sidecars and gateways) connected now that announced an admin address, one
    /// entry per node id (a node with two streams, e.g. reconnecting, is listed once).
    pub fn admin_targets(&self) -> Vec<AdminTarget> {
        let mut by_node: BTreeMap<String, AdminTarget> = BTreeMap::new();
        for c in self.lock().values() {
            let Some(admin_addr) = c.admin_addr.filter(|_| c.kind.is_proxy()) else {
                continue;
            };
            by_node.insert(
                c.node_id.clone(),
                AdminTarget {
                    node_id: c.node_id.clone(),
                    kind: c.kind,
                    namespace: c.namespace.clone(),
                    admin_addr,
                },
            );
        }
        by_node.into_values().collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, ClientSync>> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(node: &str, class: ProxyClass, admin: Option<&str>) -> ClientSync {
        ClientSync {
            stream_id: 0,
            node_id: node.into(),
            user_agent: String::new(),
            kind: class.kind,
            namespace: class.namespace.clone(),
            protocol: "sotw",
            peer: None,
            admin_addr: admin.map(|a| a.parse().unwrap()),
            connected_at_unix: 0,
            types: BTreeMap::new(),
            class,
        }
    }

    #[test]
    fn admin_targets_are_the_connected_proxies_that_announced_one() {
        let status = SyncStatus::default();
        let gateway = ProxyClass::gateway("edge", BTreeMap::new());
        let _a = status.connect(client(
            "a",
            ProxyClass::sidecar("default"),
            Some("127.0.0.1:15000"),
        ));
        // The same node on a second stream (reconnecting) is listed once.
        let _a2 = status.connect(client(
            "a",
            ProxyClass::sidecar("default"),
            Some("127.0.0.1:15000"),
        ));
        let _g = status.connect(client("gw", gateway, Some("127.0.0.2:15000")));
        let _no_admin = status.connect(client("b", ProxyClass::sidecar("default"), None));
        let _grpc = status.connect(client(
            "c",
            ProxyClass::proxyless("default"),
            Some("127.0.0.3:1"),
        ));
        let gone = status.connect(client(
            "d",
            ProxyClass::sidecar("default"),
            Some("127.0.0.4:1"),
        ));
        drop(gone);
        let targets: Vec<(String, NodeKind, String)> = status
            .admin_targets()
            .into_iter()
            .map(|t| (t.node_id, t.kind, t.admin_addr.to_string()))
            .collect();
        assert_eq!(
            targets,
            [
                ("a".into(), NodeKind::Sidecar, "127.0.0.1:15000".into()),
                ("gw".into(), NodeKind::Gateway, "127.0.0.2:15000".into()),
            ]
        );
    }
}
