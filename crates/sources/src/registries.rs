//! One face for the two registries (embedded, or etcd with leases), so pilot's registration API
//! serves both the same way.

use crate::etcd::{EtcdRegistry, RegistryError};
use crate::registry::{EmbeddedRegistry, Registration};
use std::sync::Arc;
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub enum Registry {
    Embedded(EmbeddedRegistry),
    Etcd(Arc<EtcdRegistry>),
}

impl Registry {
    pub fn subscribe(&self) -> watch::Receiver<Arc<Vec<Registration>>> {
        match self {
            Registry::Embedded(r) => r.subscribe(),
            Registry::Etcd(r) => r.subscribe(),
        }
    }

    pub fn list(&self) -> Vec<Registration> {
        match self {
            Registry::Embedded(r) => r.list(),
            Registry::Etcd(r) => r.list(),
        }
    }

    /// Stored registrations that could not be read (etcd only): `key: why`.
    pub fn errors(&self) -> Vec<String> {
        match self {
            Registry::Embedded(_) => Vec::new(),
            Registry::Etcd(r) => r.errors(),
        }
    }

    /// Register an instance; returns the id to heartbeat and deregister with.
    pub async fn register(&self, registration: Registration) -> Result<String, RegistryError> {
        match self {
            Registry::Embedded(r) => r.register(registration).map_err(RegistryError::Invalid),
            Registry::Etcd(r) => r.register(registration).await,
        }
    }

    /// Renew; `Ok(false)` when the id is unknown (expired or never registered).
    pub async fn heartbeat(&self, id: &str) -> Result<bool, RegistryError> {
        match self {
            Registry::Embedded(r) => Ok(r.heartbeat(id)),
            Registry::Etcd(r) => r.heartbeat(id).await,
        }
    }

    /// Deregister; `Ok(false)` when the id is unknown.
    pub async fn deregister(&self, id: &str) -> Result<bool, RegistryError> {
        match self {
            Registry::Embedded(r) => Ok(r.deregister(id)),
            Registry::Etcd(r) => r.deregister(id).await,
        }
    }
}
