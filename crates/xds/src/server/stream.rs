//! What the two ADS protocols share: the per-stream context (generation, node class, status,
//! metrics, outbound queue, nonces) and the loop that drives a stream until either side ends it.

use crate::cache::Generation;
use crate::metrics::XdsMetrics;
use crate::node::ProxyClass;
use crate::status::{ClientHandle, SyncStatus};
use envoy_types::pb::envoy::config::core::v3::Node;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
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
}

impl<Resp> StreamCtx<Resp> {
    pub fn new(
        mut generations: watch::Receiver<Arc<Generation>>,
        class: ProxyClass,
        handle: ClientHandle,
        status: SyncStatus,
        metrics: XdsMetrics,
        tx: mpsc::Sender<Result<Resp, Status>>,
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
    /// A new generation was published: push what changed for this client.
    fn on_generation(&mut self) -> impl Future<Output = Result<(), Closed>> + Send;
}

/// Serve requests and new generations, in arrival order, until the stream ends.
pub(super) async fn drive<P: Protocol>(mut p: P, first: P::Req, mut inbound: Streaming<P::Req>) {
    if p.on_request(first).await.is_err() {
        return;
    }
    loop {
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
                    p.on_generation().await
                }
                Err(_) => Err(Closed),
            },
        };
        if step.is_err() {
            return;
        }
    }
}
