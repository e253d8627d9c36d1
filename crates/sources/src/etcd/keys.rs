//! The etcd key layout, in one place (documented in ARCHITECTURE.md):
//!
//! - config: `/graymesh/config/<namespace>/<Kind>/<name>` ⇒ the object as JSON
//!   (`Kind` as written in YAML, e.g. `VirtualService`)
//! - `/graymesh/config-write`: touched by every config write (see `config_store/write.rs`)
//! - registry: `/graymesh/registry/<namespace>/<service>/<instance>` ⇒ the registration as JSON,
//!   attached to a lease
//!
//! Pure: building and reading keys, no I/O.

use graymesh_model::Kind;

pub const CONFIG_PREFIX: &str = "/graymesh/config/";

/// Put by every config write through pilot (outside the config prefix), so a write can tell
/// whether another pilot wrote — including a delete — since it read.
pub const WRITE_MARKER: &str = "/graymesh/config-write";

/// The key an object of `kind` named `namespace/name` is stored under.
pub fn config_key(namespace: &str, kind: Kind, name: &str) -> String {
    format!("{CONFIG_PREFIX}{namespace}/{kind}/{name}")
}

pub const REGISTRY_PREFIX: &str = "/graymesh/registry/";

/// The key of one registered instance.
pub fn registry_key(namespace: &str, service: &str, instance: &str) -> String {
    format!("{REGISTRY_PREFIX}{namespace}/{service}/{instance}")
}

/// What a config key names. The message of an error says what is wrong with the key.
pub fn parse_config_key(key: &str) -> Result<(String, Kind, String), String> {
    let rest = key
        .strip_prefix(CONFIG_PREFIX)
        .ok_or_else(|| format!("key does not start with {CONFIG_PREFIX}"))?;
    let parts: Vec<&str> = rest.split('/').collect();
    let [namespace, kind, name] = parts[..] else {
        return Err(format!(
            "expected {CONFIG_PREFIX}<namespace>/<Kind>/<name>, got {} part(s) after the prefix",
            parts.len()
        ));
    };
    if namespace.is_empty() || name.is_empty() {
        return Err("namespace and name must not be empty".into());
    }
    let kind = Kind::from_name(kind).ok_or_else(|| {
        let known: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        format!("unknown kind {kind:?} (one of {})", known.join(", "))
    })?;
    Ok((namespace.to_string(), kind, name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keys_round_trip() {
        let key = config_key("default", Kind::VirtualService, "reviews");
        assert_eq!(key, "/graymesh/config/default/VirtualService/reviews");
        assert_eq!(
            parse_config_key(&key),
            Ok(("default".into(), Kind::VirtualService, "reviews".into()))
        );
    }

    #[test]
    fn bad_config_keys_say_what_is_wrong() {
        let too_short = parse_config_key("/graymesh/config/default/VirtualService");
        assert!(too_short.unwrap_err().contains("got 2 part(s)"));
        let kind = parse_config_key("/graymesh/config/default/Pod/x").unwrap_err();
        assert!(kind.contains("unknown kind \"Pod\""), "{kind}");
        assert!(parse_config_key("/other/x").is_err());
        assert!(parse_config_key("/graymesh/config//VirtualService/x").is_err());
    }
}
