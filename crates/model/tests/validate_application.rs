//! OAM Application parsing and validation through the public API, with the exact messages users
//! see: one valid Application, then variants each broken in one place.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test binary: panicking on the unexpected is the point

use graymesh_model::oam::{MatchRule, StepAction};
use graymesh_model::{parse_documents, parse_str, validate_applications};

const VALID: &str = r#"apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: reviews
spec:
  components:
  - name: reviews
    type: webservice
    properties: {host: reviews, port: 9080, version: v1}
    traits:
    - type: canary-traffic
      properties:
        versions: {oldVersion: reviews, newVersion: reviews-v2}
        header: {matchRule: exact, key: x-canary, value: "true"}
        hashKey: {header: x-user-id}
  - name: reviews-v2
    type: webservice
    properties: {host: reviews, port: 9080, version: v2}
  workflow:
    steps:
    - name: testers
      type: canary-rollout-content
    - name: canary-10
      type: canary-rollout-weight
      properties:
        traffic: [{revision: reviews, weight: 90}, {revision: reviews-v2, weight: 10}]
    - name: gate
      type: suspend
      properties: {timeout: 10m, defaultAction: rollback}
    - name: check
      type: analysis
      properties:
        interval: 1m
        minRequests: 100
        maxFailures: 2
        successRate: {min: 99}
        latencyP99: {maxRatioToBaseline: 1.5}
        grpcErrorRate: {max: 1}
    - name: done
      type: promote
"#;

const WHERE: &str = "app.yaml: Application default/reviews";

/// Every error (parse or validation) for `text`, as users see them.
fn errors_of(text: &str) -> Vec<String> {
    let lines = |errors: Vec<graymesh_model::ModelError>| {
        errors.iter().map(ToString::to_string).collect::<Vec<_>>()
    };
    match parse_documents("app.yaml", text) {
        Err(errors) => lines(errors),
        Ok(parsed) => validate_applications(&parsed.applications)
            .err()
            .map(lines)
            .unwrap_or_default(),
    }
}

/// The valid Application with `from` replaced by `to` (which must occur).
fn variant(from: &str, to: &str) -> String {
    assert!(VALID.contains(from), "{from:?} is not in the valid text");
    VALID.replacen(from, to, 1)
}

#[test]
fn the_valid_application_is_read_into_types() {
    let parsed = parse_documents("app.yaml", VALID).unwrap();
    assert!(parsed.objects.is_empty());
    validate_applications(&parsed.applications).unwrap();
    let app = &parsed.applications[0];
    assert_eq!(app.display_name(), "Application default/reviews");
    assert_eq!(app.spec.components.len(), 2);
    let (attached, canary) = app.canary_traffic().unwrap();
    assert_eq!(attached.name, "reviews");
    assert_eq!(canary.versions.new_version, "reviews-v2");
    assert_eq!(canary.header.as_ref().unwrap().match_rule, MatchRule::Exact);
    let types: Vec<&str> = app
        .spec
        .workflow
        .iter()
        .map(|s| s.action.type_name())
        .collect();
    assert_eq!(
        types,
        [
            "canary-rollout-content",
            "canary-rollout-weight",
            "suspend",
            "analysis",
            "promote"
        ]
    );
    let StepAction::Analysis(analysis) = &app.spec.workflow[3].action else {
        panic!("step 3 is not an analysis");
    };
    assert_eq!(analysis.checks, 1, "checks defaults to 1");
    assert_eq!(analysis.interval.as_std().as_secs(), 60);
}

#[test]
fn json_is_read_like_yaml() {
    let value: serde_json::Value = serde_norway::from_str(VALID).unwrap();
    let parsed = parse_documents("app.json", &value.to_string()).unwrap();
    let from_yaml = parse_documents("app.yaml", VALID).unwrap();
    assert_eq!(parsed.applications.len(), 1);
    assert_eq!(parsed.applications[0].meta, from_yaml.applications[0].meta);
    assert_eq!(parsed.applications[0].spec, from_yaml.applications[0].spec);
}

#[test]
fn stores_read_an_application_as_an_object_that_round_trips_through_json() {
    let objects = parse_str("app.yaml", VALID).unwrap();
    assert_eq!(objects.len(), 1);
    let object = &objects[0];
    assert_eq!(object.kind(), graymesh_model::Kind::Application);
    assert_eq!(object.api_version, "core.oam.dev/v1beta1");
    let json = object.to_json();
    assert_eq!(json["kind"], "Application");
    assert_eq!(json["spec"]["components"][0]["type"], "webservice");
    let again = parse_str("again.json", &json.to_string()).unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].meta, object.meta);
    assert_eq!(again[0].spec, object.spec);
    // and the set validates it with the Application checks
    let set = graymesh_model::build_config_set(objects).unwrap();
    assert_eq!(set.applications.len(), 1);
    assert_eq!(set.objects()[0].to_json(), json);
}

/// (what is broken, from, to, the one expected error after `WHERE: `).
const BROKEN: &[(&str, &str, &str, &str)] = &[
    (
        "a component the trait does not release",
        "  workflow:\n",
        "  - name: ratings\n    type: webservice\n    properties: {host: ratings, port: 9080, version: v1}\n  workflow:\n",
        "spec.components[2]: \"ratings\" is neither the oldVersion nor the newVersion of the canary-traffic trait; an Application releases one service, from one version to another",
    ),
    (
        "old OAM apiVersion",
        "apiVersion: core.oam.dev/v1beta1",
        "apiVersion: core.oam.dev/v1alpha2",
        "apiVersion: an Application has apiVersion \"core.oam.dev/v1beta1\", found \"core.oam.dev/v1alpha2\"",
    ),
    (
        "KubeVela policies, not supported",
        "  workflow:\n",
        "  policies: []\n  workflow:\n",
        "spec.policies: unknown field `policies`, expected `components` or `workflow`",
    ),
    (
        "unknown field",
        "properties: {host: reviews, port: 9080, version: v1}",
        "properties: {host: reviews, port: 9080, version: v1, replicas: 3}",
        "spec.components[0].properties.replicas: unknown field `replicas`, expected one of `host`, `port`, `version`",
    ),
    (
        "unknown component type",
        "    type: webservice\n    properties: {host: reviews, port: 9080, version: v2}",
        "    type: worker\n    properties: {host: reviews, port: 9080, version: v2}",
        "spec.components[1].type: unsupported component type \"worker\"; supported: webservice",
    ),
    (
        "unknown step type",
        "type: promote",
        "type: deploy",
        "spec.workflow.steps[4].type: unsupported step type \"deploy\"; supported: canary-rollout-weight, canary-rollout-content, suspend, analysis, promote, rollback",
    ),
    (
        "bad match rule",
        "matchRule: exact",
        "matchRule: glob",
        "spec.components[0].traits[0].properties.header.matchRule: unknown variant `glob`, expected one of `exact`, `prefix`, `regex`",
    ),
    (
        "weights do not sum to 100",
        "weight: 10}",
        "weight: 5}",
        "spec.workflow.steps[1].properties.traffic: weights sum to 95, must be 100",
    ),
    (
        "revision is not a released version",
        "{revision: reviews-v2, weight: 10}",
        "{revision: reviews-v3, weight: 10}",
        "spec.workflow.steps[1].properties.traffic[1].revision: \"reviews-v3\" is not a version being released; use the trait's oldVersion \"reviews\" or newVersion \"reviews-v2\"",
    ),
    (
        "regex does not compile",
        "header: {matchRule: exact, key: x-canary, value: \"true\"}",
        "header: {matchRule: regex, key: x-canary, value: \"(true\"}",
        "spec.components[0].traits[0].properties.header.value: invalid regex \"(true\" (RE2 syntax): unclosed group",
    ),
    (
        "uppercase header key",
        "key: x-canary",
        "key: X-Canary",
        "spec.components[0].traits[0].properties.header.key: header key \"X-Canary\" must be lowercase (HTTP/2 header names are), e.g. \"x-canary\"",
    ),
    (
        "duplicate step names",
        "name: gate",
        "name: testers",
        "spec.workflow.steps[2].name: duplicate step name \"testers\", already used by spec.workflow.steps[0]",
    ),
    (
        "success rate out of range",
        "successRate: {min: 99}",
        "successRate: {min: 199}",
        "spec.workflow.steps[3].properties.successRate.min: 199 is out of range, must be a percentage 0..=100",
    ),
    (
        "absolute and relative at once",
        "latencyP99: {maxRatioToBaseline: 1.5}",
        "latencyP99: {max: 500ms, maxRatioToBaseline: 1.5}",
        "spec.workflow.steps[3].properties.latencyP99: sets both max and maxRatioToBaseline; a threshold is either absolute (max) or relative to the old version (maxRatioToBaseline)",
    ),
    (
        "ratio below 1",
        "maxRatioToBaseline: 1.5",
        "maxRatioToBaseline: 0.5",
        "spec.workflow.steps[3].properties.latencyP99.maxRatioToBaseline: ratio 0.5 is out of range, must be 1..=100 (1.5 allows the new version a p99 50% above the old one's)",
    ),
    (
        "no minimum of requests",
        "minRequests: 100",
        "minRequests: 0",
        "spec.workflow.steps[3].properties.minRequests: minRequests must be at least 1",
    ),
    (
        "trait names a missing component",
        "newVersion: reviews-v2}",
        "newVersion: reviews-2}",
        "spec.components[0].traits[0].properties.versions.newVersion: no component named \"reviews-2\"; components: reviews, reviews-v2",
    ),
    (
        "two versions of different services",
        "properties: {host: reviews, port: 9080, version: v2}",
        "properties: {host: ratings, port: 9080, version: v2}",
        "spec.components[0].traits[0].properties.versions: \"reviews\" is reviews:9080 but \"reviews-v2\" is ratings:9080; both versions must be the same service (host and port)",
    ),
    (
        "same version label twice",
        "properties: {host: reviews, port: 9080, version: v2}",
        "properties: {host: reviews, port: 9080, version: v1}",
        "spec.components[0].traits[0].properties.versions: \"reviews\" and \"reviews-v2\" both run version \"v1\"; the new version needs its own version label",
    ),
    (
        "default action without timeout",
        "properties: {timeout: 10m, defaultAction: rollback}",
        "properties: {defaultAction: rollback}",
        "spec.workflow.steps[2].properties.defaultAction: defaultAction is taken when the timeout runs out; set a timeout too, e.g. timeout: 30m",
    ),
    (
        "a step after promote",
        "    - name: done\n      type: promote\n",
        "    - name: done\n      type: promote\n    - name: late\n      type: suspend\n",
        "spec.workflow.steps[5]: comes after the promote step spec.workflow.steps[4], which ends the rollout; it would never run",
    ),
    (
        "baggage member that is no W3C key",
        "hashKey: {header: x-user-id}",
        "hashKey: {baggage: 'user id'}",
        "spec.components[0].traits[0].properties.hashKey.baggage: \"user id\" is not a W3C baggage key: ' ' is not allowed; a key is a token of letters, digits and !#$%&'*+-.^_`|~",
    ),
    (
        "baggage member with a separator",
        "hashKey: {header: x-user-id}",
        "hashKey: {baggage: 'user-id=1'}",
        "spec.components[0].traits[0].properties.hashKey.baggage: \"user-id=1\" is not a W3C baggage key: '=' is not allowed; a key is a token of letters, digits and !#$%&'*+-.^_`|~",
    ),
    (
        "two hash keys",
        "hashKey: {header: x-user-id}",
        "hashKey: {header: x-user-id, baggage: user-id}",
        "spec.components[0].traits[0].properties.hashKey: sets several keys; set exactly one of header, cookie, baggage",
    ),
    (
        "content step without any condition",
        "        header: {matchRule: exact, key: x-canary, value: \"true\"}\n",
        "",
        "spec.workflow.steps[0].properties: no condition: set header, cookie or uri here, or header or uri on the canary-traffic trait",
    ),
    (
        "promote with properties",
        "      type: promote\n",
        "      type: promote\n      properties: {weight: 100}\n",
        "spec.workflow.steps[4].properties: a promote step takes no properties",
    ),
    (
        "bad duration",
        "interval: 1m",
        "interval: 1 minute",
        "spec.workflow.steps[3].properties.interval: invalid duration \"1 minute\": expected a number and a unit (h, m, s, ms, us, ns), e.g. \"1.5s\" or \"500ms\"",
    ),
];

#[test]
fn each_broken_variant_gets_one_precise_error() {
    let mut failures = Vec::new();
    for (what, from, to, expected) in BROKEN {
        let errors = errors_of(&variant(from, to));
        let expected = format!("{WHERE}: {expected}");
        if errors != [expected.clone()] {
            failures.push(format!(
                "{what}:\n  expected {expected}\n  got      {errors:#?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_baggage_member_is_a_hash_key() {
    // W3C keys are tokens: these are all valid, case kept as written.
    for member in ["user-id", "User_ID", "a.b", "x!#$%&'*+^`|~9"] {
        let text = variant(
            "hashKey: {header: x-user-id}",
            &format!("hashKey: {{baggage: \"{member}\"}}"),
        );
        let parsed = parse_documents("app.yaml", &text).unwrap();
        validate_applications(&parsed.applications).unwrap_or_else(|e| panic!("{member}: {e:#?}"));
        let key = parsed.applications[0]
            .canary_traffic()
            .and_then(|(_, c)| c.hash_key.clone())
            .and_then(|k| k.baggage);
        assert_eq!(key.as_deref(), Some(member));
    }
}

#[test]
fn a_cookie_and_a_cookie_header_cannot_both_be_matched() {
    let text = variant(
        "      type: canary-rollout-content\n",
        "      type: canary-rollout-content\n      properties:\n        header: {matchRule: prefix, key: cookie, value: a}\n        cookie: {matchRule: exact, name: beta, value: '1'}\n",
    );
    assert_eq!(
        errors_of(&text),
        [format!("{WHERE}: spec.workflow.steps[0].properties.header.key: the cookie header is matched by `cookie` in this step; match one cookie with `cookie` only")]
    );
}

#[test]
fn two_applications_with_one_name_are_reported() {
    let text = format!("{VALID}---\n{VALID}");
    assert_eq!(
        errors_of(&text),
        [format!("{WHERE}: metadata.name: \"reviews\" is already defined in app.yaml (document 1); an Application name must be unique in its namespace")]
    );
}

#[test]
fn a_missing_trait_is_reported_and_nothing_else_is_guessed() {
    let text = variant(
        "    traits:\n    - type: canary-traffic\n      properties:\n        versions: {oldVersion: reviews, newVersion: reviews-v2}\n        header: {matchRule: exact, key: x-canary, value: \"true\"}\n        hashKey: {header: x-user-id}\n",
        "",
    );
    assert_eq!(
        errors_of(&text),
        [format!("{WHERE}: spec.components: no canary-traffic trait: attach one to the component being released, naming its oldVersion and newVersion")]
    );
}

#[test]
fn an_application_without_steps_is_refused() {
    let end = VALID.find("  workflow:").unwrap();
    assert_eq!(
        errors_of(&VALID[..end]),
        [format!("{WHERE}: spec.workflow.steps: at least one step is needed, e.g. a canary-rollout-weight step")]
    );
}

#[test]
fn several_errors_are_all_reported_in_one_pass() {
    let text = variant("weight: 10}", "weight: 5}").replacen("name: gate", "name: testers", 1);
    assert_eq!(errors_of(&text).len(), 2, "{:#?}", errors_of(&text));
}

#[test]
fn an_application_in_a_json_list_is_read_and_its_errors_carry_the_item_path() {
    let app: serde_json::Value = serde_norway::from_str(VALID).unwrap();
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [app]});
    let parsed = parse_documents("list.json", &list.to_string()).unwrap();
    assert_eq!(parsed.applications.len(), 1);
    validate_applications(&parsed.applications).unwrap();

    let broken: serde_json::Value =
        serde_norway::from_str(&variant("spec:\n", "spec:\n  replicas: 2\n")).unwrap();
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [broken]});
    let errors = parse_documents("list.json", &list.to_string()).unwrap_err();
    assert_eq!(
        errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["list.json: Application default/reviews: items[0].spec.replicas: unknown field `replicas`, expected `components` or `workflow`"]
    );
}

#[test]
fn a_hand_written_rule_or_route_for_the_released_host_is_refused_up_front() {
    let others = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews.default.svc.cluster.local
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews, subset: v1}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: edge}
spec:
  hosts: [reviews]
  gateways: [ingress]
  http: [{route: [{destination: {host: reviews, subset: v1}}]}]
";
    let mut objects = parse_str("app.yaml", VALID).unwrap();
    objects.extend(parse_str("others.yaml", others).unwrap());
    let errors: Vec<String> = graymesh_model::build_config_set(objects)
        .unwrap_err()
        .iter()
        .map(|e| e.to_string())
        .collect();
    let expected = |object: &str, document: usize| {
        format!("app.yaml: Application default/reviews: spec.components[0].properties.host: host \"reviews.default.svc.cluster.local\" is released by this Application, whose controller writes VirtualService and DestinationRule default/reviews-release for it; {object} in others.yaml (document {document}) competes with them: delete it (the Application's components carry the versions) or release another host")
    };
    // the gateway's own route does not compete with the mesh's
    assert_eq!(
        errors,
        [
            expected("DestinationRule default/reviews", 1),
            expected("VirtualService default/reviews", 2)
        ]
    );
}
