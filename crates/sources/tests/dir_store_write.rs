#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Writes to the directory store: apply and delete through `ConfigStore`, on a copy of bookinfo.

use graymesh_model::{parse_str, Kind};
use graymesh_sources::store::Action;
use graymesh_sources::{ConfigStore, DirStore, ObjectKey, WriteError};
use std::path::{Path, PathBuf};
use std::sync::Arc;

struct TempDir(PathBuf);

impl TempDir {
    fn with_bookinfo(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("graymesh-dirw-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/bookinfo");
        for entry in std::fs::read_dir(src).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
        Self(dir)
    }

    fn snapshot(&self) -> Vec<(PathBuf, String)> {
        let mut files: Vec<_> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| (p.clone(), std::fs::read_to_string(&p).unwrap()))
            .collect();
        files.sort();
        files
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const NEW_VS: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
metadata: {name: ratings-canary}\nspec:\n  hosts: [ratings.example]\n  http:\n  - route:\n    - destination: {host: ratings}\n";

fn open(dir: &TempDir) -> ConfigStore {
    ConfigStore::Dir(Arc::new(DirStore::open(&dir.0).unwrap()))
}

#[tokio::test]
async fn apply_creates_configures_and_deletes_files() {
    let dir = TempDir::with_bookinfo("roundtrip");
    let store = open(&dir);
    let before = store.objects().len();

    let applied = store
        .apply(parse_str("cli", NEW_VS).unwrap())
        .await
        .unwrap();
    assert_eq!(applied.objects[0].action, Action::Created);
    let file = dir.0.join("default-virtualservice-ratings-canary.yaml");
    assert!(file.is_file());
    assert_eq!(
        store.objects().len(),
        before + 1,
        "served right after the write"
    );

    // Change an object living in a file with three others: they stay.
    let mut reviews = store
        .objects()
        .into_iter()
        .find(|o| o.kind() == Kind::VirtualService && o.meta.name == "reviews")
        .unwrap();
    let version = reviews.meta.resource_version.clone().unwrap();
    reviews.meta.labels.insert("edited".into(), "yes".into());
    let applied = store.apply(vec![reviews.clone()]).await.unwrap();
    assert_eq!(applied.objects[0].action, Action::Configured);
    let text = std::fs::read_to_string(dir.0.join("virtual-services.yaml")).unwrap();
    assert!(text.contains("edited: yes"), "{text}");
    assert_eq!(parse_str("f", &text).unwrap().len(), 4);
    // The version it was read at is gone now.
    reviews.meta.resource_version = Some(version);
    let err = store.apply(vec![reviews]).await.unwrap_err();
    assert!(matches!(err, WriteError::Conflict(_)), "{err:?}");

    let key = ObjectKey {
        kind: Kind::VirtualService,
        namespace: "default".into(),
        name: "ratings-canary".into(),
    };
    store.delete(&key, None).await.unwrap();
    assert!(!file.exists());
    assert_eq!(store.objects().len(), before);
}

#[tokio::test]
async fn apply_with_one_bad_object_changes_no_file() {
    let dir = TempDir::with_bookinfo("atomic");
    let store = open(&dir);
    let files = dir.snapshot();
    let bad = NEW_VS.replace(
        "destination: {host: ratings}",
        "destination: {host: ratings, subset: nope}",
    );
    let mut objects = parse_str("cli", &bad).unwrap();
    objects.extend(parse_str("cli", &NEW_VS.replace("ratings-canary", "fine")).unwrap());
    let err = store.apply(objects).await.unwrap_err();
    assert!(matches!(err, WriteError::Invalid(_)), "{err:?}");
    assert_eq!(dir.snapshot(), files);
}

#[tokio::test]
async fn objects_matching_gives_the_selected_objects_with_the_same_versions() {
    let dir = TempDir::with_bookinfo("matching");
    let store = open(&dir);
    let all = store.objects();
    let rules = store.objects_matching(|o| o.kind() == Kind::DestinationRule);
    let expected: Vec<_> = all
        .iter()
        .filter(|o| o.kind() == Kind::DestinationRule)
        .collect();
    assert!(!rules.is_empty(), "bookinfo has DestinationRules");
    assert_eq!(rules.len(), expected.len());
    for (got, want) in rules.iter().zip(expected) {
        assert_eq!(got.meta.name, want.meta.name);
        assert!(got.meta.resource_version.is_some());
        assert_eq!(got.meta.resource_version, want.meta.resource_version);
    }
}
