//! The etcd registry's watch against a real etcd: a pilot whose watch missed registrations and
//! deregistrations that etcd has since compacted away lists the prefix again and ends up with
//! exactly the live instances.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test binary: panicking on the unexpected is the point

use etcd_client::{Client, CompactionOptions};
use graymesh_sources::registry::RegistrationPort;
use graymesh_sources::{EtcdRegistry, Registration};
use graymesh_testkit::EtcdServer;
use std::sync::Arc;
use std::time::Duration;

fn instance(address: &str) -> Registration {
    Registration {
        id: String::new(),
        service: "reviews".to_string(),
        namespace: "default".to_string(),
        address: address.to_string(),
        ports: vec![RegistrationPort {
            port: 9080,
            target_port: None,
            name: None,
            protocol: None,
        }],
        labels: [("version".to_string(), "v2".to_string())]
            .into_iter()
            .collect(),
        locality: None,
        weight: None,
        ttl_seconds: 60,
    }
}

fn addresses(registry: &EtcdRegistry) -> Vec<String> {
    let mut list: Vec<String> = registry.list().iter().map(|r| r.address.clone()).collect();
    list.sort();
    list
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_watch_that_missed_compacted_revisions_lists_again() {
    let etcd = EtcdServer::start().unwrap();
    // This pilot has listed (nothing yet) but does not watch until history is compacted.
    let late = Arc::new(
        EtcdRegistry::open(vec![etcd.endpoint()], None)
            .await
            .unwrap(),
    );
    assert!(late.list().is_empty());
    // Another pilot registers three instances and deregisters one meanwhile.
    let other = EtcdRegistry::open(vec![etcd.endpoint()], None)
        .await
        .unwrap();
    let gone = other.register(instance("127.0.0.11")).await.unwrap();
    other.register(instance("127.0.0.12")).await.unwrap();
    other.register(instance("127.0.0.13")).await.unwrap();
    assert!(other.deregister(&gone).await.unwrap());
    let mut raw = Client::connect([etcd.endpoint()], None).await.unwrap();
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

    let mut changes = late.subscribe();
    tokio::spawn(late.clone().watch());
    let relisted = async {
        while addresses(&late) != ["127.0.0.12", "127.0.0.13"] {
            changes.changed().await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(10), relisted)
        .await
        .unwrap_or_else(|_| panic!("not relisted after compaction: {:?}", addresses(&late)));

    // and it follows from there: a later registration arrives by the watch
    other.register(instance("127.0.0.14")).await.unwrap();
    let followed = async {
        while addresses(&late).len() != 3 {
            changes.changed().await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(10), followed)
        .await
        .unwrap();
    assert_eq!(addresses(&late), ["127.0.0.12", "127.0.0.13", "127.0.0.14"]);
}
