//! The config store on etcd: every object under `/graymesh/config/`, one JSON value per object
//! (see [`super::keys`]), its mod revision surfaced as the object's resourceVersion.
//!
//! [`EtcdStore::open`] lists the prefix once (etcd unreachable ⇒ a clear error, pilot does not
//! start); [`EtcdStore::watch`] then follows changes from the listed revision + 1, so a reconnect
//! misses nothing, and lists again when etcd says that revision was compacted. Every change is
//! published as a [`ConfigState`], the same thing the directory store publishes. Broken values
//! are reported in `ConfigState::errors` and skipped (`values.rs`). While etcd is lost the store
//! keeps what it has and reports itself not connected, so pilot refuses writes but keeps serving.

mod values;
mod write;

use super::keys::CONFIG_PREFIX;
use super::{bounded, connect, unreachable, EtcdError};
use crate::ConfigState;
use etcd_client::{Client, EventType, GetOptions, KeyValue, WatchOptions};
use graymesh_model::{ModelError, Object};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// Longest pause between two attempts to watch again after etcd went away.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

pub struct EtcdStore {
    client: Client,
    endpoints: Vec<String>,
    state: watch::Sender<ConfigState>,
    /// The etcd revision the published state includes everything up to.
    revision: watch::Sender<i64>,
    connected: AtomicBool,
    /// Every key under the prefix: its object, or why it could not be read.
    values: Mutex<Values>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .field("revision", &self.revision())
            .field("connected", &self.connected())
            .finish_non_exhaustive()
    }
}

type Values = BTreeMap<String, Result<Object, Vec<ModelError>>>;

impl EtcdStore {
    /// Connect and load the config. Fails when etcd cannot be reached.
    pub async fn open(endpoints: Vec<String>) -> Result<Self, EtcdError> {
        let client = connect(&endpoints).await?;
        let (state, _) = watch::channel(ConfigState::default());
        let (revision, _) = watch::channel(0);
        let store = Self {
            client,
            endpoints,
            state,
            revision,
            connected: AtomicBool::new(false),
            values: Mutex::default(),
        };
        store
            .relist()
            .await
            .map_err(|message| unreachable(&store.endpoints, message))?;
        Ok(store)
    }

    pub fn subscribe(&self) -> watch::Receiver<ConfigState> {
        self.state.subscribe()
    }

    pub fn describe(&self) -> String {
        format!("etcd {} {CONFIG_PREFIX}", self.endpoints.join(","))
    }

    /// Whether the last request or watch reached etcd.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    /// The etcd revision the served config includes.
    pub fn revision(&self) -> i64 {
        *self.revision.borrow()
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    pub(crate) fn set_connected(&self, connected: bool) {
        if self.connected.swap(connected, Ordering::SeqCst) != connected {
            if connected {
                tracing::info!(etcd = %self.endpoints.join(","), "etcd reachable");
            } else {
                tracing::warn!(etcd = %self.endpoints.join(","), "etcd lost: serving the config we have, refusing writes");
            }
        }
    }

    /// Wait (bounded) until the served config includes `revision`: a read after a write sees it.
    pub(crate) async fn caught_up(&self, revision: i64, bound: Duration) -> bool {
        let mut rx = self.revision.subscribe();
        let caught_up = tokio::time::timeout(bound, rx.wait_for(|seen| *seen >= revision)).await;
        matches!(caught_up, Ok(Ok(_)))
    }

    /// Follow changes until the task is dropped; reconnects with backoff when etcd goes away.
    pub async fn watch(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let started = tokio::time::Instant::now();
            match self.watch_once().await {
                // Listed again after a compaction: watch on from the new revision at once.
                Ok(()) => continue,
                Err(e) => tracing::warn!(error = %e, "etcd watch failed; retrying"),
            }
            self.set_connected(false);
            if started.elapsed() > MAX_BACKOFF * 2 {
                backoff = Duration::from_millis(100); // it was up for a while: retry soon
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One watch stream from the next unseen revision. `Ok` after listing again (compaction):
    /// watch on from there; `Err` when the stream failed or ended.
    async fn watch_once(&self) -> Result<(), String> {
        let from = self.revision() + 1;
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(from)
            .with_progress_notify();
        let mut client = self.client();
        let mut stream = bounded(client.watch(CONFIG_PREFIX, Some(options))).await?;
        loop {
            let response = match stream.message().await {
                Ok(Some(response)) => response,
                Ok(None) => return Err("etcd closed the watch stream".into()),
                Err(e) => return Err(e.to_string()),
            };
            self.set_connected(true);
            if response.compact_revision() > 0 {
                tracing::warn!(
                    from,
                    compacted = response.compact_revision(),
                    "etcd compacted revisions this watch needed; listing the config again"
                );
                return self.relist().await;
            }
            if response.canceled() {
                return Err(format!(
                    "watch canceled by etcd: {}",
                    response.cancel_reason()
                ));
            }
            let events = response.events();
            if !events.is_empty() {
                self.apply_events(events);
            } else if !response.created() {
                // A progress notification: every event up to its revision has been sent.
                if let Some(header) = response.header() {
                    self.revision
                        .send_if_modified(|r| bump(r, header.revision()));
                }
            }
        }
    }

    /// Read the whole prefix and serve exactly that.
    async fn relist(&self) -> Result<(), String> {
        let mut client = self.client();
        let response = bounded(client.get(CONFIG_PREFIX, Some(GetOptions::new().with_prefix())));
        let response = response.await?;
        self.set_connected(true);
        let revision = response.header().map(|h| h.revision()).unwrap_or(0);
        let values: Values = response.kvs().iter().map(read_kv).collect();
        *self.lock_values() = values;
        self.publish();
        self.revision.send_replace(revision);
        Ok(())
    }

    fn apply_events(&self, events: &[etcd_client::Event]) {
        let mut latest = 0;
        {
            let mut values = self.lock_values();
            for event in events {
                let Some(kv) = event.kv() else { continue };
                latest = latest.max(kv.mod_revision());
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                match event.event_type() {
                    EventType::Put => values.insert(key, read_kv(kv).1),
                    EventType::Delete => values.remove(&key),
                };
            }
        }
        self.publish();
        self.revision.send_if_modified(|r| bump(r, latest));
    }

    /// Publish the valid objects; report (and log, once) what was skipped.
    fn publish(&self) {
        let (objects, mut errors) = {
            let values = self.lock_values();
            let mut objects = Vec::new();
            let mut errors = Vec::new();
            for value in values.values() {
                match value {
                    Ok(object) => objects.push(object.clone()),
                    Err(e) => errors.extend(e.iter().cloned()),
                }
            }
            (objects, errors)
        };
        let config = values::valid_subset(objects, &mut errors);
        self.state.send_if_modified(|state| {
            for e in errors.iter().filter(|e| !state.errors.contains(e)) {
                tracing::warn!("etcd config value skipped: {e}");
            }
            let mut changed = state.errors != errors;
            state.errors = errors;
            if let Some(config) = config.filter(|c| *c != *state.config) {
                state.version += 1;
                state.config = Arc::new(config);
                state.applied_at = Some(SystemTime::now());
                changed = true;
            }
            changed
        });
    }

    fn lock_values(&self) -> std::sync::MutexGuard<'_, Values> {
        // A poisoned lock only means a panic mid-update of a plain map; keep serving.
        self.values.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn read_kv(kv: &KeyValue) -> (String, Result<Object, Vec<ModelError>>) {
    let key = String::from_utf8_lossy(kv.key()).into_owned();
    let object = values::parse_value(&key, kv.value(), kv.mod_revision());
    (key, object)
}

fn bump(current: &mut i64, seen: i64) -> bool {
    if seen > *current {
        *current = seen;
        true
    } else {
        false
    }
}
