//! The ADS server: one gRPC service, two protocols (state-of-the-world and delta) over the same
//! port. Each stream runs in its own task with a bounded outbound queue, so a slow client only
//! ever delays itself.
//!
//! This module knows nothing of Istio: it sends the resource sets the cache gives it and keeps
//! per-stream versions, nonces and ACK/NACK state. What goes out when is decided per stream by
//! `ordering` (make-before-break: a route waits for the client's ACK of its clusters, a removed
//! cluster waits until no route the client holds names it), the same for both protocols.

mod delta;
mod ordering;
mod sotw;
mod stream;
#[cfg(test)]
mod tests;

use crate::cache::SnapshotCache;
use crate::metrics::XdsMetrics;
use crate::node::ProxyClass;
use crate::status::{ClientSync, SyncStatus};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use std::collections::BTreeMap;
use std::time::Duration;
use stream::{Protocol, StreamCtx};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Responses a stream may have queued before it waits for its client to read.
const OUTBOUND_QUEUE: usize = 8;

#[derive(Debug, Clone)]
pub struct AdsServer {
    cache: SnapshotCache,
    status: SyncStatus,
    metrics: XdsMetrics,
    hold_timeout: Duration,
}

impl AdsServer {
    pub fn new(cache: SnapshotCache, status: SyncStatus, metrics: XdsMetrics) -> Self {
        Self {
            cache,
            status,
            metrics,
            hold_timeout: ordering::HOLD_TIMEOUT,
        }
    }

    /// How long a listener or route may wait for a client's ACK of the clusters it points at
    /// before it is sent anyway (default 5 s).
    pub fn with_hold_timeout(mut self, timeout: Duration) -> Self {
        self.hold_timeout = timeout;
        self
    }

    /// The tonic service, ready to add to a server. Accepts large requests (big subscriptions).
    pub fn into_service(self) -> AggregatedDiscoveryServiceServer<Self> {
        AggregatedDiscoveryServiceServer::new(self)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(256 << 20)
    }

    fn client(
        &self,
        node: &Node,
        class: &ProxyClass,
        protocol: &'static str,
        peer: Option<String>,
    ) -> ClientSync {
        ClientSync {
            stream_id: 0,
            node_id: node.id.clone(),
            user_agent: node.user_agent_name.clone(),
            kind: class.kind,
            namespace: class.namespace.clone(),
            protocol,
            admin_addr: crate::node::admin_addr(node, peer.as_deref()),
            peer,
            connected_at_unix: 0,
            types: BTreeMap::new(),
            class: class.clone(),
        }
    }
}

/// Decrements the connected-clients gauge when a stream ends, however it ends.
struct Connected(prometheus_client::metrics::gauge::Gauge);

impl Connected {
    fn new(gauge: &prometheus_client::metrics::gauge::Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn peer<T>(req: &Request<T>) -> Option<String> {
    req.remote_addr().map(|a| a.to_string())
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsServer {
    type StreamAggregatedResourcesStream = ReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaAggregatedResourcesStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        Ok(self.open::<sotw::SotwStream>(request))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Ok(self.open::<delta::DeltaStream>(request))
    }
}

impl AdsServer {
    /// Start serving a stream in its own task and answer with headers at once: some clients send
    /// their first request only after that.
    fn open<P: Protocol>(
        &self,
        request: Request<Streaming<P::Req>>,
    ) -> Response<ReceiverStream<Result<P::Resp, Status>>> {
        let peer = peer(&request);
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        let this = self.clone();
        tokio::spawn(async move {
            let mut inbound = request.into_inner();
            let Some((first, node)) = first_with_node(&mut inbound, &tx, P::node).await else {
                return;
            };
            let class = ProxyClass::from_node(&node);
            let handle = this
                .status
                .connect(this.client(&node, &class, P::NAME, peer));
            tracing::info!(node = %node.id, kind = ?class.kind, stream = handle.id, protocol = P::NAME, "xDS stream connected");
            let _connected = Connected::new(&this.metrics.connected_clients);
            let ctx = StreamCtx::new(
                this.cache.subscribe(),
                class,
                handle,
                this.status.clone(),
                this.metrics.clone(),
                tx,
                this.hold_timeout,
            );
            stream::drive(P::new(ctx), first, inbound).await;
            tracing::info!(node = %node.id, protocol = P::NAME, "xDS stream closed");
        });
        Response::new(ReceiverStream::new(rx))
    }
}

/// The first request of a stream, which must carry the node (later ones may leave it out).
/// A stream that ends first, or whose first request has no node, is answered with an error.
async fn first_with_node<Req, Resp>(
    inbound: &mut Streaming<Req>,
    tx: &mpsc::Sender<Result<Resp, Status>>,
    node_of: impl Fn(&Req) -> Option<Node>,
) -> Option<(Req, Node)> {
    let first = match inbound.message().await {
        Ok(Some(first)) => first,
        Ok(None) => return None,
        Err(e) => {
            tracing::debug!(error = %e, "xDS stream failed before its first request");
            return None;
        }
    };
    match node_of(&first) {
        Some(node) => Some((first, node)),
        None => {
            let _ = tx
                .send(Err(Status::invalid_argument(
                    "the first discovery request of a stream must carry the node",
                )))
                .await;
            None
        }
    }
}
