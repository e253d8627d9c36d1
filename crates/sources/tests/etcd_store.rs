#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The etcd config store against a real etcd: load, watch, writes (all or nothing, optimistic
//! concurrency), broken values, compaction, and etcd going away.

use etcd_client::{Client, CompactionOptions};
use graymesh_model::{parse_str, Kind, Object};
use graymesh_sources::etcd::EtcdError;
use graymesh_sources::store::Action;
use graymesh_sources::{ConfigState, ConfigStore, EtcdStore, ObjectKey, WriteError};
use graymesh_testkit::EtcdServer;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

const BOUND: Duration = Duration::from_secs(10);

const DR: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"#;

fn vs(subset: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews}}\n\
         spec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {{host: reviews, subset: {subset}}}\n"
    )
}

fn objects(texts: &[&str]) -> Vec<Object> {
    texts
        .iter()
        .flat_map(|t| parse_str("test.yaml", t).unwrap())
        .collect()
}

async fn open(etcd: &EtcdServer) -> (ConfigStore, Arc<EtcdStore>) {
    let store = Arc::new(EtcdStore::open(vec![etcd.endpoint()]).await.unwrap());
    tokio::spawn(store.clone().watch());
    (ConfigStore::Etcd(store.clone()), store)
}

async fn wait_state(
    rx: &mut watch::Receiver<ConfigState>,
    what: &str,
    ok: impl FnMut(&ConfigState) -> bool,
) -> ConfigState {
    let found = match tokio::time::timeout(BOUND, rx.wait_for(ok)).await {
        Ok(Ok(state)) => Some(state.clone()),
        _ => None,
    };
    found.unwrap_or_else(|| panic!("{what}: not within {BOUND:?}; state: {:?}", *rx.borrow()))
}

async fn client(etcd: &EtcdServer) -> Client {
    Client::connect([etcd.endpoint()], None).await.unwrap()
}

#[tokio::test]
async fn unreachable_etcd_is_a_clear_error() {
    let err = EtcdStore::open(vec!["http://127.0.0.1:1".into()])
        .await
        .unwrap_err();
    assert!(matches!(err, EtcdError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains("http://127.0.0.1:1"), "{err}");
}

#[tokio::test]
async fn apply_get_delete_round_trip() {
    let etcd = EtcdServer::start().unwrap();
    let (store, _) = open(&etcd).await;
    let applied = store.apply(objects(&[DR, &vs("v1")])).await.unwrap();
    let actions: Vec<Action> = applied.objects.iter().map(|o| o.action).collect();
    assert_eq!(actions, [Action::Created, Action::Created]);

    // Served right after the write, with the mod revision as resourceVersion.
    let served = store.objects();
    assert_eq!(served.len(), 2);
    let vs_now = served
        .iter()
        .find(|o| o.kind() == Kind::VirtualService)
        .unwrap();
    let version = vs_now.meta.resource_version.clone().unwrap();
    assert!(version.parse::<i64>().unwrap() > 0);
    let mut raw = client(&etcd).await;
    let stored = raw
        .get("/graymesh/config/default/VirtualService/reviews", None)
        .await
        .unwrap();
    assert_eq!(stored.kvs()[0].mod_revision().to_string(), version);

    // Applying the same again changes nothing; a stale resourceVersion is a conflict.
    let again = store.apply(objects(&[&vs("v1")])).await.unwrap();
    assert_eq!(again.objects[0].action, Action::Unchanged);
    let mut update = objects(&[&vs("v2")]);
    update[0].meta.resource_version = Some(version.clone());
    let updated = store.apply(update.clone()).await.unwrap();
    assert_eq!(updated.objects[0].action, Action::Configured);
    let err = store.apply(update).await.unwrap_err();
    assert!(matches!(err, WriteError::Conflict(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains(&format!("resourceVersion {version}")),
        "{err}"
    );

    let key = ObjectKey::of(vs_now);
    store.delete(&key, None).await.unwrap();
    assert_eq!(store.objects().len(), 1);
    let err = store.delete(&key, None).await.unwrap_err();
    assert!(matches!(err, WriteError::NotFound(_)), "{err:?}");
}

#[tokio::test]
async fn apply_with_one_bad_object_writes_nothing() {
    let etcd = EtcdServer::start().unwrap();
    let (store, etcd_store) = open(&etcd).await;
    let revision = etcd_store.revision();
    // The DestinationRule alone is fine; the VirtualService names a subset it lacks.
    let err = store.apply(objects(&[DR, &vs("v9")])).await.unwrap_err();
    let WriteError::Invalid(errors) = &err else {
        panic!("expected Invalid, got {err:?}")
    };
    assert!(
        errors[0]
            .to_string()
            .contains("VirtualService default/reviews"),
        "{errors:?}"
    );
    let mut raw = client(&etcd).await;
    let all = raw
        .get(
            "/graymesh/",
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    assert!(all.kvs().is_empty());
    assert_eq!(all.header().unwrap().revision(), revision);
}

#[tokio::test]
async fn broken_values_in_etcd_are_reported_and_skipped() {
    let etcd = EtcdServer::start().unwrap();
    let (store, etcd_store) = open(&etcd).await;
    store.apply(objects(&[DR])).await.unwrap();
    let mut raw = client(&etcd).await;
    let bad_key = "/graymesh/config/default/VirtualService/broken";
    raw.put(bad_key, "{\"kind\": \"VirtualService\", ", None)
        .await
        .unwrap();
    raw.put("/graymesh/config/default/Pod/x", "{}", None)
        .await
        .unwrap();
    let mut rx = etcd_store.subscribe();
    let state = wait_state(&mut rx, "two errors reported", |s| s.errors.len() == 2).await;
    let text: Vec<String> = state.errors.iter().map(|e| e.to_string()).collect();
    assert!(
        text.iter()
            .any(|e| e.starts_with(&format!("etcd:{bad_key}"))),
        "{text:?}"
    );
    assert!(
        text.iter().any(|e| e.contains("unknown kind \"Pod\"")),
        "{text:?}"
    );
    assert_eq!(
        state.config.destination_rules.len(),
        1,
        "the good object is still served"
    );

    raw.delete(bad_key, None).await.unwrap();
    wait_state(&mut rx, "error gone with its key", |s| s.errors.len() == 1).await;
}

#[tokio::test]
async fn a_watch_that_missed_compacted_revisions_lists_again() {
    let etcd = EtcdServer::start().unwrap();
    let store = Arc::new(EtcdStore::open(vec![etcd.endpoint()]).await.unwrap());
    // A second pilot, watching (so its writes return as soon as it has seen them).
    let (writer, _) = open(&etcd).await;
    // Not yet watching: these changes happen "while disconnected", then history is compacted.
    writer.apply(objects(&[DR])).await.unwrap();
    writer.apply(objects(&[&vs("v1")])).await.unwrap();
    writer.apply(objects(&[&vs("v2")])).await.unwrap();
    let mut raw = client(&etcd).await;
    let now = raw
        .get("x", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    raw.compact(now, Some(CompactionOptions::new().with_physical()))
        .await
        .unwrap();

    let mut rx = store.subscribe();
    assert!(rx.borrow().config.is_empty());
    tokio::spawn(store.clone().watch());
    let state = wait_state(&mut rx, "relisted after compaction", |s| {
        s.config.len() == 2
    })
    .await;
    let vs = &state.config.virtual_services[0].spec;
    assert!(format!("{vs:?}").contains("v2"));
    assert!(store.revision() >= now);
}

#[tokio::test]
async fn etcd_lost_keeps_the_config_and_refuses_writes_until_back() {
    let mut etcd = EtcdServer::start().unwrap();
    let (store, etcd_store) = open(&etcd).await;
    store.apply(objects(&[DR])).await.unwrap();
    assert!(store.writable());

    etcd.kill();
    let lost = async {
        while store.writable() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(BOUND, lost)
        .await
        .expect("not marked lost");
    assert_eq!(store.objects().len(), 1, "still serving what it had");
    let err = store.apply(objects(&[&vs("v1")])).await.unwrap_err();
    assert!(matches!(err, WriteError::Unavailable(_)), "{err:?}");

    etcd.restart().unwrap();
    let back = async {
        while !store.writable() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(BOUND, back)
        .await
        .expect("not reconnected");
    store.apply(objects(&[&vs("v1")])).await.unwrap();
    let mut rx = etcd_store.subscribe();
    wait_state(&mut rx, "write after reconnect served", |s| {
        s.config.len() == 2
    })
    .await;
}

#[tokio::test]
async fn an_apply_larger_than_one_etcd_transaction_is_refused_up_front() {
    let etcd = EtcdServer::start().unwrap();
    let (store, _) = open(&etcd).await;
    let many: Vec<Object> = (0..128)
        .flat_map(|i| {
            let text = format!(
                "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs-{i}}}\n\
                 spec:\n  hosts: [h{i}.example]\n  http:\n  - route:\n    - destination: {{host: h{i}.example}}\n"
            );
            parse_str("many.yaml", &text).unwrap()
        })
        .collect();
    let err = store.apply(many.clone()).await.unwrap_err();
    assert!(matches!(err, WriteError::TooLarge(_)), "{err:?}");
    assert!(
        err.to_string().contains("128 objects would change"),
        "{err}"
    );
    assert!(store.objects().is_empty());
    // 127 fit in one transaction (the 128th operation is the write marker).
    store.apply(many[..127].to_vec()).await.unwrap();
    assert_eq!(store.objects().len(), 127);
}

#[tokio::test]
async fn a_watch_started_late_replays_what_happened_since_the_load() {
    let etcd = EtcdServer::start().unwrap();
    // A second pilot, watching (so its writes return as soon as it has seen them).
    let (writer, _) = open(&etcd).await;
    writer.apply(objects(&[DR, &vs("v1")])).await.unwrap();
    let store = Arc::new(EtcdStore::open(vec![etcd.endpoint()]).await.unwrap());
    let loaded_at = store.revision();
    // While this store is not watching (as if disconnected): an update and a delete.
    writer.apply(objects(&[&vs("v2")])).await.unwrap();
    let dr = ObjectKey {
        kind: Kind::DestinationRule,
        namespace: "default".into(),
        name: "reviews".into(),
    };
    writer
        .delete(
            &ObjectKey {
                kind: Kind::VirtualService,
                name: "reviews".into(),
                ..dr.clone()
            },
            None,
        )
        .await
        .unwrap();
    writer.delete(&dr, None).await.unwrap();

    let mut rx = store.subscribe();
    assert_eq!(rx.borrow().config.len(), 2);
    tokio::spawn(store.clone().watch());
    wait_state(&mut rx, "the changes replayed from history", |s| {
        s.config.is_empty()
    })
    .await;
    assert!(store.revision() > loaded_at);
}
