//! The embedded config store: a directory of YAML/JSON files, watched for edits.
//!
//! A load reads every `*.yaml`, `*.yml` and `*.json` file under the directory (not recursing into
//! hidden directories), parses and validates all of it, and only then publishes it. If anything is
//! wrong, nothing of that load is applied: the last good config keeps being served and the errors
//! are published beside it, so operators see why their edit did not take.

use graymesh_model::{build_config_set, parse_str, ConfigSet, ModelError, Object};
use notify::{RecursiveMode, Watcher};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch};

mod write;

/// What the store currently serves, and what went wrong with the latest load, if anything.
#[derive(Debug, Clone, Default)]
pub struct ConfigState {
    /// Bumped on every successful load that changed the config.
    pub version: u64,
    pub config: Arc<ConfigSet>,
    /// Errors of the latest load; empty when it was applied.
    pub errors: Vec<ModelError>,
    pub applied_at: Option<SystemTime>,
}

#[derive(Debug)]
pub struct DirStore {
    dir: PathBuf,
    state: watch::Sender<ConfigState>,
    /// Each file's text and the objects parsed from it: a reload re-parses only files whose text
    /// changed (validation of the whole set still runs every time).
    parsed: Mutex<ParseCache>,
    /// Held by an apply or delete from reading the files to reloading them (`write.rs`).
    writer: Mutex<()>,
}

type ParseCache = HashMap<PathBuf, (String, Vec<Object>)>;

impl DirStore {
    /// Load `dir` once. Fails when the first load has errors: pilot refuses to start on a
    /// config it cannot serve, rather than serving nothing.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, Vec<ModelError>> {
        let dir = dir.into();
        let parsed = Mutex::default();
        let config = load_cached(&dir, &parsed)?;
        let state = ConfigState {
            version: 1,
            config: Arc::new(config),
            errors: Vec::new(),
            applied_at: Some(SystemTime::now()),
        };
        let (state, _) = watch::channel(state);
        Ok(Self {
            dir,
            state,
            parsed,
            writer: Mutex::default(),
        })
    }

    pub fn subscribe(&self) -> watch::Receiver<ConfigState> {
        self.state.subscribe()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Load the directory again and publish the outcome. Returns true when a new config applied.
    pub fn reload(&self) -> bool {
        match load_cached(&self.dir, &self.parsed) {
            Ok(config) => self.state.send_if_modified(|state| {
                let had_errors = !state.errors.is_empty();
                state.errors.clear();
                if *state.config == config {
                    return had_errors;
                }
                state.version += 1;
                state.config = Arc::new(config);
                state.applied_at = Some(SystemTime::now());
                true
            }),
            Err(errors) => {
                for e in &errors {
                    tracing::warn!("config rejected, still serving the last good one: {e}");
                }
                self.state.send_if_modified(|state| {
                    let changed = state.errors != errors;
                    state.errors = errors;
                    changed
                });
                false
            }
        }
    }

    /// [`Self::watch`], logging a watcher that cannot start instead of returning its error.
    pub async fn watch_logged(self: Arc<Self>, debounce: Duration) {
        let dir = self.dir.display().to_string();
        if let Err(e) = self.watch(debounce).await {
            tracing::error!(%dir, error = %e, "cannot watch the config directory; edits will not be picked up");
        }
    }

    /// Watch the directory and reload after each burst of edits settles for `debounce`.
    /// Runs until the watcher fails to start (returned as an error) or the task is dropped.
    pub async fn watch(self: Arc<Self>, debounce: Duration) -> Result<(), notify::Error> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if event.is_ok_and(|e| changes_content(&e.kind)) {
                    let _ = tx.send(());
                }
            })?;
        watcher.watch(&self.dir, RecursiveMode::Recursive)?;
        while rx.recv().await.is_some() {
            // Editors write in several steps (truncate, write, rename): wait for quiet.
            loop {
                match tokio::time::timeout(debounce, rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return Ok(()),
                    Err(_) => break,
                }
            }
            self.reload();
        }
        Ok(())
    }
}

fn load_cached(dir: &Path, cache: &Mutex<ParseCache>) -> Result<ConfigSet, Vec<ModelError>> {
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    load_with_cache(&[dir.to_path_buf()], &mut cache)
}

/// Whether a watcher event can change what a load reads. Reads are reported too (opens, and the
/// access-time updates they cause show up as metadata changes): counting them would make every
/// reload schedule the next one.
fn changes_content(kind: &notify::EventKind) -> bool {
    use notify::event::{EventKind, ModifyKind};
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) => true,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_) => true,
        EventKind::Access(_) | EventKind::Any | EventKind::Other => false,
    }
}

/// Read, parse and validate every config file under `dir`, all or nothing.
pub fn load_dir(dir: &Path) -> Result<ConfigSet, Vec<ModelError>> {
    load_paths(&[dir.to_path_buf()])
}

/// Read, parse and validate every config file under each path (file or directory), all or
/// nothing: any error anywhere means no config, and every error is reported.
pub fn load_paths(paths: &[PathBuf]) -> Result<ConfigSet, Vec<ModelError>> {
    load_with_cache(paths, &mut ParseCache::new())
}

/// The one loader: read every config file under `paths`, parse only those whose text differs
/// from what `cache` holds, validate the whole set. `cache` is left holding exactly the files
/// read this time.
fn load_with_cache(
    paths: &[PathBuf],
    cache: &mut ParseCache,
) -> Result<ConfigSet, Vec<ModelError>> {
    let mut next = ParseCache::new();
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        let files = match config_files(path) {
            Ok(files) => files,
            Err(e) => {
                errors.push(ModelError::in_file(
                    path.display().to_string(),
                    format!("cannot read: {e}"),
                ));
                continue;
            }
        };
        for file in files {
            let name = file.display().to_string();
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => {
                    errors.push(ModelError::in_file(name, format!("cannot read file: {e}")));
                    continue;
                }
            };
            let parsed = match cache.remove(&file) {
                Some((old, parsed)) if old == text => Ok(parsed),
                _ => parse_str(&name, &text),
            };
            match parsed {
                Ok(parsed) => {
                    objects.extend(parsed.iter().cloned());
                    next.insert(file, (text, parsed));
                }
                Err(mut e) => errors.append(&mut e),
            }
        }
    }
    *cache = next;
    if !errors.is_empty() {
        return Err(errors);
    }
    build_config_set(objects)
}

/// Config files under `dir` (or `dir` itself when it is a file), sorted for a stable order.
pub fn config_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    if dir.is_file() {
        return Ok(vec![dir.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            let hidden = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if hidden {
                continue;
            }
            if path.is_dir() {
                pending.push(path);
            } else if is_config_file(&path) {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn is_config_file(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

#[cfg(test)]
mod tests {
    use super::changes_content;
    use notify::event::{
        AccessKind, CreateKind, DataChange, EventKind, MetadataKind, ModifyKind, RenameMode,
    };

    #[test]
    fn only_content_and_name_changes_trigger_a_reload() {
        assert!(changes_content(&EventKind::Modify(ModifyKind::Data(
            DataChange::Content
        ))));
        assert!(changes_content(&EventKind::Modify(ModifyKind::Name(
            RenameMode::To
        ))));
        assert!(changes_content(&EventKind::Create(CreateKind::File)));
        assert!(!changes_content(&EventKind::Access(AccessKind::Open(
            notify::event::AccessMode::Read
        ))));
        assert!(!changes_content(&EventKind::Modify(ModifyKind::Metadata(
            MetadataKind::AccessTime
        ))));
        assert!(!changes_content(&EventKind::Modify(ModifyKind::Metadata(
            MetadataKind::Any
        ))));
    }
}
