//! Writes to the directory store (pilot's admin API `apply` and `delete`).
//!
//! The whole resulting config is validated before a file is touched (`store::plan_apply`), so
//! an apply is all or nothing as far as validity goes. Each file is replaced atomically (write a
//! hidden temporary file beside it, then rename; loads skip hidden files). An object that already
//! lives in a file is rewritten in that file, in place among its neighbours; a new object gets
//! its own file `<namespace>-<kind>-<name>.yaml`. A rewritten file is re-serialized, so comments
//! in it are lost. Writers are serialized by a lock; the store is reloaded before returning so a
//! read right after a write sees it.

use super::{config_files, DirStore};
use crate::store::{
    content_version, plan_apply, plan_delete, Applied, ObjectKey, Stored, WriteError,
};
use graymesh_model::{parse_str, ModelError, Object};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Each config file with the objects it holds now, in document order.
type Files = BTreeMap<PathBuf, Vec<Object>>;

impl DirStore {
    pub fn apply(&self, objects: Vec<Object>) -> Result<Applied, WriteError> {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut files = self.read_files()?;
        let plan = plan_apply(&stored(&files), objects)?;
        let mut touched = Vec::new();
        for object in plan.writes {
            let key = ObjectKey::of(&object);
            match locate(&mut files, &key) {
                Some((path, slot)) => {
                    *slot = object;
                    touched.push(path);
                }
                None => {
                    let path = self.new_file(&key)?;
                    files.entry(path.clone()).or_default().push(object);
                    touched.push(path);
                }
            }
        }
        self.write_files(&files, &touched)?;
        self.reload();
        Ok(plan.applied)
    }

    pub fn delete(&self, target: &ObjectKey, version: Option<&str>) -> Result<(), WriteError> {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut files = self.read_files()?;
        plan_delete(&stored(&files), target, version)?;
        let path = locate(&mut files, target).map(|(path, _)| path);
        if let Some(path) = path {
            if let Some(objects) = files.get_mut(&path) {
                objects.retain(|o| ObjectKey::of(o) != *target);
            }
            self.write_files(&files, &[path])?;
        }
        self.reload();
        Ok(())
    }

    fn read_files(&self) -> Result<Files, WriteError> {
        let paths = config_files(&self.dir).map_err(|e| io_error(&self.dir, e))?;
        let mut files = Files::new();
        let mut errors: Vec<ModelError> = Vec::new();
        for path in paths {
            let text = std::fs::read_to_string(&path).map_err(|e| io_error(&path, e))?;
            match parse_str(&path.display().to_string(), &text) {
                Ok(objects) => {
                    files.insert(path, objects);
                }
                Err(mut e) => errors.append(&mut e),
            }
        }
        if errors.is_empty() {
            Ok(files)
        } else {
            Err(WriteError::Invalid(errors))
        }
    }

    fn new_file(&self, key: &ObjectKey) -> Result<PathBuf, WriteError> {
        if !self.dir.is_dir() {
            return Err(WriteError::Io {
                path: self.dir.display().to_string(),
                message: format!("pilot serves a single file, so {key} has no place to go; start it with a directory"),
            });
        }
        let kind = key.kind.as_str().to_lowercase();
        Ok(self
            .dir
            .join(format!("{}-{kind}-{}.yaml", key.namespace, key.name)))
    }

    /// Replace each of `paths` with its objects, or remove it when none are left.
    fn write_files(&self, files: &Files, paths: &[PathBuf]) -> Result<(), WriteError> {
        for path in paths {
            match files.get(path).filter(|objects| !objects.is_empty()) {
                Some(objects) => write_atomically(path, &to_yaml(path, objects)?)?,
                None => std::fs::remove_file(path).map_err(|e| io_error(path, e))?,
            }
        }
        Ok(())
    }
}

fn stored(files: &Files) -> Vec<Stored> {
    files
        .values()
        .flatten()
        .map(|object| Stored {
            version: content_version(object),
            object: object.clone(),
        })
        .collect()
}

/// The file holding `key` and the object's place in it.
fn locate<'a>(files: &'a mut Files, key: &ObjectKey) -> Option<(PathBuf, &'a mut Object)> {
    files.iter_mut().find_map(|(path, objects)| {
        objects
            .iter_mut()
            .find(|o| ObjectKey::of(o) == *key)
            .map(|slot| (path.clone(), slot))
    })
}

fn to_yaml(path: &Path, objects: &[Object]) -> Result<String, WriteError> {
    let mut documents = Vec::new();
    for object in objects {
        let yaml = serde_norway::to_string(&object.to_json()).map_err(|e| WriteError::Io {
            path: path.display().to_string(),
            message: format!("cannot write {} as YAML: {e}", object.display_name()),
        })?;
        documents.push(yaml);
    }
    Ok(documents.join("---\n"))
}

/// Write `text` to a hidden file beside `path`, then rename it over `path`: a reader sees the old
/// file or the new one, never half of it.
fn write_atomically(path: &Path, text: &str) -> Result<(), WriteError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("config");
    let temp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&temp, text).map_err(|e| io_error(&temp, e))?;
    std::fs::rename(&temp, path).map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        io_error(path, e)
    })
}

fn io_error(path: &Path, e: std::io::Error) -> WriteError {
    WriteError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}
