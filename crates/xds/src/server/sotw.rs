//! One state-of-the-world ADS stream.
//!
//! Per type it remembers what the client subscribed to and the version of every resource it was
//! last sent. A response for a type goes out when the subscription changes or when any resource
//! the client would receive differs from what it was sent; otherwise nothing is pushed. A stale
//! nonce (a request answering an older response) is ignored, as the protocol requires.
//!
//! What "the client would receive" is the target set as the push order's plan allows it: a held
//! listener or route stays at the version the client was sent (or is left out if it has none),
//! a kept cluster stays in the set. A first answer to a subscription waits, rather than leave out
//! a held resource the client has never had (an empty LDS would look like "no listeners").

use super::ordering::{ClientView, Plan};
use super::stream::{Closed, Protocol, StreamCtx};
use crate::metrics::TypeLabel;
use crate::resources::{ByName, NamedResource, ResourceSet};
use crate::types::TypeUrl;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

/// Unanswered responses remembered per type; a client this far behind answers the newest.
const UNACKED_KEPT: usize = 8;

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

    pub fn includes(&self, name: &str) -> bool {
        match self {
            Subscription::Wildcard => true,
            Subscription::Names(names) => names.contains(name),
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
    /// The resources of the latest response.
    sent: ByName,
    /// The resources of the latest ACKed response.
    acked: ByName,
    /// Responses not answered yet, oldest first, with their resources.
    unacked: VecDeque<(String, ByName)>,
    nonce: String,
    sent_at: Option<Instant>,
    /// A request that must be answered even if nothing changed.
    unanswered: bool,
}

impl TypeState {
    /// What the client should hold of `t` now: `all` as `plan` allows, by subscription.
    fn view(&self, t: TypeUrl, all: &ByName, plan: &Plan) -> ByName {
        let mut view = ByName::new();
        for r in self.subscription.select(all) {
            if !plan.holds(t, &r.name) {
                view.insert(r.name.clone(), r);
            } else if let Some(old) = self.sent.get(&r.name) {
                view.insert(r.name.clone(), old.clone());
            }
        }
        for (name, old) in &self.sent {
            if plan.keeps(t, name) && self.subscription.includes(name) {
                view.insert(name.clone(), old.clone());
            }
        }
        view
    }

    /// A held resource the client asked for and has never been sent.
    fn lacks_held(&self, t: TypeUrl, plan: &Plan) -> bool {
        plan.held().any(|(ht, name)| {
            ht == t && self.subscription.includes(name) && !self.sent.contains_key(name)
        })
    }
}

fn same_versions(a: &ByName, b: &ByName) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((n1, r1), (n2, r2))| n1 == n2 && r1.version == r2.version)
}

/// The ordering's view of this stream's client.
struct Known<'a>(&'a HashMap<TypeUrl, TypeState>);

impl Known<'_> {
    /// What the client may hold of `t`: any response since the last one it ACKed.
    fn held(&self, t: TypeUrl) -> impl Iterator<Item = &Arc<NamedResource>> {
        self.0.get(&t).into_iter().flat_map(|s| {
            let unacked = s.unacked.iter().flat_map(|(_, r)| r.values());
            s.sent.values().chain(s.acked.values()).chain(unacked)
        })
    }
}

impl ClientView for Known<'_> {
    fn subscribed(&self, t: TypeUrl) -> bool {
        self.0.contains_key(&t)
    }

    fn delivers(&self, t: TypeUrl, name: &str) -> bool {
        self.0
            .get(&t)
            .is_some_and(|s| s.subscription.includes(name))
    }

    fn acked(&self, t: TypeUrl, name: &str) -> bool {
        self.0.get(&t).is_some_and(|s| s.acked.contains_key(name))
    }

    fn sent_version(&self, t: TypeUrl, name: &str) -> Option<&str> {
        Some(self.0.get(&t)?.sent.get(name)?.version.as_str())
    }

    fn referenced_clusters(&self) -> Option<BTreeSet<String>> {
        let refs = self
            .held(TypeUrl::Listener)
            .chain(self.held(TypeUrl::Route));
        Some(refs.flat_map(|r| r.refs.clusters.iter().cloned()).collect())
    }

    fn clusters(&self) -> Vec<(String, Option<String>)> {
        self.held(TypeUrl::Cluster)
            .map(|r| (r.name.clone(), r.refs.endpoints.clone()))
            .collect()
    }
}

pub(super) struct SotwStream {
    ctx: StreamCtx<DiscoveryResponse>,
    types: HashMap<TypeUrl, TypeState>,
}

impl SotwStream {
    /// Push every type whose view differs from what was sent (or that owes an answer).
    async fn sync_all(&mut self) -> Result<(), Closed> {
        let resources = self.ctx.generation.resources(&self.ctx.class).await;
        let plan = self.ctx.plan(&resources, &Known(&self.types));
        for t in TypeUrl::ALL {
            if self.types.contains_key(&t) {
                self.push(t, &resources, &plan).await?;
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
                // Answers an older response: superseded already, but an ACK of it still says
                // what the client holds, which held routes may be waiting for.
                let acked = req.error_detail.is_none() && self.acked(t, &req.response_nonce);
                return match acked && self.ctx.waits_for_acks() {
                    true => self.sync_all().await,
                    false => Ok(()),
                };
            }
            self.record_reply(t, &req);
        }
        let replied = !req.response_nonce.is_empty();
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
        if first_for_type || !replied || current != Some(&subscription) {
            self.subscribe(t, subscription);
            self.sync_all().await
        } else if self.ctx.waits_for_acks() {
            self.sync_all().await
        } else {
            Ok(())
        }
    }

    fn subscribe(&mut self, t: TypeUrl, subscription: Subscription) {
        let described = subscription.describe();
        self.types
            .entry(t)
            .and_modify(|s| {
                s.subscription = subscription.clone();
                s.unanswered = true;
            })
            .or_insert(TypeState {
                subscription,
                sent: ByName::new(),
                acked: ByName::new(),
                unacked: VecDeque::new(),
                nonce: String::new(),
                sent_at: None,
                unanswered: true,
            });
        self.ctx
            .status
            .update(self.ctx.handle.id, t.as_str(), |s| s.subscribed = described);
    }

    /// The client ACKed response `nonce` of `t`, the latest or an older one still unanswered:
    /// it holds what that response carried. Whether `nonce` was one.
    fn acked(&mut self, t: TypeUrl, nonce: &str) -> bool {
        let Some(state) = self.types.get_mut(&t) else {
            return false;
        };
        let Some(at) = state.unacked.iter().position(|(n, _)| n == nonce) else {
            return false;
        };
        state.unacked.drain(..at);
        if let Some((_, resources)) = state.unacked.pop_front() {
            state.acked = resources;
        }
        true
    }

    /// An ACK (no error) or a NACK (error_detail) of our latest response for `t`.
    fn record_reply(&mut self, t: TypeUrl, req: &DiscoveryRequest) {
        let label = TypeLabel::new(t.short());
        match &req.error_detail {
            Some(err) => {
                self.ctx.metrics.nacks.get_or_create(&label).inc();
                tracing::warn!(type_url = t.short(), error = %err.message, "client rejected (NACKed) a push");
                self.ctx.status.update(self.ctx.handle.id, t.as_str(), |s| {
                    s.nack = Some(err.message.clone())
                });
                self.ctx.nacked(t);
            }
            None => {
                self.acked(t, &req.response_nonce);
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

    /// Send `t` if its view differs from what the client was sent, or if a request awaits an
    /// answer that would not leave out a held resource.
    async fn push(
        &mut self,
        t: TypeUrl,
        resources: &ResourceSet,
        plan: &Plan,
    ) -> Result<(), Closed> {
        let Some(state) = self.types.get_mut(&t) else {
            return Ok(());
        };
        let view = state.view(t, resources.of(t), plan);
        let answer = state.unanswered && !state.lacks_held(t, plan);
        if !answer && same_versions(&view, &state.sent) {
            return Ok(());
        }
        let chosen: Vec<Arc<NamedResource>> = view.values().cloned().collect();
        state.sent = view;
        state.unanswered = false;
        let nonce = self.ctx.next_nonce();
        let version = self.ctx.generation.version.to_string();
        state.nonce = nonce.clone();
        state.unacked.push_back((nonce.clone(), state.sent.clone()));
        if state.unacked.len() > UNACKED_KEPT {
            state.unacked.pop_front();
        }
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

    fn sync(&mut self) -> impl std::future::Future<Output = Result<(), Closed>> + Send {
        self.sync_all()
    }
}
