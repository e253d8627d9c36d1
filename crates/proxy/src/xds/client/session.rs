//! One ADS stream to one pilot, from connect to its end. All ACKs and NACKs are made here.
//!
//! Per type it remembers the names it last requested and the last nonce received on this stream
//! (a nonce means nothing to another stream, so a new stream starts without any). Requests go
//! into an unbounded queue, so sending never waits for the pilot and a handler never waits for
//! anything: the only await in the loop is for the next response or subscription change.

use super::subscriptions::{in_request_order, is_wildcard_type, SubscriptionMap};
use super::{AcceptedVersions, XdsClient};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::Streaming;

/// Responses can be large (every cluster of a mesh); the pilot allows itself 256 MiB.
const MAX_MESSAGE: usize = 256 << 20;
/// HTTP/2 pings find a pilot that vanished without closing the connection.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// `google.rpc.Code.INVALID_ARGUMENT`, the code of every NACK.
const INVALID_ARGUMENT: i32 = 3;

/// Connect to `pilot`, run the stream until it fails or ends, and return how many responses it
/// delivered.
pub(super) async fn run(client: &XdsClient, pilot: &str, accepted: &mut AcceptedVersions) -> u64 {
    client.status.update(|s| {
        s.connect_attempts += 1;
        s.pilot = Some(pilot.to_string());
    });
    let (outbound, requests) = mpsc::unbounded_channel();
    let mut session = Session::new(client, accepted, outbound);
    // Queued before the stream opens: some servers send headers only after the first request.
    session.send_changed();
    let inbound = match open(client, pilot, requests).await {
        Ok(inbound) => inbound,
        Err(error) => {
            tracing::warn!(%pilot, %error, "cannot open an xDS stream");
            client.status.update(|s| s.last_error = Some(error));
            return 0;
        }
    };
    tracing::info!(%pilot, "xDS stream connected");
    client.status.update(|s| s.connected = true);
    let error = session.serve(inbound).await;
    tracing::info!(%pilot, responses = session.responses, %error, "xDS stream disconnected");
    client.status.update(|s| {
        s.connected = false;
        s.last_error = Some(error);
    });
    session.responses
}

async fn open(
    client: &XdsClient,
    pilot: &str,
    requests: mpsc::UnboundedReceiver<DiscoveryRequest>,
) -> Result<Streaming<DiscoveryResponse>, String> {
    let timeout = client.config.connect_timeout;
    let channel = connect(pilot, timeout).await?;
    let mut ads = AggregatedDiscoveryServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let opening = ads.stream_aggregated_resources(UnboundedReceiverStream::new(requests));
    match tokio::time::timeout(timeout, opening).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(format!("the pilot refused the stream: {status}")),
        Err(_) => Err(format!(
            "the pilot did not open the stream within {timeout:?}"
        )),
    }
}

async fn connect(pilot: &str, timeout: Duration) -> Result<Channel, String> {
    let uri = if pilot.contains("://") {
        pilot.to_string()
    } else {
        format!("http://{pilot}")
    };
    let endpoint = Endpoint::from_shared(uri)
        .map_err(|e| format!("invalid pilot address {pilot:?}: {}", chain(&e)))?
        .connect_timeout(timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT);
    endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot connect: {}", chain(&e)))
}

/// An error with its causes: tonic's own message is only "transport error".
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

struct Session<'a> {
    client: &'a XdsClient,
    accepted: &'a mut AcceptedVersions,
    subscriptions: watch::Receiver<SubscriptionMap>,
    outbound: mpsc::UnboundedSender<DiscoveryRequest>,
    /// Names last requested on this stream, by type URL.
    requested: SubscriptionMap,
    /// Nonce of the last response on this stream, by type URL.
    nonces: BTreeMap<String, String>,
    /// Taken by the first request of the stream.
    node: Option<Node>,
    responses: u64,
}

// === impl Session ===

impl<'a> Session<'a> {
    fn new(
        client: &'a XdsClient,
        accepted: &'a mut AcceptedVersions,
        outbound: mpsc::UnboundedSender<DiscoveryRequest>,
    ) -> Self {
        Self {
            client,
            accepted,
            subscriptions: client.subscriptions.watch(),
            outbound,
            requested: SubscriptionMap::new(),
            nonces: BTreeMap::new(),
            node: Some(client.config.node.clone()),
            responses: 0,
        }
    }

    /// Run until the stream fails or ends; returns why.
    async fn serve(&mut self, mut inbound: Streaming<DiscoveryResponse>) -> String {
        loop {
            tokio::select! {
                message = inbound.message() => match message {
                    Ok(Some(response)) => self.on_response(response),
                    Ok(None) => return "the pilot ended the stream".into(),
                    Err(status) => return format!("the stream failed: {status}"),
                },
                changed = self.subscriptions.changed() => match changed {
                    Ok(()) => self.send_changed(),
                    // Unreachable while the client (which holds the sender) runs us.
                    Err(_) => return "subscriptions dropped".into(),
                },
            }
        }
    }

    /// Hand the response to its handler, then ACK or NACK it, then send the subscription changes
    /// the handler made (after the ACK, so the pilot sees them as a new request).
    fn on_response(&mut self, response: DiscoveryResponse) {
        self.responses += 1;
        let DiscoveryResponse {
            version_info,
            resources,
            type_url,
            nonce,
            ..
        } = response;
        self.nonces.insert(type_url.clone(), nonce.clone());
        // Counted before the handler runs: whoever sees its effect sees it counted.
        self.client.status.update_type(&type_url, |t| {
            t.responses += 1;
            t.last_nonce = nonce.clone();
        });
        // An ACK carries the new version; a NACK the one still in use.
        let (version, error_detail) = match self.apply(&type_url, &version_info, resources) {
            Ok(()) => (version_info, None),
            Err(message) => {
                let status = RpcStatus {
                    code: INVALID_ARGUMENT,
                    message,
                    details: vec![],
                };
                (self.accepted_version(&type_url), Some(status))
            }
        };
        self.send(&type_url, version, nonce, error_detail);
        self.send_changed();
    }

    /// Run the handler of `type_url` and record whether it accepted `version`.
    fn apply(&mut self, type_url: &str, version: &str, resources: Vec<Any>) -> Result<(), String> {
        let count = resources.len();
        let result = match self.client.handlers.get(type_url) {
            Some(handler) => handler.handle(resources, &self.client.subscriptions),
            None => Err(format!("no handler for type {type_url}")),
        };
        match &result {
            Ok(()) => {
                tracing::debug!(%type_url, %version, resources = count, "xDS response accepted");
                self.accepted
                    .insert(type_url.to_string(), version.to_string());
                self.client.status.update_type(type_url, |t| {
                    t.accepted_version = version.to_string();
                    t.nack = None;
                });
            }
            Err(error) => {
                tracing::warn!(%type_url, %version, %error, "xDS response rejected (NACK)");
                let error = error.clone();
                self.client
                    .status
                    .update_type(type_url, |t| t.nack = Some(error));
            }
        }
        result
    }

    /// Request every type whose subscription differs from what this stream last requested, in
    /// request order. A type never requested here is skipped while it names nothing, unless
    /// an empty set is its wildcard.
    fn send_changed(&mut self) {
        let current = self.subscriptions.borrow_and_update().clone();
        for type_url in in_request_order(&current) {
            let names = &current[type_url];
            match self.requested.get(type_url) {
                Some(requested) if requested == names => continue,
                None if names.is_empty() && !is_wildcard_type(type_url) => continue,
                _ => {}
            }
            self.requested.insert(type_url.to_string(), names.clone());
            let version = self.accepted_version(type_url);
            let nonce = self.nonces.get(type_url).cloned().unwrap_or_default();
            self.send(type_url, version, nonce, None);
        }
    }

    fn accepted_version(&self, type_url: &str) -> String {
        self.accepted.get(type_url).cloned().unwrap_or_default()
    }

    /// Queue a request for `type_url` naming what this stream last requested of it.
    fn send(
        &mut self,
        type_url: &str,
        version_info: String,
        response_nonce: String,
        error_detail: Option<RpcStatus>,
    ) {
        let names = self.requested.get(type_url).cloned().unwrap_or_default();
        self.client
            .status
            .update_type(type_url, |t| t.subscribed = describe(type_url, &names));
        let request = DiscoveryRequest {
            version_info,
            node: self.node.take(),
            resource_names: names.into_iter().collect(),
            type_url: type_url.to_string(),
            response_nonce,
            error_detail,
            ..Default::default()
        };
        // Fails only once the stream is gone, which `serve` learns from the inbound side.
        let _ = self.outbound.send(request);
    }
}

fn describe(type_url: &str, names: &BTreeSet<String>) -> Vec<String> {
    if names.is_empty() && is_wildcard_type(type_url) {
        vec!["*".into()]
    } else {
        names.iter().cloned().collect()
    }
}
