//! etcd values to objects, and the largest valid config they make. Pure: no I/O.
//!
//! A value someone wrote by hand may be broken. It is reported (its key is the "file" of the
//! error) and skipped; so is an object the set-wide checks reject (e.g. a VirtualService naming a
//! subset no DestinationRule has): the rest is still served, never an empty config.

use crate::etcd::keys::parse_config_key;
use graymesh_model::{build_config_set, parse_str, ConfigSet, ModelError, Object};
use std::collections::BTreeSet;

/// The object stored under `key`, with the value's mod revision as its resourceVersion.
pub fn parse_value(key: &str, value: &[u8], mod_revision: i64) -> Result<Object, Vec<ModelError>> {
    let file = format!("etcd:{key}");
    let one = |message: String| vec![ModelError::in_file(&file, message)];
    let (namespace, kind, name) = parse_config_key(key).map_err(one)?;
    let text = std::str::from_utf8(value).map_err(|e| one(format!("value is not UTF-8: {e}")))?;
    let mut objects = parse_str(&file, text)?;
    if objects.len() != 1 {
        return Err(one(format!(
            "value holds {} objects; a config key holds exactly one",
            objects.len()
        )));
    }
    let mut object = objects.remove(0);
    let says = (&object.meta.namespace, object.kind(), &object.meta.name);
    if says != (&namespace, kind, &name) {
        let message = format!(
            "stored under the key of {kind} {namespace}/{name}, but the value is {}",
            object.display_name()
        );
        return Err(vec![ModelError::in_object(
            &file,
            object.display_name(),
            "metadata",
            message,
        )]);
    }
    object.meta.resource_version = Some(mod_revision.to_string());
    Ok(object)
}

/// Validate `objects` as a set, dropping the objects named by errors until the rest is valid.
/// Every error is appended to `errors`. `None` when an error names no object, so the culprit
/// cannot be dropped (the caller keeps the config it had).
pub fn valid_subset(mut objects: Vec<Object>, errors: &mut Vec<ModelError>) -> Option<ConfigSet> {
    // Each round drops at least one object, so this ends.
    loop {
        let found = match build_config_set(objects.clone()) {
            Ok(set) => return Some(set),
            Err(found) => found,
        };
        let culprits: BTreeSet<String> = found.iter().filter_map(|e| e.object.clone()).collect();
        let before = objects.len();
        objects.retain(|o| !culprits.contains(&o.display_name()));
        errors.extend(found);
        if objects.len() == before {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DR: &str = r#"{"apiVersion":"networking.istio.io/v1","kind":"DestinationRule",
        "metadata":{"name":"reviews"},"spec":{"host":"reviews","subsets":[{"name":"v1","labels":{"version":"v1"}}]}}"#;
    const DR_KEY: &str = "/graymesh/config/default/DestinationRule/reviews";

    #[test]
    fn a_good_value_gets_its_revision_as_resource_version() {
        let object = parse_value(DR_KEY, DR.as_bytes(), 42).unwrap();
        assert_eq!(object.meta.resource_version.as_deref(), Some("42"));
        assert_eq!(object.origin.file, format!("etcd:{DR_KEY}"));
    }

    #[test]
    fn bad_values_name_their_key() {
        let key = "/graymesh/config/default/DestinationRule/other";
        let err = parse_value(key, DR.as_bytes(), 1).unwrap_err();
        assert!(err[0]
            .to_string()
            .contains("etcd:/graymesh/config/default/DestinationRule/other"));
        assert!(
            err[0].message.contains("DestinationRule default/reviews"),
            "{err:?}"
        );
        let err = parse_value(DR_KEY, b"{not json", 1).unwrap_err();
        assert!(
            err[0].to_string().starts_with(&format!("etcd:{DR_KEY}")),
            "{err:?}"
        );
        let err = parse_value(DR_KEY, &[0xff, 0xfe], 1).unwrap_err();
        assert!(err[0].message.contains("UTF-8"));
    }

    #[test]
    fn objects_failing_set_checks_are_dropped_not_the_whole_set() {
        let dr = parse_value(DR_KEY, DR.as_bytes(), 1).unwrap();
        let vs = r#"{"apiVersion":"networking.istio.io/v1","kind":"VirtualService",
            "metadata":{"name":"reviews"},"spec":{"hosts":["reviews"],
            "http":[{"route":[{"destination":{"host":"reviews","subset":"v9"}}]}]}}"#;
        let vs = parse_value(
            "/graymesh/config/default/VirtualService/reviews",
            vs.as_bytes(),
            2,
        )
        .unwrap();
        let mut errors = Vec::new();
        let set = valid_subset(vec![dr, vs], &mut errors).unwrap();
        assert_eq!(set.destination_rules.len(), 1);
        assert!(set.virtual_services.is_empty());
        assert!(errors[0].to_string().contains("v9"), "{errors:?}");
    }
}
