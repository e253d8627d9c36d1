//! The registry on etcd: each instance a key `/graymesh/registry/<namespace>/<service>/<instance>`
//! holding its [`Registration`] as JSON, attached to an etcd lease of the registration's TTL.
//!
//! Pilot is the lease keeper's proxy: a sidecar registers and heartbeats over pilot's admin API
//! as with the embedded registry, and pilot turns that into etcd calls — a registration grants a
//! lease and puts the key under it, a heartbeat is one keep-alive of that lease sent on this
//! pilot's one shared keep-alive stream ([`LeaseKeeper`]), a deregistration revokes it. The id handed to the sidecar is the lease id (hex), so any pilot replica can renew
//! or revoke it. If the sidecar dies, nobody renews: etcd deletes the key when the lease runs
//! out, and every pilot's watch drops the instance. The instance key is deterministic
//! (`<address>-<port>` unless the registration names an id), so registering again after a lost
//! lease replaces the key instead of adding a twin.
//!
//! Every pilot follows the prefix with one watch (re-listing after a compaction) and publishes
//! the registrations on the same channel type as [`crate::EmbeddedRegistry`].
//!
//! With a gRPC naming prefix (`--etcd-naming-prefix`), each instance is also published in the
//! format etcd's own gRPC resolver reads ([`super::naming`]), under the same lease, and records
//! other programs write there are imported as instances (a second watch).

use super::keys::{registry_key, REGISTRY_PREFIX};
use super::lease_keeper::{KeepAliveStream, LeaseKeeper, RenewError};
use super::naming;
use super::{bounded, connect, unreachable, EtcdError};
use crate::registry::Registration;
use etcd_client::{Client, EventType, GetOptions, KeyValue, PutOptions, Txn, TxnOp, WatchOptions};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Watch events are applied at once but published at most this often: publishing copies every
/// registration, so once per event made a burst of N registrations cost O(N²) (10,000 at once
/// kept pilot busy for many seconds).
const PUBLISH_EVERY: Duration = Duration::from_millis(50);

/// Why a registry call failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registration is wrong; the message names the field.
    #[error("{0}")]
    Invalid(String),
    #[error("registry unavailable: {0}")]
    Unavailable(String),
}

pub struct EtcdRegistry {
    client: Client,
    endpoints: Vec<String>,
    changes: watch::Sender<Arc<Vec<Registration>>>,
    /// Where etcd gRPC naming records are published and imported from, if anywhere.
    naming_prefix: Option<String>,
    /// Per watched prefix, the revision seen up to.
    revisions: Mutex<BTreeMap<String, i64>>,
    /// Registrations by key: graymesh's own and those imported from naming records.
    by_key: Mutex<BTreeMap<String, Registration>>,
    /// Keys whose values could not be read, with why (shown on pilot's `/debug/syncz`).
    broken: Mutex<BTreeMap<String, String>>,
    /// Renews leases on heartbeats, over one keep-alive stream.
    keeper: LeaseKeeper,
    /// The keep-alive stream opened by [`Self::open`], until [`Self::watch`] serves it.
    first_stream: Mutex<Option<KeepAliveStream>>,
}

impl std::fmt::Debug for EtcdRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdRegistry")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl EtcdRegistry {
    /// Connect, open the lease keep-alive stream, and list the registrations (and naming
    /// records, with `naming_prefix`). Fails when etcd cannot be reached.
    pub async fn open(
        endpoints: Vec<String>,
        naming_prefix: Option<String>,
    ) -> Result<Self, EtcdError> {
        let client = connect(&endpoints).await?;
        let (changes, _) = watch::channel(Arc::new(Vec::new()));
        let naming_prefix = naming_prefix.map(|p| format!("{}/", p.trim_end_matches('/')));
        let keeper = LeaseKeeper::new(client.clone());
        let first_stream = keeper.open().await.map_err(|message| {
            unreachable(
                &endpoints,
                format!("cannot open the lease keep-alive stream: {message}"),
            )
        })?;
        let registry = Self {
            client,
            endpoints,
            changes,
            naming_prefix,
            revisions: Mutex::default(),
            by_key: Mutex::default(),
            broken: Mutex::default(),
            keeper,
            first_stream: Mutex::new(Some(first_stream)),
        };
        for prefix in registry.prefixes() {
            registry
                .relist(&prefix)
                .await
                .map_err(|message| unreachable(&registry.endpoints, message))?;
        }
        Ok(registry)
    }

    fn prefixes(&self) -> Vec<String> {
        let mut prefixes = vec![REGISTRY_PREFIX.to_string()];
        prefixes.extend(self.naming_prefix.clone());
        prefixes
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Vec<Registration>>> {
        self.changes.subscribe()
    }

    pub fn list(&self) -> Vec<Registration> {
        self.changes.borrow().as_ref().clone()
    }

    /// Grant a lease of the registration's TTL and put the instance under it. Returns the id to
    /// heartbeat and deregister with (the lease id, hex).
    pub async fn register(&self, mut registration: Registration) -> Result<String, RegistryError> {
        registration.validate().map_err(RegistryError::Invalid)?;
        if registration.id.is_empty() {
            registration.id = default_instance_id(&registration);
        }
        if registration.id.contains('/') {
            let id = &registration.id;
            return Err(RegistryError::Invalid(format!(
                "id: {id:?} must not contain '/'"
            )));
        }
        let key = registry_key(
            &registration.namespace,
            &registration.service,
            &registration.id,
        );
        let value = serde_json::to_string(&registration)
            .map_err(|e| RegistryError::Invalid(format!("cannot encode the registration: {e}")))?;
        let ttl = i64::try_from(registration.ttl_seconds).unwrap_or(i64::MAX);
        let mut client = self.client.clone();
        let lease = bounded(client.lease_grant(ttl, None))
            .await
            .map_err(|e| self.lost(e))?;
        let put = |key: String, value: String| {
            TxnOp::put(key, value, Some(PutOptions::new().with_lease(lease.id())))
        };
        let mut puts = vec![put(key, value)];
        if let Some(prefix) = &self.naming_prefix {
            for (key, value) in naming::records(prefix, &registration) {
                puts.push(put(key, value));
            }
        }
        let txn = Txn::new().and_then(puts);
        bounded(client.txn(txn)).await.map_err(|e| self.lost(e))?;
        Ok(format!("{:x}", lease.id()))
    }

    /// Renew the lease behind `id` once, on the shared keep-alive stream. `Ok(false)`: it
    /// expired or never existed.
    pub async fn heartbeat(&self, id: &str) -> Result<bool, RegistryError> {
        let Some(lease) = lease_of(id) else {
            return Ok(false);
        };
        match self.keeper.renew(lease).await {
            Ok(()) => Ok(true),
            Err(RenewError::Gone) => Ok(false),
            Err(RenewError::Down(why)) => Err(self.lost(why)),
        }
    }

    /// Revoke the lease behind `id` (etcd deletes its key). `Ok(false)`: no such lease.
    pub async fn deregister(&self, id: &str) -> Result<bool, RegistryError> {
        let Some(lease) = lease_of(id) else {
            return Ok(false);
        };
        let mut client = self.client.clone();
        match tokio::time::timeout(super::REQUEST_TIMEOUT, client.lease_revoke(lease)).await {
            Ok(Ok(_)) => Ok(true),
            Ok(Err(etcd_client::Error::GRpcStatus(s))) if s.code() == tonic_not_found() => {
                Ok(false)
            }
            Ok(Err(e)) => Err(self.lost(e.to_string())),
            Err(_) => Err(self.lost("no answer in time".into())),
        }
    }

    /// Follow changes and keep the lease keep-alive stream open, until the task is dropped;
    /// reconnects with backoff.
    pub async fn watch(self: Arc<Self>) {
        let follows = self
            .prefixes()
            .into_iter()
            .map(|prefix| self.follow(prefix));
        let first_stream = lock(&self.first_stream).take();
        tokio::join!(
            futures::future::join_all(follows),
            self.keeper.run(first_stream)
        );
    }

    /// Watch one prefix for as long as the task lives.
    async fn follow(&self, prefix: String) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let started = tokio::time::Instant::now();
            if let Err(e) = self.watch_once(&prefix).await {
                tracing::warn!(error = %e, "etcd registry watch failed; retrying");
            }
            if started.elapsed() > MAX_BACKOFF * 2 {
                backoff = Duration::from_millis(100);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn watch_once(&self, prefix: &str) -> Result<(), String> {
        let from = lock(&self.revisions).get(prefix).copied().unwrap_or(0) + 1;
        let options = WatchOptions::new().with_prefix().with_start_revision(from);
        let mut client = self.client.clone();
        let mut stream = bounded(client.watch(prefix, Some(options))).await?;
        let mut unpublished = false;
        let result = self
            .follow_stream(prefix, &mut stream, &mut unpublished)
            .await;
        if unpublished {
            self.publish();
        }
        result
    }

    /// Apply each watch response as it comes; publish when [`PUBLISH_EVERY`] has passed since
    /// the last publication, or once the stream is quiet for that long.
    async fn follow_stream(
        &self,
        prefix: &str,
        stream: &mut etcd_client::WatchStream,
        unpublished: &mut bool,
    ) -> Result<(), String> {
        let mut published = tokio::time::Instant::now();
        loop {
            let next = tokio::select! {
                // `message` is cancel-safe: a response half read stays in the stream.
                next = stream.message() => next.map_err(|e| e.to_string())?,
                _ = tokio::time::sleep_until(published + PUBLISH_EVERY), if *unpublished => {
                    self.publish();
                    (*unpublished, published) = (false, tokio::time::Instant::now());
                    continue;
                }
            };
            let Some(response) = next else { return Ok(()) };
            if response.compact_revision() > 0 {
                tracing::warn!(%prefix, "registry revisions compacted; listing again");
                *unpublished = false; // the listing publishes
                return self.relist(prefix).await;
            }
            if response.canceled() {
                return Err(format!("watch canceled: {}", response.cancel_reason()));
            }
            if self.apply(prefix, response.events()) {
                *unpublished = true;
            }
            if *unpublished && published.elapsed() >= PUBLISH_EVERY {
                self.publish();
                (*unpublished, published) = (false, tokio::time::Instant::now());
            }
        }
    }

    /// Apply watch events to what is known; whether there were any.
    fn apply(&self, prefix: &str, events: &[etcd_client::Event]) -> bool {
        let mut latest = 0;
        {
            let mut by_key = lock(&self.by_key);
            for event in events {
                let Some(kv) = event.kv() else { continue };
                latest = latest.max(kv.mod_revision());
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                by_key.remove(&key);
                lock(&self.broken).remove(&key);
                if event.event_type() == EventType::Put {
                    if let Some(registration) = self.read(kv) {
                        by_key.insert(key, registration);
                    }
                }
            }
        }
        self.seen(prefix, latest);
        !events.is_empty()
    }

    /// Read `prefix` whole and replace what is known under it.
    async fn relist(&self, prefix: &str) -> Result<(), String> {
        let mut client = self.client.clone();
        let get = client.get(prefix, Some(GetOptions::new().with_prefix()));
        let response = bounded(get).await?;
        let revision = response.header().map(|h| h.revision()).unwrap_or(0);
        // Reading the values below reports the broken ones afresh.
        lock(&self.broken).retain(|key, _| !key.starts_with(prefix));
        let entries: Vec<(String, Registration)> = response
            .kvs()
            .iter()
            .filter_map(|kv| {
                Some((
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    self.read(kv)?,
                ))
            })
            .collect();
        {
            let mut by_key = lock(&self.by_key);
            by_key.retain(|key, _| !key.starts_with(prefix));
            by_key.extend(entries);
        }
        self.publish();
        self.seen(prefix, revision);
        Ok(())
    }

    /// A registration read from etcd (ours, or an imported naming record); a broken one is
    /// logged and skipped.
    fn read(&self, kv: &KeyValue) -> Option<Registration> {
        let key = String::from_utf8_lossy(kv.key());
        let parsed = match &self.naming_prefix {
            Some(prefix) if key.starts_with(prefix.as_str()) => {
                naming::import(prefix, &key, kv.value())
            }
            _ => read_registration(kv.value()).map(Some),
        };
        match parsed {
            Ok(registration) => registration,
            Err(e) => {
                tracing::warn!(%key, error = %e, "registry value skipped");
                lock(&self.broken).insert(key.into_owned(), e);
                None
            }
        }
    }

    /// Values under the watched prefixes that could not be read: `key: why`.
    pub fn errors(&self) -> Vec<String> {
        lock(&self.broken)
            .iter()
            .map(|(key, why)| format!("{key}: {why}"))
            .collect()
    }

    fn publish(&self) {
        let all: Vec<Registration> = lock(&self.by_key).values().cloned().collect();
        self.changes.send_if_modified(|current| {
            let changed = **current != all;
            if changed {
                *current = Arc::new(all);
            }
            changed
        });
    }

    /// Record that `prefix` is known up to `revision` (a reconnect resumes after it).
    fn seen(&self, prefix: &str, revision: i64) {
        let mut revisions = lock(&self.revisions);
        let seen = revisions.entry(prefix.to_string()).or_default();
        *seen = (*seen).max(revision);
    }

    fn lost(&self, message: String) -> RegistryError {
        RegistryError::Unavailable(format!("etcd {}: {message}", self.endpoints.join(",")))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means a panic mid-update of plain data; keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn read_registration(value: &[u8]) -> Result<Registration, String> {
    let registration: Registration = serde_json::from_slice(value).map_err(|e| e.to_string())?;
    registration.validate()?;
    Ok(registration)
}

/// `<address>-<port>`: the same instance registering again gets the same key.
fn default_instance_id(registration: &Registration) -> String {
    let port = registration
        .ports
        .first()
        .map(|p| p.target_port.unwrap_or(p.port))
        .unwrap_or(0);
    format!("{}-{port}", registration.address)
}

fn lease_of(id: &str) -> Option<i64> {
    i64::from_str_radix(id, 16).ok()
}

fn tonic_not_found() -> tonic::Code {
    tonic::Code::NotFound
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_leases_round_trip_through_hex() {
        let registration: Registration = serde_json::from_str(
            r#"{"service": "reviews", "address": "127.0.0.1", "ports": [{"port": 9080, "target_port": 9082}]}"#,
        )
        .unwrap();
        assert_eq!(default_instance_id(&registration), "127.0.0.1-9082");
        assert_eq!(
            lease_of(&format!("{:x}", 0x694d_7a3b_i64)),
            Some(0x694d_7a3b)
        );
        assert_eq!(lease_of("not-hex"), None);
    }
}
