//! Table tests for translation: Istio objects in, Envoy resources out, compared as JSON.
//!
//! Every directory under `tests/translate/` is one case:
//!
//! - `input.yaml`: the Istio objects (parsed and validated as pilot does);
//! - `node.json` (optional): the asking node, `{"kind": "proxyless" | "sidecar" | "gateway",
//!   "namespace", "labels", "upstreams": ["reviews:9080=127.0.0.1:19080"], "gateway_addr"}`;
//!   proxyless in `default` if absent;
//! - `registrations.json` (optional): run-time registrations (`graymesh_sources::Registration`);
//! - `expected.json`: the whole translation as `graymesh_xds::json::translation` renders it.
//!
//! `GRAYMESH_BLESS=1 cargo test -p graymesh-xds --test translate_table` rewrites `expected.json`
//! from the actual output. A blessed file is a claim about Istio and Envoy semantics: read it
//! before committing it.
//!
//! Besides the JSON, every case must hold what Envoy and gRPC clients rely on whatever the input
//! (`check_invariants`), and every resource must survive a prost encode/decode round trip.

#[path = "translate_table/checks.rs"]
mod checks;

use graymesh_sources::{Registration, RegistrySnapshot};
use graymesh_xds::translate::Translation;
use graymesh_xds::ProxyClass;
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The cases this file promises; a missing directory is a failure, not a silently smaller table.
const NAMED_CASES: &[&str] = &[
    "weighted-split",
    "header-match",
    "uri-matches",
    "zero-weight",
    "tcp-routes",
    "retries-timeout-rewrite-redirect-mirror-fault",
    "traffic-policy",
    "no-virtual-service",
    "short-names",
    "localities",
    "sidecar-upstreams",
    "source-labels-and-port",
    "dns-resolution",
    "dns-resolution-proxyless",
    "wildcard-destination-rule",
    "gateway-selector-match",
    "gateway-selector-mismatch",
    "gateway-servers-share-port",
    "gateway-namespaced-binding",
    "gateway-server-hosts",
    "sticky-weighted-split",
    "sticky-gateway",
    "sticky-baggage-member",
    "h2-ports",
    "uri-regex-rewrite-and-derived-port",
];

#[test]
fn translation_table() {
    let bless = blessing();
    let dirs = case_dirs();
    assert!(
        !dirs.is_empty(),
        "no cases under {}",
        cases_root().display()
    );
    let mut failures = Vec::new();
    for dir in &dirs {
        if let Err(message) = run_case(dir, bless) {
            failures.push(message);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} translation cases failed:\n\n{}",
        failures.len(),
        dirs.len(),
        failures.join("\n\n")
    );
}

#[test]
fn every_named_case_exists() {
    let present: BTreeSet<String> = case_dirs().iter().map(|d| case_name(d)).collect();
    for name in NAMED_CASES {
        assert!(present.contains(*name), "case directory {name} is missing");
        let expected = cases_root().join(name).join("expected.json");
        // While blessing, `translation_table` may be writing it right now.
        assert!(
            expected.is_file() || blessing(),
            "{} is missing",
            expected.display()
        );
    }
}

fn blessing() -> bool {
    std::env::var("GRAYMESH_BLESS").is_ok_and(|v| v == "1")
}

// === Running one case ===

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum NodeKindSpec {
    Proxyless,
    Sidecar,
    Gateway,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeSpec {
    kind: NodeKindSpec,
    #[serde(default = "default_namespace")]
    namespace: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    upstreams: Vec<String>,
    /// A gateway's `GATEWAY_ADDR`.
    #[serde(default)]
    gateway_addr: Option<String>,
}

fn default_namespace() -> String {
    "default".to_string()
}

fn run_case(dir: &Path, bless: bool) -> Result<(), String> {
    let name = case_name(dir);
    let translation = translate_case(dir).map_err(|e| format!("case {name}: {e}"))?;
    let mut problems = Vec::new();
    checks::round_trip(&translation, &mut problems);
    checks::check_invariants(&translation, &mut problems);
    if !problems.is_empty() {
        return Err(format!("case {name}:\n  {}", problems.join("\n  ")));
    }
    let actual = graymesh_xds::json::translation(&translation);
    let expected_path = dir.join("expected.json");
    if bless {
        let text = pretty(&actual) + "\n";
        return std::fs::write(&expected_path, text)
            .map_err(|e| format!("case {name}: writing {}: {e}", expected_path.display()));
    }
    let expected: Value = read_json(&expected_path).map_err(|e| format!("case {name}: {e}"))?;
    if expected == actual {
        return Ok(());
    }
    Err(describe_mismatch(&name, &expected, &actual))
}

fn translate_case(dir: &Path) -> Result<Translation, String> {
    let input_path = dir.join("input.yaml");
    let text = std::fs::read_to_string(&input_path)
        .map_err(|e| format!("reading {}: {e}", input_path.display()))?;
    let objects = graymesh_model::parse_str("input.yaml", &text).map_err(errors_text)?;
    let config = graymesh_model::build_config_set(objects).map_err(errors_text)?;
    let registrations: Vec<Registration> = optional_json(&dir.join("registrations.json"))?;
    for r in &registrations {
        r.validate()
            .map_err(|e| format!("registrations.json: {}: {e}", r.service))?;
    }
    let registry = RegistrySnapshot::build(&config, &registrations);
    let class = node_class(&dir.join("node.json"))?;
    Ok(graymesh_xds::translate(&config, &registry, &class))
}

fn node_class(path: &Path) -> Result<ProxyClass, String> {
    let Some(spec) = optional_json::<Option<NodeSpec>>(path)? else {
        return Ok(ProxyClass::proxyless("default"));
    };
    let mut class = match spec.kind {
        NodeKindSpec::Proxyless => ProxyClass::proxyless(&spec.namespace),
        NodeKindSpec::Sidecar => ProxyClass::sidecar(&spec.namespace),
        NodeKindSpec::Gateway => ProxyClass::gateway(&spec.namespace, BTreeMap::new()),
    };
    class.labels = spec.labels;
    class.gateway_addr = spec.gateway_addr;
    for text in &spec.upstreams {
        let upstream = graymesh_xds::node::parse_upstream(text)
            .ok_or_else(|| format!("node.json: bad upstream {text:?}"))?;
        class.upstreams.push(upstream);
    }
    // `ProxyClass::from_node` sorts them; equal classes must look equal here too.
    class.upstreams.sort();
    Ok(class)
}

fn errors_text(errors: Vec<graymesh_model::ModelError>) -> String {
    let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    format!("input.yaml is invalid:\n    {}", lines.join("\n    "))
}

// === Files ===

fn cases_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/translate")
}

fn case_dirs() -> Vec<PathBuf> {
    let root = cases_root();
    let entries =
        std::fs::read_dir(&root).unwrap_or_else(|e| panic!("reading {}: {e}", root.display()));
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.is_dir())
        .collect();
    dirs.sort();
    dirs
}

fn case_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The file's content, or the type's default when the file does not exist.
fn optional_json<T: serde::de::DeserializeOwned + Default>(path: &Path) -> Result<T, String> {
    if path.exists() {
        read_json(path)
    } else {
        Ok(T::default())
    }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("<unprintable: {e}>"))
}

// === Mismatch report ===

fn describe_mismatch(name: &str, expected: &Value, actual: &Value) -> String {
    let (path, want, got) = first_difference("$", expected, actual)
        .unwrap_or_else(|| ("$".to_string(), expected.clone(), actual.clone()));
    let actual_text = pretty(actual) + "\n";
    let saved = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("translate-{name}.json"));
    let saved_note = match std::fs::write(&saved, &actual_text) {
        Ok(()) => format!("full actual output: {}", saved.display()),
        Err(e) => format!("(could not save the actual output: {e})"),
    };
    format!(
        "case {name}: translation differs from expected.json\n\
         first difference at {path}\n  expected: {}\n  actual:   {}\n\
         around the first differing line (- expected, + actual):\n{}\n{saved_note}\n\
         if the new output is right, rerun with GRAYMESH_BLESS=1 and review the file",
        compact(&want),
        compact(&got),
        line_context(&(pretty(expected) + "\n"), &actual_text),
    )
}

/// The first path (in key order) where the two values differ, with both sides there.
/// `null` stands for a side that is missing.
fn first_difference(path: &str, a: &Value, b: &Value) -> Option<(String, Value, Value)> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| {
                let (l, r) = (x.get(k), y.get(k));
                let sub = format!("{path}.{k}");
                match (l, r) {
                    (Some(l), Some(r)) => first_difference(&sub, l, r),
                    _ => Some((
                        sub,
                        l.cloned().unwrap_or(Value::Null),
                        r.cloned().unwrap_or(Value::Null),
                    )),
                }
            })
        }
        (Value::Array(x), Value::Array(y)) => {
            let mut common = x.iter().zip(y).enumerate();
            let found =
                common.find_map(|(i, (l, r))| first_difference(&format!("{path}[{i}]"), l, r));
            found.or_else(|| {
                (x.len() != y.len()).then(|| {
                    let i = x.len().min(y.len());
                    let side = |v: &Vec<Value>| v.get(i).cloned().unwrap_or(Value::Null);
                    (
                        format!("{path}[{i}] (lengths {} vs {})", x.len(), y.len()),
                        side(x),
                        side(y),
                    )
                })
            })
        }
        _ => (a != b).then(|| (path.to_string(), a.clone(), b.clone())),
    }
}

fn compact(v: &Value) -> String {
    let text = v.to_string();
    match text.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// A few lines of both pretty texts around the first line where they differ.
fn line_context(expected: &str, actual: &str) -> String {
    let (e, a): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    let first = e
        .iter()
        .zip(&a)
        .position(|(x, y)| x != y)
        .unwrap_or(e.len().min(a.len()));
    let from = first.saturating_sub(4);
    let mut out = Vec::new();
    for (i, line) in e.iter().enumerate().skip(from).take(first - from) {
        out.push(format!("  {:>5}   {line}", i + 1));
    }
    for (i, line) in e.iter().enumerate().skip(first).take(6) {
        out.push(format!("  {:>5} - {line}", i + 1));
    }
    for (i, line) in a.iter().enumerate().skip(first).take(6) {
        out.push(format!("  {:>5} + {line}", i + 1));
    }
    out.join("\n")
}
