use super::*;
use crate::duration::Duration;
use crate::istio::StringMatch;
use crate::object::{Kind, Origin, Spec};

fn parse_ok(file: &str, text: &str) -> Vec<Object> {
    parse_str(file, text).unwrap_or_else(|errors| panic!("{file}: unexpected errors: {errors:#?}"))
}

fn parse_errors(file: &str, text: &str) -> Vec<String> {
    match parse_str(file, text) {
        Ok(objects) => panic!("{file}: expected errors, parsed {objects:#?}"),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

const REVIEWS_VS: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: shop
spec:
  hosts: [reviews]
  http:
  - name: jason
    match:
    - headers:
        end-user: {exact: jason}
      uri: {prefix: /api}
    route:
    - destination: {host: reviews, subset: v2}
    timeout: 1.5s
    retries: {attempts: 3, perTryTimeout: 500ms, retryOn: "5xx,connect-failure"}
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 90
    - destination: {host: reviews, subset: v2}
      weight: 10
"#;

#[test]
fn reads_a_virtual_service_with_matches_weights_and_durations() {
    let objects = parse_ok("reviews.yaml", REVIEWS_VS);
    assert_eq!(objects.len(), 1);
    let object = &objects[0];
    assert_eq!(object.display_name(), "VirtualService shop/reviews");
    assert_eq!(object.api_version, "networking.istio.io/v1");
    assert_eq!(
        object.origin,
        Origin {
            file: "reviews.yaml".into(),
            document: 0
        }
    );
    let Spec::VirtualService(vs) = &object.spec else {
        panic!("not a VirtualService: {object:?}")
    };
    assert_eq!(vs.hosts, ["reviews"]);
    let jason = &vs.http[0];
    assert_eq!(
        jason.matches[0].headers["end-user"],
        StringMatch::Exact("jason".into())
    );
    assert_eq!(
        jason.matches[0].uri,
        Some(StringMatch::Prefix("/api".into()))
    );
    assert_eq!(jason.timeout, Some(Duration::from_millis(1500)));
    let retries = jason.retries.as_ref().unwrap();
    assert_eq!(
        (retries.attempts, retries.per_try_timeout),
        (3, Some(Duration::from_millis(500)))
    );
    let weights: Vec<_> = vs.http[1].route.iter().map(|r| r.weight).collect();
    assert_eq!(weights, [Some(90), Some(10)]);
    assert_eq!(
        vs.http[1].route[1].destination.subset.as_deref(),
        Some("v2")
    );
}

#[test]
fn accepts_every_istio_api_version() {
    for version in crate::object::ISTIO_API_VERSIONS {
        let text = format!(
            "apiVersion: {version}\nkind: DestinationRule\nmetadata: {{name: reviews}}\nspec: {{host: reviews}}\n"
        );
        let objects = parse_ok("dr.yaml", &text);
        assert_eq!(objects[0].api_version, *version);
        assert_eq!(objects[0].kind(), Kind::DestinationRule);
    }
}

#[test]
fn namespace_defaults_to_default_also_when_empty() {
    let text = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: a}\nspec: {host: a}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: b, namespace: \"\"}\nspec: {host: b}\n";
    let objects = parse_ok("dr.yaml", text);
    let namespaces: Vec<_> = objects.iter().map(|o| o.meta.namespace.as_str()).collect();
    assert_eq!(namespaces, ["default", "default"]);
}

#[test]
fn yaml_stream_skips_empty_documents_but_counts_them() {
    let gateway = "apiVersion: networking.istio.io/v1beta1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n  servers: [{port: {number: 8080, protocol: HTTP}, hosts: ['*']}]\n";
    let text = format!(
        "---\n# nothing here\n---\n{gateway}---\n---\n{}",
        gateway.replace("gw}", "gw2}")
    );
    let objects = parse_ok("gw.yaml", &text);
    let found: Vec<_> = objects
        .iter()
        .map(|o| (o.meta.name.as_str(), o.origin.document))
        .collect();
    assert_eq!(found, [("gw", 1), ("gw2", 3)]);
    assert!(parse_ok("empty.yaml", "").is_empty());
    assert!(parse_ok("empty.yaml", "---\n# only a comment\n---\n").is_empty());
}

#[test]
fn reads_json_objects_and_arrays() {
    let dr = r#"{"apiVersion": "networking.istio.io/v1alpha3", "kind": "DestinationRule",
        "metadata": {"name": "ratings"}, "spec": {"host": "ratings", "subsets": [{"name": "v1", "labels": {"version": "v1"}}]}}"#;
    let one = parse_ok("dr.json", dr);
    assert_eq!(one[0].display_name(), "DestinationRule default/ratings");
    let Spec::DestinationRule(spec) = &one[0].spec else {
        panic!("{one:?}")
    };
    assert_eq!(spec.subsets[0].labels["version"], "v1");

    // Recognised by its first character (after a byte-order mark) even without a .json name;
    // array elements are documents.
    let array = format!("[{dr}, {}]", dr.replace("ratings", "details"));
    let two = parse_ok("config", &format!("\u{feff}{array}"));
    let found: Vec<_> = two
        .iter()
        .map(|o| (o.meta.name.as_str(), o.origin.document))
        .collect();
    assert_eq!(found, [("ratings", 0), ("details", 1)]);
}

#[test]
fn unpacks_kubernetes_lists() {
    let text = r#"
apiVersion: v1
kind: List
metadata: {resourceVersion: ""}
items:
- apiVersion: networking.istio.io/v1
  kind: DestinationRule
  metadata: {name: a}
  spec: {host: a}
- apiVersion: networking.istio.io/v1
  kind: DestinationRule
  metadata: {name: b}
  spec: {host: b}
"#;
    let objects = parse_ok("list.yaml", text);
    let names: Vec<_> = objects.iter().map(|o| o.meta.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    let json = r#"{"kind": "List", "items": [{"apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule", "metadata": {"name": "c"}, "spec": {"host": "c"}}]}"#;
    assert_eq!(parse_ok("list.json", json)[0].meta.name, "c");
}

#[test]
fn yaml_merge_keys_are_applied() {
    let text = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: a}\nspec:\n  host: a\n  subsets:\n  - &v1 {name: v1, labels: {version: v1}}\n  - <<: *v1\n    name: v2\n";
    let objects = parse_ok("dr.yaml", text);
    let Spec::DestinationRule(dr) = &objects[0].spec else {
        panic!("{objects:?}")
    };
    assert_eq!(dr.subsets[1].name, "v2");
    assert_eq!(dr.subsets[1].labels["version"], "v1");
}

// === Errors ===

#[test]
fn unknown_field_names_the_path_and_the_accepted_fields() {
    let text = REVIEWS_VS.replace("      weight: 10\n", "      wieght: 10\n");
    assert_eq!(
        parse_errors("reviews.yaml", &text),
        ["reviews.yaml: VirtualService shop/reviews: spec.http[1].route[1].wieght: unknown field `wieght`, expected one of `destination`, `weight`, `headers`"]
    );
}

#[test]
fn unknown_kind_lists_the_supported_ones() {
    let text = "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: s}\nspec: {}\n";
    assert_eq!(
        parse_errors("s.yaml", text),
        ["s.yaml: document 1: kind: unsupported kind \"Sidecar\"; supported kinds: VirtualService, DestinationRule, ServiceEntry, Gateway, Application, Rollout"]
    );
}

#[test]
fn bad_api_version_lists_the_accepted_ones() {
    let text = "apiVersion: networking.istio.io/v2\nkind: DestinationRule\nmetadata: {name: a}\nspec: {host: a}\n";
    assert_eq!(
        parse_errors("a.yaml", text),
        ["a.yaml: DestinationRule default/a: apiVersion: unsupported apiVersion \"networking.istio.io/v2\"; expected one of networking.istio.io/v1, networking.istio.io/v1beta1, networking.istio.io/v1alpha3"]
    );
}

#[test]
fn yaml_syntax_error_gives_line_and_column_after_earlier_documents() {
    let text = "apiVersion: networking.istio.io/v1\nkind: Nope\nmetadata: {name: a}\nspec: {}\n---\nspec:\n  hosts: [a\n  http: []\n";
    assert_eq!(
        parse_errors("bad.yaml", text),
        [
            "bad.yaml: document 1: kind: unsupported kind \"Nope\"; supported kinds: VirtualService, DestinationRule, ServiceEntry, Gateway, Application, Rollout",
            "bad.yaml: YAML syntax error: did not find expected ',' or ']' at line 8 column 7, while parsing a flow sequence at line 7 column 10",
        ]
    );
}

#[test]
fn json_syntax_error_gives_line_and_column() {
    assert_eq!(
        parse_errors("a.json", "{\"kind\": \"Gateway\",\n \"spec\" {}}"),
        ["a.json: JSON syntax error: expected `:` at line 2 column 9"]
    );
}

#[test]
fn every_document_is_checked_and_every_envelope_problem_reported() {
    let text = "kind: Gateway\nmetadata: {name: Bad_Name}\nstatus: {}\nspec: {servers: []}\n---\n42\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: ok}\n";
    assert_eq!(
        parse_errors("many.yaml", text),
        [
            "many.yaml: Gateway default/Bad_Name: status: unknown field `status`, expected one of `apiVersion`, `kind`, `metadata`, `spec`",
            "many.yaml: Gateway default/Bad_Name: apiVersion: missing; expected one of networking.istio.io/v1, networking.istio.io/v1beta1, networking.istio.io/v1alpha3",
            "many.yaml: Gateway default/Bad_Name: metadata.name: name \"Bad_Name\" is not valid: use at most 253 lowercase letters, digits, '-' or '.', starting and ending with a letter or digit",
            "many.yaml: document 2: expected an object with apiVersion, kind, metadata and spec, found a number",
            "many.yaml: VirtualService default/ok: spec: missing; a VirtualService needs a spec",
        ]
    );
}

#[test]
fn metadata_problems_name_the_field() {
    let base = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nspec: {host: a}\n";
    let cases = [
        ("metadata: {namespace: shop}\n", "a.yaml: DestinationRule in document 1: metadata: missing field `name`"),
        ("metadata: {name: a, uid: x}\n", "a.yaml: DestinationRule default/a: metadata.uid: unknown field `uid`, expected one of `name`, `namespace`, `labels`, `annotations`, `resourceVersion`"),
        ("metadata: {name: a, namespace: a.b}\n", "a.yaml: DestinationRule a.b/a: metadata.namespace: namespace \"a.b\" is not valid: use at most 63 lowercase letters, digits or '-', starting and ending with a letter or digit"),
        ("", "a.yaml: DestinationRule in document 1: metadata: missing; every object needs metadata with at least a name"),
    ];
    for (metadata, expected) in cases {
        assert_eq!(
            parse_errors("a.yaml", &format!("{base}{metadata}")),
            [expected]
        );
    }
}

#[test]
fn errors_in_list_items_carry_the_item_path() {
    let text = r#"{"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {"name": "a"}, "spec": {"host": "a"}},
        {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {"name": "b"}, "spec": {"hots": "b"}}]}"#;
    assert_eq!(
        parse_errors("list.json", text),
        ["list.json: DestinationRule default/b: items[1].spec.hots: unknown field `hots`, expected one of `host`, `trafficPolicy`, `subsets`, `exportTo`"]
    );
    assert_eq!(
        parse_errors("list.yaml", "kind: List\nitems: {}\n"),
        ["list.yaml: document 1: items: expected an array of objects, found an object"]
    );
}

#[test]
fn serde_messages_get_a_hint_where_they_need_one() {
    let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: a}\nspec:\n  host: a\n  subsets: [{name: v1, labels: {version: 1}}]\n";
    assert_eq!(
        parse_errors("a.yaml", dr),
        ["a.yaml: DestinationRule default/a: spec.subsets[0].labels.version: invalid type: integer `1`, expected a string; quote the value, e.g. \"v1\" or \"1\""]
    );
    let vs = REVIEWS_VS.replace("uri: {prefix: /api}", "uri: {prefix: /api, exact: /api}");
    assert_eq!(
        parse_errors("r.yaml", &vs),
        ["r.yaml: VirtualService shop/reviews: spec.http[0].match[0].uri: invalid value: map, expected map with a single key: a string match takes exactly one of `exact`, `prefix`, `regex`"]
    );
    let bad_duration = REVIEWS_VS.replace("timeout: 1.5s", "timeout: 3");
    assert_eq!(
        parse_errors("r.yaml", &bad_duration),
        ["r.yaml: VirtualService shop/reviews: spec.http[0].timeout: invalid type: integer `3`, expected a duration with a unit, such as \"1.5s\" or \"500ms\""]
    );
}
