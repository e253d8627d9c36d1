//! `graymesh proxy-status`: one line per connected xDS client and, per type, whether it is
//! SYNCED (ACKed what was last sent), STALE (not yet ACKed), NACKED, or NOT SENT.

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
    let clients = syncz["clients"].as_array().cloned().unwrap_or_default();
    println!(
        "{:<28} {:<16} {:<6} {:<10} {:<10} {:<10} {:<10} VERSION",
        "NODE", "KIND", "PROTO", "CDS", "LDS", "EDS", "RDS"
    );
    for c in &clients {
        let states: Vec<String> = TYPES
            .iter()
            .map(|(_, url)| type_state(&c["types"][*url]))
            .collect();
        println!(
            "{:<28} {:<16} {:<6} {:<10} {:<10} {:<10} {:<10} {}",
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
        for (short, url) in TYPES {
            if let Some(nack) = c["types"][url]["nack"].as_str() {
                println!(
                    "{} {short} NACK: {nack}",
                    c["node_id"].as_str().unwrap_or("?")
                );
            }
        }
    }
    if clients.is_empty() {
        println!("(no xDS clients connected)");
    }
    Ok(())
}

fn type_state(t: &Value) -> String {
    if t.is_null() || t["sent_nonce"].as_str().unwrap_or("").is_empty() {
        return "NOT SENT".into();
    }
    if t["nack"].is_string() {
        return "NACKED".into();
    }
    if t["acked_nonce"] == t["sent_nonce"] {
        "SYNCED"
    } else {
        "STALE"
    }
    .into()
}
