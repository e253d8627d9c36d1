//! Checks of OAM Applications: components, the `canary-traffic` trait and (in `steps`) the
//! workflow. An Application that passes can be translated for any of its steps: every name a
//! step or the trait uses exists, every weight list sums to 100, every regex compiles.

mod steps;

use super::{fields, Findings};
use crate::error::ModelError;
use crate::oam::{
    Application, CanaryTraffic, Component, HashKey, HeaderMatch, MatchRule, Trait, UriMatch,
};
use std::collections::BTreeMap;

/// The longest suffix the release controller adds to an Application's name for the objects it
/// generates (`-release`); the name must leave room for it.
const GENERATED_SUFFIX_LEN: usize = crate::oam::GENERATED_SUFFIX.len();
const MAX_NAME_LEN: usize = 253;

/// Check every Application on its own, then that no two share a namespace and name.
pub fn validate_applications(apps: &[Application]) -> Result<(), Vec<ModelError>> {
    let mut errors = Vec::new();
    let mut first: BTreeMap<(&str, &str), String> = BTreeMap::new();
    for app in apps {
        let mut f = Findings::new(&app.origin.file, app.display_name(), &mut errors);
        check(&mut f, app);
        let key = (app.meta.namespace.as_str(), app.meta.name.as_str());
        if let Some(place) = first.get(&key) {
            let message = format!(
                "{:?} is already defined in {place}; an Application name must be unique in its namespace",
                app.meta.name
            );
            f.error("metadata.name", message);
        } else {
            first.insert(key, super::describe_origin(&app.origin));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

pub(super) fn check(f: &mut Findings, app: &Application) {
    if app.meta.name.len() + GENERATED_SUFFIX_LEN > MAX_NAME_LEN {
        let max = MAX_NAME_LEN - GENERATED_SUFFIX_LEN;
        f.error(
            "metadata.name",
            format!("name is too long: at most {max} characters leave room for the generated objects' \"-release\" suffix"),
        );
    }
    components(f, &app.spec.components);
    let Some(canary) = canary_trait(f, app) else {
        return;
    };
    steps::check(f, app, canary);
}

fn components(f: &mut Findings, components: &[Component]) {
    if components.is_empty() {
        f.error(
            "spec.components",
            "at least two webservice components are needed: the old and the new version of a service",
        );
    }
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, c) in components.iter().enumerate() {
        let path = format!("spec.components[{i}]");
        if c.name.trim().is_empty() {
            f.error(
                format!("{path}.name"),
                "name must not be empty, e.g. name: reviews-v2",
            );
        } else if let Some(first) = seen.insert(&c.name, i) {
            f.error(
                format!("{path}.name"),
                format!(
                    "duplicate component {:?}, already defined at spec.components[{first}]",
                    c.name
                ),
            );
        }
        let props = format!("{path}.properties");
        if c.properties.host.trim().is_empty() {
            f.error(
                format!("{props}.host"),
                "host is required, e.g. host: reviews",
            );
        }
        fields::port(f, format!("{props}.port"), c.properties.port);
        version_label(f, &format!("{props}.version"), &c.properties.version);
    }
}

/// The version is a subset name and the value of the instances' `version` label.
fn version_label(f: &mut Findings, field: &str, version: &str) {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let valid = !version.is_empty()
        && version.len() <= 63
        && version.chars().all(ok)
        && version
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && version
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if !valid {
        f.error(
            field,
            format!("version {version:?} is not a valid label value: use 1 to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit, e.g. v2"),
        );
    }
}

/// The one `canary-traffic` trait, checked; `None` if there is not exactly one.
fn canary_trait<'a>(f: &mut Findings, app: &'a Application) -> Option<&'a CanaryTraffic> {
    let found: Vec<(String, &Component, &CanaryTraffic)> = app
        .spec
        .components
        .iter()
        .enumerate()
        .flat_map(|(i, c)| {
            c.traits.iter().enumerate().map(move |(t, tr)| match tr {
                Trait::CanaryTraffic(canary) => {
                    (format!("spec.components[{i}].traits[{t}]"), c, canary)
                }
            })
        })
        .collect();
    match found.as_slice() {
        [] => {
            f.error(
                "spec.components",
                "no canary-traffic trait: attach one to the component being released, naming its oldVersion and newVersion",
            );
            None
        }
        [(path, component, canary)] => {
            trait_fields(f, app, &format!("{path}.properties"), component, canary);
            Some(canary)
        }
        [_, (path, ..), ..] => {
            f.error(
                path,
                "only one canary-traffic trait per Application: an Application releases one service",
            );
            None
        }
    }
}

fn trait_fields(
    f: &mut Findings,
    app: &Application,
    path: &str,
    attached: &Component,
    canary: &CanaryTraffic,
) {
    if let Some(ns) = &canary.namespace {
        namespace(f, &format!("{path}.namespace"), ns);
    }
    versions(f, app, path, attached, canary);
    if let Some(header) = &canary.header {
        header_match(f, &format!("{path}.header"), header);
    }
    if let Some(uri) = &canary.uri {
        uri_match(f, &format!("{path}.uri"), uri);
    }
    if let Some(key) = &canary.hash_key {
        hash_key(f, &format!("{path}.hashKey"), key);
    }
}

/// The generated objects go there, so it must be a valid namespace.
fn namespace(f: &mut Findings, field: &str, ns: &str) {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    let valid = !ns.is_empty()
        && ns.len() <= 63
        && ns.chars().all(ok)
        && !ns.starts_with('-')
        && !ns.ends_with('-');
    if !valid {
        f.error(field, format!("namespace {ns:?} is not valid: use at most 63 lowercase letters, digits or '-', starting and ending with a letter or digit"));
    }
}

/// Exactly one key, named; a baggage member by a W3C baggage key.
fn hash_key(f: &mut Findings, field: &str, key: &HashKey) {
    let set: Vec<(&str, &String)> = [
        ("header", &key.header),
        ("cookie", &key.cookie),
        ("baggage", &key.baggage),
    ]
    .into_iter()
    .filter_map(|(name, v)| v.as_ref().map(|v| (name, v)))
    .collect();
    match set.as_slice() {
        [] => f.error(field, "set exactly one of header, cookie, baggage"),
        [(name, value)] if value.trim().is_empty() => f.error(
            format!("{field}.{name}"),
            format!("{name} name must not be empty"),
        ),
        [("baggage", member)] => {
            if let Some(problem) = crate::baggage::key_problem(member) {
                f.error(format!("{field}.baggage"), problem);
            }
        }
        [_] => {}
        _ => f.error(
            field,
            "sets several keys; set exactly one of header, cookie, baggage",
        ),
    }
}

/// oldVersion and newVersion name two components of one service (same host and port) running
/// different versions, and the trait is attached to one of them.
fn versions(
    f: &mut Findings,
    app: &Application,
    path: &str,
    attached: &Component,
    canary: &CanaryTraffic,
) {
    let v = &canary.versions;
    let names: Vec<&str> = app
        .spec
        .components
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    let find = |f: &mut Findings, field: &str, name: &str| {
        let found = app.component(name);
        if found.is_none() {
            f.error(
                format!("{path}.versions.{field}"),
                format!(
                    "no component named {name:?}; components: {}",
                    names.join(", ")
                ),
            );
        }
        found
    };
    let old = find(f, "oldVersion", &v.old_version);
    let new = find(f, "newVersion", &v.new_version);
    let (Some(old), Some(new)) = (old, new) else {
        return;
    };
    let (o, n) = (&old.properties, &new.properties);
    if old.name == new.name {
        f.error(
            format!("{path}.versions"),
            "oldVersion and newVersion name the same component",
        );
    } else if o.host != n.host || o.port != n.port {
        f.error(
            format!("{path}.versions"),
            format!("{:?} is {}:{} but {:?} is {}:{}; both versions must be the same service (host and port)", old.name, o.host, o.port, new.name, n.host, n.port),
        );
    } else if o.version == n.version {
        f.error(
            format!("{path}.versions"),
            format!(
                "{:?} and {:?} both run version {:?}; the new version needs its own version label",
                old.name, new.name, o.version
            ),
        );
    }
    if attached.name != old.name && attached.name != new.name {
        f.error(
            path,
            format!("the trait is attached to {:?}; attach it to the component being released ({:?} or {:?})", attached.name, old.name, new.name),
        );
    }
    // Nothing would ever route to another component: refuse it rather than ignore it.
    for (i, c) in app.spec.components.iter().enumerate() {
        if c.name != old.name && c.name != new.name {
            f.error(
                format!("spec.components[{i}]"),
                format!("{:?} is neither the oldVersion nor the newVersion of the canary-traffic trait; an Application releases one service, from one version to another", c.name),
            );
        }
    }
}

pub(super) fn header_match(f: &mut Findings, path: &str, header: &HeaderMatch) {
    if header.key.is_empty() {
        f.error(
            format!("{path}.key"),
            "header key must not be empty, e.g. key: x-canary",
        );
    } else if header.key.chars().any(|c| c.is_ascii_uppercase()) {
        f.error(
            format!("{path}.key"),
            format!(
                "header key {:?} must be lowercase (HTTP/2 header names are), e.g. {:?}",
                header.key,
                header.key.to_ascii_lowercase()
            ),
        );
    }
    pattern(
        f,
        &format!("{path}.value"),
        header.match_rule,
        &header.value,
    );
}

pub(super) fn uri_match(f: &mut Findings, path: &str, uri: &UriMatch) {
    if uri.path.is_empty() {
        f.error(
            format!("{path}.path"),
            "path must not be empty, e.g. path: /beta",
        );
    }
    pattern(f, &format!("{path}.path"), uri.match_rule, &uri.path);
}

/// A value read as a regex when the match rule says so.
pub(super) fn pattern(f: &mut Findings, field: &str, rule: MatchRule, value: &str) {
    if rule == MatchRule::Regex {
        fields::regex(f, field.to_string(), value);
    }
}
