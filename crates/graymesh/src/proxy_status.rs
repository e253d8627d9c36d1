//! `graymesh proxy-status`: one line per connected xDS client and, per type, whether it is
//! SYNCED (ACKed what was last sent), STALE (not yet ACKed), NACKED, or NOT SENT, with `+N held`
//! when pilot holds N newer resources of that type back until the client has ACKed the clusters
//! and endpoints they point at (make-before-break); the held names are listed below the table.

use crate::cli_http::{get_json, DEFAULT_SERVER};
use clap::Args;
use serde_json::Value;

#[derive(Debug, Args)]
pub struct ProxyStatusArgs {
    /// Pilot's admin address.
    #[arg(long, env = "GRAYMESH_SERVER", default_value = DEFAULT_SERVER)]
    pub server: String,
    /// Print the raw JSON instead of a table.
    #[arg(short = 'o', long = "output", default_value = "table", value_parser = ["table", "json"])]
    pub output: String,
}

const TYPES: [(&str, &str); 4] = [
    ("CDS", "type.googleapis.com/envoy.config.cluster.v3.Cluster"),
    (
        "LDS",
        "type.googleapis.com/envoy.config.listener.v3.Listener",
    ),
    (
        "EDS",
        "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
    ),
    (
        "RDS",
        "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
    ),
];

pub async fn run(args: ProxyStatusArgs) -> anyhow::Result<()> {
    let syncz = get_json(&args.server, "/debug/syncz").await?;
    if args.output == "json" {
        println!("{}", serde_json::to_string_pretty(&syncz)?);
        return Ok(());
    }
    print!("{}", table(&syncz));
    Ok(())
}

/// The table `proxy-status` prints for pilot's `/debug/syncz`.
fn table(syncz: &Value) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let clients = syncz["clients"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(
        out,
        "{:<28} {:<16} {:<6} {:<16} {:<16} {:<16} {:<16} VERSION",
        "NODE", "KIND", "PROTO", "CDS", "LDS", "EDS", "RDS"
    );
    for c in &clients {
        let states: Vec<String> = TYPES
            .iter()
            .map(|(_, url)| type_state(&c["types"][*url]))
            .collect();
        let _ = writeln!(
            out,
            "{:<28} {:<16} {:<6} {:<16} {:<16} {:<16} {:<16} {}",
            c["node_id"].as_str().unwrap_or("?"),
            c["kind"].as_str().unwrap_or("?"),
            c["protocol"].as_str().unwrap_or("?"),
            states[0],
            states[1],
            states[2],
            states[3],
            syncz["version"],
        );
    }
    for c in &clients {
        let node = c["node_id"].as_str().unwrap_or("?");
        for (short, url) in TYPES {
            let t = &c["types"][url];
            if let Some(nack) = t["nack"].as_str() {
                let _ = writeln!(out, "{node} {short} NACK: {nack}");
            }
            let held = names(&t["held_back"]);
            if !held.is_empty() {
                let _ = writeln!(
                    out,
                    "{node} {short} held back until the client ACKs what they point at: {}",
                    held.join(", ")
                );
            }
        }
    }
    if clients.is_empty() {
        out.push_str("(no xDS clients connected)\n");
    }
    out
}

fn names(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn type_state(t: &Value) -> String {
    let held = names(&t["held_back"]).len();
    let state = if t.is_null() || t["sent_nonce"].as_str().unwrap_or("").is_empty() {
        "NOT SENT"
    } else if t["nack"].is_string() {
        "NACKED"
    } else if t["acked_nonce"] == t["sent_nonce"] {
        "SYNCED"
    } else {
        "STALE"
    };
    if held > 0 {
        format!("{state} +{held} held")
    } else {
        state.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::table;
    use serde_json::json;

    #[test]
    fn held_back_routes_show_in_their_column_and_by_name() {
        let rds = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
        let cds = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
        let syncz = json!({
            "version": "v7",
            "clients": [{
                "node_id": "productpage-1", "kind": "sidecar", "protocol": "sotw",
                "types": {
                    cds: {"sent_nonce": "4", "acked_nonce": "3", "held_back": []},
                    rds: {"sent_nonce": "2", "acked_nonce": "2", "held_back": ["9080", "outbound"]},
                },
            }],
        });
        let out = table(&syncz);
        let row = out.lines().nth(1).unwrap();
        assert!(row.starts_with("productpage-1"), "{out}");
        assert!(row.contains("STALE "), "CDS not yet ACKed: {out}");
        assert!(row.contains("SYNCED +2 held"), "RDS: {out}");
        assert!(row.contains("NOT SENT"), "LDS and EDS: {out}");
        assert!(
            out.contains("productpage-1 RDS held back until the client ACKs what they point at: 9080, outbound"),
            "{out}"
        );
        let quiet = json!({"version": "v1", "clients": [{"node_id": "a", "types": {rds: {"sent_nonce": "1", "acked_nonce": "1"}}}]});
        assert!(!table(&quiet).contains("held"), "{}", table(&quiet));
        assert!(table(&json!({"clients": []})).contains("(no xDS clients connected)"));
    }
}
