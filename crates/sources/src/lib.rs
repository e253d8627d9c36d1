//! Where configuration and services come from: a directory of YAML/JSON files (the embedded
//! config store) or etcd, and the service registry (ServiceEntries plus instances registered over
//! the admin API: kept in memory with a TTL, or in etcd under leases).
//!
//! Sources only produce snapshots and change notifications. They know nothing of xDS or Envoy.

pub mod dir_store;
pub mod etcd;
pub mod registries;
pub mod registry;
pub mod store;

pub use dir_store::{ConfigState, DirStore};
pub use etcd::{EtcdRegistry, EtcdStore, RegistryError};
pub use registries::Registry;
pub use registry::{
    EmbeddedRegistry, Instance, Locality, Registration, RegistrationPort, RegistrySnapshot,
    Service, ServicePort,
};
pub use store::{ConfigStore, ObjectKey, WriteError};
