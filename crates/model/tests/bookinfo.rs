//! The bookinfo example users start from (`examples/bookinfo`) must always parse and validate.

use graymesh_model::{build_config_set, parse_str, ConfigSet, Kind};
use std::path::PathBuf;

fn load_bookinfo() -> ConfigSet {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/bookinfo");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            entry
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .path()
        })
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    let names: Vec<_> = files
        .iter()
        .filter_map(|p| p.file_name()?.to_str())
        .collect();
    assert_eq!(
        names,
        [
            "destination-rules.yaml",
            "gateway.yaml",
            "services.yaml",
            "virtual-services.yaml"
        ]
    );
    let mut objects = Vec::new();
    for path in &files {
        let text =
            std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let name = format!(
            "examples/bookinfo/{}",
            path.file_name().unwrap_or_default().display()
        );
        objects.extend(parse_str(&name, &text).unwrap_or_else(|e| panic!("{e:#?}")));
    }
    build_config_set(objects).unwrap_or_else(|errors| panic!("{errors:#?}"))
}

#[test]
fn bookinfo_is_valid_with_the_expected_objects() {
    let set = load_bookinfo();
    assert_eq!(
        set.counts(),
        [
            (Kind::VirtualService, 5),
            (Kind::DestinationRule, 4),
            (Kind::ServiceEntry, 4),
            (Kind::Gateway, 1),
            (Kind::Application, 0),
            (Kind::Rollout, 0),
        ]
    );
    let names: Vec<_> = set
        .virtual_services
        .iter()
        .map(|vs| vs.meta.name.as_str())
        .collect();
    assert_eq!(
        names,
        ["bookinfo", "details", "productpage", "ratings", "reviews"]
    );
}

#[test]
fn bookinfo_reviews_is_a_90_10_canary_with_jason_on_v2() {
    let set = load_bookinfo();
    let reviews = set
        .virtual_services
        .iter()
        .find(|vs| vs.meta.name == "reviews")
        .unwrap();
    let [jason, canary] = &reviews.spec.http[..] else {
        panic!("{reviews:#?}")
    };
    assert_eq!(
        jason.matches[0].headers.keys().collect::<Vec<_>>(),
        ["end-user"]
    );
    assert_eq!(jason.route[0].destination.subset.as_deref(), Some("v2"));
    let split: Vec<_> = canary
        .route
        .iter()
        .map(|r| (r.destination.subset.as_deref().unwrap(), r.weight.unwrap()))
        .collect();
    assert_eq!(split, [("v1", 90), ("v2", 10)]);
    assert_eq!(
        set.resolve_host(&reviews.spec.hosts[0], &reviews.meta.namespace),
        "reviews.default.svc.cluster.local"
    );
}

#[test]
fn bookinfo_endpoints_use_distinct_loopback_ports() {
    let set = load_bookinfo();
    let mut ports: Vec<u32> = set
        .service_entries
        .iter()
        .flat_map(|se| se.spec.endpoints.iter())
        .inspect(|endpoint| assert_eq!(endpoint.address, "127.0.0.1"))
        .map(|endpoint| endpoint.ports["http"])
        .collect();
    ports.sort();
    assert_eq!(ports, [9080, 9081, 9082, 9083, 9091, 9092]);
    let gateway = &set.gateways[0];
    assert_eq!(gateway.meta.name, "bookinfo-gateway");
    assert_eq!(gateway.spec.selector["istio"], "ingressgateway");
    assert_eq!(
        (
            gateway.spec.servers[0].port.number,
            gateway.spec.servers[0].hosts[0].as_str()
        ),
        (8080, "*")
    );
}

/// What the config stores write (an object's JSON) must parse back to the same object: etcd
/// values and `graymesh get -o yaml` output are read again by `apply`.
#[test]
fn objects_round_trip_through_their_json() {
    let set = load_bookinfo();
    let objects = set.objects();
    assert_eq!(objects.len(), set.len());
    for object in &objects {
        let text = object.to_json().to_string();
        let again = parse_str(&object.origin.file, &text).unwrap_or_else(|e| panic!("{e:#?}"));
        assert_eq!(again.len(), 1, "{}", object.display_name());
        assert_eq!(again[0].meta, object.meta);
        assert_eq!(again[0].spec, object.spec, "{}", object.display_name());
    }
    let rebuilt = build_config_set(objects).unwrap_or_else(|e| panic!("{e:#?}"));
    assert_eq!(rebuilt.objects().len(), set.len());
}
