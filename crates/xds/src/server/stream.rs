//! What the two ADS protocols share: the per-stream context (generation, node class, status,
//! metrics, outbound queue, nonces, push order) and the loop that drives a stream until either
//! side ends it.

use super::ordering::{ClientView, Plan, PushOrder};
use crate::cache::Generation;
use crate::metrics::XdsMetrics;
use crate::node::ProxyClass;
use crate::resources::ResourceSet;
use crate::status::{ClientHandle, SyncStatus};
use crate::types::TypeUrl;
use envoy_types::pb::envoy::config::core::v3::Node;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tonic::{Status, Streaming};

/// The stream ended: the client went away or stopped reading for good.
pub(super) struct Closed;

pub(super) struct StreamCtx<Resp> {
    pub generations: watch::Receiver<Arc<Generation>>,
    pub generation: Arc<Generation>,
    pub class: ProxyClass,
    pub handle: ClientHandle,
    pub status: SyncStatus,
    pub metrics: XdsMetrics,
    pub tx: mpsc::Sender<Result<Resp, Status>>,
    nonce_counter: u64,
    order: PushOrder,
    /// The last plan held or kept nothing: an ACK cannot change what the client should get.
    quiet: bool,
    /// When the last plan's earliest hold runs out.
    wake_at: Option<Instant>,
    held_back: BTreeMap<TypeUrl, Vec<String>>,
}

impl<Resp> StreamCtx<Resp> {
    pub fn new(
        mut generations: watch::Receiver<Arc<Generation>>,
        class: ProxyClass,
        handle: ClientHandle,
        status: SyncStatus,
        metrics: XdsMetrics,
        tx: mpsc::Sender<Result<Resp, Status>>,
        hold_timeout: Duration,
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
            nonce_counter: 0,
            order: PushOrder::new(hold_timeout),
            quiet: true,
            wake_at: None,
            held_back: BTreeMap::new(),
        }
    }

    pub fn next_nonce(&mut self) -> String {
        self.nonce_counter += 1;
        self.nonce_counter.to_string()
    }

    /// Move to the newest generation.
    pub fn refresh(&mut self) {
        self.generation = self.generations.borrow_and_update().clone();
    }

    /// Queue a response; waits while the client is slow to read (only this stream waits).
    pub async fn send(&self, response: Resp) -> Result<(), Closed> {
        self.tx.send(Ok(response)).await.map_err(|_| Closed)
    }

    /// What may be sent now (the one place both protocols ask), logged and shown in the status.
    pub fn plan(&mut self, target: &ResourceSet, client: &impl ClientView) -> Plan {
        let plan = self.order.plan(target, client, Instant::now());
        for cluster in &plan.expired {
            tracing::warn!(stream = self.handle.id, %cluster, "client did not ACK a cluster (or its endpoints) in time; sending what points at it anyway");
        }
        self.quiet = plan.is_quiet();
        self.wake_at = plan.wake_at;
        self.show_held(&plan);
        plan
    }

    /// An ACK arrived: whether it may let something held or kept go.
    pub fn waits_for_acks(&self) -> bool {
        !self.quiet
    }

    /// The client NACKed a response of `t`: what waits for it goes out at the next plan.
    pub fn nacked(&mut self, t: TypeUrl) {
        if self.order.nacked(t) {
            tracing::warn!(
                stream = self.handle.id,
                type_url = t.short(),
                "client NACKed what held routes wait for; sending them anyway"
            );
        }
    }

    fn show_held(&mut self, plan: &Plan) {
        let mut now: BTreeMap<TypeUrl, Vec<String>> = BTreeMap::new();
        for (t, name) in plan.held() {
            now.entry(t).or_default().push(name.to_string());
        }
        for t in TypeUrl::ALL {
            let (before, after) = (self.held_back.get(&t), now.get(&t));
            if before != after {
                let names = after.cloned().unwrap_or_default();
                self.status
                    .update(self.handle.id, t.as_str(), |s| s.held_back = names);
            }
        }
        self.held_back = now;
    }
}

/// One protocol's handling of a stream.
pub(super) trait Protocol: Sized + Send + 'static {
    type Req: prost::Message + Default + Send + 'static;
    type Resp: Send + 'static;
    /// `sotw` or `delta`, as status and logs name it.
    const NAME: &'static str;

    fn node(req: &Self::Req) -> Option<Node>;
    fn new(ctx: StreamCtx<Self::Resp>) -> Self;
    fn ctx(&mut self) -> &mut StreamCtx<Self::Resp>;
    fn on_request(&mut self, req: Self::Req) -> impl Future<Output = Result<(), Closed>> + Send;
    /// A new generation, or a hold ran out: push what the client should have now and lacks.
    fn sync(&mut self) -> impl Future<Output = Result<(), Closed>> + Send;
}

/// Serve requests, new generations and running-out holds, in arrival order, until the stream
/// ends.
pub(super) async fn drive<P: Protocol>(mut p: P, first: P::Req, mut inbound: Streaming<P::Req>) {
    if p.on_request(first).await.is_err() {
        return;
    }
    loop {
        let wake_at = p.ctx().wake_at;
        let step = tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(req)) => p.on_request(req).await,
                Ok(None) => Err(Closed),
                Err(e) => {
                    tracing::debug!(error = %e, "xDS stream receive failed");
                    Err(Closed)
                }
            },
            changed = p.ctx().generations.changed() => match changed {
                Ok(()) => {
                    p.ctx().refresh();
                    p.sync().await
                }
                Err(_) => Err(Closed),
            },
            () = sleep_until(wake_at), if wake_at.is_some() => p.sync().await,
        };
        if step.is_err() {
            return;
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}
