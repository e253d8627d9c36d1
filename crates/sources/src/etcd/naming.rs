//! etcd's gRPC naming records (what etcd's own Go resolver reads and writes): a key
//! `<prefix>/<service>/<addr>` holding `{"Op":0,"Addr":"ip:port","Metadata":…}` (Op 0 = add,
//! 1 = delete). Pure: encode graymesh registrations as such records, and read records other
//! programs wrote as registrations. Records graymesh wrote carry `"graymesh": true` in their
//! metadata so a pilot does not import its own instances twice.

use crate::registry::{Registration, RegistrationPort};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::net::SocketAddr;

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    #[serde(rename = "Op", default)]
    op: u8,
    #[serde(rename = "Addr")]
    addr: String,
    #[serde(rename = "Metadata", default, skip_serializing_if = "Value::is_null")]
    metadata: Value,
}

/// The records publishing `registration` under `prefix`: one per port, `(key, value)`.
pub fn records(prefix: &str, registration: &Registration) -> Vec<(String, String)> {
    let prefix = prefix.trim_end_matches('/');
    registration
        .ports
        .iter()
        .map(|port| {
            let target = port.target_port.unwrap_or(port.port);
            let addr = SocketAddr::new(
                registration.address.parse().unwrap_or([0, 0, 0, 0].into()),
                u16::try_from(target).unwrap_or(0),
            )
            .to_string();
            let record = Record {
                op: 0,
                addr: addr.clone(),
                metadata: json!({
                    "graymesh": true,
                    "namespace": registration.namespace,
                    "port": port.port,
                    "labels": registration.labels,
                }),
            };
            let value = serde_json::to_string(&record).unwrap_or_default();
            (format!("{prefix}/{}/{addr}", registration.service), value)
        })
        .collect()
}

/// A record another program wrote, as a registration (`Ok(None)`: ours, or a delete record).
/// The error says what is wrong with the record.
pub fn import(prefix: &str, key: &str, value: &[u8]) -> Result<Option<Registration>, String> {
    let prefix = prefix.trim_end_matches('/');
    let rest = key
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('/'))
        .ok_or_else(|| format!("key is not under {prefix}/"))?;
    let (service, _) = rest
        .rsplit_once('/')
        .ok_or_else(|| format!("expected {prefix}/<service>/<addr>"))?;
    let record: Record =
        serde_json::from_slice(value).map_err(|e| format!("not a naming record: {e}"))?;
    if record.op != 0 || record.metadata["graymesh"] == json!(true) {
        return Ok(None);
    }
    let addr: SocketAddr = record
        .addr
        .parse()
        .map_err(|_| format!("Addr: {:?} is not ip:port", record.addr))?;
    let labels = record.metadata["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let registration = Registration {
        id: format!("naming:{key}"),
        service: service.to_string(),
        namespace: record.metadata["namespace"]
            .as_str()
            .unwrap_or(graymesh_model::object::DEFAULT_NAMESPACE)
            .to_string(),
        address: addr.ip().to_string(),
        ports: vec![RegistrationPort {
            port: u32::from(addr.port()),
            target_port: None,
            name: None,
            protocol: Some("GRPC".into()),
        }],
        labels,
        locality: None,
        weight: None,
        ttl_seconds: 10,
    };
    registration.validate()?;
    Ok(Some(registration))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reviews() -> Registration {
        serde_json::from_str(
            r#"{"service": "reviews", "address": "127.0.0.1", "labels": {"version": "v2"},
                "ports": [{"port": 9080, "target_port": 9082}]}"#,
        )
        .unwrap()
    }

    #[test]
    fn published_records_have_etcds_shape_and_are_not_imported_back() {
        let records = records("/naming/", &reviews());
        assert_eq!(records.len(), 1);
        let (key, value) = &records[0];
        assert_eq!(key, "/naming/reviews/127.0.0.1:9082");
        let json: Value = serde_json::from_str(value).unwrap();
        assert_eq!(json["Op"], 0);
        assert_eq!(json["Addr"], "127.0.0.1:9082");
        assert_eq!(json["Metadata"]["labels"]["version"], "v2");
        assert_eq!(import("/naming", key, value.as_bytes()), Ok(None));
    }

    #[test]
    fn foreign_records_become_registrations() {
        let value = br#"{"Op":0,"Addr":"127.0.0.1:50051","Metadata":{"labels":{"version":"v1"}}}"#;
        let imported = import("/naming", "/naming/greeter/127.0.0.1:50051", value)
            .unwrap()
            .unwrap();
        assert_eq!(imported.service, "greeter");
        assert_eq!(imported.namespace, "default");
        assert_eq!(imported.ports[0].port, 50051);
        assert_eq!(imported.labels["version"], "v1");
        // Go's naming writes Metadata as any JSON (or nothing); a delete record is not an instance.
        let plain = br#"{"Op":0,"Addr":"127.0.0.1:50052"}"#;
        assert!(import("/naming", "/naming/greeter/x", plain)
            .unwrap()
            .is_some());
        let delete = br#"{"Op":1,"Addr":"127.0.0.1:50052"}"#;
        assert_eq!(import("/naming", "/naming/greeter/x", delete), Ok(None));
        let bad = br#"{"Op":0,"Addr":"greeter.example:50051"}"#;
        assert!(import("/naming", "/naming/greeter/x", bad)
            .unwrap_err()
            .contains("Addr"));
    }
}
