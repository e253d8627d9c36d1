//! Envoy xDS v3 for graymesh: translation of the model and registry into Envoy resources, the
//! per-generation snapshot cache, and the ADS server (state-of-the-world and delta on one port).
//!
//! `translate` is pure. `server` knows nothing of Istio: it sends resource sets and tracks
//! versions, nonces and ACK/NACK per stream.

pub mod cache;
pub mod json;
pub mod metrics;
pub mod node;
pub mod references;
pub mod resources;
pub mod server;
pub mod status;
pub mod translate;
pub mod types;

pub use cache::{Generation, SnapshotCache};
pub use node::{NodeKind, ProxyClass};
pub use resources::ResourceSet;
pub use server::AdsServer;
pub use status::SyncStatus;
pub use translate::{translate, Translation};
pub use types::TypeUrl;
