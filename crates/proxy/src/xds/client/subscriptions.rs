//! What the proxy asks the control plane for, per resource type. Handlers change it while they
//! apply a response (listeners name route configurations, clusters name load assignments); the
//! stream notices and sends the new set. This module only holds the sets: it never sends.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tokio::sync::watch;

pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

/// The order requests go out after a (re)connect: a type is requested before the types that
/// reference it would need it (clusters before their endpoints, listeners before their routes).
const REQUEST_ORDER: [&str; 4] = [CLUSTER, ENDPOINT, LISTENER, ROUTE];

/// Subscribed names by type URL. An empty set for a wildcard type means "everything".
pub(super) type SubscriptionMap = BTreeMap<String, BTreeSet<String>>;

/// A cloneable handle on the subscriptions of one [`super::XdsClient`].
#[derive(Debug, Clone)]
pub struct Subscriptions {
    sets: Arc<watch::Sender<SubscriptionMap>>,
}

impl Default for Subscriptions {
    /// Listeners and clusters by wildcard; routes and endpoints only once something names them.
    fn default() -> Self {
        let initial = [LISTENER, CLUSTER]
            .into_iter()
            .map(|t| (t.to_string(), BTreeSet::new()))
            .collect();
        Self {
            sets: Arc::new(watch::Sender::new(initial)),
        }
    }
}

impl Subscriptions {
    /// Subscribe `type_url` to exactly `names`. The client sends a request only if this changes
    /// the set; a change made inside [`super::Handler::handle`] goes out after that response's
    /// ACK. For listeners and clusters an empty set is the wildcard.
    pub fn set(&self, type_url: &str, names: BTreeSet<String>) {
        self.sets.send_if_modified(|sets| {
            if sets.get(type_url) == Some(&names) {
                return false;
            }
            sets.insert(type_url.to_string(), names);
            true
        });
    }

    /// The names `type_url` is subscribed to, if it is subscribed at all.
    pub fn get(&self, type_url: &str) -> Option<BTreeSet<String>> {
        self.sets.borrow().get(type_url).cloned()
    }

    pub(super) fn watch(&self) -> watch::Receiver<SubscriptionMap> {
        self.sets.subscribe()
    }
}

/// Whether an empty subscription to `type_url` means "everything".
pub(super) fn is_wildcard_type(type_url: &str) -> bool {
    type_url == LISTENER || type_url == CLUSTER
}

/// The type URLs of `sets` in request order: the four Envoy types first, then any others by name.
pub(super) fn in_request_order(sets: &SubscriptionMap) -> Vec<&str> {
    let mut types: Vec<&str> = sets.keys().map(String::as_str).collect();
    types.sort_by_key(|t| {
        let rank = REQUEST_ORDER.iter().position(|o| o == t);
        (rank.unwrap_or(REQUEST_ORDER.len()), *t)
    });
    types
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn starts_with_wildcard_listeners_and_clusters_only() {
        let subs = Subscriptions::default();
        assert_eq!(subs.get(LISTENER), Some(BTreeSet::new()));
        assert_eq!(subs.get(CLUSTER), Some(BTreeSet::new()));
        assert_eq!(subs.get(ROUTE), None);
        assert_eq!(subs.get(ENDPOINT), None);
    }

    #[test]
    fn only_a_real_change_notifies() {
        let subs = Subscriptions::default();
        let mut rx = subs.watch();
        rx.borrow_and_update();
        subs.set(ROUTE, names(&["a"]));
        assert!(rx.has_changed().unwrap_or(false));
        rx.borrow_and_update();
        subs.set(ROUTE, names(&["a"]));
        assert!(!rx.has_changed().unwrap_or(true), "same set again");
    }

    #[test]
    fn request_order_is_cds_eds_lds_rds_then_others() {
        let mut sets = SubscriptionMap::new();
        for t in [
            "type.googleapis.com/x.Secret",
            ROUTE,
            LISTENER,
            ENDPOINT,
            CLUSTER,
        ] {
            sets.insert(t.to_string(), BTreeSet::new());
        }
        assert_eq!(
            in_request_order(&sets),
            [
                CLUSTER,
                ENDPOINT,
                LISTENER,
                ROUTE,
                "type.googleapis.com/x.Secret"
            ]
        );
    }
}
