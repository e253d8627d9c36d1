//! Table tests of the planner: a fake client whose subscriptions, sent and ACKed state each row
//! sets, and the plan expected at each step.

use super::*;
use crate::resources::ByName;
use crate::translate::Translation;
use envoy_types::pb::envoy::config::cluster::v3::{
    cluster::{ClusterDiscoveryType, DiscoveryType},
    Cluster,
};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::{ApiListener, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    route::Action, route_action::ClusterSpecifier, weighted_cluster::ClusterWeight, Route,
    RouteAction, RouteConfiguration, VirtualHost, WeightedCluster,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager, Rds,
};
use prost::{Message, Name};

const C: TypeUrl = TypeUrl::Cluster;
const E: TypeUrl = TypeUrl::Endpoint;
const L: TypeUrl = TypeUrl::Listener;
const R: TypeUrl = TypeUrl::Route;

// === the world ===

/// A world: EDS clusters with their load assignments, route `r` splitting over `route_to`
/// (a weight each, so a new split is a new version), listener `l` reading `r` over RDS.
fn world(clusters: &[&str], route_to: &[&str]) -> ResourceSet {
    world_of(clusters.iter().map(|c| cluster(c)).collect(), route_to)
}

fn world_of(clusters: Vec<Cluster>, route_to: &[&str]) -> ResourceSet {
    ResourceSet::from_translation(&Translation {
        listeners: vec![listener("l", "r")],
        routes: vec![route("r", route_to)],
        endpoints: clusters
            .iter()
            .map(|c| ClusterLoadAssignment {
                cluster_name: c.name.clone(),
                ..Default::default()
            })
            .collect(),
        clusters,
    })
}

fn cluster(name: &str) -> Cluster {
    Cluster {
        name: name.into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        ..Default::default()
    }
}

fn route(name: &str, to: &[&str]) -> RouteConfiguration {
    let weighted = WeightedCluster {
        clusters: to
            .iter()
            .map(|c| ClusterWeight {
                name: c.to_string(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let action = RouteAction {
        cluster_specifier: Some(ClusterSpecifier::WeightedClusters(weighted)),
        ..Default::default()
    };
    RouteConfiguration {
        name: name.into(),
        virtual_hosts: vec![VirtualHost {
            routes: vec![Route {
                action: Some(Action::Route(action)),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn listener(name: &str, route: &str) -> Listener {
    let hcm = HttpConnectionManager {
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            route_config_name: route.into(),
            ..Default::default()
        })),
        ..Default::default()
    };
    Listener {
        name: name.into(),
        api_listener: Some(ApiListener {
            api_listener: Some(envoy_types::pb::google::protobuf::Any {
                type_url: HttpConnectionManager::type_url(),
                value: hcm.encode_to_vec(),
            }),
        }),
        ..Default::default()
    }
}

// === a fake client ===

/// Every type subscribed by wildcard unless `by_name` says otherwise.
#[derive(Default)]
struct Client {
    by_name: BTreeMap<TypeUrl, BTreeSet<String>>,
    unsubscribed: BTreeSet<TypeUrl>,
    sent: BTreeMap<TypeUrl, ByName>,
    acked: BTreeMap<TypeUrl, ByName>,
    reported_only: bool,
}

impl Client {
    /// Sent and ACKed all of `world`.
    fn synced(world: &ResourceSet) -> Self {
        let mut c = Self::default();
        for t in TypeUrl::ALL {
            c.send(world, t);
            c.ack(t);
        }
        c
    }

    /// Sent `t` as the stream would after `plan`: held ones stay, kept ones stay.
    fn send_planned(&mut self, world: &ResourceSet, plan: &Plan, t: TypeUrl) {
        let old = self.sent.remove(&t).unwrap_or_default();
        let mut now = ByName::new();
        for (n, r) in world.of(t) {
            match (plan.holds(t, n), old.get(n)) {
                (false, _) => drop(now.insert(n.clone(), r.clone())),
                (true, Some(o)) => drop(now.insert(n.clone(), o.clone())),
                (true, None) => {}
            }
        }
        for (n, r) in old.iter().filter(|(n, _)| plan.keeps(t, n)) {
            now.insert(n.clone(), r.clone());
        }
        self.sent.insert(t, now);
    }

    fn send(&mut self, world: &ResourceSet, t: TypeUrl) {
        self.send_planned(world, &Plan::default(), t);
    }

    fn ack(&mut self, t: TypeUrl) {
        let sent = self.sent.get(&t).cloned().unwrap_or_default();
        self.acked.insert(t, sent);
    }

    fn holds(&self, t: TypeUrl) -> impl Iterator<Item = &NamedResource> {
        let sent = self.sent.get(&t).into_iter().flat_map(|m| m.values());
        let acked = self.acked.get(&t).into_iter().flat_map(|m| m.values());
        sent.chain(acked).map(|r| r.as_ref())
    }
}

impl ClientView for Client {
    fn subscribed(&self, t: TypeUrl) -> bool {
        !self.unsubscribed.contains(&t)
    }

    fn delivers(&self, t: TypeUrl, name: &str) -> bool {
        self.subscribed(t) && self.by_name.get(&t).is_none_or(|n| n.contains(name))
    }

    fn acked(&self, t: TypeUrl, name: &str) -> bool {
        self.acked.get(&t).is_some_and(|m| m.contains_key(name))
    }

    fn sent_version(&self, t: TypeUrl, name: &str) -> Option<&str> {
        Some(self.sent.get(&t)?.get(name)?.version.as_str())
    }

    fn referenced_clusters(&self) -> Option<BTreeSet<String>> {
        if self.reported_only {
            return None;
        }
        let refs = self.holds(L).chain(self.holds(R));
        Some(refs.flat_map(|r| r.refs.clusters.iter().cloned()).collect())
    }

    fn clusters(&self) -> Vec<(String, Option<String>)> {
        self.holds(C)
            .map(|r| (r.name.clone(), r.refs.endpoints.clone()))
            .collect()
    }
}

fn held(plan: &Plan) -> Vec<(TypeUrl, &str)> {
    plan.held().collect()
}

fn kept(plan: &Plan) -> Vec<(TypeUrl, &str)> {
    plan.kept.iter().map(|(t, n)| (*t, n.as_str())).collect()
}

// === the table ===

#[test]
fn an_added_cluster_holds_its_route_until_its_cluster_and_endpoints_are_acked() {
    let t0 = Instant::now();
    let mut order = PushOrder::new(HOLD_TIMEOUT);
    let mut client = Client::synced(&world(&["a"], &["a"]));
    let next = world(&["a", "b"], &["a", "b"]);

    // (step, what the client has done, held, kept)
    let plan = order.plan(&next, &client, t0);
    assert_eq!(
        held(&plan),
        [(R, "r")],
        "route waits; its listener is unchanged"
    );
    assert_eq!(plan.wake_at, Some(t0 + HOLD_TIMEOUT));
    client.send(&next, C);
    client.send(&next, E);
    assert_eq!(
        held(&order.plan(&next, &client, t0)),
        [(R, "r")],
        "sent, not ACKed"
    );
    client.ack(C);
    let plan = order.plan(&next, &client, t0);
    assert_eq!(held(&plan), [(R, "r")], "cluster ACKed, endpoints not yet");
    client.ack(E);
    let plan = order.plan(&next, &client, t0);
    assert!(plan.is_quiet(), "{plan:?}");
    assert_eq!(plan.wake_at, None);
}

#[test]
fn a_new_listener_waits_for_the_clusters_of_the_routes_it_reads() {
    let mut order = PushOrder::new(HOLD_TIMEOUT);
    let client = Client::default();
    let plan = order.plan(&world(&["a"], &["a"]), &client, Instant::now());
    assert_eq!(held(&plan), [(L, "l"), (R, "r")]);
}

/// What the client does between two plans.
type Act = fn(&mut Client, &ResourceSet, &Plan);

#[test]
fn a_removed_cluster_stays_until_the_routes_without_it_are_acked() {
    let mut order = PushOrder::new(HOLD_TIMEOUT);
    let mut client = Client::synced(&world(&["a", "b"], &["a", "b"]));
    let next = world(&["a"], &["a"]);
    let steps: [(&str, Act); 3] = [
        ("nothing sent yet", |_, _, _| {}),
        ("route sent", |c, w, p| c.send_planned(w, p, R)),
        ("route ACKed", |c, _, _| c.ack(R)),
    ];
    let mut plan = order.plan(&next, &client, Instant::now());
    for (i, (step, act)) in steps.iter().enumerate() {
        act(&mut client, &next, &plan);
        plan = order.plan(&next, &client, Instant::now());
        assert!(
            held(&plan).is_empty(),
            "{step}: the route has what it needs"
        );
        let expect: &[(TypeUrl, &str)] = if i < 2 { &[(C, "b"), (E, "b")] } else { &[] };
        assert_eq!(kept(&plan), expect, "{step}");
    }
}

#[test]
fn add_and_remove_in_one_generation_make_before_break() {
    let mut order = PushOrder::new(HOLD_TIMEOUT);
    let mut client = Client::synced(&world(&["a"], &["a"]));
    let next = world(&["b"], &["b"]);
    let now = Instant::now();
    let plan = order.plan(&next, &client, now);
    assert_eq!(held(&plan), [(R, "r")]);
    assert_eq!(
        kept(&plan),
        [(C, "a"), (E, "a")],
        "the held route still uses a"
    );
    for t in [C, E, L, R] {
        client.send_planned(&next, &plan, t);
    }
    let sent_route = &client.sent[&R]["r"];
    assert!(
        sent_route.refs.clusters.contains("a"),
        "the old route stays"
    );
    assert_eq!(client.sent[&C].len(), 2, "CDS is the union a + b");
    client.ack(C);
    client.ack(E);
    let plan = order.plan(&next, &client, now);
    assert!(held(&plan).is_empty());
    assert_eq!(
        kept(&plan),
        [(C, "a"), (E, "a")],
        "until the new route is ACKed"
    );
    client.send_planned(&next, &plan, R);
    client.ack(R);
    assert!(order.plan(&next, &client, now).is_quiet());
}

#[test]
fn a_nack_of_the_clusters_releases_the_route() {
    let mut order = PushOrder::new(HOLD_TIMEOUT);
    let mut client = Client::synced(&world(&["a"], &["a"]));
    let next = world(&["a", "b"], &["a", "b"]);
    let now = Instant::now();
    assert_eq!(held(&order.plan(&next, &client, now)), [(R, "r")]);
    client.send(&next, C);
    assert!(!order.nacked(R), "an RDS NACK does not concern the wait");
    assert!(order.nacked(C));
    let plan = order.plan(&next, &client, now);
    assert!(held(&plan).is_empty(), "sent anyway after the NACK");
    assert_eq!(plan.wake_at, None);

    // A new version of the cluster may be accepted: it is waited for again.
    let mut b = cluster("b");
    b.alt_stat_name = "changed".into();
    let changed = world_of(vec![cluster("a"), b], &["a", "b"]);
    assert_eq!(held(&order.plan(&changed, &client, now)), [(R, "r")]);
}

#[test]
fn a_hold_runs_out_after_the_timeout_and_is_reported_once() {
    let t0 = Instant::now();
    let mut order = PushOrder::new(HOLD_TIMEOUT);
    let client = Client::synced(&world(&["a"], &["a"]));
    let next = world(&["a", "b"], &["a", "b"]);
    let rows = [
        (Duration::ZERO, true, vec![]),
        (HOLD_TIMEOUT - Duration::from_millis(1), true, vec![]),
        (HOLD_TIMEOUT, false, vec!["b".to_string()]),
        (HOLD_TIMEOUT * 2, false, vec![]),
    ];
    for (at, holds, expired) in rows {
        let plan = order.plan(&next, &client, t0 + at);
        assert_eq!(plan.holds(R, "r"), holds, "at {at:?}");
        assert_eq!(plan.expired, expired, "at {at:?}");
        let wake = holds.then_some(t0 + HOLD_TIMEOUT);
        assert_eq!(plan.wake_at, wake, "at {at:?}");
    }
}

#[test]
fn a_generation_superseded_while_waiting_the_newest_wins() {
    let now = Instant::now();
    let mut order = PushOrder::new(HOLD_TIMEOUT);
    let mut client = Client::synced(&world(&["a"], &["a"]));
    // Generation 2 adds b; its CDS goes out, the route waits.
    let gen2 = world(&["a", "b"], &["a", "b"]);
    let plan = order.plan(&gen2, &client, now);
    for t in TypeUrl::ALL {
        client.send_planned(&gen2, &plan, t);
    }
    assert_eq!(
        client.sent[&R]["r"], client.acked[&R]["r"],
        "route not sent"
    );
    // Generation 3 replaces b by c before the client ACKed b.
    let gen3 = world(&["a", "c"], &["a", "c"]);
    let plan = order.plan(&gen3, &client, now);
    assert_eq!(held(&plan), [(R, "r")], "c is not ACKed either");
    assert!(
        kept(&plan).is_empty(),
        "b was never routed to: dropped at once"
    );
    for t in TypeUrl::ALL {
        client.send_planned(&gen3, &plan, t);
    }
    assert!(client.sent[&R]["r"].refs.clusters.contains("a"));
    assert!(!client.sent[&R]["r"].refs.clusters.contains("b"));
    // The late ACK of generation 2's clusters (b) releases nothing: c is what it needs.
    client.acked.insert(C, gen2.of(C).clone());
    client.acked.insert(E, gen2.of(E).clone());
    assert_eq!(held(&order.plan(&gen3, &client, now)), [(R, "r")]);
    client.ack(C);
    client.ack(E);
    let plan = order.plan(&gen3, &client, now);
    assert!(plan.is_quiet(), "{plan:?}");
}

#[test]
fn clusters_a_client_asks_for_by_name_only_after_the_route_are_not_waited_for() {
    let mut order = PushOrder::new(HOLD_TIMEOUT);
    let mut client = Client::synced(&world(&["a"], &["a"]));
    client.by_name.insert(C, ["a".to_string()].into());
    let next = world(&["a", "b"], &["a", "b"]);
    let plan = order.plan(&next, &client, Instant::now());
    assert!(plan.is_quiet(), "gRPC subscribes b once it sees the route");

    // A route the client did not subscribe to is not waited on (nor timed) at all.
    let mut client = Client::synced(&world(&["a"], &["a"]));
    client.by_name.insert(R, BTreeSet::new());
    let plan = order.plan(&next, &client, Instant::now());
    assert!(plan.is_quiet() && plan.wake_at.is_none(), "{plan:?}");

    // Not subscribed to endpoints at all: the ACKed cluster is enough.
    let mut client = Client::synced(&world(&["a"], &["a"]));
    client.unsubscribed.insert(E);
    client.send(&next, C);
    client.ack(C);
    assert!(order.plan(&next, &client, Instant::now()).is_quiet());
}

#[test]
fn a_route_to_a_cluster_the_target_lacks_is_not_held() {
    let mut order = PushOrder::new(HOLD_TIMEOUT);
    let client = Client::synced(&world(&["a"], &["a"]));
    let plan = order.plan(&world(&["a"], &["a", "ghost"]), &client, Instant::now());
    assert!(plan.is_quiet(), "{plan:?}");
}

#[test]
fn routes_known_by_version_only_keep_every_cluster_the_client_holds() {
    let mut order = PushOrder::new(HOLD_TIMEOUT);
    let mut client = Client::synced(&world(&["a", "b"], &["a"]));
    client.reported_only = true;
    let plan = order.plan(&world(&["a"], &["a"]), &client, Instant::now());
    assert_eq!(kept(&plan), [(C, "b"), (E, "b")]);
}
