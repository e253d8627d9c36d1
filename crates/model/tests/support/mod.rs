//! Helpers shared by the model's integration tests: build objects from short YAML snippets and
//! run them through the public API (`parse_str`, then `build_config_set`).

#![allow(dead_code)] // each test file uses a different subset

use graymesh_model::{build_config_set, parse_str, ConfigSet, Object};

/// One object as YAML; `spec` is written flush left and indented here.
pub fn object(kind: &str, namespace: &str, name: &str, spec: &str) -> String {
    let spec: String = spec
        .trim_matches('\n')
        .lines()
        .map(|line| format!("  {line}\n"))
        .collect();
    format!(
        "apiVersion: networking.istio.io/v1\nkind: {kind}\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n{spec}"
    )
}

/// Several objects as one YAML stream.
pub fn stream(objects: &[String]) -> String {
    objects.join("---\n")
}

pub fn parse(file: &str, text: &str) -> Vec<Object> {
    parse_str(file, text).unwrap_or_else(|errors| panic!("{file}: parse errors: {errors:#?}"))
}

/// Parse each (file, text) and build one set from all of them.
pub fn build(files: &[(&str, &str)]) -> Result<ConfigSet, Vec<String>> {
    let objects = files
        .iter()
        .flat_map(|(file, text)| parse(file, text))
        .collect();
    build_config_set(objects).map_err(|errors| errors.iter().map(ToString::to_string).collect())
}

pub fn valid(files: &[(&str, &str)]) -> ConfigSet {
    build(files).unwrap_or_else(|errors| panic!("unexpected errors: {errors:#?}"))
}

pub fn errors(files: &[(&str, &str)]) -> Vec<String> {
    match build(files) {
        Ok(set) => panic!("expected errors, built {set:#?}"),
        Err(errors) => errors,
    }
}

/// A ServiceEntry and DestinationRule for `reviews` in `default` with subsets v1 and v2, so
/// VirtualService tests have real subsets to refer to.
pub fn reviews_backend() -> String {
    stream(&[
        object(
            "ServiceEntry",
            "default",
            "reviews",
            r#"
hosts: [reviews.default.svc.cluster.local]
ports: [{number: 9080, name: http, protocol: HTTP}]
resolution: STATIC
endpoints:
- {address: 127.0.0.1, ports: {http: 9081}, labels: {version: v1}}
- {address: 127.0.0.1, ports: {http: 9082}, labels: {version: v2}}
"#,
        ),
        object(
            "DestinationRule",
            "default",
            "reviews",
            r#"
host: reviews
subsets:
- {name: v1, labels: {version: v1}}
- {name: v2, labels: {version: v2}}
"#,
        ),
    ])
}
