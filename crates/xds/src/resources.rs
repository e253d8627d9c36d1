//! Encoded resources, ready to send: each with its name and a content version, so a stream can
//! tell exactly which resources changed since it last sent them, and with what it references, so
//! a stream can order its pushes.

use crate::references::References;
use crate::translate::Translation;
use crate::types::TypeUrl;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq)]
pub struct NamedResource {
    pub name: String,
    /// Hash of the encoded bytes: equal content, equal version, on every pilot replica.
    pub version: String,
    pub any: Any,
    /// What this resource points at (read once, when it is encoded).
    pub refs: References,
}

impl NamedResource {
    pub fn new<M: prost::Message + prost::Name>(
        name: String,
        msg: &M,
        refs: References,
    ) -> Arc<Self> {
        let value = msg.encode_to_vec();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        value.hash(&mut h);
        Arc::new(Self {
            name,
            version: format!("{:016x}", h.finish()),
            any: Any {
                type_url: M::type_url(),
                value,
            },
            refs,
        })
    }
}

pub type ByName = BTreeMap<String, Arc<NamedResource>>;

/// All resources of one proxy class, per type.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceSet {
    by_type: [ByName; 4],
}

fn index(t: TypeUrl) -> usize {
    match t {
        TypeUrl::Cluster => 0,
        TypeUrl::Endpoint => 1,
        TypeUrl::Listener => 2,
        TypeUrl::Route => 3,
    }
}

impl ResourceSet {
    pub fn from_translation(t: &Translation) -> Self {
        let mut set = Self::default();
        set.insert_all(
            TypeUrl::Listener,
            t.listeners
                .iter()
                .map(|r| NamedResource::new(r.name.clone(), r, References::of_listener(r))),
        );
        set.insert_all(
            TypeUrl::Route,
            t.routes
                .iter()
                .map(|r| NamedResource::new(r.name.clone(), r, References::of_route(r))),
        );
        set.insert_all(
            TypeUrl::Cluster,
            t.clusters
                .iter()
                .map(|r| NamedResource::new(r.name.clone(), r, References::of_cluster(r))),
        );
        set.insert_all(
            TypeUrl::Endpoint,
            t.endpoints
                .iter()
                .map(|r| NamedResource::new(r.cluster_name.clone(), r, References::default())),
        );
        set
    }

    fn insert_all(&mut self, t: TypeUrl, items: impl Iterator<Item = Arc<NamedResource>>) {
        let map = &mut self.by_type[index(t)];
        for r in items {
            map.insert(r.name.clone(), r);
        }
    }

    pub fn of(&self, t: TypeUrl) -> &ByName {
        &self.by_type[index(t)]
    }

    pub fn len(&self) -> usize {
        self.by_type.iter().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decode a resource back into its message (for dumps and tests).
    pub fn decode<M: Message + Default>(r: &NamedResource) -> Result<M, prost::DecodeError> {
        M::decode(r.any.value.as_slice())
    }
}
