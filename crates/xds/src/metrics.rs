//! Prometheus metrics of the xDS server. The binary registers them next to its own.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    /// LDS, RDS, CDS or EDS.
    pub r#type: String,
}

impl TypeLabel {
    pub fn new(short: &str) -> Self {
        Self {
            r#type: short.to_string(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct XdsMetrics {
    pub connected_clients: Gauge,
    pub pushes: Family<TypeLabel, Counter>,
    pub nacks: Family<TypeLabel, Counter>,
    /// Seconds from a generation's publication to a push that carries it.
    pub push_latency: Histogram,
    /// Seconds from a push to the client's ACK of it.
    pub ack_latency: Histogram,
}

impl Default for XdsMetrics {
    fn default() -> Self {
        Self {
            connected_clients: Gauge::default(),
            pushes: Family::default(),
            nacks: Family::default(),
            push_latency: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            ack_latency: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
        }
    }
}

impl XdsMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "graymesh_xds_connected_clients",
            "Connected xDS streams",
            self.connected_clients.clone(),
        );
        registry.register(
            "graymesh_xds_pushes",
            "xDS responses sent, by type",
            self.pushes.clone(),
        );
        registry.register(
            "graymesh_xds_nacks",
            "xDS responses rejected by clients, by type",
            self.nacks.clone(),
        );
        registry.register(
            "graymesh_xds_push_latency_seconds",
            "Time from a config or registry change being published to a push carrying it",
            self.push_latency.clone(),
        );
        registry.register(
            "graymesh_xds_ack_latency_seconds",
            "Time from a push to its ACK",
            self.ack_latency.clone(),
        );
    }
}
