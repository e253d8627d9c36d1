//! One document to objects: the Kubernetes envelope (apiVersion, kind, metadata, spec), `kind:
//! List` unpacking, and typed deserialization that reports the path of the failing field.
//!
//! Problems are gathered per document first and named afterwards, because how an error names its
//! object (`Kind ns/name`, or only the document) depends on how much of the envelope was readable.

use super::application;
use super::Parsed;
use crate::error::ModelError;
use crate::oam::{Application, APPLICATION_KIND, OAM_API_VERSION};
use crate::object::{
    Kind, Object, ObjectMeta, Origin, Spec, DEFAULT_NAMESPACE, ISTIO_API_VERSIONS,
};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

const ENVELOPE_FIELDS: &[&str] = &["apiVersion", "kind", "metadata", "spec"];
const LIST_FIELDS: &[&str] = &["apiVersion", "kind", "metadata", "items"];
const MAX_NAME_LEN: usize = 253;
const MAX_NAMESPACE_LEN: usize = 63;

/// A problem inside one document, before we know how to name the object it belongs to.
pub(super) struct Problem {
    /// Path inside the object; empty for the object as a whole.
    field: String,
    message: String,
}

impl Problem {
    pub(super) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Where an object sits: its file, its document and, for List items, the path to the item.
struct Place<'a> {
    file: &'a str,
    document: usize,
    prefix: String,
}

impl Place<'_> {
    fn error(&self, object: &str, problem: Problem) -> ModelError {
        let field = match (self.prefix.as_str(), problem.field.as_str()) {
            ("", "") => None,
            (prefix, "") => Some(prefix.to_string()),
            ("", field) => Some(field.to_string()),
            (prefix, field) => Some(format!("{prefix}.{field}")),
        };
        ModelError {
            file: self.file.to_string(),
            object: Some(object.to_string()),
            field,
            message: problem.message,
        }
    }
}

/// How errors name a document they cannot name by its object: 1-based, the way editors count.
fn document_label(index: usize) -> String {
    format!("document {}", index + 1)
}

/// An error about a whole document (e.g. it is not an object).
pub(super) fn document_error(file: &str, index: usize, message: String) -> ModelError {
    ModelError {
        file: file.to_string(),
        object: Some(document_label(index)),
        field: None,
        message,
    }
}

/// Read one document (an object or a `kind: List` of objects) into `objects`, or its errors.
pub(super) fn unpack(
    file: &str,
    document: usize,
    value: Value,
    out: &mut Parsed,
    errors: &mut Vec<ModelError>,
) {
    let place = Place {
        file,
        document,
        prefix: String::new(),
    };
    match value {
        Value::Object(map) if map.get("kind").and_then(Value::as_str) == Some("List") => {
            unpack_list(&place, map, out, errors)
        }
        value => read_item(&place, value, out, errors),
    }
}

fn unpack_list(
    place: &Place,
    mut map: Map<String, Value>,
    out: &mut Parsed,
    errors: &mut Vec<ModelError>,
) {
    let mut problems = unknown_fields(&map, LIST_FIELDS);
    match map.remove("apiVersion") {
        None => {}
        Some(Value::String(v)) if v == "v1" => {}
        Some(other) => problems.push(Problem::new(
            "apiVersion",
            format!("a List has apiVersion \"v1\", found {other}"),
        )),
    }
    match map.remove("items") {
        Some(Value::Array(items)) => unpack_items(place, items, out, errors),
        None => problems.push(Problem::new(
            "items",
            "missing; a List holds its objects in `items`",
        )),
        Some(other) => problems.push(Problem::new(
            "items",
            format!("expected an array of objects, found {}", type_name(&other)),
        )),
    }
    let label = document_label(place.document);
    errors.extend(problems.into_iter().map(|p| place.error(&label, p)));
}

fn unpack_items(place: &Place, items: Vec<Value>, out: &mut Parsed, errors: &mut Vec<ModelError>) {
    for (i, item) in items.into_iter().enumerate() {
        let item_place = Place {
            prefix: format!("items[{i}]"),
            ..*place
        };
        read_item(&item_place, item, out, errors);
    }
}

// === One object ===

/// An OAM Application (recognised by its kind or its apiVersion) or an Istio object.
fn read_item(place: &Place, value: Value, out: &mut Parsed, errors: &mut Vec<ModelError>) {
    let result = match value {
        Value::Object(map) if is_application(&map) => {
            read_application(place, map).map(|a| out.applications.push(a))
        }
        value => read_object(place, value).map(|o| out.objects.push(o)),
    };
    if let Err(mut found) = result {
        errors.append(&mut found);
    }
}

fn is_application(map: &Map<String, Value>) -> bool {
    let text = |key: &str| map.get(key).and_then(Value::as_str);
    text("kind") == Some(APPLICATION_KIND) || text("apiVersion") == Some(OAM_API_VERSION)
}

fn read_application(
    place: &Place,
    mut map: Map<String, Value>,
) -> Result<Application, Vec<ModelError>> {
    let mut problems = unknown_fields(&map, ENVELOPE_FIELDS);
    match map.remove("apiVersion") {
        Some(Value::String(v)) if v == OAM_API_VERSION => {}
        other => problems.push(Problem::new(
            "apiVersion",
            format!(
                "an Application has apiVersion {OAM_API_VERSION:?}, found {}",
                other.map_or("nothing".to_string(), |v| v.to_string())
            ),
        )),
    }
    match map.remove("kind") {
        Some(Value::String(k)) if k == APPLICATION_KIND => {}
        other => problems.push(Problem::new(
            "kind",
            format!(
                "apiVersion {OAM_API_VERSION} holds only kind Application, found {}",
                other.map_or("nothing".to_string(), |v| v.to_string())
            ),
        )),
    }
    let metadata = map.remove("metadata");
    let label = application_label(metadata.as_ref(), place.document);
    let meta = keep(read_metadata(metadata), &mut problems);
    let spec = match map.remove("spec") {
        None => {
            problems.push(Problem::new("spec", "missing; an Application needs a spec"));
            None
        }
        Some(value) => application::read_spec(value)
            .map_err(|mut found| problems.append(&mut found))
            .ok(),
    };
    match (meta, spec) {
        (Some(meta), Some(spec)) if problems.is_empty() => {
            let origin = Origin {
                file: place.file.to_string(),
                document: place.document,
            };
            Ok(Application { meta, spec, origin })
        }
        _ => Err(problems
            .into_iter()
            .map(|p| place.error(&label, p))
            .collect()),
    }
}

fn application_label(metadata: Option<&Value>, document: usize) -> String {
    let text = |key: &str| {
        metadata
            .and_then(|m| m.get(key))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    match text("name") {
        Some(name) => format!(
            "{APPLICATION_KIND} {}/{name}",
            text("namespace").unwrap_or(DEFAULT_NAMESPACE)
        ),
        None => format!("{APPLICATION_KIND} in {}", document_label(document)),
    }
}

fn read_object(place: &Place, value: Value) -> Result<Object, Vec<ModelError>> {
    let Value::Object(mut map) = value else {
        let message = format!(
            "expected an object with apiVersion, kind, metadata and spec, found {}",
            type_name(&value)
        );
        return Err(vec![
            place.error(&document_label(place.document), Problem::new("", message))
        ]);
    };
    let mut problems = unknown_fields(&map, ENVELOPE_FIELDS);
    let kind = keep(read_kind(map.remove("kind")), &mut problems);
    let api_version = keep(
        read_api_version(kind, map.remove("apiVersion")),
        &mut problems,
    );
    let metadata = map.remove("metadata");
    let label = object_label(kind, metadata.as_ref(), place.document);
    let meta = keep(read_metadata(metadata), &mut problems);
    let spec = kind.and_then(|kind| keep(read_spec(kind, map.remove("spec")), &mut problems));
    match (api_version, meta, spec) {
        (Some(api_version), Some(meta), Some(spec)) if problems.is_empty() => {
            let origin = Origin {
                file: place.file.to_string(),
                document: place.document,
            };
            Ok(Object {
                api_version,
                meta,
                spec,
                origin,
            })
        }
        _ => Err(problems
            .into_iter()
            .map(|p| place.error(&label, p))
            .collect()),
    }
}

fn keep<T>(result: Result<T, Problem>, problems: &mut Vec<Problem>) -> Option<T> {
    result.map_err(|problem| problems.push(problem)).ok()
}

/// `Kind ns/name` when the raw metadata names the object, else the document's position.
fn object_label(kind: Option<Kind>, metadata: Option<&Value>, document: usize) -> String {
    let text = |key: &str| {
        metadata
            .and_then(|m| m.get(key))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    match (kind, text("name")) {
        (Some(kind), Some(name)) => {
            format!(
                "{kind} {}/{name}",
                text("namespace").unwrap_or(DEFAULT_NAMESPACE)
            )
        }
        (Some(kind), None) => format!("{kind} in {}", document_label(document)),
        (None, _) => document_label(document),
    }
}

fn unknown_fields(map: &Map<String, Value>, expected: &[&str]) -> Vec<Problem> {
    let expected_list = expected
        .iter()
        .map(|f| format!("`{f}`"))
        .collect::<Vec<_>>()
        .join(", ");
    map.keys()
        .filter(|key| !expected.contains(&key.as_str()))
        .map(|key| {
            Problem::new(
                key,
                format!("unknown field `{key}`, expected one of {expected_list}"),
            )
        })
        .collect()
}

/// The apiVersions of `kind` (Istio's when the kind could not be read).
fn read_api_version(kind: Option<Kind>, value: Option<Value>) -> Result<String, Problem> {
    let accepted = kind.map_or(ISTIO_API_VERSIONS, |k| k.api_versions());
    let expected = accepted.join(", ");
    match value {
        Some(Value::String(v)) if accepted.contains(&v.as_str()) => Ok(v),
        Some(other) => Err(Problem::new(
            "apiVersion",
            format!("unsupported apiVersion {other}; expected one of {expected}"),
        )),
        None => Err(Problem::new(
            "apiVersion",
            format!("missing; expected one of {expected}"),
        )),
    }
}

fn read_kind(value: Option<Value>) -> Result<Kind, Problem> {
    let supported = Kind::ALL.map(|k| k.as_str()).join(", ");
    let unsupported =
        |kind: String| format!("unsupported kind {kind}; supported kinds: {supported}");
    match value {
        Some(Value::String(name)) => Kind::from_name(&name)
            .ok_or_else(|| Problem::new("kind", unsupported(format!("{name:?}")))),
        Some(other) => Err(Problem::new("kind", unsupported(other.to_string()))),
        None => Err(Problem::new(
            "kind",
            format!("missing; supported kinds: {supported}"),
        )),
    }
}

fn read_metadata(value: Option<Value>) -> Result<ObjectMeta, Problem> {
    let value = value.ok_or_else(|| {
        Problem::new(
            "metadata",
            "missing; every object needs metadata with at least a name",
        )
    })?;
    let mut meta: ObjectMeta = typed(value, "metadata")?;
    // Kubernetes reads an empty namespace as the default one; so do we.
    if meta.namespace.is_empty() {
        meta.namespace = DEFAULT_NAMESPACE.to_string();
    }
    if !is_dns_name(&meta.name, MAX_NAME_LEN, true) {
        let message = format!("name {:?} is not valid: use at most {MAX_NAME_LEN} lowercase letters, digits, '-' or '.', starting and ending with a letter or digit", meta.name);
        return Err(Problem::new("metadata.name", message));
    }
    if !is_dns_name(&meta.namespace, MAX_NAMESPACE_LEN, false) {
        let message = format!("namespace {:?} is not valid: use at most {MAX_NAMESPACE_LEN} lowercase letters, digits or '-', starting and ending with a letter or digit", meta.namespace);
        return Err(Problem::new("metadata.namespace", message));
    }
    Ok(meta)
}

/// Kubernetes' DNS-1123 names: a subdomain (dots allowed) for names, a label for namespaces.
fn is_dns_name(text: &str, max_len: usize, allow_dots: bool) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let allowed = |c: char| alnum(c) || c == '-' || (allow_dots && c == '.');
    text.len() <= max_len
        && text.chars().all(allowed)
        && text.chars().next().is_some_and(alnum)
        && text.chars().next_back().is_some_and(alnum)
}

fn read_spec(kind: Kind, value: Option<Value>) -> Result<Spec, Problem> {
    let value =
        value.ok_or_else(|| Problem::new("spec", format!("missing; a {kind} needs a spec")))?;
    Ok(match kind {
        Kind::VirtualService => Spec::VirtualService(typed(value, "spec")?),
        Kind::DestinationRule => Spec::DestinationRule(typed(value, "spec")?),
        Kind::ServiceEntry => Spec::ServiceEntry(typed(value, "spec")?),
        Kind::Gateway => Spec::Gateway(typed(value, "spec")?),
        Kind::Rollout => Spec::Rollout(typed(value, "spec")?),
        // `read_item` sends every Application to `read_application`, which reads the spec in
        // two passes; this arm only keeps the match whole.
        Kind::Application => Spec::Application(application::read_spec(value).map_err(|p| {
            let first = p.into_iter().next();
            first.unwrap_or_else(|| Problem::new("spec", "cannot be read"))
        })?),
    })
}

/// Deserialize `value`, naming the failing field as a path under `root` (`spec.http[0].timeout`).
pub(super) fn typed<T: DeserializeOwned>(value: Value, root: &str) -> Result<T, Problem> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            root.to_string()
        } else {
            format!("{root}.{path}")
        };
        Problem::new(field, explain(e.inner()))
    })
}

/// serde's message, with a hint where serde's wording assumes the reader knows serde or YAML.
fn explain(error: &serde_json::Error) -> String {
    let message = error.to_string();
    if message.contains("map with a single key") {
        format!("{message}: a string match takes exactly one of `exact`, `prefix`, `regex`")
    } else if message.starts_with("invalid type: ") && message.ends_with("expected a string") {
        format!("{message}; quote the value, e.g. \"v1\" or \"1\"")
    } else {
        message
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
