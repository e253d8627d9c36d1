//! The fold of steps into a traffic plan and the cookie regex. Whole outputs are table-tested in
//! `tests/translate_table.rs`.

use super::*;
use graymesh_model::istio::StringMatch;

const APP: &str = "
apiVersion: core.oam.dev/v1beta1
kind: Application
metadata: {name: reviews}
spec:
  components:
  - name: reviews
    type: webservice
    properties: {host: reviews, port: 9080, version: v1}
    traits:
    - type: canary-traffic
      properties:
        versions: {oldVersion: reviews, newVersion: reviews-v2}
        header: {matchRule: exact, key: x-canary, value: 'true'}
  - name: reviews-v2
    type: webservice
    properties: {host: reviews, port: 9080, version: v2}
  workflow:
    steps:
    - name: gate
      type: suspend
    - name: testers
      type: canary-rollout-content
    - name: ten
      type: canary-rollout-weight
      properties: {traffic: [{revision: reviews, weight: 90}, {revision: reviews-v2, weight: 10}]}
    - name: check
      type: analysis
      properties: {interval: 1m, minRequests: 10, maxFailures: 1, successRate: {min: 99}}
    - name: end
      type: promote
";

fn app() -> Application {
    let parsed = match graymesh_model::parse_documents("app.yaml", APP) {
        Ok(parsed) => parsed,
        Err(errors) => panic!("test input does not parse: {errors:?}"),
    };
    if let Err(errors) = graymesh_model::validate_applications(&parsed.applications) {
        panic!("test input is invalid: {errors:?}");
    }
    match parsed.applications.into_iter().next() {
        Some(app) => app,
        None => panic!("test input holds no Application"),
    }
}

/// (version, weight) of the split, and whether a content match is in force.
fn summary(app: &Application, state: RolloutState) -> (Vec<(&str, u32)>, bool) {
    let plan = match plan(app, state) {
        Ok(plan) => plan,
        Err(e) => panic!("{e}"),
    };
    let split = plan
        .split
        .iter()
        .map(|(c, w)| (c.properties.version.as_str(), *w))
        .collect();
    (split, plan.content.is_some())
}

#[test]
fn steps_fold_in_order_and_a_content_match_outlives_later_weight_steps() {
    let app = app();
    let at = |i| summary(&app, RolloutState::Step(i));
    // Before any traffic step, everything stays on the old version.
    assert_eq!(at(0), (vec![("v1", 100)], false));
    // The content step takes the trait's header and keeps the split.
    assert_eq!(at(1), (vec![("v1", 100)], true));
    assert_eq!(at(2), (vec![("v1", 90), ("v2", 10)], true));
    // Analysis holds what the steps before it set.
    assert_eq!(at(3), (vec![("v1", 90), ("v2", 10)], true));
    // A promote step is the promoted state; both end states drop the match.
    assert_eq!(at(4), (vec![("v2", 100)], false));
    assert_eq!(summary(&app, RolloutState::Promoted), at(4));
    assert_eq!(
        summary(&app, RolloutState::RolledBack),
        (vec![("v1", 100)], false)
    );
}

#[test]
fn a_step_past_the_workflow_is_an_error_naming_the_application() {
    let error = generate(&app(), RolloutState::Step(5)).err();
    assert_eq!(
        error,
        Some(ReleaseError::NoSuchStep {
            application: "Application default/reviews".to_string(),
            index: 5,
            steps: 5,
        })
    );
    let text = error.map(|e| e.to_string()).unwrap_or_default();
    assert_eq!(
        text,
        "Application default/reviews: has no step 5 (its workflow has 5 steps, 0-based)"
    );
}

#[test]
fn every_state_is_listed_once() {
    let states = RolloutState::all(&app());
    assert_eq!(states.len(), 7);
    assert_eq!(states[0], RolloutState::Step(0));
    assert_eq!(states[5], RolloutState::Promoted);
    assert_eq!(states[6], RolloutState::RolledBack);
}

fn cookie_regex(rule: &str, name: &str, value: &str) -> regex::Regex {
    let yaml = APP.replace(
        "    - name: testers\n      type: canary-rollout-content\n",
        &format!(
            "    - name: testers\n      type: canary-rollout-content\n      properties: {{cookie: {{matchRule: {rule}, name: '{name}', value: '{value}'}}}}\n"
        ),
    );
    let parsed = match graymesh_model::parse_documents("app.yaml", &yaml) {
        Ok(parsed) => parsed,
        Err(errors) => panic!("{errors:?}"),
    };
    let Some(app) = parsed.applications.first() else {
        panic!("no Application")
    };
    let generated = match generate(app, RolloutState::Step(1)) {
        Ok(generated) => generated,
        Err(e) => panic!("{e}"),
    };
    let graymesh_model::Spec::VirtualService(vs) = &generated.virtual_service.spec else {
        panic!("not a VirtualService")
    };
    match vs.http[0].matches[0].headers.get("cookie") {
        Some(StringMatch::Regex(pattern)) => match regex::Regex::new(pattern) {
            Ok(re) => re,
            Err(e) => panic!("{pattern}: {e}"),
        },
        other => panic!("cookie match is {other:?}"),
    }
}

#[test]
fn a_cookie_matches_as_one_pair_of_the_cookie_header() {
    let exact = cookie_regex("exact", "beta", "1.0");
    for header in [
        "beta=1.0",
        "a=b; beta=1.0",
        "beta=1.0; a=b",
        "a=b;beta=1.0;c=d",
    ] {
        assert!(exact.is_match(header), "{header}");
    }
    // Another cookie's name or value, a longer value, a regex metacharacter taken literally.
    for header in ["xbeta=1.0", "a=beta=1.0x", "beta=1.00", "beta=1x0", "a=b"] {
        assert!(!exact.is_match(header), "{header}");
    }
    let prefix = cookie_regex("prefix", "beta", "1");
    assert!(prefix.is_match("a=b; beta=12; c=d"));
    assert!(!prefix.is_match("beta=21"));
    let regex = cookie_regex("regex", "user", "[0-9]+");
    assert!(regex.is_match("user=42"));
    assert!(!regex.is_match("user=42a"));
}
