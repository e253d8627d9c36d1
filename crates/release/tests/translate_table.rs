//! Table tests for the release translation: an Application in, for every state of its rollout
//! the VirtualService and DestinationRule out, compared exactly.
//!
//! Every directory under `tests/cases/` is one case: `application.yaml` (one Application) and one
//! expected file per state — `step-<i>.yaml` for each workflow step, `promoted.yaml`,
//! `rolled-back.yaml` — holding the two generated objects as YAML documents. A missing expected
//! file is a failure. `GRAYMESH_BLESS=1 cargo test -p graymesh-release --test translate_table`
//! rewrites them from the actual output: read them before committing.
//!
//! Beyond the text, every generated pair must pass the Istio validation pilot applies to its
//! store, and translate through pilot's xDS translation into routes whose clusters are exactly
//! the versions the state sends traffic to, each with the endpoints of that version.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test binary: panicking on the unexpected is the point

use graymesh_model::oam::Application;
use graymesh_release::{generate, plan, Generated, RolloutState};
use graymesh_sources::{Registration, RegistrySnapshot};
use graymesh_xds::ProxyClass;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The cases this file promises; a missing directory is a failure, not a smaller table.
const NAMED_CASES: &[&str] = &[
    "weight-steps",
    "content-header-and-weight",
    "content-cookie-uri-sticky-cookie",
    "rollback-step-other-namespace",
    "weight-sticky-baggage",
];

#[test]
fn release_translation_table() {
    let bless = std::env::var("GRAYMESH_BLESS").is_ok_and(|v| v == "1");
    let mut failures = Vec::new();
    let mut states = 0;
    for name in NAMED_CASES {
        let dir = cases_root().join(name);
        let app = read_application(&dir.join("application.yaml"));
        for state in RolloutState::all(&app) {
            states += 1;
            if let Err(message) = run_state(&dir, &app, state, bless) {
                failures.push(format!("case {name}, {}: {message}", file_name(state)));
            }
        }
    }
    assert!(states >= 20, "only {states} states were checked");
    assert!(
        failures.is_empty(),
        "{} of {states} states failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn every_case_directory_is_named() {
    let present: BTreeSet<String> = std::fs::read_dir(cases_root())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let named: BTreeSet<String> = NAMED_CASES.iter().map(|s| s.to_string()).collect();
    assert_eq!(present, named, "tests/cases and NAMED_CASES differ");
}

/// Every step type occurs in the table, so each has its expected output.
#[test]
fn the_table_covers_every_step_type() {
    let mut seen = BTreeSet::new();
    for name in NAMED_CASES {
        let app = read_application(&cases_root().join(name).join("application.yaml"));
        seen.extend(app.spec.workflow.iter().map(|s| s.action.type_name()));
    }
    let all = [
        "canary-rollout-weight",
        "canary-rollout-content",
        "suspend",
        "analysis",
        "promote",
        "rollback",
    ];
    assert_eq!(seen, all.into_iter().collect::<BTreeSet<_>>());
}

/// The shipped example generates valid, translatable objects in every state.
#[test]
fn the_example_translates_in_every_state() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/release/reviews-canary.yaml");
    let app = read_application(&path);
    let states = RolloutState::all(&app);
    assert_eq!(states.len(), 10);
    for state in states {
        let generated = generate(&app, state).unwrap();
        check_in_pilot(&app, state, &generated).unwrap_or_else(|e| panic!("{state:?}: {e}"));
    }
}

fn run_state(
    dir: &Path,
    app: &Application,
    state: RolloutState,
    bless: bool,
) -> Result<(), String> {
    let generated = generate(app, state).map_err(|e| e.to_string())?;
    check_in_pilot(app, state, &generated)?;
    let actual: Vec<Value> = generated.objects().iter().map(|o| o.to_json()).collect();
    let path = dir.join(file_name(state));
    if bless {
        let docs: Vec<String> = actual
            .iter()
            .map(|v| serde_norway::to_string(v).unwrap())
            .collect();
        std::fs::write(&path, docs.join("---\n")).unwrap();
        return Ok(());
    }
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let expected: Vec<Value> = serde_norway::Deserializer::from_str(&text)
        .map(|doc| {
            serde::Deserialize::deserialize(doc).map_err(|e| format!("{}: {e}", path.display()))
        })
        .collect::<Result<_, _>>()?;
    if expected == actual {
        return Ok(());
    }
    Err(format!(
        "expected:\n{}\nactual:\n{}",
        serde_json::to_string_pretty(&expected).unwrap(),
        serde_json::to_string_pretty(&actual).unwrap()
    ))
}

fn file_name(state: RolloutState) -> String {
    match state {
        RolloutState::Step(i) => format!("step-{i}.yaml"),
        RolloutState::Promoted => "promoted.yaml".to_string(),
        RolloutState::RolledBack => "rolled-back.yaml".to_string(),
    }
}

/// What pilot would do with the objects: validate them as a store write, translate them for a
/// client in their namespace, and route to exactly the versions the plan names.
fn check_in_pilot(
    app: &Application,
    state: RolloutState,
    generated: &Generated,
) -> Result<(), String> {
    let objects = generated.objects().map(|o| o.clone()).to_vec();
    let config = graymesh_model::build_config_set(objects).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        format!("generated objects are invalid:\n  {}", lines.join("\n  "))
    })?;
    let plan = plan(app, state).map_err(|e| e.to_string())?;
    let namespace = &generated.virtual_service.meta.namespace;
    let service = &plan.old.properties;
    let registrations: Vec<Registration> = [plan.old, plan.new]
        .iter()
        .enumerate()
        .map(|(i, c)| {
            serde_json::from_value(serde_json::json!({
                "service": service.host, "namespace": namespace, "address": format!("127.0.0.{}", i + 2),
                "ports": [{"port": service.port, "protocol": "HTTP"}],
                "labels": {"version": c.properties.version},
            }))
            .unwrap()
        })
        .collect();
    let registry = RegistrySnapshot::build(&config, &registrations);
    let translation =
        graymesh_xds::translate(&config, &registry, &ProxyClass::proxyless(namespace));
    let json = graymesh_xds::json::translation(&translation);
    let fqdn = format!("{}.{namespace}.svc.cluster.local", service.host);
    let cluster = |version: &str| format!("outbound|{}|{version}|{fqdn}", service.port);
    let mut wanted: BTreeSet<String> = plan
        .split
        .iter()
        .map(|(c, _)| cluster(&c.properties.version))
        .collect();
    if plan.content.is_some() {
        wanted.insert(cluster(&plan.new.properties.version));
    }
    let route_config = format!("{fqdn}:{}", service.port);
    let routes = json["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["name"] == route_config.as_str());
    let routes = routes.ok_or(format!("no route configuration {route_config}"))?;
    let routed = routed_clusters(routes);
    if routed != wanted {
        return Err(format!(
            "routes send traffic to {routed:?}, the plan to {wanted:?}"
        ));
    }
    // The content route comes first and sends everything it matches to the new version.
    let first = &routes["virtual_hosts"][0]["routes"][0];
    let new_cluster = cluster(&plan.new.properties.version);
    if plan.content.is_some()
        && (first["name"] != graymesh_release::CONTENT_ROUTE
            || first["route"]["cluster"] != new_cluster.as_str())
    {
        return Err(format!(
            "the first route is not the content route to {new_cluster}: {first}"
        ));
    }
    let sticky = plan.canary.hash_key.as_ref().map(hash_policy);
    let (old, new) = (cluster(&plan.old.properties.version), new_cluster);
    check_sticky_split(routes, sticky.as_ref(), &old, &new)?;
    for name in &routed {
        let assignment = json["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["cluster_name"] == name.as_str());
        let endpoints = assignment.map(|a| {
            a["endpoints"][0]["lb_endpoints"]
                .as_array()
                .map_or(0, Vec::len)
        });
        if endpoints != Some(1) {
            return Err(format!("cluster {name} has {endpoints:?} endpoints, expected the one instance of its version"));
        }
    }
    Ok(())
}

/// The route hash policy a trait's hash key must become, as pilot's JSON shows it: a baggage
/// member is the `baggage` header cut down to the member's value.
fn hash_policy(key: &graymesh_model::oam::HashKey) -> Value {
    use serde_json::json;
    match (&key.header, &key.cookie, &key.baggage) {
        (Some(header), _, _) => json!({"header": {"header_name": header}}),
        (None, Some(cookie), _) => json!({"cookie": {"name": cookie}}),
        (None, None, Some(member)) => {
            let rewrite = graymesh_xds::translate::baggage_member_rewrite(member);
            let regex = rewrite.pattern.map(|p| p.regex);
            json!({"header": {"header_name": "baggage", "regex_rewrite": {
                "pattern": {"regex": regex}, "substitution": "\\1"}}})
        }
        (None, None, None) => Value::Null,
    }
}

/// What keeps a sticky cohort monotonic in the proxy: the weighted split lists the old version's
/// cluster first and the new one's last, and with a hash key every route carries it as its only
/// hash policy (the proxy hashes it to choose the version, not only the endpoint).
fn check_sticky_split(
    config: &Value,
    sticky: Option<&Value>,
    old: &str,
    new: &str,
) -> Result<(), String> {
    for route in config["virtual_hosts"][0]["routes"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let action = &route["route"];
        let policies = action["hash_policy"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let wanted: Vec<Value> = sticky.into_iter().cloned().collect();
        if policies != wanted {
            return Err(format!(
                "route {}: hash policy {} where the hash key makes {wanted:?}",
                route["name"], action["hash_policy"]
            ));
        }
        let names: Vec<&str> = action["weighted_clusters"]["clusters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str())
            .collect();
        if !names.is_empty() && (names.first() != Some(&old) || names.last() != Some(&new)) {
            return Err(format!(
                "route {}: weighted clusters {names:?}, not {old} first and {new} last",
                route["name"]
            ));
        }
    }
    Ok(())
}

/// Every cluster a route configuration's routes name, single or weighted.
fn routed_clusters(config: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for host in config["virtual_hosts"].as_array().into_iter().flatten() {
        for route in host["routes"].as_array().into_iter().flatten() {
            let action = &route["route"];
            if let Some(c) = action["cluster"].as_str() {
                out.insert(c.to_string());
            }
            for c in action["weighted_clusters"]["clusters"]
                .as_array()
                .into_iter()
                .flatten()
            {
                out.extend(c["name"].as_str().map(str::to_string));
            }
        }
    }
    out
}

fn read_application(path: &Path) -> Application {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let parsed = graymesh_model::parse_documents(&path.display().to_string(), &text)
        .unwrap_or_else(|errors| panic!("{errors:#?}"));
    graymesh_model::validate_applications(&parsed.applications)
        .unwrap_or_else(|errors| panic!("{errors:#?}"));
    assert_eq!(
        parsed.applications.len(),
        1,
        "{}: one Application per case",
        path.display()
    );
    assert!(
        parsed.objects.is_empty(),
        "{}: only an Application",
        path.display()
    );
    parsed.applications.into_iter().next().unwrap()
}

fn cases_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases")
}
