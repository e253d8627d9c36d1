//! etcd's own counters (Prometheus text on its client URL, `/metrics`), by gRPC method.

use crate::pilot_api::PilotApi;
use hyper::Method;
use std::collections::BTreeMap;

/// Per gRPC method: calls started, calls handled (ended), messages received.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    pub by_method: BTreeMap<String, [f64; 3]>,
}

pub async fn scrape(etcd: &PilotApi) -> anyhow::Result<Counts> {
    let (status, body) = etcd.call(Method::GET, "/metrics", String::new()).await?;
    anyhow::ensure!(status == 200, "etcd /metrics: HTTP {status}");
    Ok(parse(&String::from_utf8_lossy(&body)))
}

fn parse(text: &str) -> Counts {
    let mut counts = Counts::default();
    for line in text.lines() {
        let slot = if line.starts_with("grpc_server_started_total{") {
            0
        } else if line.starts_with("grpc_server_handled_total{") {
            1
        } else if line.starts_with("grpc_server_msg_received_total{") {
            2
        } else {
            continue;
        };
        let Some(method) = line
            .split("grpc_method=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
        else {
            continue;
        };
        let Some(value) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        counts.by_method.entry(method.to_string()).or_default()[slot] += value;
    }
    counts
}

/// Per-second rates between two scrapes `seconds` apart, as JSON: per method and in total.
pub fn rates(before: &Counts, after: &Counts, seconds: f64) -> serde_json::Value {
    let mut methods = serde_json::Map::new();
    let mut total = [0.0f64; 3];
    for (method, now) in &after.by_method {
        let then = before.by_method.get(method).copied().unwrap_or_default();
        let delta: Vec<f64> = (0..3).map(|i| (now[i] - then[i]) / seconds).collect();
        if delta.iter().all(|d| *d == 0.0) {
            continue;
        }
        for i in 0..3 {
            total[i] += delta[i];
        }
        methods.insert(
            method.clone(),
            serde_json::json!({"calls_started_per_s": delta[0], "calls_ended_per_s": delta[1], "messages_received_per_s": delta[2]}),
        );
    }
    let open = |c: &Counts| {
        c.by_method
            .get("LeaseKeepAlive")
            .map(|v| v[0] - v[1])
            .unwrap_or(0.0)
    };
    serde_json::json!({
        "by_method": methods,
        "all": {"calls_started_per_s": total[0], "calls_ended_per_s": total[1], "messages_received_per_s": total[2]},
        "keep_alive_streams_open": open(after),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn sums_the_series_of_one_method() {
        let text = r#"grpc_server_started_total{grpc_method="LeaseKeepAlive",grpc_service="etcdserverpb.Lease",grpc_type="bidi_stream"} 4
grpc_server_handled_total{grpc_code="OK",grpc_method="LeaseKeepAlive",grpc_service="etcdserverpb.Lease",grpc_type="bidi_stream"} 1
grpc_server_handled_total{grpc_code="Canceled",grpc_method="LeaseKeepAlive",grpc_service="etcdserverpb.Lease",grpc_type="bidi_stream"} 2
grpc_server_msg_received_total{grpc_method="LeaseKeepAlive",grpc_service="etcdserverpb.Lease",grpc_type="bidi_stream"} 1e+06"#;
        let counts = super::parse(text);
        assert_eq!(counts.by_method["LeaseKeepAlive"], [4.0, 3.0, 1e6]);
    }
}
