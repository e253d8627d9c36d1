//! The request sequence itself, against a scripted ADS server that hands each stream to the test:
//! the test reads every request the client sends and chooses every response. (The real pilot is
//! exercised in `tests/xds_client.rs`; it cannot show the order of requests.)

use super::*;
use envoy_types::pb::envoy::config::cluster::v3::cluster::EdsClusterConfig;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};
use std::collections::BTreeSet;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status, Streaming};

const BOUND: Duration = Duration::from_secs(5);

// === Scripted ADS server ===

/// One stream as the test sees it: the client's requests in, the test's responses out. Dropping
/// `responses` ends the stream.
struct ScriptedStream {
    requests: mpsc::UnboundedReceiver<DiscoveryRequest>,
    responses: mpsc::UnboundedSender<Result<DiscoveryResponse, Status>>,
}

struct ScriptedAds {
    streams: mpsc::UnboundedSender<ScriptedStream>,
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for ScriptedAds {
    type StreamAggregatedResourcesStream =
        UnboundedReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaAggregatedResourcesStream =
        UnboundedReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let (requests_tx, requests) = mpsc::unbounded_channel();
        let (responses, responses_rx) = mpsc::unbounded_channel();
        let mut inbound = request.into_inner();
        tokio::spawn(async move {
            while let Ok(Some(r)) = inbound.message().await {
                if requests_tx.send(r).is_err() {
                    return;
                }
            }
        });
        let _ = self.streams.send(ScriptedStream {
            requests,
            responses,
        });
        Ok(Response::new(UnboundedReceiverStream::new(responses_rx)))
    }

    async fn delta_aggregated_resources(
        &self,
        _: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented("state of the world only"))
    }
}

async fn scripted_server() -> (String, mpsc::UnboundedReceiver<ScriptedStream>) {
    let (streams, rx) = mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AggregatedDiscoveryServiceServer::new(ScriptedAds {
                streams,
            }))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (addr, rx)
}

async fn next_stream(streams: &mut mpsc::UnboundedReceiver<ScriptedStream>) -> ScriptedStream {
    tokio::time::timeout(BOUND, streams.recv())
        .await
        .expect("no stream within the bound")
        .expect("server gone")
}

impl ScriptedStream {
    async fn request(&mut self) -> DiscoveryRequest {
        tokio::time::timeout(BOUND, self.requests.recv())
            .await
            .expect("no request within the bound")
            .expect("stream closed")
    }

    fn respond<M: Message + Name>(&self, version: &str, nonce: &str, resources: &[M]) {
        let resources = resources.iter().map(any).collect();
        self.respond_raw(&M::type_url(), version, nonce, resources);
    }

    fn respond_raw(&self, type_url: &str, version: &str, nonce: &str, resources: Vec<Any>) {
        let response = DiscoveryResponse {
            version_info: version.into(),
            resources,
            type_url: type_url.into(),
            nonce: nonce.into(),
            ..Default::default()
        };
        self.responses.send(Ok(response)).unwrap();
    }
}

fn any<M: Message + Name>(m: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: m.encode_to_vec(),
    }
}

// === Handlers ===

/// Accepts everything.
struct Accept;

impl<M> Handler<M> for Accept {
    fn handle(&self, _: Vec<M>, _: &Subscriptions) -> Result<(), String> {
        Ok(())
    }
}

/// Subscribes endpoints to the clusters' EDS service names, as the proxy's cluster layer does.
struct ClustersNameEndpoints;

impl Handler<Cluster> for ClustersNameEndpoints {
    fn handle(&self, clusters: Vec<Cluster>, subs: &Subscriptions) -> Result<(), String> {
        let names = clusters
            .into_iter()
            .filter_map(|c| c.eds_cluster_config.map(|e| e.service_name))
            .collect();
        subs.set(ENDPOINT, names);
        Ok(())
    }
}

fn eds_cluster(name: &str) -> Cluster {
    Cluster {
        name: name.into(),
        eds_cluster_config: Some(EdsClusterConfig {
            service_name: format!("{name}-eds"),
            eds_config: None,
        }),
        ..Default::default()
    }
}

fn client(pilot: String) -> XdsClient {
    let node = Node {
        id: "proxy-1".into(),
        user_agent_name: "graymesh-proxy".into(),
        ..Default::default()
    };
    let config = XdsClientConfig {
        backoff_initial: Duration::from_millis(1),
        backoff_max: Duration::from_millis(10),
        ..XdsClientConfig::new(vec![pilot], node)
    };
    XdsClient::new(config)
        .with_handler::<Cluster, _>(CLUSTER, Arc::new(ClustersNameEndpoints))
        .with_handler::<ClusterLoadAssignment, _>(ENDPOINT, Arc::new(Accept))
        .with_handler::<Listener, _>(LISTENER, Arc::new(Accept))
}

/// Asserts one request: its type, names, version and nonce, whether it carries the node, and
/// returns it for more checks.
async fn expect(
    stream: &mut ScriptedStream,
    type_url: &str,
    names: &[&str],
    version: &str,
    nonce: &str,
    with_node: bool,
) -> DiscoveryRequest {
    let r = stream.request().await;
    let what = format!("{r:?}");
    assert_eq!(r.type_url, type_url, "{what}");
    assert_eq!(r.resource_names, names, "{what}");
    assert_eq!(r.version_info, version, "{what}");
    assert_eq!(r.response_nonce, nonce, "{what}");
    assert_eq!(r.node.is_some(), with_node, "{what}");
    if with_node {
        assert_eq!(r.node.as_ref().map(|n| n.id.as_str()), Some("proxy-1"));
    }
    r
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

// === Tests ===

#[tokio::test]
async fn first_requests_are_wildcard_cds_then_lds_with_the_node_once() {
    let (addr, mut streams) = scripted_server().await;
    let client = client(addr);
    let status = client.status();
    let _run = AbortOnDrop(tokio::spawn(client.run()));
    let mut s = next_stream(&mut streams).await;
    expect(&mut s, CLUSTER, &[], "", "", true).await;
    expect(&mut s, LISTENER, &[], "", "", false).await;
    let connected = tokio::time::timeout(BOUND, status.wait_for(|s| s.connected)).await;
    assert!(connected.is_ok(), "status shows the stream");
    // Nothing names routes or endpoints yet: the next request answers the first response.
    s.respond::<Cluster>("c1", "n1", &[]);
    expect(&mut s, CLUSTER, &[], "c1", "n1", false).await;
}

#[tokio::test]
async fn subscription_changes_follow_the_ack_and_carry_that_types_nonce() {
    let (addr, mut streams) = scripted_server().await;
    let client = client(addr);
    let subs = client.subscriptions();
    let _run = AbortOnDrop(tokio::spawn(client.run()));
    let mut s = next_stream(&mut streams).await;
    expect(&mut s, CLUSTER, &[], "", "", true).await;
    expect(&mut s, LISTENER, &[], "", "", false).await;

    s.respond("c1", "n1", &[eds_cluster("a")]);
    expect(&mut s, CLUSTER, &[], "c1", "n1", false).await; // the ACK first
    expect(&mut s, ENDPOINT, &["a-eds"], "", "", false).await; // then what the handler named

    let cla = ClusterLoadAssignment {
        cluster_name: "a-eds".into(),
        ..Default::default()
    };
    s.respond("e1", "n2", &[cla]);
    expect(&mut s, ENDPOINT, &["a-eds"], "e1", "n2", false).await;

    s.respond("c2", "n3", &[eds_cluster("a"), eds_cluster("b")]);
    expect(&mut s, CLUSTER, &[], "c2", "n3", false).await;
    // A changed EDS subscription answers the last EDS response: its version and nonce.
    expect(&mut s, ENDPOINT, &["a-eds", "b-eds"], "e1", "n2", false).await;

    // A change from outside a handler goes out at once.
    subs.set(ROUTE, names(&["r1"]));
    expect(&mut s, ROUTE, &["r1"], "", "", false).await;
}

#[tokio::test]
async fn undecodable_and_unhandled_responses_are_nacked_with_the_version_in_use() {
    let (addr, mut streams) = scripted_server().await;
    let client = client(addr);
    let status = client.status();
    let subs = client.subscriptions();
    let _run = AbortOnDrop(tokio::spawn(client.run()));
    let mut s = next_stream(&mut streams).await;
    expect(&mut s, CLUSTER, &[], "", "", true).await;
    expect(&mut s, LISTENER, &[], "", "", false).await;

    s.respond::<Listener>("l1", "n1", &[]);
    expect(&mut s, LISTENER, &[], "l1", "n1", false).await;
    // A cluster where listeners belong: the response is rejected whole.
    s.respond_raw(
        LISTENER,
        "l2",
        "n2",
        vec![any(&Listener::default()), any(&eds_cluster("x"))],
    );
    let nack = expect(&mut s, LISTENER, &[], "l1", "n2", false).await;
    let error = nack.error_detail.expect("a NACK carries the error");
    assert_eq!(error.code, 3, "INVALID_ARGUMENT");
    assert!(
        error
            .message
            .starts_with("resource 1: type type.googleapis.com/envoy.config.cluster.v3.Cluster"),
        "{}",
        error.message
    );

    // No handler for routes: subscribed, but anything that comes is refused.
    subs.set(ROUTE, names(&["r1"]));
    expect(&mut s, ROUTE, &["r1"], "", "", false).await;
    s.respond_raw(ROUTE, "r1", "n3", vec![]);
    let nack = expect(&mut s, ROUTE, &["r1"], "", "n3", false).await;
    assert!(nack
        .error_detail
        .is_some_and(|e| e.message.starts_with("no handler")));

    let snapshot = status.snapshot();
    let lds = &snapshot.types[LISTENER];
    assert_eq!(lds.accepted_version, "l1");
    assert_eq!(lds.last_nonce, "n2");
    assert_eq!(lds.responses, 2);
    assert_eq!(lds.nack.as_deref(), Some(error.message.as_str()));
    assert_eq!(lds.subscribed, ["*"]);
}

#[tokio::test]
async fn a_new_stream_resends_subscriptions_with_accepted_versions_and_no_nonces() {
    let (addr, mut streams) = scripted_server().await;
    let client = client(addr);
    let status = client.status();
    let _run = AbortOnDrop(tokio::spawn(client.run()));
    let mut s = next_stream(&mut streams).await;
    expect(&mut s, CLUSTER, &[], "", "", true).await;
    expect(&mut s, LISTENER, &[], "", "", false).await;
    s.respond("c1", "n1", &[eds_cluster("a")]);
    expect(&mut s, CLUSTER, &[], "c1", "n1", false).await;
    expect(&mut s, ENDPOINT, &["a-eds"], "", "", false).await;
    s.respond_raw(LISTENER, "l1", "n2", vec![any(&eds_cluster("x"))]);
    expect(&mut s, LISTENER, &[], "", "n2", false).await; // NACK: nothing accepted yet

    drop(s); // the pilot ends the stream
    let mut s = next_stream(&mut streams).await;
    expect(&mut s, CLUSTER, &[], "c1", "", true).await;
    expect(&mut s, ENDPOINT, &["a-eds"], "", "", false).await;
    expect(&mut s, LISTENER, &[], "", "", false).await;

    let snapshot = status.wait_for(|s| s.connected).await;
    assert_eq!(snapshot.connect_attempts, 2);
    assert_eq!(
        snapshot.last_error.as_deref(),
        Some("the pilot ended the stream")
    );
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
