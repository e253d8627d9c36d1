//! The small rules translation is built on. Whole translations are table-tested in
//! `tests/translate_table.rs`.

use super::*;

fn config(yaml: &str) -> ConfigSet {
    let objects = match graymesh_model::parse_str("test.yaml", yaml) {
        Ok(objects) => objects,
        Err(errors) => panic!("test input does not parse: {errors:?}"),
    };
    match graymesh_model::build_config_set(objects) {
        Ok(set) => set,
        Err(errors) => panic!("test input is invalid: {errors:?}"),
    }
}

fn destination_rule_in(namespace: &str, name: &str, host: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
         metadata: {{name: {name}, namespace: {namespace}}}\nspec: {{host: {host}}}\n---\n"
    )
}

#[test]
fn cluster_names_follow_istio() {
    let host = "reviews.default.svc.cluster.local";
    assert_eq!(
        cluster_name(9080, None, host),
        "outbound|9080||reviews.default.svc.cluster.local"
    );
    assert_eq!(
        cluster_name(9080, Some("v2"), host),
        "outbound|9080|v2|reviews.default.svc.cluster.local"
    );
}

#[test]
fn wildcard_hosts_match_subdomains_only() {
    assert!(host_matches("*.example.com", "api.example.com"));
    assert!(host_matches("*.example.com", "a.b.example.com"));
    assert!(!host_matches("*.example.com", "example.com"));
    assert!(!host_matches("*.example.com", "api.example.org"));
    assert!(!host_matches("*.example.com", "badexample.com"));
    assert!(host_matches("*", "anything.at.all"));
    assert!(host_matches("api.example.com", "api.example.com"));
    assert!(!host_matches("api.example.com", "v2.api.example.com"));
}

#[test]
fn export_to_names_who_sees_an_object() {
    // Nothing said: everyone.
    assert!(exported_to(&[], "shop", "default"));
    let to = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert!(exported_to(&to(&["*"]), "shop", "default"));
    // `.` is the object's own namespace, whoever asks.
    assert!(exported_to(&to(&["."]), "shop", "shop"));
    assert!(!exported_to(&to(&["."]), "shop", "default"));
    // Namespace names, several allowed.
    assert!(exported_to(&to(&["default"]), "shop", "default"));
    assert!(!exported_to(&to(&["billing"]), "shop", "default"));
    assert!(exported_to(&to(&[".", "default"]), "shop", "default"));
}

#[test]
fn empty_config_gives_a_proxyless_client_nothing() {
    let registry = RegistrySnapshot::default();
    let t = translate(
        &ConfigSet::default(),
        &registry,
        &ProxyClass::proxyless("default"),
    );
    assert_eq!(t, Translation::default());
}

#[test]
fn empty_config_gives_a_sidecar_only_its_catch_all() {
    let registry = RegistrySnapshot::default();
    let t = translate(
        &ConfigSet::default(),
        &registry,
        &ProxyClass::sidecar("default"),
    );
    let listeners: Vec<&str> = t.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(listeners, ["127.0.0.1_15001"]);
    assert_eq!(t.routes.len(), 1);
    assert_eq!(t.routes[0].name, "outbound");
    assert!(t.routes[0].virtual_hosts.is_empty());
    assert!(t.clusters.is_empty() && t.endpoints.is_empty());
}

#[test]
fn destination_rule_prefers_node_namespace_then_service_namespace() {
    let host = "reviews.shop.svc.cluster.local";
    let yaml = [
        destination_rule_in("billing", "a", host),
        destination_rule_in("shop", "b", host),
        destination_rule_in("default", "c", host),
    ]
    .concat();
    let set = config(&yaml);
    let registration = graymesh_sources::Registration {
        id: "r1".into(),
        service: "reviews".into(),
        namespace: "shop".into(),
        address: "10.0.0.1".into(),
        ports: vec![graymesh_sources::RegistrationPort {
            port: 9080,
            target_port: None,
            name: None,
            protocol: None,
        }],
        labels: Default::default(),
        locality: None,
        weight: None,
        ttl_seconds: 10,
    };
    let registry = RegistrySnapshot::build(&set, &[registration]);
    let rule_for = |namespace: &str| {
        let class = ProxyClass::proxyless(namespace);
        let ctx = Context::new(&set, &registry, &class);
        ctx.destination_rule(host).map(|r| r.meta.name.clone())
    };
    assert_eq!(rule_for("default").as_deref(), Some("c"));
    // No rule in the node's namespace: the service's own namespace wins over the others.
    assert_eq!(rule_for("web").as_deref(), Some("b"));
}

#[test]
fn exact_destination_rule_beats_wildcard() {
    let yaml = [
        destination_rule_in("default", "any", "\"*.com\""),
        destination_rule_in("default", "wide", "\"*.example.com\""),
        destination_rule_in("default", "exact", "api.example.com"),
    ]
    .concat();
    let set = config(&yaml);
    let registry = RegistrySnapshot::default();
    let class = ProxyClass::proxyless("default");
    let ctx = Context::new(&set, &registry, &class);
    let name = |host: &str| ctx.destination_rule(host).map(|r| r.meta.name.as_str());
    assert_eq!(name("api.example.com"), Some("exact"));
    // The longest covering wildcard wins.
    assert_eq!(name("web.example.com"), Some("wide"));
    assert_eq!(name("shop.com"), Some("any"));
    assert_eq!(name("example.org"), None);
}

#[test]
fn service_entry_export_to_hides_services_from_other_namespaces() {
    let set = config(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n\
         metadata: {name: private, namespace: team-a}\n\
         spec:\n  hosts: [private.internal]\n  exportTo: [\".\"]\n  ports: [{number: 80, name: http}]\n  \
         resolution: STATIC\n  endpoints: [{address: 10.0.0.1}]\n",
    );
    let registry = RegistrySnapshot::build(&set, &[]);
    let names = |ns: &str| -> Vec<String> {
        translate(&set, &registry, &ProxyClass::proxyless(ns))
            .clusters
            .into_iter()
            .map(|c| c.name)
            .collect()
    };
    assert_eq!(names("team-a"), ["outbound|80||private.internal"]);
    assert!(
        names("default").is_empty(),
        "exportTo: . hides it from other namespaces"
    );
}
