//! The ADS server over real gRPC on loopback, driven by a tonic client the way Envoy and gRPC
//! clients drive it. "Nothing else was pushed" is checked with a barrier: a later, different
//! change whose response must be the very next message on the stream.

mod push_order;

use super::AdsServer;
use crate::cache::SnapshotCache;
use crate::metrics::XdsMetrics;
use crate::status::SyncStatus;
use crate::types::{CLUSTER, ENDPOINT, LISTENER, ROUTE};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use graymesh_model::{build_config_set, parse_str, ConfigSet};
use graymesh_sources::{Registration, RegistrationPort, RegistrySnapshot};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

const HOST: &str = "echo.graymesh.test";
const LISTENER_NAME: &str = "echo.graymesh.test:50051";

fn config(v1: u32, v2: u32) -> Arc<ConfigSet> {
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
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: echo}}
spec:
  host: {HOST}
  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo}}
spec:
  hosts: [{HOST}]
  http:
  - route:
    - {{destination: {{host: {HOST}, subset: v1}}, weight: {v1}}}
    - {{destination: {{host: {HOST}, subset: v2}}, weight: {v2}}}
"#
    );
    Arc::new(build_config_set(parse_str("test.yaml", &yaml).unwrap()).unwrap())
}

/// A registration adding a v2 instance to the echo service (changes endpoints only).
fn extra_v2() -> Registration {
    Registration {
        id: "extra".into(),
        service: HOST.into(),
        namespace: "default".into(),
        address: "127.0.0.2".into(),
        ports: vec![RegistrationPort {
            port: 50051,
            target_port: Some(50063),
            name: Some("grpc".into()),
            protocol: None,
        }],
        labels: [("version".to_string(), "v2".to_string())].into(),
        locality: None,
        weight: None,
        ttl_seconds: 10,
    }
}

struct Harness {
    addr: SocketAddr,
    cache: SnapshotCache,
    status: SyncStatus,
}

impl Harness {
    async fn start() -> Self {
        Self::start_with_hold_timeout(super::ordering::HOLD_TIMEOUT).await
    }

    async fn start_with_hold_timeout(hold: Duration) -> Self {
        let config = config(80, 20);
        let cache = SnapshotCache::new(
            config.clone(),
            Arc::new(RegistrySnapshot::build(&config, &[])),
        );
        let status = SyncStatus::default();
        let server = AdsServer::new(cache.clone(), status.clone(), XdsMetrics::default())
            .with_hold_timeout(hold)
            .into_service();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(server)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        Self {
            addr,
            cache,
            status,
        }
    }

    fn publish(&self, config: Arc<ConfigSet>, registrations: &[Registration]) {
        let registry = Arc::new(RegistrySnapshot::build(&config, registrations));
        self.cache.publish(config, registry);
    }

    async fn client(&self) -> AggregatedDiscoveryServiceClient<tonic::transport::Channel> {
        AggregatedDiscoveryServiceClient::connect(format!("http://{}", self.addr))
            .await
            .unwrap()
    }

    async fn sotw(&self) -> (mpsc::Sender<DiscoveryRequest>, Streaming<DiscoveryResponse>) {
        let (tx, rx) = mpsc::channel(16);
        let stream = self
            .client()
            .await
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        (tx, stream)
    }

    async fn delta(
        &self,
    ) -> (
        mpsc::Sender<DeltaDiscoveryRequest>,
        Streaming<DeltaDiscoveryResponse>,
    ) {
        let (tx, rx) = mpsc::channel(16);
        let stream = self
            .client()
            .await
            .delta_aggregated_resources(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        (tx, stream)
    }
}

fn grpc_node(id: &str) -> Option<Node> {
    Some(Node {
        id: id.into(),
        user_agent_name: "gRPC test".into(),
        ..Default::default()
    })
}

fn request(type_url: &str, names: &[&str], node: Option<Node>) -> DiscoveryRequest {
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
        ..request(&resp.type_url, names, None)
    }
}

async fn next<T>(stream: &mut Streaming<T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("no response within 5 s")
        .expect("stream failed")
        .expect("stream ended")
}

/// Subscribe the way grpc does (LDS, then RDS, CDS, EDS by name) and ACK everything.
async fn grpc_sync(
    tx: &mpsc::Sender<DiscoveryRequest>,
    rx: &mut Streaming<DiscoveryResponse>,
) -> [DiscoveryResponse; 4] {
    let clusters = [
        "outbound|50051|v1|echo.graymesh.test",
        "outbound|50051|v2|echo.graymesh.test",
    ];
    let mut out = Vec::new();
    for (i, (t, names)) in [
        (LISTENER, &[LISTENER_NAME][..]),
        (ROUTE, &[LISTENER_NAME][..]),
        (CLUSTER, &clusters[..]),
        (ENDPOINT, &clusters[..]),
    ]
    .into_iter()
    .enumerate()
    {
        let node = if i == 0 { grpc_node("client-1") } else { None };
        tx.send(request(t, names, node)).await.unwrap();
        let resp = next(rx).await;
        assert_eq!(resp.type_url, t);
        assert_eq!(resp.resources.len(), names.len(), "{t}");
        tx.send(ack(&resp, names)).await.unwrap();
        out.push(resp);
    }
    out.try_into().unwrap()
}

#[tokio::test]
async fn sotw_pushes_only_the_types_that_changed() {
    let h = Harness::start().await;
    let (tx, mut rx) = h.sotw().await;
    let first = grpc_sync(&tx, &mut rx).await;

    // A weight change touches the route configuration only.
    h.publish(config(50, 50), &[]);
    let rds = next(&mut rx).await;
    assert_eq!(rds.type_url, ROUTE);
    assert_ne!(rds.version_info, first[1].version_info);
    assert_ne!(rds.resources[0].value, first[1].resources[0].value);
    tx.send(ack(&rds, &[LISTENER_NAME])).await.unwrap();

    // Barrier: an endpoint change must be the very next response (no LDS/CDS was pushed).
    h.publish(config(50, 50), &[extra_v2()]);
    let eds = next(&mut rx).await;
    assert_eq!(eds.type_url, ENDPOINT);

    // The status shows the ACKs.
    let status = h.status.clients();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].node_id, "client-1");
    let lds = &status[0].types[LISTENER];
    assert_eq!(lds.acked_nonce, lds.sent_nonce);
    assert_eq!(status[0].types[ROUTE].acked_version, rds.version_info);
}

#[tokio::test]
async fn sotw_nack_is_recorded_and_kept_until_a_later_ack() {
    let h = Harness::start().await;
    let (tx, mut rx) = h.sotw().await;
    let [_, rds, ..] = grpc_sync(&tx, &mut rx).await;
    h.publish(config(50, 50), &[]);
    let pushed = next(&mut rx).await;
    let nack = DiscoveryRequest {
        error_detail: Some(RpcStatus {
            code: 3,
            message: "route rejected: bad weights".into(),
            details: vec![],
        }),
        version_info: rds.version_info.clone(),
        ..ack(&pushed, &[LISTENER_NAME])
    };
    tx.send(nack).await.unwrap();
    // Barrier: the next change arrives, so the NACK has been processed.
    h.publish(config(50, 50), &[extra_v2()]);
    assert_eq!(next(&mut rx).await.type_url, ENDPOINT);
    let client = &h.status.clients()[0];
    assert_eq!(
        client.types[ROUTE].nack.as_deref(),
        Some("route rejected: bad weights")
    );
    assert_eq!(
        client.types[ROUTE].acked_version, rds.version_info,
        "the NACKed version is not acked"
    );

    h.publish(config(30, 70), &[extra_v2()]);
    let again = next(&mut rx).await;
    assert_eq!(again.type_url, ROUTE);
    tx.send(ack(&again, &[LISTENER_NAME])).await.unwrap();
    h.publish(config(30, 70), &[]);
    assert_eq!(next(&mut rx).await.type_url, ENDPOINT);
    assert_eq!(h.status.clients()[0].types[ROUTE].nack, None);
}

#[tokio::test]
async fn sotw_ignores_stale_nonces_and_answers_subscription_changes() {
    let h = Harness::start().await;
    let (tx, mut rx) = h.sotw().await;
    let [_, _, cds, _] = grpc_sync(&tx, &mut rx).await;
    h.publish(config(50, 50), &[extra_v2()]);
    let eds_and_rds: Vec<_> = vec![next(&mut rx).await, next(&mut rx).await];
    let types: Vec<_> = eds_and_rds.iter().map(|r| r.type_url.as_str()).collect();
    assert_eq!(
        types,
        [ENDPOINT, ROUTE],
        "push order: endpoints before routes"
    );
    // A request carrying the old CDS nonce with a different subscription is stale: ignored.
    let stale = DiscoveryRequest {
        response_nonce: "0".into(),
        ..ack(&cds, &["outbound|50051||echo.graymesh.test"])
    };
    tx.send(stale).await.unwrap();
    // A current one that adds a name is answered with the new set.
    let names = [
        "outbound|50051|v1|echo.graymesh.test",
        "outbound|50051|v2|echo.graymesh.test",
        "outbound|50051||echo.graymesh.test",
    ];
    tx.send(ack(&cds, &names)).await.unwrap();
    let resp = next(&mut rx).await;
    assert_eq!(resp.type_url, CLUSTER);
    assert_eq!(resp.resources.len(), 3);
}

#[tokio::test]
async fn sidecar_empty_cds_request_is_a_wildcard() {
    let h = Harness::start().await;
    let (tx, mut rx) = h.sotw().await;
    let node = Some(Node {
        id: "sidecar-1".into(),
        user_agent_name: "envoy".into(),
        ..Default::default()
    });
    tx.send(request(CLUSTER, &[], node)).await.unwrap();
    let resp = next(&mut rx).await;
    assert_eq!(
        resp.resources.len(),
        3,
        "all clusters: default + two subsets"
    );
    // As Envoy does, ACK the clusters first: the listener routes to them, so it waits for that.
    tx.send(ack(&resp, &[])).await.unwrap();
    tx.send(request(LISTENER, &[], None)).await.unwrap();
    let lds = next(&mut rx).await;
    assert_eq!(lds.type_url, LISTENER);
    assert_eq!(lds.resources.len(), 1, "the catch-all outbound listener");
}

#[tokio::test]
async fn a_client_that_never_reads_does_not_delay_others() {
    let h = Harness::start().await;
    let (slow_tx, _slow_rx_never_read) = h.sotw().await;
    let node = Some(Node {
        id: "slow".into(),
        user_agent_name: "envoy".into(),
        ..Default::default()
    });
    slow_tx.send(request(CLUSTER, &[], node)).await.unwrap();
    let (tx, mut rx) = h.sotw().await;
    grpc_sync(&tx, &mut rx).await;
    // Many generations: the slow stream's queue fills and it stalls, alone.
    for i in 0..50u32 {
        let regs: Vec<Registration> = (0..=i)
            .map(|j| Registration {
                id: format!("r{j}"),
                address: format!("127.0.1.{}", j % 250 + 1),
                ..extra_v2()
            })
            .collect();
        h.publish(config(80, 20), &regs);
        let eds = next(&mut rx).await;
        assert_eq!(eds.type_url, ENDPOINT);
        tx.send(ack(
            &eds,
            &[
                "outbound|50051|v1|echo.graymesh.test",
                "outbound|50051|v2|echo.graymesh.test",
            ],
        ))
        .await
        .unwrap();
    }
}

fn delta_request(type_url: &str, subscribe: &[&str], node: Option<Node>) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        node,
        type_url: type_url.into(),
        resource_names_subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn delta_ack(resp: &DeltaDiscoveryResponse) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: resp.type_url.clone(),
        response_nonce: resp.nonce.clone(),
        ..Default::default()
    }
}

#[tokio::test]
async fn delta_sends_only_changed_and_removed_resources() {
    let h = Harness::start().await;
    let (tx, mut rx) = h.delta().await;
    let node = Some(Node {
        id: "delta-1".into(),
        user_agent_name: "envoy".into(),
        ..Default::default()
    });
    tx.send(delta_request(
        ENDPOINT,
        &[
            "outbound|50051|v1|echo.graymesh.test",
            "outbound|50051|v2|echo.graymesh.test",
            "outbound|50051|v9|echo.graymesh.test",
        ],
        node,
    ))
    .await
    .unwrap();
    let first = next(&mut rx).await;
    let mut names: Vec<_> = first.resources.iter().map(|r| r.name.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "outbound|50051|v1|echo.graymesh.test",
            "outbound|50051|v2|echo.graymesh.test"
        ]
    );
    assert_eq!(
        first.removed_resources,
        ["outbound|50051|v9|echo.graymesh.test"],
        "a missing name is reported once"
    );
    tx.send(delta_ack(&first)).await.unwrap();

    // A v2 instance joins: only the v2 assignment changes.
    h.publish(config(80, 20), &[extra_v2()]);
    let changed = next(&mut rx).await;
    assert_eq!(changed.resources.len(), 1);
    assert_eq!(
        changed.resources[0].name,
        "outbound|50051|v2|echo.graymesh.test"
    );
    assert!(changed.removed_resources.is_empty());
    tx.send(delta_ack(&changed)).await.unwrap();

    // Wildcard clusters; then the DestinationRule loses a subset: its cluster is removed.
    tx.send(delta_request(CLUSTER, &[], None)).await.unwrap();
    let clusters = next(&mut rx).await;
    assert_eq!(clusters.resources.len(), 3);
    tx.send(delta_ack(&clusters)).await.unwrap();
    let mut without_v1 = (*config(0, 100)).clone();
    without_v1.destination_rules[0]
        .spec
        .subsets
        .retain(|s| s.name == "v2");
    without_v1.virtual_services[0].spec.http[0]
        .route
        .retain(|d| d.destination.subset.as_deref() == Some("v2"));
    h.publish(Arc::new(without_v1), &[extra_v2()]);
    let mut saw_cluster_removal = false;
    for _ in 0..2 {
        let resp = next(&mut rx).await;
        if resp.type_url == CLUSTER {
            assert!(resp.resources.is_empty());
            assert_eq!(
                resp.removed_resources,
                ["outbound|50051|v1|echo.graymesh.test"]
            );
            saw_cluster_removal = true;
        } else {
            assert_eq!(resp.type_url, ENDPOINT);
            assert_eq!(
                resp.removed_resources,
                ["outbound|50051|v1|echo.graymesh.test"]
            );
        }
    }
    assert!(saw_cluster_removal);
    let status = h.status.clients();
    assert_eq!(status[0].protocol, "delta");
    assert_eq!(status[0].types[ENDPOINT].acked_nonce, changed.nonce);
}

#[tokio::test]
async fn delta_reconnect_with_initial_versions_gets_nothing_it_already_has() {
    let h = Harness::start().await;
    let (tx, mut rx) = h.delta().await;
    let node = Some(Node {
        id: "delta-2".into(),
        user_agent_name: "envoy".into(),
        ..Default::default()
    });
    tx.send(delta_request(CLUSTER, &[], node.clone()))
        .await
        .unwrap();
    let first = next(&mut rx).await;
    let held = first
        .resources
        .iter()
        .map(|r| (r.name.clone(), r.version.clone()))
        .collect();
    drop((tx, rx));

    let (tx, mut rx) = h.delta().await;
    let req = DeltaDiscoveryRequest {
        initial_resource_versions: held,
        ..delta_request(CLUSTER, &[], node)
    };
    tx.send(req).await.unwrap();
    let resp = next(&mut rx).await;
    assert!(
        resp.resources.is_empty(),
        "nothing changed since the client's versions"
    );
    assert!(resp.removed_resources.is_empty());
}
