//! One ADS stream (state of the world) acting as a sidecar: CDS wildcard, then EDS for every EDS
//! cluster, ACKing every response. It publishes the distinct endpoints (`ip:port`) it holds,
//! stamped with when the response carrying them arrived.

use anyhow::Context as _;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{address, socket_address, Node};
use envoy_types::pb::envoy::config::endpoint::v3::{lb_endpoint, ClusterLoadAssignment};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use prost::Message as _;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

/// The endpoints held, and when the response that last changed them arrived.
#[derive(Debug, Clone)]
pub struct Held {
    pub endpoints: Arc<BTreeSet<String>>,
    pub at: Instant,
}

/// Connect (retrying until `deadline`: pilot may still be starting) and follow until the stream
/// ends; the last error goes to the log.
pub async fn follow(xds: String, deadline: Instant, held: watch::Sender<Held>) {
    let client = loop {
        match AggregatedDiscoveryServiceClient::connect(format!("http://{xds}")).await {
            Ok(c) => break c,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => return eprintln!("ads: cannot connect to {xds}: {e}"),
        }
    };
    if let Err(e) = drive(client, held).await {
        eprintln!("ads: stream ended: {e:#}");
    }
}

fn request(
    type_url: &str,
    names: Vec<String>,
    last: Option<&DiscoveryResponse>,
) -> DiscoveryRequest {
    DiscoveryRequest {
        node: Some(Node {
            id: "bench-etcd-eds".into(),
            cluster: "bench".into(),
            ..Node::default()
        }),
        type_url: type_url.into(),
        resource_names: names,
        version_info: last.map(|r| r.version_info.clone()).unwrap_or_default(),
        response_nonce: last.map(|r| r.nonce.clone()).unwrap_or_default(),
        ..DiscoveryRequest::default()
    }
}

async fn drive(
    mut client: AggregatedDiscoveryServiceClient<tonic::transport::Channel>,
    held: watch::Sender<Held>,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel(16);
    tx.send(request(CDS, vec![], None)).await?;
    let mut responses = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .context("opening the ADS stream")?
        .into_inner();
    let mut eds_names: Vec<String> = Vec::new();
    let mut last_eds: Option<DiscoveryResponse> = None;
    while let Some(response) = responses.message().await? {
        let at = Instant::now();
        if response.type_url == CDS {
            let mut names = BTreeSet::new();
            for any in &response.resources {
                let cluster = Cluster::decode(any.value.as_slice())?;
                if let Some(eds) = &cluster.eds_cluster_config {
                    let name = if eds.service_name.is_empty() {
                        cluster.name.clone()
                    } else {
                        eds.service_name.clone()
                    };
                    names.insert(name);
                }
            }
            tx.send(request(CDS, vec![], Some(&response))).await?;
            let names: Vec<String> = names.into_iter().collect();
            if names != eds_names {
                eds_names = names;
                tx.send(request(EDS, eds_names.clone(), last_eds.as_ref()))
                    .await?;
            }
        } else if response.type_url == EDS {
            let mut by_cluster = BTreeMap::new();
            for any in &response.resources {
                let cla = ClusterLoadAssignment::decode(any.value.as_slice())?;
                by_cluster.insert(cla.cluster_name.clone(), endpoints_of(&cla));
            }
            let all: BTreeSet<String> = by_cluster.into_values().flatten().collect();
            held.send_replace(Held {
                endpoints: Arc::new(all),
                at,
            });
            tx.send(request(EDS, eds_names.clone(), Some(&response)))
                .await?;
            last_eds = Some(response);
        }
    }
    Ok(())
}

fn endpoints_of(cla: &ClusterLoadAssignment) -> Vec<String> {
    let mut out = Vec::new();
    for lb in cla.endpoints.iter().flat_map(|l| &l.lb_endpoints) {
        let Some(lb_endpoint::HostIdentifier::Endpoint(endpoint)) = &lb.host_identifier else {
            continue;
        };
        let Some(address::Address::SocketAddress(socket)) =
            endpoint.address.as_ref().and_then(|a| a.address.as_ref())
        else {
            continue;
        };
        if let Some(socket_address::PortSpecifier::PortValue(port)) = socket.port_specifier {
            out.push(format!("{}:{port}", socket.address));
        }
    }
    out
}

/// Wait until the held endpoints satisfy `done`, at most `limit`; the time of the response
/// that made them so.
pub async fn wait_for(
    held: &mut watch::Receiver<Held>,
    limit: Duration,
    done: impl Fn(&BTreeSet<String>) -> bool,
) -> anyhow::Result<Instant> {
    let wait = async { held.wait_for(|h| done(&h.endpoints)).await.map(|h| h.at) };
    match tokio::time::timeout(limit, wait).await {
        Ok(Ok(at)) => Ok(at),
        Ok(Err(_)) => anyhow::bail!("the ADS client stopped"),
        Err(_) => {
            let count = held.borrow().endpoints.len();
            anyhow::bail!("timed out after {limit:?} (the ADS client holds {count} endpoints)")
        }
    }
}
