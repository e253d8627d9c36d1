//! DestinationRule, ServiceEntry and Gateway validation, duplicates and set-wide references,
//! through the public API with the exact messages users see.

mod support;

use support::{errors, object, reviews_backend, stream, valid};

fn one_errors(kind: &str, spec: &str) -> Vec<String> {
    let text = object(kind, "default", "x", spec);
    errors(&[("x.yaml", &text)])
}

fn dr(namespace: &str, name: &str, host: &str, subsets: &str) -> String {
    let subsets: Vec<String> = subsets
        .split_whitespace()
        .map(|s| format!("{{name: {s}, labels: {{version: {s}}}}}"))
        .collect();
    object(
        "DestinationRule",
        namespace,
        name,
        &format!("host: {host}\nsubsets: [{}]", subsets.join(", ")),
    )
}

fn vs_to(namespace: &str, host: &str, subset: &str) -> String {
    let spec = format!(
        "hosts: [{host}]\nhttp:\n- route: [{{destination: {{host: {host}, subset: {subset}}}}}]"
    );
    object("VirtualService", namespace, "to", &spec)
}

// === Set-wide ===

#[test]
fn objects_come_out_sorted_by_namespace_then_name() {
    let text = stream(&[
        dr("shop", "a", "a", "v1"),
        dr("default", "c", "c", "v1"),
        dr("default", "b", "b", "v1"),
    ]);
    let set = valid(&[("drs.yaml", &text)]);
    let names: Vec<_> = set
        .destination_rules
        .iter()
        .map(|r| format!("{}/{}", r.meta.namespace, r.meta.name))
        .collect();
    assert_eq!(names, ["default/b", "default/c", "shop/a"]);
    assert_eq!(set.len(), 3);
}

#[test]
fn duplicate_names_are_reported_on_the_later_object_naming_the_first_file() {
    let first = dr("default", "reviews", "reviews", "v1");
    let second = stream(&[
        dr("shop", "reviews", "reviews", "v1"),
        dr("default", "reviews", "r2", "v1"),
    ]);
    assert_eq!(
        errors(&[("a.yaml", &first), ("b.yaml", &second)]),
        ["b.yaml: DestinationRule default/reviews: metadata.name: \"reviews\" is already defined in a.yaml (document 1); a DestinationRule name must be unique in its namespace"]
    );
}

#[test]
fn one_host_gets_one_destination_rule_per_namespace() {
    let text = stream(&[
        dr("default", "a", "reviews", "v1"),
        dr("default", "b", "reviews.default.svc.cluster.local", "v2"),
        dr("shop", "c", "reviews.default.svc.cluster.local", "v3"),
    ]);
    assert_eq!(
        errors(&[("drs.yaml", &text)]),
        ["drs.yaml: DestinationRule default/b: spec.host: host \"reviews.default.svc.cluster.local\" already has DestinationRule default/a in drs.yaml (document 1); one host gets one DestinationRule per namespace, merge the two"]
    );
}

#[test]
fn subsets_resolve_across_namespaces_and_wildcards() {
    let text = stream(&[
        dr("shop", "reviews", "reviews.default.svc.cluster.local", "v1"),
        vs_to("default", "reviews", "v1"),
        dr("default", "example", "\"*.example.com\"", "v1"),
        vs_to("shop", "api.example.com", "v1").replace("name: to", "name: api"),
    ]);
    let set = valid(&[("mixed.yaml", &text)]);
    assert_eq!(
        (set.virtual_services.len(), set.destination_rules.len()),
        (2, 2)
    );

    let missing = stream(&[
        dr("default", "example", "\"*.example.com\"", "v1"),
        vs_to("default", "api.example.com", "v2"),
    ]);
    assert_eq!(
        errors(&[("w.yaml", &missing)]),
        ["w.yaml: VirtualService default/to: spec.http[0].route[0].destination.subset: subset \"v2\" of host \"api.example.com\" is not defined by any DestinationRule (defined: v1)"]
    );
}

#[test]
fn short_hosts_declared_by_a_service_entry_are_not_expanded() {
    let se = object(
        "ServiceEntry",
        "default",
        "legacy",
        "hosts: [legacy]\nports: [{number: 80, name: http}]\nresolution: DNS",
    );
    let text = stream(&[
        se,
        dr("default", "legacy", "legacy", "v1"),
        vs_to("default", "legacy", "v9"),
    ]);
    assert_eq!(
        errors(&[("l.yaml", &text)]),
        ["l.yaml: VirtualService default/to: spec.http[0].route[0].destination.subset: subset \"v9\" of host \"legacy\" is not defined by any DestinationRule (defined: v1)"]
    );
}

#[test]
fn every_error_of_every_object_is_returned() {
    let text = stream(&[
        reviews_backend(),
        object("Gateway", "default", "gw", "servers: []"),
        object("DestinationRule", "default", "empty", "host: \"\""),
    ]);
    assert_eq!(
        errors(&[("all.yaml", &text)]),
        [
            "all.yaml: Gateway default/gw: spec.servers: at least one server is required",
            "all.yaml: DestinationRule default/empty: spec.host: host is required, e.g. host: reviews",
        ]
    );
}

// === DestinationRule ===

#[test]
fn destination_rule_subsets_and_load_balancers() {
    let spec = r#"
host: reviews
trafficPolicy:
  loadBalancer: {simple: ROUND_ROBIN, consistentHash: {httpHeaderName: x-user}}
  outlierDetection: {maxEjectionPercent: 120}
subsets:
- name: v1
- name: v1
- name: ""
  trafficPolicy:
    loadBalancer: {consistentHash: {httpHeaderName: x-user, useSourceIp: true}}
- name: v3
  trafficPolicy:
    loadBalancer: {consistentHash: {useSourceIp: false}}
"#;
    assert_eq!(
        one_errors("DestinationRule", spec),
        [
            "x.yaml: DestinationRule default/x: spec.trafficPolicy.loadBalancer: sets both `simple` and `consistentHash`; use one",
            "x.yaml: DestinationRule default/x: spec.trafficPolicy.outlierDetection.maxEjectionPercent: 120 is out of range, must be 0..=100",
            "x.yaml: DestinationRule default/x: spec.subsets[1].name: duplicate subset \"v1\", already defined at spec.subsets[0]",
            "x.yaml: DestinationRule default/x: spec.subsets[2].name: subset name must not be empty, e.g. name: v1",
            "x.yaml: DestinationRule default/x: spec.subsets[2].trafficPolicy.loadBalancer.consistentHash: sets httpHeaderName, useSourceIp; set exactly one hash key",
            "x.yaml: DestinationRule default/x: spec.subsets[3].trafficPolicy.loadBalancer.consistentHash: no hash key: set exactly one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName",
        ]
    );
}

/// A DestinationRule `x` annotated with the baggage member `member`.
fn with_member(member: &str, spec: &str) -> String {
    object("DestinationRule", "default", "x", spec).replacen(
        "  namespace: default\n",
        &format!("  namespace: default\n  annotations: {{graymesh.io/hash-baggage-member: \"{member}\"}}\n"),
        1,
    )
}

#[test]
fn a_baggage_member_narrows_a_baggage_hash_key() {
    let top =
        "host: reviews\ntrafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: baggage}}}";
    let on_subset = "host: reviews\nsubsets:\n- name: v1\n  trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: Baggage}}}";
    for spec in [top, on_subset] {
        valid(&[("x.yaml", &with_member("user-id", spec))]);
    }
    let field =
        "x.yaml: DestinationRule default/x: metadata.annotations.graymesh.io/hash-baggage-member";
    assert_eq!(
        errors(&[("x.yaml", &with_member("user id", top))]),
        [format!("{field}: \"user id\" is not a W3C baggage key: ' ' is not allowed; a key is a token of letters, digits and !#$%&'*+-.^_`|~")]
    );
    let by_header = "host: reviews\ntrafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user-id}}}";
    assert_eq!(
        errors(&[("x.yaml", &with_member("user-id", by_header))]),
        [format!("{field}: names the baggage member \"user-id\", but no consistentHash here hashes on httpHeaderName: baggage; add one (top level or on a subset) or remove the annotation")]
    );
}

// === ServiceEntry ===

#[test]
fn service_entry_ports_must_be_unique_and_in_range() {
    let spec = r#"
hosts: [db.internal]
ports:
- {number: 0, name: a}
- {number: 5432, name: pg, targetPort: 70000}
- {number: 5432, name: pg}
resolution: DNS
"#;
    assert_eq!(
        one_errors("ServiceEntry", spec),
        [
            "x.yaml: ServiceEntry default/x: spec.ports[0].number: port 0 is out of range, must be 1..=65535",
            "x.yaml: ServiceEntry default/x: spec.ports[1].targetPort: port 70000 is out of range, must be 1..=65535",
            "x.yaml: ServiceEntry default/x: spec.ports[2].number: duplicate port number 5432, already declared at spec.ports[1]",
            "x.yaml: ServiceEntry default/x: spec.ports[2].name: duplicate port name \"pg\", already declared at spec.ports[1]",
        ]
    );
}

#[test]
fn static_service_entries_need_ip_endpoints_with_declared_ports() {
    let spec = r#"
hosts: [ratings.default.svc.cluster.local]
ports: [{number: 9080, name: http}]
resolution: STATIC
endpoints:
- {address: ratings.local, ports: {http: 9091}}
- {address: "::1", ports: {grpc: 9092, http: 0}, weight: 0, locality: "us-east//a"}
- {address: 127.0.0.2, locality: a/b/c/d}
"#;
    assert_eq!(
        one_errors("ServiceEntry", spec),
        [
            "x.yaml: ServiceEntry default/x: spec.endpoints[0].address: \"ratings.local\" is not an IP address; resolution STATIC needs IP addresses (use resolution DNS for host names)",
            "x.yaml: ServiceEntry default/x: spec.endpoints[1].ports.grpc: port name \"grpc\" is not declared in spec.ports (declared: http)",
            "x.yaml: ServiceEntry default/x: spec.endpoints[1].ports.http: port 0 is out of range, must be 1..=65535",
            "x.yaml: ServiceEntry default/x: spec.endpoints[1].weight: weight must be greater than 0 (leave it out for the default)",
            "x.yaml: ServiceEntry default/x: spec.endpoints[1].locality: \"us-east//a\" is not a locality, expected region[/zone[/subzone]], e.g. us-east/us-east-1a",
            "x.yaml: ServiceEntry default/x: spec.endpoints[2].locality: \"a/b/c/d\" is not a locality, expected region[/zone[/subzone]], e.g. us-east/us-east-1a",
        ]
    );
    let no_endpoints = "hosts: [a.b]\nports: [{number: 80, name: http}]\nresolution: STATIC";
    assert_eq!(
        one_errors("ServiceEntry", no_endpoints),
        ["x.yaml: ServiceEntry default/x: spec.endpoints: resolution STATIC needs at least one endpoint (or use resolution DNS for a host name)"]
    );
}

#[test]
fn dns_service_entries_may_use_host_names() {
    let spec = "hosts: [api.example.com]\nports: [{number: 443, name: tls, protocol: TLS}]\nresolution: DNS\nendpoints: [{address: api.example.com, locality: eu/eu-west-1}]";
    let text = object("ServiceEntry", "default", "api", spec);
    assert_eq!(valid(&[("se.yaml", &text)]).service_entries.len(), 1);
    assert_eq!(
        one_errors("ServiceEntry", "hosts: []"),
        ["x.yaml: ServiceEntry default/x: spec.hosts: at least one host is required, e.g. hosts: [reviews.default.svc.cluster.local]"]
    );
}

// === Gateway ===

#[test]
fn gateway_servers_need_a_known_protocol_a_port_and_hosts() {
    let spec = r#"
selector: {istio: ingressgateway}
servers:
- {port: {number: 8080, protocol: http, name: http}, hosts: ["*"]}
- {port: {number: 0, protocol: HTTP3, name: h3}, hosts: []}
- {port: {number: 8443, protocol: HTTPS}, hosts: [""], tls: {mode: SIMPLE, credentialName: cert}}
"#;
    assert_eq!(
        one_errors("Gateway", spec),
        [
            "x.yaml: Gateway default/x: spec.servers[1].port.number: port 0 is out of range, must be 1..=65535",
            "x.yaml: Gateway default/x: spec.servers[1].port.protocol: unsupported protocol \"HTTP3\", expected one of HTTP, HTTPS, HTTP2, GRPC, TCP, TLS",
            "x.yaml: Gateway default/x: spec.servers[1].hosts: at least one host is required, e.g. hosts: [\"*\"]",
            "x.yaml: Gateway default/x: spec.servers[2].hosts[0]: host must not be empty",
        ]
    );
}
