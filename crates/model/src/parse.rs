//! Text to [`Object`]s: a YAML stream of documents, or JSON (one object or an array of objects),
//! with Kubernetes `kind: List` wrappers unpacked.
//!
//! Parsing checks the shape of each object on its own: the envelope, the metadata and every field
//! of the spec against Istio's schema (unknown fields are errors). It never compares two objects;
//! that is `validate`'s job. Errors are collected across all documents so a user can fix a whole
//! file in one pass, and parsing never reads anything but the text it is given.

mod application;
mod envelope;
#[cfg(test)]
mod tests;

use crate::error::ModelError;
use crate::oam::Application;
use crate::object::Object;
use serde::Deserialize;
use serde_json::Value;

/// One document of a file, before its envelope is read.
struct Document {
    /// 0-based position in the YAML stream (empty documents count) or in the JSON array.
    index: usize,
    value: Value,
}

/// Everything one text holds: Istio objects (and Rollouts), and OAM Applications apart.
#[derive(Debug, Default)]
pub struct Parsed {
    pub objects: Vec<Object>,
    pub applications: Vec<Application>,
}

/// Parse every object in `text`, read from `file` (the name is only used in errors and
/// origins): Istio objects, OAM Applications and Rollouts, all as [`Object`]s, the way stores
/// hold them.
pub fn parse_str(file: &str, text: &str) -> Result<Vec<Object>, Vec<ModelError>> {
    let parsed = parse_documents(file, text)?;
    let mut objects = parsed.objects;
    objects.extend(
        parsed
            .applications
            .into_iter()
            .map(Application::into_object),
    );
    Ok(objects)
}

/// Parse every object in `text`, Istio objects and OAM Applications alike.
///
/// JSON is recognised by a `.json` file name or by text starting with `{` or `[`; anything else is
/// read as a YAML stream of `---`-separated documents. Empty documents are skipped.
pub fn parse_documents(file: &str, text: &str) -> Result<Parsed, Vec<ModelError>> {
    // Editors on Windows save a byte-order mark; YAML ignores it but JSON parsers do not.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // A syntax error ends the stream, so it is reported after the documents read before it.
    let mut syntax_errors = Vec::new();
    let documents = if looks_like_json(file, text) {
        json_documents(file, text, &mut syntax_errors)
    } else {
        yaml_documents(file, text, &mut syntax_errors)
    };
    let mut parsed = Parsed::default();
    let mut errors = Vec::new();
    for document in documents {
        match document {
            Ok(Document { index, value }) => {
                envelope::unpack(file, index, value, &mut parsed, &mut errors)
            }
            Err(error) => errors.push(error),
        }
    }
    errors.append(&mut syntax_errors);
    if errors.is_empty() {
        Ok(parsed)
    } else {
        Err(errors)
    }
}

fn looks_like_json(file: &str, text: &str) -> bool {
    let start = text.trim_start();
    file.ends_with(".json") || start.starts_with('{') || start.starts_with('[')
}

type DocumentResult = Result<Document, ModelError>;

fn json_documents(file: &str, text: &str, errors: &mut Vec<ModelError>) -> Vec<DocumentResult> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(index, value)| Ok(Document { index, value }))
            .collect(),
        Ok(value) => vec![Ok(Document { index: 0, value })],
        Err(e) => {
            errors.push(ModelError::in_file(file, format!("JSON syntax error: {e}")));
            Vec::new()
        }
    }
}

fn yaml_documents(file: &str, text: &str, errors: &mut Vec<ModelError>) -> Vec<DocumentResult> {
    let mut documents = Vec::new();
    for (index, document) in serde_norway::Deserializer::from_str(text).enumerate() {
        // Reading into YAML's own value type first means only syntax errors can fail here, and
        // libyaml cannot resume after one: every later "document" would repeat the same error.
        let mut yaml = match serde_norway::Value::deserialize(document) {
            Ok(yaml) => yaml,
            Err(e) => {
                errors.push(ModelError::in_file(file, format!("YAML syntax error: {e}")));
                break;
            }
        };
        if yaml.is_null() {
            continue;
        }
        let value = yaml
            .apply_merge()
            .map_err(|e| e.to_string())
            .and_then(|()| to_json(&yaml));
        documents.push(
            value
                .map(|value| Document { index, value })
                .map_err(|message| envelope::document_error(file, index, message)),
        );
    }
    documents
}

/// Objects are deserialized from JSON values so that one code path (and one error path format)
/// serves both YAML and JSON input.
fn to_json(yaml: &serde_norway::Value) -> Result<Value, String> {
    serde_json::to_value(yaml).map_err(|e| format!("cannot be read as an object ({e})"))
}
