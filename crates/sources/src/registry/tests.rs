use super::*;

fn reg(service: &str, port: u32, target: u32, version: &str) -> Registration {
    Registration {
        id: String::new(),
        service: service.into(),
        namespace: "default".into(),
        address: "127.0.0.1".into(),
        ports: vec![RegistrationPort {
            port,
            target_port: Some(target),
            name: Some("http".into()),
            protocol: None,
        }],
        labels: [("version".to_string(), version.to_string())].into(),
        locality: Some("us-east/zone-a".into()),
        weight: None,
        ttl_seconds: 5,
    }
}

#[tokio::test(start_paused = true)]
async fn registration_lives_for_its_ttl_and_heartbeats_renew_it() {
    let registry = EmbeddedRegistry::new();
    let mut changes = registry.subscribe();
    let id = registry.register(reg("reviews", 9080, 9082, "v2")).unwrap();
    assert!(changes.has_changed().unwrap());
    assert_eq!(changes.borrow_and_update().len(), 1);

    tokio::time::advance(Duration::from_secs(4)).await;
    assert!(registry.heartbeat(&id));
    tokio::time::advance(Duration::from_secs(4)).await;
    assert_eq!(registry.expire(), 0, "heartbeat renewed the lease");
    assert!(!changes.has_changed().unwrap());

    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(registry.expire(), 1);
    assert!(registry.list().is_empty());
    assert!(changes.has_changed().unwrap());
    assert!(!registry.heartbeat(&id), "an expired id must re-register");
}

#[test]
fn deregister_removes_and_reports_unknown_ids() {
    let registry = EmbeddedRegistry::new();
    let id = registry.register(reg("reviews", 9080, 9082, "v2")).unwrap();
    assert!(registry.deregister(&id));
    assert!(!registry.deregister(&id));
    assert!(registry.list().is_empty());
}

#[test]
fn bad_registrations_name_the_field() {
    let registry = EmbeddedRegistry::new();
    let mut bad = reg("reviews", 9080, 9082, "v2");
    bad.address = "not-an-ip".into();
    assert_eq!(
        registry.register(bad).unwrap_err(),
        r#"address: "not-an-ip" is not an IP address"#
    );
    let mut bad = reg("reviews", 9080, 70000, "v2");
    bad.ttl_seconds = 5;
    assert_eq!(
        registry.register(bad).unwrap_err(),
        "ports[0].target_port: 70000 is not in 1..=65535"
    );
    assert!(registry.list().is_empty());
}

#[test]
fn snapshot_expands_short_names_and_maps_ports() {
    let registrations = vec![
        Registration {
            id: "a".into(),
            ..reg("reviews", 9080, 9081, "v1")
        },
        Registration {
            id: "b".into(),
            ..reg("reviews", 9080, 9082, "v2")
        },
    ];
    let snap = RegistrySnapshot::build(&ConfigSet::default(), &registrations);
    let svc = &snap.services["reviews.default.svc.cluster.local"];
    assert_eq!(svc.ports.len(), 1);
    assert_eq!(svc.instances.len(), 2);
    assert_eq!(svc.instances[1].ports[&9080], 9082);
    assert_eq!(
        svc.instances[1].locality,
        Locality {
            region: "us-east".into(),
            zone: "zone-a".into(),
            subzone: String::new()
        }
    );
    assert_eq!(snap.instance_count(), 2);
}
