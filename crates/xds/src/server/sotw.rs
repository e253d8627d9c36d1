//! One state-of-the-world ADS stream.
//!
//! Per type it remembers what the client subscribed to and the version of every resource it was
//! last sent. A response for a type goes out when the subscription changes or when any resource
//! the client would receive differs from what it was sent; otherwise nothing is pushed. A stale
//! nonce (a request answering an older response) is ignored, as the protocol requires.

use super::stream::{Closed, Protocol, StreamCtx};
use crate::metrics::TypeLabel;
use crate::resources::NamedResource;
use crate::types::TypeUrl;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Subscription {
    Wildcard,
    Names(BTreeSet<String>),
}

impl Subscription {
    pub fn select(&self, all: &crate::resources::ByName) -> Vec<Arc<NamedResource>> {
        match self {
            Subscription::Wildcard => all.values().cloned().collect(),
            Subscription::Names(names) => {
                names.iter().filter_map(|n| all.get(n).cloned()).collect()
            }
        }
    }

    pub fn describe(&self) -> Vec<String> {
        match self {
            Subscription::Wildcard => vec!["*".into()],
            Subscription::Names(n) => n.iter().cloned().collect(),
        }
    }
}

#[derive(Debug)]
struct TypeState {
    subscription: Subscription,
    sent: BTreeMap<String, String>,
    nonce: String,
    sent_at: Option<Instant>,
}

pub(super) struct SotwStream {
    ctx: StreamCtx<DiscoveryResponse>,
    types: HashMap<TypeUrl, TypeState>,
}

impl SotwStream {
    async fn push_changes(&mut self) -> Result<(), Closed> {
        for t in TypeUrl::ALL {
            if self.types.contains_key(&t) {
                self.push(t, false).await?;
            }
        }
        Ok(())
    }

    async fn handle_request(&mut self, req: DiscoveryRequest) -> Result<(), Closed> {
        let Some(t) = TypeUrl::parse(&req.type_url) else {
            tracing::debug!(type_url = %req.type_url, "ignoring request for a type graymesh does not serve");
            return Ok(());
        };
        let first_for_type = !self.types.contains_key(&t);
        if !req.response_nonce.is_empty() {
            let Some(state) = self.types.get(&t) else {
                return Ok(());
            };
            if state.nonce != req.response_nonce {
                return Ok(()); // answers an older response: superseded already
            }
            self.record_reply(t, &req);
        }
        let names: BTreeSet<String> = req.resource_names.into_iter().collect();
        let current = self.types.get(&t).map(|s| &s.subscription);
        let subscription = if names.is_empty()
            && t.wildcard_capable()
            && (first_for_type || current == Some(&Subscription::Wildcard))
        {
            Subscription::Wildcard
        } else {
            Subscription::Names(names)
        };
        if first_for_type || req.response_nonce.is_empty() || current != Some(&subscription) {
            self.subscribe(t, subscription);
            self.push(t, true).await?;
        }
        Ok(())
    }

    fn subscribe(&mut self, t: TypeUrl, subscription: Subscription) {
        let described = subscription.describe();
        self.types
            .entry(t)
            .and_modify(|s| s.subscription = subscription.clone())
            .or_insert(TypeState {
                subscription,
                sent: BTreeMap::new(),
                nonce: String::new(),
                sent_at: None,
            });
        self.ctx
            .status
            .update(self.ctx.handle.id, t.as_str(), |s| s.subscribed = described);
    }

    /// An ACK (no error) or a NACK (error_detail) of our latest response for `t`.
    fn record_reply(&self, t: TypeUrl, req: &DiscoveryRequest) {
        let label = TypeLabel::new(t.short());
        match &req.error_detail {
            Some(err) => {
                self.ctx.metrics.nacks.get_or_create(&label).inc();
                tracing::warn!(type_url = t.short(), error = %err.message, "client rejected (NACKed) a push");
                self.ctx.status.update(self.ctx.handle.id, t.as_str(), |s| {
                    s.nack = Some(err.message.clone())
                });
            }
            None => {
                if let Some(at) = self.types.get(&t).and_then(|s| s.sent_at) {
                    self.ctx
                        .metrics
                        .ack_latency
                        .observe(at.elapsed().as_secs_f64());
                }
                self.ctx.status.update(self.ctx.handle.id, t.as_str(), |s| {
                    s.acked_version = req.version_info.clone();
                    s.acked_nonce = req.response_nonce.clone();
                    s.nack = None;
                });
            }
        }
    }

    /// Send `t` if anything the client would get differs from what it has (or if `force`).
    async fn push(&mut self, t: TypeUrl, force: bool) -> Result<(), Closed> {
        let resources = self.ctx.generation.resources(&self.ctx.class).await;
        let Some(state) = self.types.get_mut(&t) else {
            return Ok(());
        };
        let chosen = state.subscription.select(resources.of(t));
        let versions: BTreeMap<String, String> = chosen
            .iter()
            .map(|r| (r.name.clone(), r.version.clone()))
            .collect();
        if !force && versions == state.sent {
            return Ok(());
        }
        let nonce = self.ctx.next_nonce();
        let version = self.ctx.generation.version.to_string();
        state.sent = versions;
        state.nonce = nonce.clone();
        state.sent_at = Some(Instant::now());
        let response = DiscoveryResponse {
            version_info: version.clone(),
            resources: chosen.iter().map(|r| r.any.clone()).collect(),
            type_url: t.as_str().to_string(),
            nonce: nonce.clone(),
            ..Default::default()
        };
        self.ctx
            .metrics
            .pushes
            .get_or_create(&TypeLabel::new(t.short()))
            .inc();
        self.ctx
            .metrics
            .push_latency
            .observe(self.ctx.generation.created.elapsed().as_secs_f64());
        let count = chosen.len();
        self.ctx.status.update(self.ctx.handle.id, t.as_str(), |s| {
            s.sent_version = version;
            s.sent_nonce = nonce;
            s.resources_sent = count;
            s.pushes += 1;
        });
        self.ctx.send(response).await
    }
}

impl Protocol for SotwStream {
    type Req = DiscoveryRequest;
    type Resp = DiscoveryResponse;
    const NAME: &'static str = "sotw";

    fn node(req: &DiscoveryRequest) -> Option<Node> {
        req.node.clone()
    }

    fn new(ctx: StreamCtx<DiscoveryResponse>) -> Self {
        Self {
            ctx,
            types: HashMap::new(),
        }
    }

    fn ctx(&mut self) -> &mut StreamCtx<DiscoveryResponse> {
        &mut self.ctx
    }

    fn on_request(
        &mut self,
        req: DiscoveryRequest,
    ) -> impl std::future::Future<Output = Result<(), Closed>> + Send {
        self.handle_request(req)
    }

    fn on_generation(&mut self) -> impl std::future::Future<Output = Result<(), Closed>> + Send {
        self.push_changes()
    }
}
