//! One state-of-the-world ADS stream.
//!
//! Per type it remembers what the client subscribed to and the version of every resource it was
//! last sent. A response for a type goes out when the subscription changes or when any resource
//! the client would receive differs from what it was sent; otherwise nothing is pushed. A stale
//! nonce (a request answering an older response) is ignored, as the protocol requires.

use crate::cache::Generation;
use crate::metrics::{TypeLabel, XdsMetrics};
use crate::node::ProxyClass;
use crate::resources::NamedResource;
use crate::status::{ClientHandle, SyncStatus};
use crate::types::TypeUrl;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, watch};
use tonic::{Status, Streaming};

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
    generations: watch::Receiver<Arc<Generation>>,
    generation: Arc<Generation>,
    class: ProxyClass,
    handle: ClientHandle,
    status: SyncStatus,
    metrics: XdsMetrics,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
    types: HashMap<TypeUrl, TypeState>,
    nonce_counter: u64,
}

/// The stream ended: the client went away or stopped reading for good.
struct Closed;

impl SotwStream {
    pub fn new(
        mut generations: watch::Receiver<Arc<Generation>>,
        class: ProxyClass,
        handle: ClientHandle,
        status: SyncStatus,
        metrics: XdsMetrics,
        tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
    ) -> Self {
        let generation = generations.borrow_and_update().clone();
        Self {
            generations,
            generation,
            class,
            handle,
            status,
            metrics,
            tx,
            types: HashMap::new(),
            nonce_counter: 0,
        }
    }

    pub async fn run(mut self, first: DiscoveryRequest, mut inbound: Streaming<DiscoveryRequest>) {
        if self.on_request(first).await.is_err() {
            return;
        }
        loop {
            let step = tokio::select! {
                msg = inbound.message() => match msg {
                    Ok(Some(req)) => self.on_request(req).await,
                    Ok(None) => Err(Closed),
                    Err(e) => {
                        tracing::debug!(error = %e, "xDS stream receive failed");
                        Err(Closed)
                    }
                },
                changed = self.generations.changed() => match changed {
                    Ok(()) => self.on_generation().await,
                    Err(_) => Err(Closed),
                },
            };
            if step.is_err() {
                return;
            }
        }
    }

    async fn on_generation(&mut self) -> Result<(), Closed> {
        self.generation = self.generations.borrow_and_update().clone();
        for t in TypeUrl::ALL {
            if self.types.contains_key(&t) {
                self.push(t, false).await?;
            }
        }
        Ok(())
    }

    async fn on_request(&mut self, req: DiscoveryRequest) -> Result<(), Closed> {
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
        self.status
            .update(self.handle.id, t.as_str(), |s| s.subscribed = described);
    }

    /// An ACK (no error) or a NACK (error_detail) of our latest response for `t`.
    fn record_reply(&self, t: TypeUrl, req: &DiscoveryRequest) {
        let label = TypeLabel::new(t.short());
        match &req.error_detail {
            Some(err) => {
                self.metrics.nacks.get_or_create(&label).inc();
                tracing::warn!(type_url = t.short(), error = %err.message, "client rejected (NACKed) a push");
                self.status.update(self.handle.id, t.as_str(), |s| {
                    s.nack = Some(err.message.clone())
                });
            }
            None => {
                if let Some(at) = self.types.get(&t).and_then(|s| s.sent_at) {
                    self.metrics.ack_latency.observe(at.elapsed().as_secs_f64());
                }
                self.status.update(self.handle.id, t.as_str(), |s| {
                    s.acked_version = req.version_info.clone();
                    s.acked_nonce = req.response_nonce.clone();
                    s.nack = None;
                });
            }
        }
    }

    /// Send `t` if anything the client would get differs from what it has (or if `force`).
    async fn push(&mut self, t: TypeUrl, force: bool) -> Result<(), Closed> {
        let resources = self.generation.resources(&self.class).await;
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
        self.nonce_counter += 1;
        let nonce = self.nonce_counter.to_string();
        let version = self.generation.version.to_string();
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
        self.metrics
            .pushes
            .get_or_create(&TypeLabel::new(t.short()))
            .inc();
        self.metrics
            .push_latency
            .observe(self.generation.created.elapsed().as_secs_f64());
        let count = chosen.len();
        self.status.update(self.handle.id, t.as_str(), |s| {
            s.sent_version = version;
            s.sent_nonce = nonce;
            s.resources_sent = count;
            s.pushes += 1;
        });
        self.tx.send(Ok(response)).await.map_err(|_| Closed)
    }
}
