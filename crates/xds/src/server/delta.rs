//! One delta (incremental) ADS stream.
//!
//! Per type: the wildcard flag, the explicitly subscribed names, and the version of each
//! resource the client holds. A push carries only resources whose version changed and the names
//! of those that disappeared; a subscribed name that does not exist is reported as removed once,
//! so the client stops waiting for it.
//!
//! The push order's plan applies as updates not sent (a held listener or route: the client keeps
//! the version it has) and removals not sent (a kept cluster or load assignment). A first answer
//! to a subscription waits rather than leave out a held resource the client has never had.

use super::ordering::{ClientView, Plan};
use super::stream::{Closed, Protocol, StreamCtx};
use crate::metrics::TypeLabel;
use crate::resources::{NamedResource, ResourceSet};
use crate::types::TypeUrl;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

/// Unanswered responses remembered per type.
const IN_FLIGHT_KEPT: usize = 16;

/// One resource a client holds: sent on this stream, or reported by version on reconnect.
#[derive(Debug, Clone)]
enum Holding {
    Sent(Arc<NamedResource>),
    Reported(String),
}

impl Holding {
    fn version(&self) -> &str {
        match self {
            Holding::Sent(r) => &r.version,
            Holding::Reported(v) => v,
        }
    }
}

/// What a reconnecting client says it holds: the current resource if the version matches (its
/// references are then known), else only the version.
fn reported(all: &crate::resources::ByName, name: &str, version: String) -> Holding {
    match all.get(name) {
        Some(r) if r.version == version => Holding::Sent(r.clone()),
        _ => Holding::Reported(version),
    }
}

/// A response not yet answered: what it changed, applied to `acked` on its ACK.
#[derive(Debug)]
struct InFlight {
    version: String,
    sent_at: Instant,
    updated: Vec<Arc<NamedResource>>,
    removed: Vec<String>,
}

#[derive(Debug, Default)]
struct TypeState {
    wildcard: bool,
    names: BTreeSet<String>,
    /// What the client holds once every response sent is applied.
    sent: BTreeMap<String, Holding>,
    /// What the client holds by the responses it ACKed.
    acked: BTreeMap<String, Holding>,
    /// Subscribed names already reported as not existing.
    told_absent: BTreeSet<String>,
    in_flight: HashMap<String, InFlight>,
    /// A first request that must be answered even if nothing changed.
    unanswered: bool,
}

impl TypeState {
    fn includes(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }

    /// What the client may hold: anything sent since what it ACKed, not only the latest.
    fn held(&self) -> impl Iterator<Item = (&String, Holding)> {
        let in_flight = self.in_flight.values().flat_map(|f| &f.updated);
        let in_flight = in_flight.map(|r| (&r.name, Holding::Sent(r.clone())));
        let known = self.sent.iter().chain(&self.acked);
        known.map(|(n, h)| (n, h.clone())).chain(in_flight)
    }
}

/// The ordering's view of this stream's client.
struct Known<'a>(&'a HashMap<TypeUrl, TypeState>);

impl Known<'_> {
    fn held(&self, t: TypeUrl) -> impl Iterator<Item = (&String, Holding)> {
        self.0.get(&t).into_iter().flat_map(TypeState::held)
    }
}

impl ClientView for Known<'_> {
    fn subscribed(&self, t: TypeUrl) -> bool {
        self.0.contains_key(&t)
    }

    fn delivers(&self, t: TypeUrl, name: &str) -> bool {
        self.0.get(&t).is_some_and(|s| s.includes(name))
    }

    fn acked(&self, t: TypeUrl, name: &str) -> bool {
        self.0.get(&t).is_some_and(|s| s.acked.contains_key(name))
    }

    fn sent_version(&self, t: TypeUrl, name: &str) -> Option<&str> {
        Some(self.0.get(&t)?.sent.get(name)?.version())
    }

    fn referenced_clusters(&self) -> Option<BTreeSet<String>> {
        let mut clusters = BTreeSet::new();
        for (_, h) in self
            .held(TypeUrl::Listener)
            .chain(self.held(TypeUrl::Route))
        {
            match h {
                Holding::Sent(r) => clusters.extend(r.refs.clusters.iter().cloned()),
                Holding::Reported(_) => return None,
            }
        }
        Some(clusters)
    }

    fn clusters(&self) -> Vec<(String, Option<String>)> {
        let endpoints = |name: &String, h: Holding| match h {
            Holding::Sent(r) => r.refs.endpoints.clone(),
            // Envoy reads the cluster's own name when the service name is left empty.
            Holding::Reported(_) => Some(name.clone()),
        };
        self.held(TypeUrl::Cluster)
            .map(|(n, h)| (n.clone(), endpoints(n, h)))
            .collect()
    }
}

pub(super) struct DeltaStream {
    ctx: StreamCtx<DeltaDiscoveryResponse>,
    types: HashMap<TypeUrl, TypeState>,
}

impl DeltaStream {
    /// Push every type with updates or removals the plan allows (or that owes an answer).
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

    async fn handle_request(&mut self, req: DeltaDiscoveryRequest) -> Result<(), Closed> {
        let Some(t) = TypeUrl::parse(&req.type_url) else {
            return Ok(());
        };
        if !req.response_nonce.is_empty() {
            self.record_reply(t, &req);
            let changes = !req.resource_names_subscribe.is_empty()
                || !req.resource_names_unsubscribe.is_empty();
            if !changes {
                return match self.ctx.waits_for_acks() {
                    true => self.sync_all().await,
                    false => Ok(()),
                };
            }
        }
        let first = !self.types.contains_key(&t);
        let resources = self.ctx.generation.resources(&self.ctx.class).await;
        let state = self.types.entry(t).or_default();
        if first {
            state.wildcard = t.wildcard_capable() && req.resource_names_subscribe.is_empty();
            // A reconnecting client says what it already holds; don't send it again.
            state.sent = req
                .initial_resource_versions
                .clone()
                .into_iter()
                .map(|(name, version)| {
                    let holding = reported(resources.of(t), &name, version);
                    (name, holding)
                })
                .collect();
            state.acked = state.sent.clone();
            state.unanswered = true;
        }
        for name in req.resource_names_subscribe {
            if name == "*" {
                state.wildcard = true;
            } else {
                state.told_absent.remove(&name);
                state.names.insert(name);
            }
        }
        for name in req.resource_names_unsubscribe {
            if name == "*" {
                state.wildcard = false;
            } else {
                state.names.remove(&name);
                state.sent.remove(&name);
                state.acked.remove(&name);
            }
        }
        let described: Vec<String> = if state.wildcard {
            std::iter::once("*".to_string())
                .chain(state.names.iter().cloned())
                .collect()
        } else {
            state.names.iter().cloned().collect()
        };
        self.ctx
            .status
            .update(self.ctx.handle.id, t.as_str(), |s| s.subscribed = described);
        self.sync_all().await
    }

    fn record_reply(&mut self, t: TypeUrl, req: &DeltaDiscoveryRequest) {
        let Some(state) = self.types.get_mut(&t) else {
            return;
        };
        let Some(reply) = state.in_flight.remove(&req.response_nonce) else {
            return;
        };
        match &req.error_detail {
            Some(err) => {
                self.ctx
                    .metrics
                    .nacks
                    .get_or_create(&TypeLabel::new(t.short()))
                    .inc();
                tracing::warn!(type_url = t.short(), error = %err.message, "client rejected (NACKed) a delta push");
                self.ctx.status.update(self.ctx.handle.id, t.as_str(), |s| {
                    s.nack = Some(err.message.clone())
                });
                self.ctx.nacked(t);
            }
            None => {
                for r in reply.updated {
                    state.acked.insert(r.name.clone(), Holding::Sent(r));
                }
                for name in &reply.removed {
                    state.acked.remove(name);
                }
                self.ctx
                    .metrics
                    .ack_latency
                    .observe(reply.sent_at.elapsed().as_secs_f64());
                self.ctx.status.update(self.ctx.handle.id, t.as_str(), |s| {
                    s.acked_version = reply.version;
                    s.acked_nonce = req.response_nonce.clone();
                    s.nack = None;
                });
            }
        }
    }

    async fn push(
        &mut self,
        t: TypeUrl,
        resources: &ResourceSet,
        plan: &Plan,
    ) -> Result<(), Closed> {
        let all = resources.of(t);
        let Some(state) = self.types.get_mut(&t) else {
            return Ok(());
        };
        let mut updated = Vec::new();
        let mut removed = Vec::new();
        let wanted: BTreeSet<&String> = if state.wildcard {
            all.keys().chain(state.names.iter()).collect()
        } else {
            state.names.iter().collect()
        };
        let mut lacks_held = false;
        for name in &wanted {
            let held = state.sent.get(*name);
            match all.get(*name) {
                Some(_) if plan.holds(t, name) => lacks_held |= held.is_none(),
                Some(r) if held.map(Holding::version) != Some(r.version.as_str()) => {
                    updated.push(r.clone())
                }
                Some(_) => {}
                None if plan.keeps(t, name) => {}
                None if held.is_some() => removed.push((*name).clone()),
                None if state.names.contains(*name) && !state.told_absent.contains(*name) => {
                    state.told_absent.insert((*name).clone());
                    removed.push((*name).clone());
                }
                None => {}
            }
        }
        let gone = state
            .sent
            .keys()
            .filter(|n| !wanted.contains(n) && !plan.keeps(t, n));
        removed.extend(gone.cloned().collect::<Vec<_>>());
        let answer = state.unanswered && !lacks_held;
        if updated.is_empty() && removed.is_empty() && !answer {
            return Ok(());
        }
        state.unanswered = false;
        for r in &updated {
            state.sent.insert(r.name.clone(), Holding::Sent(r.clone()));
            state.told_absent.remove(&r.name);
        }
        for name in &removed {
            state.sent.remove(name);
        }
        let nonce = self.ctx.next_nonce();
        let version = self.ctx.generation.version.to_string();
        let in_flight = InFlight {
            version: version.clone(),
            sent_at: Instant::now(),
            updated: updated.clone(),
            removed: removed.clone(),
        };
        state.in_flight.insert(nonce.clone(), in_flight);
        if state.in_flight.len() > IN_FLIGHT_KEPT {
            // Nonces count up: forget the oldest response of a client this far behind.
            let oldest = state
                .in_flight
                .keys()
                .min_by_key(|n| n.parse::<u64>().unwrap_or(0));
            if let Some(oldest) = oldest.cloned() {
                state.in_flight.remove(&oldest);
            }
        }
        let held = state.sent.len();
        let response = DeltaDiscoveryResponse {
            system_version_info: version.clone(),
            resources: updated
                .iter()
                .map(|r| Resource {
                    name: r.name.clone(),
                    version: r.version.clone(),
                    resource: Some(r.any.clone()),
                    ..Default::default()
                })
                .collect(),
            type_url: t.as_str().to_string(),
            removed_resources: removed,
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
        self.ctx.status.update(self.ctx.handle.id, t.as_str(), |s| {
            s.sent_version = version;
            s.sent_nonce = nonce;
            s.resources_sent = held;
            s.pushes += 1;
        });
        self.ctx.send(response).await
    }
}

impl Protocol for DeltaStream {
    type Req = DeltaDiscoveryRequest;
    type Resp = DeltaDiscoveryResponse;
    const NAME: &'static str = "delta";

    fn node(req: &DeltaDiscoveryRequest) -> Option<Node> {
        req.node.clone()
    }

    fn new(ctx: StreamCtx<DeltaDiscoveryResponse>) -> Self {
        Self {
            ctx,
            types: HashMap::new(),
        }
    }

    fn ctx(&mut self) -> &mut StreamCtx<DeltaDiscoveryResponse> {
        &mut self.ctx
    }

    fn on_request(
        &mut self,
        req: DeltaDiscoveryRequest,
    ) -> impl std::future::Future<Output = Result<(), Closed>> + Send {
        self.handle_request(req)
    }

    fn sync(&mut self) -> impl std::future::Future<Output = Result<(), Closed>> + Send {
        self.sync_all()
    }
}
