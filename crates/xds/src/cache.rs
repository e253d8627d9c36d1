//! Generations of the world and the resources each proxy class gets from them.
//!
//! A [`Generation`] is an immutable (config, registry) pair with a version. Streams of the same
//! [`ProxyClass`] share one translation per generation: the first stream to ask computes it, the
//! others wait for that result instead of computing it again.

use crate::node::ProxyClass;
use crate::resources::ResourceSet;
use crate::translate::{translate, Translation};
use graymesh_model::ConfigSet;
use graymesh_sources::RegistrySnapshot;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{watch, OnceCell};

type Memo = HashMap<ProxyClass, Arc<OnceCell<Arc<ResourceSet>>>>;

#[derive(Debug)]
pub struct Generation {
    pub version: u64,
    /// When the change that produced this generation was published; push latency counts from here.
    pub created: Instant,
    pub config: Arc<ConfigSet>,
    pub registry: Arc<RegistrySnapshot>,
    memo: Mutex<Memo>,
}

impl Generation {
    pub fn new(version: u64, config: Arc<ConfigSet>, registry: Arc<RegistrySnapshot>) -> Self {
        Self {
            version,
            created: Instant::now(),
            config,
            registry,
            memo: Mutex::default(),
        }
    }

    /// The encoded resources for `class`, translated at most once per generation.
    pub async fn resources(&self, class: &ProxyClass) -> Arc<ResourceSet> {
        let cell = {
            let mut memo = self.memo.lock().unwrap_or_else(|e| e.into_inner());
            memo.entry(class.clone()).or_default().clone()
        };
        cell.get_or_init(|| async {
            Arc::new(ResourceSet::from_translation(&self.translation(class)))
        })
        .await
        .clone()
    }

    /// The typed translation for `class` (not memoized: for dumps and tests).
    pub fn translation(&self, class: &ProxyClass) -> Translation {
        translate(&self.config, &self.registry, class)
    }
}

/// Holds the current generation and tells every stream when a new one is published.
#[derive(Debug, Clone)]
pub struct SnapshotCache {
    current: watch::Sender<Arc<Generation>>,
}

impl SnapshotCache {
    pub fn new(config: Arc<ConfigSet>, registry: Arc<RegistrySnapshot>) -> Self {
        let (current, _) = watch::channel(Arc::new(Generation::new(1, config, registry)));
        Self { current }
    }

    /// Publish a new world; returns its version.
    pub fn publish(&self, config: Arc<ConfigSet>, registry: Arc<RegistrySnapshot>) -> u64 {
        let version = self.current.borrow().version + 1;
        self.current
            .send_replace(Arc::new(Generation::new(version, config, registry)));
        version
    }

    pub fn current(&self) -> Arc<Generation> {
        self.current.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Generation>> {
        self.current.subscribe()
    }
}
