//! Make-before-break over real gRPC: an Envoy-like client (clusters and listeners by wildcard,
//! endpoints and routes by name) that delays its ACKs on purpose. "Not pushed yet" is checked
//! with a barrier: a request the server must answer, whose answer must be the next message.

use super::{next, Harness};
use crate::types::{CLUSTER, ENDPOINT, LISTENER, ROUTE};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::route::v3::{
    route::Action, route_action::ClusterSpecifier, RouteConfiguration,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use graymesh_model::{build_config_set, parse_str, ConfigSet};
use prost::Message;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tonic::Streaming;

const HOST: &str = "echo.graymesh.test";
const DEFAULT: &str = "outbound|50051||echo.graymesh.test";
const V1: &str = "outbound|50051|v1|echo.graymesh.test";
const V2: &str = "outbound|50051|v2|echo.graymesh.test";
const V3: &str = "outbound|50051|v3|echo.graymesh.test";

/// Echo with the given subsets (v1..v3 have an instance each) and a split over `split`.
fn config(subsets: &[&str], split: &[(&str, u32)]) -> Arc<ConfigSet> {
    let subsets: Vec<String> = subsets
        .iter()
        .map(|s| format!("{{name: {s}, labels: {{version: {s}}}}}"))
        .collect();
    let route: Vec<String> = split
        .iter()
        .map(|(s, w)| format!("    - {{destination: {{host: {HOST}, subset: {s}}}, weight: {w}}}"))
        .collect();
    let yaml = format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo}}
spec:
  hosts: [{HOST}]
  ports: [{{number: 50051, name: grpc, protocol: GRPC}}]
  resolution: STATIC
  endpoints:
  - {{address: 127.0.0.1, ports: {{grpc: 50061}}, labels: {{version: v1}}}}
  - {{address: 127.0.0.1, ports: {{grpc: 50062}}, labels: {{version: v2}}}}
  - {{address: 127.0.0.1, ports: {{grpc: 50063}}, labels: {{version: v3}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: echo}}
spec:
  host: {HOST}
  subsets: [{}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo}}
spec:
  hosts: [{HOST}]
  http:
  - route:
{}
"#,
        subsets.join(", "),
        route.join("\n")
    );
    Arc::new(build_config_set(parse_str("test.yaml", &yaml).unwrap()).unwrap())
}

fn envoy_node() -> Option<Node> {
    Some(Node {
        id: "envoy-1".into(),
        user_agent_name: "envoy".into(),
        ..Default::default()
    })
}

fn names<M: Message + Default>(resp: &DiscoveryResponse, name: fn(&M) -> String) -> Vec<String> {
    let mut out: Vec<String> = resp
        .resources
        .iter()
        .map(|a| name(&M::decode(a.value.as_slice()).unwrap()))
        .collect();
    out.sort();
    out
}

fn cluster_names(resp: &DiscoveryResponse) -> Vec<String> {
    names::<Cluster>(resp, |c| c.name.clone())
}

/// The clusters the routes of `resp` send traffic to.
fn routed_to(routes: impl IntoIterator<Item = RouteConfiguration>) -> BTreeSet<String> {
    let actions = routes
        .into_iter()
        .flat_map(|r| r.virtual_hosts)
        .flat_map(|vh| vh.routes)
        .filter_map(|r| match r.action {
            Some(Action::Route(a)) => a.cluster_specifier,
            _ => None,
        });
    let mut out = BTreeSet::new();
    for spec in actions {
        match spec {
            ClusterSpecifier::Cluster(c) => drop(out.insert(c)),
            ClusterSpecifier::WeightedClusters(w) => {
                out.extend(w.clusters.into_iter().map(|c| c.name))
            }
            _ => {}
        }
    }
    out
}

fn sotw_routed_to(resp: &DiscoveryResponse) -> BTreeSet<String> {
    routed_to(
        resp.resources
            .iter()
            .map(|a| RouteConfiguration::decode(a.value.as_slice()).unwrap()),
    )
}

fn req(type_url: &str, names: &[&str], node: Option<Node>) -> DiscoveryRequest {
    DiscoveryRequest {
        node,
        type_url: type_url.into(),
        resource_names: names.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn ack(resp: &DiscoveryResponse, names: &[&str]) -> DiscoveryRequest {
    DiscoveryRequest {
        version_info: resp.version_info.clone(),
        response_nonce: resp.nonce.clone(),
        ..req(&resp.type_url, names, None)
    }
}

struct Envoy {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
    /// The endpoints subscription: every cluster it holds, as Envoy asks for.
    eds_names: Vec<String>,
    /// The latest endpoints response, whose nonce a subscription change carries.
    eds: DiscoveryResponse,
}

impl Envoy {
    /// Subscribe and ACK all four types the way Envoy does, clusters first.
    async fn connect(h: &Harness) -> Self {
        let (tx, mut rx) = h.sotw().await;
        tx.send(req(CLUSTER, &[], envoy_node())).await.unwrap();
        let cds = next(&mut rx).await;
        tx.send(ack(&cds, &[])).await.unwrap();
        let mut envoy = Self {
            tx,
            rx,
            eds_names: cluster_names(&cds),
            eds: DiscoveryResponse::default(),
        };
        envoy.eds = envoy.subscribe_eds(None, "").await;
        for (t, names) in [(LISTENER, &[][..]), (ROUTE, &["outbound"][..])] {
            envoy.tx.send(req(t, names, None)).await.unwrap();
            let resp = next(&mut envoy.rx).await;
            assert_eq!(resp.type_url, t);
            envoy.tx.send(ack(&resp, names)).await.unwrap();
        }
        envoy
    }

    /// Subscribe endpoints to `eds_names` (plus `extra`, if any, and `tag`, a name that does not
    /// exist) and ACK the answer, which must be the next message: nothing was pushed before it.
    async fn subscribe_eds(&mut self, extra: Option<&str>, tag: &str) -> DiscoveryResponse {
        self.eds_names.extend(extra.map(String::from));
        let mut names: Vec<&str> = self.eds_names.iter().map(String::as_str).collect();
        names.extend([tag].into_iter().filter(|t| !t.is_empty()));
        let request = match self.eds.nonce.is_empty() {
            true => req(ENDPOINT, &names, None),
            false => ack(&self.eds, &names),
        };
        self.tx.send(request).await.unwrap();
        let resp = next(&mut self.rx).await;
        assert_eq!(resp.type_url, ENDPOINT, "barrier {tag}: nothing before it");
        self.tx.send(ack(&resp, &names)).await.unwrap();
        self.eds = resp.clone();
        resp
    }

    async fn barrier(&mut self, tag: &str) -> DiscoveryResponse {
        self.subscribe_eds(None, tag).await
    }
}

async fn start() -> Harness {
    let h = Harness::start().await;
    h.publish(config(&["v1", "v2"], &[("v1", 80), ("v2", 20)]), &[]);
    h
}

#[tokio::test]
async fn sotw_a_route_to_a_new_cluster_waits_for_its_cds_and_eds_ack() {
    let h = start().await;
    let mut envoy = Envoy::connect(&h).await;

    // One generation adds subset v3 and shifts weight to it.
    h.publish(config(&["v1", "v2", "v3"], &[("v2", 50), ("v3", 50)]), &[]);
    let cds = next(&mut envoy.rx).await;
    assert_eq!(cds.type_url, CLUSTER, "clusters first");
    assert!(cluster_names(&cds).contains(&V3.to_string()));
    // The CDS ACK is held back. Envoy asks for v3's endpoints: they come, the route does not,
    // neither then nor after their ACK.
    let eds = envoy.subscribe_eds(Some(V3), "").await;
    assert_eq!(eds.resources.len(), 4);
    envoy.barrier("barrier-1").await;
    let status = &h.status.clients()[0].types[ROUTE];
    assert_eq!(status.held_back, ["outbound"], "shown while it waits");

    // Now the clusters are ACKed: the route follows at once, pointing at v3.
    envoy.tx.send(ack(&cds, &[])).await.unwrap();
    let rds = next(&mut envoy.rx).await;
    assert_eq!(rds.type_url, ROUTE);
    assert!(sotw_routed_to(&rds).contains(V3));
    assert!(h.status.clients()[0].types[ROUTE].held_back.is_empty());
}

#[tokio::test]
async fn sotw_a_route_waits_for_the_endpoints_ack_too() {
    let h = start().await;
    let mut envoy = Envoy::connect(&h).await;
    h.publish(config(&["v1", "v2", "v3"], &[("v2", 50), ("v3", 50)]), &[]);
    let cds = next(&mut envoy.rx).await;
    envoy.tx.send(ack(&cds, &[])).await.unwrap();
    // Envoy asks for v3's endpoints after the clusters; until it ACKs them the route waits.
    envoy.eds_names.push(V3.to_string());
    let names: Vec<&str> = envoy.eds_names.iter().map(String::as_str).collect();
    envoy.tx.send(ack(&envoy.eds, &names)).await.unwrap();
    let eds = next(&mut envoy.rx).await;
    assert_eq!(
        eds.type_url, ENDPOINT,
        "the clusters' ACK alone releases nothing"
    );
    envoy.tx.send(ack(&eds, &names)).await.unwrap();
    let rds = next(&mut envoy.rx).await;
    assert_eq!(rds.type_url, ROUTE, "released by the endpoints' ACK");
    assert!(sotw_routed_to(&rds).contains(V3));
}

#[tokio::test]
async fn sotw_a_removed_cluster_is_withdrawn_only_after_the_route_ack() {
    let h = start().await;
    let mut envoy = Envoy::connect(&h).await;

    // v1 leaves the DestinationRule and the route in one generation.
    h.publish(config(&["v2"], &[("v2", 100)]), &[]);
    let rds = next(&mut envoy.rx).await;
    assert_eq!(rds.type_url, ROUTE, "the route first; CDS still has v1");
    assert!(!sotw_routed_to(&rds).contains(V1));
    // While the route is not ACKed, v1 stays (its endpoints too).
    let eds = envoy.barrier("barrier-1").await;
    let held = names::<ClusterLoadAssignment>(&eds, |e| e.cluster_name.clone());
    assert_eq!(held, [V1, V2, DEFAULT], "sorted by name");

    envoy.tx.send(ack(&rds, &["outbound"])).await.unwrap();
    let cds = next(&mut envoy.rx).await;
    assert_eq!(cds.type_url, CLUSTER, "withdrawn after the route ACK");
    assert!(!cluster_names(&cds).contains(&V1.to_string()));
    assert_eq!(cluster_names(&cds).len(), 2, "default + v2");
    let eds = next(&mut envoy.rx).await;
    assert_eq!(eds.type_url, ENDPOINT);
    let left = names::<ClusterLoadAssignment>(&eds, |e| e.cluster_name.clone());
    assert_eq!(left, [V2, DEFAULT], "v1's endpoints gone with it");
}

#[tokio::test]
async fn sotw_a_cluster_named_by_a_route_sent_but_not_acked_stays() {
    let h = Harness::start().await;
    h.publish(config(&["v1", "v2", "v3"], &[("v1", 100)]), &[]);
    let mut envoy = Envoy::connect(&h).await;
    // The route moves to v2; the client gets it but has not ACKed it yet...
    h.publish(config(&["v1", "v2", "v3"], &[("v2", 100)]), &[]);
    let to_v2 = next(&mut envoy.rx).await;
    assert_eq!(to_v2.type_url, ROUTE);
    // ...when v2 is removed and the route moves on to v3. The client may be on the v2 route:
    // the new route goes first, v2 stays.
    h.publish(config(&["v1", "v3"], &[("v3", 100)]), &[]);
    let to_v3 = next(&mut envoy.rx).await;
    assert_eq!(to_v3.type_url, ROUTE, "no CDS without v2 before it");
    let eds = envoy.barrier("barrier-1").await;
    let held = names::<ClusterLoadAssignment>(&eds, |e| e.cluster_name.clone());
    assert!(held.contains(&V2.to_string()), "{held:?}");
    // The ACK of the older route says nothing of the newer one: v2 still stays.
    envoy.tx.send(ack(&to_v2, &["outbound"])).await.unwrap();
    envoy.barrier("barrier-2").await;
    envoy.tx.send(ack(&to_v3, &["outbound"])).await.unwrap();
    let cds = next(&mut envoy.rx).await;
    assert_eq!(cds.type_url, CLUSTER);
    assert!(!cluster_names(&cds).contains(&V2.to_string()));
}

#[tokio::test]
async fn sotw_a_nack_of_the_clusters_releases_the_route() {
    let h = start().await;
    let mut envoy = Envoy::connect(&h).await;
    h.publish(config(&["v1", "v2", "v3"], &[("v2", 50), ("v3", 50)]), &[]);
    let cds = next(&mut envoy.rx).await;
    let nack = DiscoveryRequest {
        error_detail: Some(RpcStatus {
            code: 3,
            message: "cluster rejected".into(),
            details: vec![],
        }),
        ..ack(&cds, &[])
    };
    envoy.tx.send(nack).await.unwrap();
    let rds = next(&mut envoy.rx).await;
    assert_eq!(rds.type_url, ROUTE, "sent anyway: the stream is not wedged");
}

#[tokio::test]
async fn sotw_a_hold_runs_out_after_the_timeout() {
    let hold = Duration::from_millis(300);
    let h = Harness::start_with_hold_timeout(hold).await;
    h.publish(config(&["v1", "v2"], &[("v1", 80), ("v2", 20)]), &[]);
    let mut envoy = Envoy::connect(&h).await;
    let published = Instant::now();
    h.publish(config(&["v1", "v2", "v3"], &[("v2", 50), ("v3", 50)]), &[]);
    assert_eq!(next(&mut envoy.rx).await.type_url, CLUSTER);
    // The client never ACKs: the route goes out once the hold runs out, not before.
    let rds = next(&mut envoy.rx).await;
    assert_eq!(rds.type_url, ROUTE);
    assert!(published.elapsed() >= hold, "{:?}", published.elapsed());
}

// === delta ===

fn dreq(type_url: &str, subscribe: &[&str], node: Option<Node>) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        node,
        type_url: type_url.into(),
        resource_names_subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn dack(resp: &DeltaDiscoveryResponse) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: resp.type_url.clone(),
        response_nonce: resp.nonce.clone(),
        ..Default::default()
    }
}

fn delta_routed_to(resp: &DeltaDiscoveryResponse) -> BTreeSet<String> {
    routed_to(resp.resources.iter().filter_map(|r| {
        let any = r.resource.as_ref()?;
        RouteConfiguration::decode(any.value.as_slice()).ok()
    }))
}

type Held = BTreeMap<&'static str, HashMap<String, String>>;

async fn delta_connect(
    h: &Harness,
) -> (
    mpsc::Sender<DeltaDiscoveryRequest>,
    Streaming<DeltaDiscoveryResponse>,
) {
    let (tx, rx, _) = delta_connect_holding(h, &Held::new()).await;
    (tx, rx)
}

/// Subscribe all four types, clusters first, saying the client already holds `initial`, ACK
/// every answer, and return what the client then holds.
async fn delta_connect_holding(
    h: &Harness,
    initial: &Held,
) -> (
    mpsc::Sender<DeltaDiscoveryRequest>,
    Streaming<DeltaDiscoveryResponse>,
    Held,
) {
    let (tx, mut rx) = h.delta().await;
    let mut held = initial.clone();
    for (t, names) in [
        (CLUSTER, vec![]),
        (ENDPOINT, vec![DEFAULT, V1, V2]),
        (LISTENER, vec![]),
        (ROUTE, vec!["outbound"]),
    ] {
        let node = if t == CLUSTER { envoy_node() } else { None };
        let request = DeltaDiscoveryRequest {
            initial_resource_versions: initial.get(t).cloned().unwrap_or_default(),
            ..dreq(t, &names, node)
        };
        tx.send(request).await.unwrap();
        let resp = next(&mut rx).await;
        assert_eq!(resp.type_url, t);
        let versions = held.entry(t).or_default();
        versions.extend(
            resp.resources
                .iter()
                .map(|r| (r.name.clone(), r.version.clone())),
        );
        tx.send(dack(&resp)).await.unwrap();
    }
    (tx, rx, held)
}

#[tokio::test]
async fn delta_a_route_to_a_new_cluster_waits_for_its_cds_ack() {
    let h = start().await;
    let (tx, mut rx) = delta_connect(&h).await;
    h.publish(config(&["v1", "v2", "v3"], &[("v2", 50), ("v3", 50)]), &[]);
    let cds = next(&mut rx).await;
    assert_eq!(cds.type_url, CLUSTER);
    assert!(cds.resources.iter().any(|r| r.name == V3));
    // Barrier: a new endpoints subscription is answered; the route has not come before it.
    tx.send(dreq(ENDPOINT, &[V3], None)).await.unwrap();
    let eds = next(&mut rx).await;
    assert_eq!(eds.type_url, ENDPOINT, "nothing before the barrier");
    assert_eq!(eds.resources.len(), 1);
    tx.send(dack(&eds)).await.unwrap();
    tx.send(dreq(ENDPOINT, &["barrier-1"], None)).await.unwrap();
    assert_eq!(next(&mut rx).await.type_url, ENDPOINT);

    tx.send(dack(&cds)).await.unwrap();
    let rds = next(&mut rx).await;
    assert_eq!(rds.type_url, ROUTE);
    assert!(delta_routed_to(&rds).contains(V3));
}

#[tokio::test]
async fn delta_a_removed_cluster_is_withdrawn_only_after_the_route_ack() {
    let h = start().await;
    let (tx, mut rx) = delta_connect(&h).await;
    h.publish(config(&["v2"], &[("v2", 100)]), &[]);
    let rds = next(&mut rx).await;
    assert_eq!(rds.type_url, ROUTE, "the route first");
    assert!(!delta_routed_to(&rds).contains(V1));
    tx.send(dreq(ENDPOINT, &["barrier-1"], None)).await.unwrap();
    let barrier = next(&mut rx).await;
    assert_eq!(
        barrier.type_url, ENDPOINT,
        "no removal before the route ACK"
    );
    assert_eq!(barrier.removed_resources, ["barrier-1"]);

    tx.send(dack(&rds)).await.unwrap();
    let mut removed = Vec::new();
    for _ in 0..2 {
        let resp = next(&mut rx).await;
        assert_eq!(resp.removed_resources, [V1], "{}", resp.type_url);
        removed.push(resp.type_url);
    }
    assert_eq!(removed, [CLUSTER, ENDPOINT]);
}

#[tokio::test]
async fn delta_a_reconnected_client_gets_removals_after_its_route_ack() {
    let h = start().await;
    let (_, _, held) = delta_connect_holding(&h, &Held::new()).await;
    // Reconnect saying what it holds: nothing is sent again.
    let (tx, mut rx, _) = delta_connect_holding(&h, &held).await;

    // The versions it reported match the current resources, so their references are known:
    // v1 is withdrawn after the route without it is ACKed (not kept for ever).
    h.publish(config(&["v2"], &[("v2", 100)]), &[]);
    let rds = next(&mut rx).await;
    assert_eq!(rds.type_url, ROUTE);
    tx.send(dack(&rds)).await.unwrap();
    for t in [CLUSTER, ENDPOINT] {
        let resp = next(&mut rx).await;
        assert_eq!(
            (resp.type_url.as_str(), &resp.removed_resources[..]),
            (t, &[V1.to_string()][..])
        );
    }
}
