//! One delta (incremental) ADS stream.
//!
//! Per type: the wildcard flag, the explicitly subscribed names, and the version of each
//! resource the client holds. A push carries only resources whose version changed and the names
//! of those that disappeared; a subscribed name that does not exist is reported as removed once,
//! so the client stops waiting for it.

use super::stream::{Closed, Protocol, StreamCtx};
use crate::metrics::TypeLabel;
use crate::types::TypeUrl;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

#[derive(Debug, Default)]
struct TypeState {
    wildcard: bool,
    names: BTreeSet<String>,
    /// name ⇒ version the client holds.
    sent: BTreeMap<String, String>,
    /// Subscribed names already reported as not existing.
    told_absent: BTreeSet<String>,
    in_flight: HashMap<String, (String, Instant)>,
}

pub(super) struct DeltaStream {
    ctx: StreamCtx<DeltaDiscoveryResponse>,
    types: HashMap<TypeUrl, TypeState>,
}

impl DeltaStream {
    async fn push_changes(&mut self) -> Result<(), Closed> {
        for t in TypeUrl::ALL {
            if self.types.contains_key(&t) {
                self.push(t, false).await?;
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
                return Ok(());
            }
        }
        let first = !self.types.contains_key(&t);
        let state = self.types.entry(t).or_default();
        if first {
            state.wildcard = t.wildcard_capable() && req.resource_names_subscribe.is_empty();
            // A reconnecting client says what it already holds; don't send it again.
            state.sent = req.initial_resource_versions.clone().into_iter().collect();
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
        self.push(t, first).await
    }

    fn record_reply(&mut self, t: TypeUrl, req: &DeltaDiscoveryRequest) {
        let Some(state) = self.types.get_mut(&t) else {
            return;
        };
        let Some((version, sent_at)) = state.in_flight.remove(&req.response_nonce) else {
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
            }
            None => {
                self.ctx
                    .metrics
                    .ack_latency
                    .observe(sent_at.elapsed().as_secs_f64());
                self.ctx.status.update(self.ctx.handle.id, t.as_str(), |s| {
                    s.acked_version = version;
                    s.acked_nonce = req.response_nonce.clone();
                    s.nack = None;
                });
            }
        }
    }

    async fn push(&mut self, t: TypeUrl, force: bool) -> Result<(), Closed> {
        let resources = self.ctx.generation.resources(&self.ctx.class).await;
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
        for name in &wanted {
            match all.get(*name) {
                Some(r) if state.sent.get(*name) != Some(&r.version) => updated.push(r.clone()),
                Some(_) => {}
                None if state.sent.contains_key(*name) => removed.push((*name).clone()),
                None if state.names.contains(*name) && !state.told_absent.contains(*name) => {
                    state.told_absent.insert((*name).clone());
                    removed.push((*name).clone());
                }
                None => {}
            }
        }
        let gone: Vec<String> = state
            .sent
            .keys()
            .filter(|n| !wanted.contains(n))
            .cloned()
            .collect();
        removed.extend(gone);
        if updated.is_empty() && removed.is_empty() && !force {
            return Ok(());
        }
        for r in &updated {
            state.sent.insert(r.name.clone(), r.version.clone());
            state.told_absent.remove(&r.name);
        }
        for name in &removed {
            state.sent.remove(name);
        }
        let nonce = self.ctx.next_nonce();
        let version = self.ctx.generation.version.to_string();
        state
            .in_flight
            .insert(nonce.clone(), (version.clone(), Instant::now()));
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

    fn on_generation(&mut self) -> impl std::future::Future<Output = Result<(), Closed>> + Send {
        self.push_changes()
    }
}
