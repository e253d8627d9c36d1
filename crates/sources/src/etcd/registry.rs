//! The registry on etcd: each instance a key `/graymesh/registry/<namespace>/<service>/<instance>`
//! holding its [`Registration`] as JSON, attached to an etcd lease of the registration's TTL.
//!
//! Pilot is the lease keeper's proxy: a sidecar registers and heartbeats over pilot's admin API
//! as with the embedded registry, and pilot turns that into etcd calls — a registration grants a
//! lease and puts the key under it, a heartbeat is one keep-alive of that lease, a deregistration
//! revokes it. The id handed to the sidecar is the lease id (hex), so any pilot replica can renew
//! or revoke it. If the sidecar dies, nobody renews: etcd deletes the key when the lease runs
//! out, and every pilot's watch drops the instance. The instance key is deterministic
//! (`<address>-<port>` unless the registration names an id), so registering again after a lost
//! lease replaces the key instead of adding a twin.
//!
//! Every pilot follows the prefix with one watch (re-listing after a compaction) and publishes
//! the registrations on the same channel type as [`crate::EmbeddedRegistry`].

use super::keys::{registry_key, REGISTRY_PREFIX};
use super::{bounded, connect, unreachable, EtcdError};
use crate::registry::Registration;
use etcd_client::{Client, EventType, GetOptions, KeyValue, PutOptions, WatchOptions};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

const MAX_BACKOFF: Duration = Duration::from_secs(2);

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
    revision: Mutex<i64>,
    by_key: Mutex<BTreeMap<String, Registration>>,
}

impl std::fmt::Debug for EtcdRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdRegistry")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl EtcdRegistry {
    /// Connect and list the registrations. Fails when etcd cannot be reached.
    pub async fn open(endpoints: Vec<String>) -> Result<Self, EtcdError> {
        let client = connect(&endpoints).await?;
        let (changes, _) = watch::channel(Arc::new(Vec::new()));
        let registry = Self {
            client,
            endpoints,
            changes,
            revision: Mutex::new(0),
            by_key: Mutex::default(),
        };
        registry
            .relist()
            .await
            .map_err(|message| unreachable(&registry.endpoints, message))?;
        Ok(registry)
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
        let options = PutOptions::new().with_lease(lease.id());
        bounded(client.put(key, value, Some(options)))
            .await
            .map_err(|e| self.lost(e))?;
        Ok(format!("{:x}", lease.id()))
    }

    /// Renew the lease behind `id` once. `Ok(false)`: it expired or never existed.
    pub async fn heartbeat(&self, id: &str) -> Result<bool, RegistryError> {
        let Some(lease) = lease_of(id) else {
            return Ok(false);
        };
        let mut client = self.client.clone();
        // The client sends one keep-alive and reads its answer before handing back the stream;
        // an answer with TTL 0 (no such lease) comes back as this error.
        let renew = client.lease_keep_alive(lease);
        match tokio::time::timeout(super::REQUEST_TIMEOUT, renew).await {
            Ok(Ok(_)) => Ok(true),
            Ok(Err(etcd_client::Error::LeaseKeepAliveError(_))) => Ok(false),
            Ok(Err(e)) => Err(self.lost(e.to_string())),
            Err(_) => Err(self.lost("no answer in time".into())),
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

    /// Follow changes until the task is dropped; reconnects with backoff.
    pub async fn watch(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let started = tokio::time::Instant::now();
            if let Err(e) = self.watch_once().await {
                tracing::warn!(error = %e, "etcd registry watch failed; retrying");
            }
            if started.elapsed() > MAX_BACKOFF * 2 {
                backoff = Duration::from_millis(100);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn watch_once(&self) -> Result<(), String> {
        let from = *self.lock(&self.revision) + 1;
        let options = WatchOptions::new().with_prefix().with_start_revision(from);
        let mut client = self.client.clone();
        let mut stream = bounded(client.watch(REGISTRY_PREFIX, Some(options))).await?;
        while let Some(response) = stream.message().await.map_err(|e| e.to_string())? {
            if response.compact_revision() > 0 {
                tracing::warn!(from, "registry revisions compacted; listing again");
                return self.relist().await;
            }
            if response.canceled() {
                return Err(format!("watch canceled: {}", response.cancel_reason()));
            }
            if response.events().is_empty() {
                continue;
            }
            let mut latest = 0;
            {
                let mut by_key = self.lock(&self.by_key);
                for event in response.events() {
                    let Some(kv) = event.kv() else { continue };
                    latest = latest.max(kv.mod_revision());
                    let key = String::from_utf8_lossy(kv.key()).into_owned();
                    by_key.remove(&key);
                    if event.event_type() == EventType::Put {
                        if let Some(registration) = read(kv) {
                            by_key.insert(key, registration);
                        }
                    }
                }
            }
            self.publish(latest);
        }
        Ok(())
    }

    async fn relist(&self) -> Result<(), String> {
        let mut client = self.client.clone();
        let get = client.get(REGISTRY_PREFIX, Some(GetOptions::new().with_prefix()));
        let response = bounded(get).await?;
        let revision = response.header().map(|h| h.revision()).unwrap_or(0);
        let entries = response
            .kvs()
            .iter()
            .filter_map(|kv| Some((String::from_utf8_lossy(kv.key()).into_owned(), read(kv)?)))
            .collect();
        *self.lock(&self.by_key) = entries;
        self.publish(revision);
        Ok(())
    }

    fn publish(&self, revision: i64) {
        let all: Vec<Registration> = self.lock(&self.by_key).values().cloned().collect();
        self.changes.send_if_modified(|current| {
            let changed = **current != all;
            if changed {
                *current = Arc::new(all);
            }
            changed
        });
        let mut seen = self.lock(&self.revision);
        *seen = (*seen).max(revision);
    }

    fn lost(&self, message: String) -> RegistryError {
        RegistryError::Unavailable(format!("etcd {}: {message}", self.endpoints.join(",")))
    }

    fn lock<'a, T>(&self, m: &'a Mutex<T>) -> std::sync::MutexGuard<'a, T> {
        // A poisoned lock only means a panic mid-update of plain data; keep serving.
        m.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A registration read from etcd; a broken one is logged and skipped.
fn read(kv: &KeyValue) -> Option<Registration> {
    let key = String::from_utf8_lossy(kv.key());
    let parsed = serde_json::from_slice::<Registration>(kv.value())
        .map_err(|e| e.to_string())
        .and_then(|r| r.validate().map(|()| r));
    match parsed {
        Ok(registration) => Some(registration),
        Err(e) => {
            tracing::warn!(%key, error = %e, "registry value skipped");
            None
        }
    }
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
