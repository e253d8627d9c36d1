//! Leader election on an etcd lease, small and reusable (the release controller will need one
//! leader among pilot replicas).
//!
//! A candidate grants itself a lease and, in one transaction, creates `/graymesh/leader/<name>`
//! under it only if the key does not exist. The winner keeps the lease alive (every TTL/3) and is
//! leader until a keep-alive fails or says the lease is gone, or it resigns (revoking the lease).
//! The others watch the key and campaign again when it is deleted — by a resignation, or by etcd
//! when the leader stopped renewing for a TTL. At most one candidate holds the key at a time; a
//! leader that loses etcd stops calling itself leader at its next failed renewal (≤ TTL/3 plus
//! the request bound), which can overlap a new leader by that much: work guarded by it must be
//! idempotent or fenced with the key's revision.

use super::{bounded, REQUEST_TIMEOUT};
use etcd_client::{Client, Compare, CompareOp, EventType, PutOptions, Txn, TxnOp, WatchOptions};
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

pub const LEADER_PREFIX: &str = "/graymesh/leader/";

/// One candidate's campaign, running until [`Election::resign`] or drop.
#[derive(Debug)]
pub struct Election {
    leader: watch::Receiver<bool>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Election {
    /// Campaign for `name` as `candidate` (stored as the key's value) with a lease of `ttl`.
    pub fn start(client: Client, name: &str, candidate: &str, ttl: Duration) -> Self {
        let (tx, leader) = watch::channel(false);
        let (stop, stopped) = oneshot::channel();
        let campaign = Campaign {
            client,
            key: format!("{LEADER_PREFIX}{name}"),
            candidate: candidate.to_string(),
            ttl: i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX),
            leader: tx,
            held: None,
        };
        let task = tokio::spawn(campaign.run(stopped));
        Self {
            leader,
            stop: Some(stop),
            task,
        }
    }

    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    /// Leadership changes (true while this candidate leads).
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.leader.clone()
    }

    /// Stop campaigning and, if leading, give the key up at once (revoke the lease).
    pub async fn resign(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(REQUEST_TIMEOUT * 2, &mut self.task).await;
    }
}

impl Drop for Election {
    fn drop(&mut self) {
        // Without resign: stop renewing; etcd frees the key within the TTL.
        self.task.abort();
    }
}

struct Campaign {
    client: Client,
    key: String,
    candidate: String,
    ttl: i64,
    leader: watch::Sender<bool>,
    /// The lease of the term being led, if any: revoked when the term ends or on resign (a
    /// resign cancels the term mid-way, so the term cannot do it itself).
    held: Option<i64>,
}

enum Term {
    /// Lost or never won: campaign again.
    Over,
    Resigned,
}

impl Campaign {
    async fn run(mut self, mut stopped: oneshot::Receiver<()>) {
        loop {
            let term = tokio::select! {
                term = self.term() => term,
                _ = &mut stopped => Ok(Term::Resigned),
            };
            self.leader.send_replace(false);
            if let Some(lease) = self.held.take() {
                // Give the key up now rather than after the TTL (best effort).
                let _ = bounded(self.client.lease_revoke(lease)).await;
            }
            match term {
                Ok(Term::Resigned) => return,
                Ok(Term::Over) => {}
                Err(e) => {
                    tracing::warn!(key = %self.key, error = %e, "leader election: etcd call failed; campaigning again");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = &mut stopped => return,
                    }
                }
            }
        }
    }

    /// One campaign: win and lead until the lease is lost, or wait until the key is free.
    async fn term(&mut self) -> Result<Term, String> {
        let lease = bounded(self.client.lease_grant(self.ttl, None)).await?.id();
        let put = TxnOp::put(
            self.key.clone(),
            self.candidate.clone(),
            Some(PutOptions::new().with_lease(lease)),
        );
        let free = Compare::create_revision(self.key.clone(), CompareOp::Equal, 0);
        let txn = Txn::new().when([free]).and_then([put]);
        let won = bounded(self.client.txn(txn)).await?;
        if won.succeeded() {
            self.held = Some(lease);
            return self.lead(lease).await;
        }
        let _ = bounded(self.client.lease_revoke(lease)).await;
        let revision = won.header().map(|h| h.revision()).unwrap_or(0);
        self.wait_until_free(revision).await
    }

    async fn lead(&mut self, lease: i64) -> Result<Term, String> {
        tracing::info!(key = %self.key, candidate = %self.candidate, "leader election: won");
        self.leader.send_replace(true);
        let (mut keeper, mut answers) = bounded(self.client.lease_keep_alive(lease)).await?;
        let period = Duration::from_secs(u64::try_from(self.ttl).unwrap_or(1)) / 3;
        loop {
            tokio::time::sleep(period).await;
            bounded(keeper.keep_alive()).await?;
            match bounded(answers.message()).await? {
                Some(answer) if answer.ttl() > 0 => {}
                _ => {
                    tracing::warn!(key = %self.key, "leader election: lease lost; no longer leader");
                    return Ok(Term::Over);
                }
            }
        }
    }

    /// Watch the key from `revision` until it is deleted.
    async fn wait_until_free(&mut self, revision: i64) -> Result<Term, String> {
        let options = WatchOptions::new().with_start_revision(revision + 1);
        let mut stream = bounded(self.client.watch(self.key.clone(), Some(options))).await?;
        loop {
            let Some(response) = stream.message().await.map_err(|e| e.to_string())? else {
                return Ok(Term::Over);
            };
            if response.canceled() || response.compact_revision() > 0 {
                return Ok(Term::Over); // look again from scratch
            }
            if response
                .events()
                .iter()
                .any(|e| e.event_type() == EventType::Delete)
            {
                return Ok(Term::Over);
            }
        }
    }
}
