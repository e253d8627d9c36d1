//! Renews the etcd leases of the registrations whose sidecars heartbeat to this pilot, over **one
//! long-lived LeaseKeepAlive stream per pilot** (etcd takes any lease id on one bidi stream),
//! instead of one stream per heartbeat.
//!
//! A heartbeat queues its lease ([`LeaseKeeper::renew`]) and waits for etcd's answer on the shared
//! stream: the writer half sends every queued lease once (two heartbeats for one lease before it
//! is sent make one renewal), the reader half hands each answer to the heartbeats waiting for that
//! lease (TTL 0: the lease is gone, the sidecar must register again). So the answer to a heartbeat
//! is exactly as true as with a stream of its own, from whichever replica renews it. When the
//! stream breaks it is opened again with backoff (≤ 2 s); meanwhile heartbeats are answered
//! "etcd unavailable", as before, so sidecars register afresh.
//!
//! It must never renew a lease on its own: renewals are driven by heartbeats only, so a dead
//! sidecar's lease runs out within its TTL.
//!
//! The stream is opened with a lease of pilot's own ([`ANCHOR_TTL`], no keys under it), because
//! etcd-client's opening call needs a live lease and answers a dead one with an error; the anchor
//! is renewed every [`PROBE_EVERY`], which also finds a stalled stream (no answer within
//! [`REQUEST_TIMEOUT`]). A new stream grants a new anchor; the old one runs out by itself.

use super::{bounded, REQUEST_TIMEOUT};
use etcd_client::{Client, LeaseKeepAliveStream};
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

/// TTL of the lease this pilot opens its keep-alive stream with.
const ANCHOR_TTL: i64 = 60;
/// How often the anchor is renewed (a probe of the stream).
const PROBE_EVERY: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Why a renewal has no answer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RenewError {
    /// etcd said the lease does not exist (expired, revoked, or never granted).
    Gone,
    /// The keep-alive stream is down, or broke before etcd answered; the message says why.
    Down(String),
}

#[derive(Debug, Default)]
struct Table {
    /// Leases with a heartbeat not yet sent on the stream.
    due: BTreeSet<i64>,
    /// Heartbeats waiting for etcd's answer, by lease.
    waiting: HashMap<i64, Vec<oneshot::Sender<bool>>>,
    /// `None` while the stream is up; otherwise why it is down.
    down: Option<String>,
    /// When the oldest request not followed by any answer was sent.
    unanswered_since: Option<Instant>,
}

pub(crate) struct LeaseKeeper {
    client: Client,
    table: Mutex<Table>,
    wake: Notify,
}

impl std::fmt::Debug for LeaseKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseKeeper")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

/// An open stream: etcd-client's handle is bound to one lease id, but its `id` field is public
/// (feature `pub-response-field`), so one handle sends renewals for every lease in turn.
pub(crate) struct KeepAliveStream {
    sender: etcd_client::LeaseKeeper,
    answers: LeaseKeepAliveStream,
    anchor: i64,
}

impl LeaseKeeper {
    pub(crate) fn new(client: Client) -> Self {
        let table = Table {
            down: Some("keep-alive stream not opened yet".into()),
            ..Table::default()
        };
        Self {
            client,
            table: Mutex::new(table),
            wake: Notify::new(),
        }
    }

    /// A sidecar heartbeated for `id`: renew it on the stream and wait (≤ [`REQUEST_TIMEOUT`])
    /// for etcd's answer.
    pub(crate) async fn renew(&self, id: i64) -> Result<(), RenewError> {
        let answer = self.queue(id)?;
        match tokio::time::timeout(REQUEST_TIMEOUT, answer).await {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err(RenewError::Gone),
            Ok(Err(_)) => Err(RenewError::Down(self.why_down())),
            Err(_) => Err(RenewError::Down(format!(
                "no keep-alive answer within {REQUEST_TIMEOUT:?}"
            ))),
        }
    }

    fn queue(&self, id: i64) -> Result<oneshot::Receiver<bool>, RenewError> {
        let mut table = lock(&self.table);
        if let Some(why) = &table.down {
            return Err(RenewError::Down(why.clone()));
        }
        let (tx, rx) = oneshot::channel();
        table.waiting.entry(id).or_default().push(tx);
        table.due.insert(id);
        drop(table);
        self.wake.notify_one();
        Ok(rx)
    }

    fn why_down(&self) -> String {
        lock(&self.table)
            .down
            .clone()
            .unwrap_or_else(|| "lease keep-alive stream broke before etcd answered".into())
    }

    /// Open the stream (an anchor lease, then the stream on it), bounded by [`REQUEST_TIMEOUT`].
    pub(crate) async fn open(&self) -> Result<KeepAliveStream, String> {
        let mut client = self.client.clone();
        let anchor = bounded(client.lease_grant(ANCHOR_TTL, None)).await?.id();
        let (sender, answers) = bounded(client.lease_keep_alive(anchor)).await?;
        Ok(KeepAliveStream {
            sender,
            answers,
            anchor,
        })
    }

    /// Serve `first`, then re-open with backoff whenever the stream breaks, for as long as the
    /// task lives.
    pub(crate) async fn run(&self, first: Option<KeepAliveStream>) {
        let mut next = first;
        let mut backoff = Duration::from_millis(100);
        loop {
            let stream = match next.take() {
                Some(stream) => stream,
                None => match self.open().await {
                    Ok(stream) => stream,
                    Err(why) => {
                        tracing::warn!(error = %why, "cannot open the etcd lease keep-alive stream; retrying");
                        self.set_down(format!("lease keep-alive stream: {why}"));
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                },
            };
            self.set_up();
            let started = Instant::now();
            let why = self.serve(stream).await;
            tracing::warn!(error = %why, "etcd lease keep-alive stream broke; opening it again");
            self.set_down(format!("lease keep-alive stream broke: {why}"));
            if started.elapsed() > MAX_BACKOFF * 2 {
                backoff = Duration::from_millis(100);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Send and read concurrently (etcd stops reading requests while its answers are not read);
    /// returns why the stream ended.
    async fn serve(&self, stream: KeepAliveStream) -> String {
        let KeepAliveStream {
            mut sender,
            mut answers,
            anchor,
        } = stream;
        tokio::select! {
            why = self.send_due(&mut sender, anchor) => why,
            why = self.read_answers(&mut answers) => why,
        }
    }

    async fn send_due(&self, sender: &mut etcd_client::LeaseKeeper, anchor: i64) -> String {
        let mut probe = tokio::time::interval(PROBE_EVERY);
        loop {
            let batch: Vec<i64> = tokio::select! {
                _ = self.wake.notified() => std::mem::take(&mut lock(&self.table).due).into_iter().collect(),
                _ = probe.tick() => vec![anchor],
            };
            for id in batch {
                sender.id = id;
                if let Err(e) = sender.keep_alive().await {
                    return e.to_string();
                }
                lock(&self.table)
                    .unanswered_since
                    .get_or_insert_with(Instant::now);
            }
        }
    }

    async fn read_answers(&self, answers: &mut LeaseKeepAliveStream) -> String {
        loop {
            match tokio::time::timeout(Duration::from_secs(1), answers.message()).await {
                Ok(Ok(Some(answer))) => self.answered(answer.id(), answer.ttl()),
                Ok(Ok(None)) => return "closed by etcd".into(),
                Ok(Err(e)) => return e.to_string(),
                Err(_) => {
                    let since = lock(&self.table).unanswered_since;
                    if since.is_some_and(|t| t.elapsed() > REQUEST_TIMEOUT) {
                        return format!("no answer within {REQUEST_TIMEOUT:?}");
                    }
                }
            }
        }
    }

    fn answered(&self, id: i64, ttl: i64) {
        let mut table = lock(&self.table);
        table.unanswered_since = None;
        for waiter in table.waiting.remove(&id).unwrap_or_default() {
            let _ = waiter.send(ttl > 0);
        }
    }

    fn set_up(&self) {
        let mut table = lock(&self.table);
        table.down = None;
        table.unanswered_since = None;
    }

    /// Heartbeats still waiting fail now (their senders are dropped): the stream that carried
    /// their renewals is gone. Queued renewals are dropped too: each of their heartbeats failed.
    fn set_down(&self, why: String) {
        let mut table = lock(&self.table);
        table.down = Some(why);
        table.waiting.clear();
        table.due.clear();
    }

    #[cfg(test)]
    fn due(&self) -> Vec<i64> {
        lock(&self.table).due.iter().copied().collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means a panic mid-update of plain data; keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn keeper() -> LeaseKeeper {
        // A client that is never asked anything: connecting is lazy.
        let client = Client::connect(["http://127.0.0.1:9"], None).await.unwrap();
        LeaseKeeper::new(client)
    }

    #[tokio::test]
    async fn heartbeats_share_one_renewal_and_get_etcds_answer() {
        let keeper = keeper().await;
        assert!(
            matches!(keeper.queue(7), Err(RenewError::Down(_))),
            "no stream yet"
        );
        keeper.set_up();
        let first = keeper.queue(7).unwrap();
        let second = keeper.queue(7).unwrap();
        let other = keeper.queue(8).unwrap();
        assert_eq!(keeper.due(), [7, 8], "two heartbeats for 7, one renewal");
        keeper.answered(7, 3);
        keeper.answered(8, 0);
        assert!(first.await.unwrap() && second.await.unwrap());
        assert!(!other.await.unwrap(), "TTL 0: the lease is gone");
    }

    #[tokio::test]
    async fn a_broken_stream_fails_the_waiting_heartbeats_and_refuses_new_ones() {
        let keeper = keeper().await;
        keeper.set_up();
        let waiting = keeper.queue(7).unwrap();
        keeper.set_down("connection reset".into());
        assert!(waiting.await.is_err());
        assert!(keeper.due().is_empty());
        assert_eq!(
            keeper.renew(7).await,
            Err(RenewError::Down("connection reset".into()))
        );
    }
}
