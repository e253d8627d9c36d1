//! One ADS stream (state of the world) that behaves like a proxyless gRPC client: it subscribes
//! to one listener, follows the chain to routes, clusters and endpoints, and ACKs every response.
//!
//! It reports what happens as [`Event`]s, stamped where they happen, and never waits on the
//! collector: the event channel is unbounded so a slow collector cannot slow the stream down.

use crate::chain::{self, XdsType};
use anyhow::Context as _;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use std::collections::BTreeSet;
use std::time::Instant;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// What a stream tells the collector.
#[derive(Debug)]
pub enum Event {
    /// A response of `kind` arrived (and was ACKed right after).
    Response {
        stream: usize,
        kind: XdsType,
        at: Instant,
    },
    /// The stream holds every resource of all four types it subscribed to, for the first time.
    Synced { stream: usize, at: Instant },
    /// An RDS response whose route configuration differs from the one held before.
    RouteChanged {
        stream: usize,
        received: Instant,
        acked: Instant,
    },
    /// The stream ended (error or server close); it will report nothing more.
    Closed { stream: usize, reason: String },
}

/// Who the stream is and what it asks for first.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    pub index: usize,
    pub listener: String,
}

/// Per type: the subscription and the latest response seen.
#[derive(Debug, Default)]
struct TypeState {
    names: BTreeSet<String>,
    version: String,
    nonce: String,
    received: BTreeSet<String>,
}

struct AdsClient {
    spec: StreamSpec,
    events: mpsc::UnboundedSender<Event>,
    requests: mpsc::Sender<DiscoveryRequest>,
    types: [TypeState; 4],
    /// Encoded route configurations of the latest RDS response, to tell a real change.
    routes: Option<Vec<Vec<u8>>>,
    synced: bool,
}

/// Run one stream until the server closes it or it fails; the outcome goes out as an event.
pub async fn run(channel: Channel, spec: StreamSpec, events: mpsc::UnboundedSender<Event>) {
    let index = spec.index;
    let reason = match drive(channel, spec, events.clone()).await {
        Ok(()) => "closed by the server".to_string(),
        Err(e) => format!("{e:#}"),
    };
    let _ = events.send(Event::Closed {
        stream: index,
        reason,
    });
}

async fn drive(
    channel: Channel,
    spec: StreamSpec,
    events: mpsc::UnboundedSender<Event>,
) -> anyhow::Result<()> {
    let (requests, outbound) = mpsc::channel(16);
    let mut client = AdsClient {
        spec,
        events,
        requests,
        types: Default::default(),
        routes: None,
        synced: false,
    };
    client.subscribe_listener().await?;
    let mut inbound = AggregatedDiscoveryServiceClient::new(channel)
        .stream_aggregated_resources(ReceiverStream::new(outbound))
        .await
        .context("opening the ADS stream")?
        .into_inner();
    while let Some(response) = inbound.message().await.context("reading the ADS stream")? {
        client.on_response(response).await?;
    }
    Ok(())
}

// === impl AdsClient ===

impl AdsClient {
    /// The first request carries the node, as gRPC's does.
    async fn subscribe_listener(&mut self) -> anyhow::Result<()> {
        let state = &mut self.types[XdsType::Listener.index()];
        state.names = BTreeSet::from([self.spec.listener.clone()]);
        let mut request = self.request(XdsType::Listener);
        request.node = Some(Node {
            id: format!("bench-{}", self.spec.index),
            user_agent_name: "gRPC bench".to_string(),
            ..Default::default()
        });
        self.send(request).await
    }

    async fn on_response(&mut self, response: DiscoveryResponse) -> anyhow::Result<()> {
        let at = Instant::now();
        let kind = XdsType::from_url(&response.type_url)
            .with_context(|| format!("unexpected type {}", response.type_url))?;
        let _ = self.events.send(Event::Response {
            stream: self.spec.index,
            kind,
            at,
        });
        let next_names = chain::referenced_names(kind, &response.resources)?;
        let route_changed = kind == XdsType::Route && self.note_routes(&response);
        self.note_response(kind, &response)?;
        self.send(self.request(kind)).await?; // the ACK
        let acked = Instant::now();
        if route_changed {
            let _ = self.events.send(Event::RouteChanged {
                stream: self.spec.index,
                received: at,
                acked,
            });
        }
        if let Some(next) = kind.next() {
            self.follow(next, next_names).await?;
        }
        self.check_synced(acked);
        Ok(())
    }

    /// Remember the routes of an RDS response; true when they differ from the previous ones.
    fn note_routes(&mut self, response: &DiscoveryResponse) -> bool {
        let encoded: Vec<Vec<u8>> = response.resources.iter().map(|r| r.value.clone()).collect();
        let previous = self.routes.replace(encoded);
        previous.is_some_and(|p| Some(&p) != self.routes.as_ref())
    }

    fn note_response(&mut self, kind: XdsType, response: &DiscoveryResponse) -> anyhow::Result<()> {
        let received = response
            .resources
            .iter()
            .map(|r| chain::resource_name(kind, r))
            .collect::<anyhow::Result<_>>()?;
        let state = &mut self.types[kind.index()];
        state.version = response.version_info.clone();
        state.nonce = response.nonce.clone();
        state.received = received;
        Ok(())
    }

    /// Subscribe `next` to `names` when they differ from its current subscription.
    async fn follow(&mut self, next: XdsType, names: BTreeSet<String>) -> anyhow::Result<()> {
        if self.types[next.index()].names == names {
            return Ok(());
        }
        self.types[next.index()].names = names;
        self.send(self.request(next)).await
    }

    fn check_synced(&mut self, at: Instant) {
        if self.synced {
            return;
        }
        let complete = self
            .types
            .iter()
            .all(|s| !s.names.is_empty() && s.names.is_subset(&s.received));
        if complete {
            self.synced = true;
            let _ = self.events.send(Event::Synced {
                stream: self.spec.index,
                at,
            });
        }
    }

    /// The request for `kind` as things stand: its subscription, ACKing the latest response.
    fn request(&self, kind: XdsType) -> DiscoveryRequest {
        let state = &self.types[kind.index()];
        DiscoveryRequest {
            version_info: state.version.clone(),
            resource_names: state.names.iter().cloned().collect(),
            type_url: kind.url().to_string(),
            response_nonce: state.nonce.clone(),
            ..Default::default()
        }
    }

    async fn send(&self, request: DiscoveryRequest) -> anyhow::Result<()> {
        self.requests
            .send(request)
            .await
            .map_err(|_| anyhow::anyhow!("the request stream was dropped"))
    }
}
