//! One face for the two config stores (a directory, or etcd) so pilot's admin API reads and writes
//! them the same way, and the pure planning both use for writes.
//!
//! A write is planned against the objects the store holds now: every object of the *resulting*
//! set is validated before anything is written, so an apply is all or nothing, and expected
//! resource versions (optimistic concurrency) are checked against the current ones. Planning never
//! does I/O; the stores do the writing.

use crate::dir_store::DirStore;
use crate::etcd::EtcdStore;
use crate::ConfigState;
use graymesh_model::{build_config_set, Kind, ModelError, Object};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::watch;

/// Where pilot's config lives.
#[derive(Debug, Clone)]
pub enum ConfigStore {
    Dir(Arc<DirStore>),
    Etcd(Arc<EtcdStore>),
}

impl ConfigStore {
    pub fn subscribe(&self) -> watch::Receiver<ConfigState> {
        match self {
            ConfigStore::Dir(s) => s.subscribe(),
            ConfigStore::Etcd(s) => s.subscribe(),
        }
    }

    /// Where the config comes from, for humans (`/debug/configz`).
    pub fn source(&self) -> String {
        match self {
            ConfigStore::Dir(s) => s.dir().display().to_string(),
            ConfigStore::Etcd(s) => s.describe(),
        }
    }

    /// Whether writes can be taken now (etcd reachable); reads are always served.
    pub fn writable(&self) -> bool {
        match self {
            ConfigStore::Dir(_) => true,
            ConfigStore::Etcd(s) => s.connected(),
        }
    }

    /// The objects served now, with their resource versions set.
    pub fn objects(&self) -> Vec<Object> {
        self.objects_matching(|_| true)
    }

    /// The objects served now that `keep` selects, with their resource versions set. The
    /// directory store's version is a hash of the object's JSON, so it is computed only for
    /// those: a caller that looks at a few kinds on every tick does not serialise the rest.
    pub fn objects_matching(&self, keep: impl Fn(&Object) -> bool) -> Vec<Object> {
        let config = self.subscribe().borrow().config.clone();
        let mut objects = config.objects();
        objects.retain(|o| keep(o));
        if let ConfigStore::Dir(_) = self {
            for object in &mut objects {
                object.meta.resource_version = Some(content_version(object));
            }
        }
        objects
    }

    /// Validate the set that results from applying `objects`, then write all of them or none.
    pub async fn apply(&self, objects: Vec<Object>) -> Result<Applied, WriteError> {
        match self {
            // Files are read, written and renamed synchronously: off the async workers.
            ConfigStore::Dir(s) => {
                let store = s.clone();
                blocking(move || store.apply(objects)).await
            }
            ConfigStore::Etcd(s) => s.apply(objects).await,
        }
    }

    /// Delete one object, if the set without it is still valid.
    pub async fn delete(
        &self,
        target: &ObjectKey,
        version: Option<&str>,
    ) -> Result<(), WriteError> {
        match self {
            ConfigStore::Dir(s) => {
                let (store, target) = (s.clone(), target.clone());
                let version = version.map(str::to_string);
                blocking(move || store.delete(&target, version.as_deref())).await
            }
            ConfigStore::Etcd(s) => s.delete(target, version).await,
        }
    }
}

/// Run a directory store's file work on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, WriteError> + Send + 'static,
) -> Result<T, WriteError> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| {
        Err(WriteError::Unavailable(format!(
            "the write task failed: {e}"
        )))
    })
}

/// Why a write was refused or failed; nothing was written in every case.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{} error(s) in the resulting config; nothing was applied", .0.len())]
    Invalid(Vec<ModelError>),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error("config store unavailable, nothing was written: {0}")]
    Unavailable(String),
    /// More than the store can write at once.
    #[error("{0}")]
    TooLarge(String),
    #[error("cannot write {path}: {message}")]
    Io { path: String, message: String },
}

/// Kind, namespace and name: what identifies an object in a store.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn of(object: &Object) -> Self {
        Self {
            kind: object.kind(),
            namespace: object.meta.namespace.clone(),
            name: object.meta.name.clone(),
        }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Created,
    Configured,
    Unchanged,
}

#[derive(Debug, Clone, Serialize)]
pub struct AppliedObject {
    /// `Kind namespace/name`.
    pub object: String,
    pub action: Action,
}

#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    pub objects: Vec<AppliedObject>,
}

/// An object in a store now, with its resource version.
#[derive(Debug, Clone)]
pub struct Stored {
    pub object: Object,
    pub version: String,
}

/// What to write for an apply: the objects that changed (resource versions cleared) and what
/// happens to each applied object.
#[derive(Debug)]
pub struct ApplyPlan {
    pub writes: Vec<Object>,
    pub applied: Applied,
}

/// Plan applying `objects` over `current`: check expected versions, validate the resulting set.
pub fn plan_apply(current: &[Stored], objects: Vec<Object>) -> Result<ApplyPlan, WriteError> {
    let by_key: BTreeMap<ObjectKey, &Stored> = current
        .iter()
        .map(|s| (ObjectKey::of(&s.object), s))
        .collect();
    let mut writes = Vec::new();
    let mut results = Vec::new();
    for mut object in objects {
        let key = ObjectKey::of(&object);
        let existing = by_key.get(&key).copied();
        check_version(&key, object.meta.resource_version.as_deref(), existing)?;
        object.meta.resource_version = None;
        let action = match existing {
            None => Action::Created,
            Some(s) if same_content(&s.object, &object) => Action::Unchanged,
            Some(_) => Action::Configured,
        };
        results.push(AppliedObject {
            object: key.to_string(),
            action,
        });
        writes.push(object);
    }
    let replaced: std::collections::BTreeSet<ObjectKey> =
        writes.iter().map(ObjectKey::of).collect();
    let mut resulting: Vec<Object> = current
        .iter()
        .filter(|s| !replaced.contains(&ObjectKey::of(&s.object)))
        .map(|s| s.object.clone())
        .collect();
    resulting.extend(writes.iter().cloned());
    build_config_set(resulting).map_err(WriteError::Invalid)?;
    let writes = writes
        .into_iter()
        .zip(&results)
        .filter(|(_, r)| r.action != Action::Unchanged)
        .map(|(o, _)| o)
        .collect();
    Ok(ApplyPlan {
        writes,
        applied: Applied { objects: results },
    })
}

/// Plan deleting `target`: it must exist (at `version`, when given) and the rest must be valid.
pub fn plan_delete<'a>(
    current: &'a [Stored],
    target: &ObjectKey,
    version: Option<&str>,
) -> Result<&'a Stored, WriteError> {
    let existing = current.iter().find(|s| ObjectKey::of(&s.object) == *target);
    let Some(existing) = existing else {
        return Err(WriteError::NotFound(format!("{target} does not exist")));
    };
    check_version(target, version, Some(existing))?;
    let rest: Vec<Object> = current
        .iter()
        .filter(|s| ObjectKey::of(&s.object) != *target)
        .map(|s| s.object.clone())
        .collect();
    build_config_set(rest).map_err(WriteError::Invalid)?;
    Ok(existing)
}

fn check_version(
    key: &ObjectKey,
    expected: Option<&str>,
    existing: Option<&Stored>,
) -> Result<(), WriteError> {
    match (expected, existing) {
        (None, _) => Ok(()),
        (Some(want), Some(s)) if s.version == want => Ok(()),
        (Some(want), Some(s)) => Err(WriteError::Conflict(format!(
            "{key}: resourceVersion {want} was given but it is at {} now (changed since it was read; get it again)",
            s.version
        ))),
        (Some(want), None) => Err(WriteError::Conflict(format!(
            "{key}: resourceVersion {want} was given but the object does not exist"
        ))),
    }
}

/// Equal as stored: metadata (without resource version) and spec.
fn same_content(a: &Object, b: &Object) -> bool {
    let strip = |o: &Object| {
        let mut meta = o.meta.clone();
        meta.resource_version = None;
        meta
    };
    strip(a) == strip(b) && a.spec == b.spec
}

/// The directory store's resource version: a hash of the object's content, so an edit by any
/// means (an apply, or a hand edit of the file) changes it.
pub fn content_version(object: &Object) -> String {
    use std::hash::{Hash, Hasher};
    let mut json = object.to_json();
    if let Some(meta) = json.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        meta.remove("resourceVersion");
    }
    if let Some(o) = json.as_object_mut() {
        o.remove("apiVersion");
    }
    // DefaultHasher::new() has fixed keys: the same content gives the same version every run.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    json.to_string().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

#[cfg(test)]
mod tests;
