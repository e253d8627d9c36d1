//! A control plane that is not pilot: Envoy resources written by the test, served over ADS (state
//! of the world) as they are. For what an Envoy control plane may send and pilot never does (the
//! proxy must honour any), and to read the proxy's NACKs.

use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
use envoy_types::pb::envoy::config::core::v3::{address, socket_address, Address, SocketAddress};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::config::listener::v3::{filter, Filter, FilterChain, Listener};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager, Rds,
};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Resources by type URL, each with its name.
type Resources = BTreeMap<String, Vec<(String, Any)>>;

pub struct EnvoyPlane {
    pub addr: SocketAddr,
    nacks: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl EnvoyPlane {
    pub async fn start(
        listeners: &[Listener],
        routes: &[RouteConfiguration],
        clusters: &[Cluster],
    ) -> Self {
        let mut resources = Resources::new();
        add(&mut resources, listeners, |l| &l.name);
        add(&mut resources, routes, |r| &r.name);
        add(&mut resources, clusters, |c| &c.name);
        let nacks: Arc<Mutex<Vec<String>>> = Arc::default();
        let ads = Ads {
            resources: Arc::new(resources),
            nacks: nacks.clone(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(AggregatedDiscoveryServiceServer::new(ads))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await;
        });
        Self { addr, nacks, task }
    }

    /// The first NACK's message, waited for (bounded).
    pub async fn nack(&self) -> String {
        let start = std::time::Instant::now();
        loop {
            if let Some(first) = self.nacks.lock().unwrap().first() {
                return first.clone();
            }
            assert!(start.elapsed() < Duration::from_secs(10), "no NACK");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for EnvoyPlane {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn add<M: Message + Name>(to: &mut Resources, list: &[M], name: impl Fn(&M) -> &String) {
    let entries = to.entry(M::type_url()).or_default();
    for m in list {
        let any = Any {
            type_url: M::type_url(),
            value: m.encode_to_vec(),
        };
        entries.push((name(m).clone(), any));
    }
}

#[derive(Clone)]
struct Ads {
    resources: Arc<Resources>,
    nacks: Arc<Mutex<Vec<String>>>,
}

impl Ads {
    /// Answers each type's first request and every change of its names; ACKs and NACKs of the
    /// same names get nothing (the resources never change).
    async fn serve(
        self,
        mut requests: Streaming<DiscoveryRequest>,
        responses: mpsc::UnboundedSender<Result<DiscoveryResponse, Status>>,
    ) {
        let mut answered: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut nonce = 0u64;
        while let Ok(Some(request)) = requests.message().await {
            if let Some(error) = &request.error_detail {
                self.nacks.lock().unwrap().push(error.message.clone());
            }
            let names: BTreeSet<String> = request.resource_names.iter().cloned().collect();
            let known = answered.get(&request.type_url) == Some(&names);
            if known && !request.response_nonce.is_empty() {
                continue;
            }
            answered.insert(request.type_url.clone(), names.clone());
            nonce += 1;
            let resources = self
                .resources
                .get(&request.type_url)
                .into_iter()
                .flatten()
                .filter(|(name, _)| names.is_empty() || names.contains(name))
                .map(|(_, any)| any.clone())
                .collect();
            let response = DiscoveryResponse {
                version_info: "1".into(),
                resources,
                type_url: request.type_url,
                nonce: nonce.to_string(),
                ..Default::default()
            };
            if responses.send(Ok(response)).is_err() {
                return;
            }
        }
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream =
        UnboundedReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaAggregatedResourcesStream =
        UnboundedReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let (responses, rx) = mpsc::unbounded_channel();
        tokio::spawn(self.clone().serve(request.into_inner(), responses));
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }

    async fn delta_aggregated_resources(
        &self,
        _: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented("state of the world only"))
    }
}

// === Resources ===

fn socket_address(addr: SocketAddr) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: addr.ip().to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                addr.port(),
            ))),
            ..Default::default()
        })),
    }
}

/// An HTTP listener on `addr` routed by the route configuration `routes` (over RDS).
pub fn http_listener(name: &str, addr: SocketAddr, routes: &str) -> Listener {
    let hcm = HttpConnectionManager {
        stat_prefix: name.into(),
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            route_config_name: routes.into(),
            ..Default::default()
        })),
        ..Default::default()
    };
    Listener {
        name: name.into(),
        address: Some(socket_address(addr)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(Any {
                    type_url: HttpConnectionManager::type_url(),
                    value: hcm.encode_to_vec(),
                })),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A STATIC cluster of one endpoint.
pub fn static_cluster(name: &str, endpoint: SocketAddr) -> Cluster {
    let endpoint = LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(socket_address(endpoint)),
            ..Default::default()
        })),
        ..Default::default()
    };
    Cluster {
        name: name.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: name.into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![endpoint],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}
