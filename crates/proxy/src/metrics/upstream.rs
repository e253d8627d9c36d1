//! Metrics of the upstream side: open connections by protocol, kept right by a guard that lives
//! as long as the connection (so a connection closing for any reason, dropped from a pool or
//! ended by its task, is counted out), and outlier ejections by cluster.
//!
//! The endpoints ejected now are not kept in a gauge (an ejection ends by time, with no event):
//! they are counted from the upstream state at each scrape, by [`EjectedEndpoints`].

use super::split_cluster;
use crate::upstream::Upstreams;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolKey {
    /// `http1`, `http2` or `tcp`.
    pub protocol: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestinationKey {
    pub destination_service: String,
    pub destination_version: String,
}

/// One protocol's connection metrics, resolved from the families once.
#[derive(Debug, Clone)]
pub struct ConnectionMetrics {
    open: Gauge,
    opened: Counter,
    failed: Counter,
}

impl ConnectionMetrics {
    /// A connection is established: counted open until the returned guard is dropped.
    pub fn opened(&self) -> OpenConnection {
        self.opened.inc();
        self.open.inc();
        OpenConnection(self.open.clone())
    }

    /// A connection could not be established (connect error or timeout, failed handshake).
    pub fn failed(&self) {
        self.failed.inc();
    }
}

/// An upstream connection counted as open; dropping it counts the connection closed.
#[derive(Debug)]
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[derive(Debug, Clone)]
pub struct UpstreamMetrics {
    pub http1: ConnectionMetrics,
    pub http2: ConnectionMetrics,
    pub tcp: ConnectionMetrics,
    open: Family<ProtocolKey, Gauge>,
    opened: Family<ProtocolKey, Counter>,
    failed: Family<ProtocolKey, Counter>,
    ejections: Family<DestinationKey, Counter>,
}

impl Default for UpstreamMetrics {
    fn default() -> Self {
        let open: Family<ProtocolKey, Gauge> = Family::default();
        let opened: Family<ProtocolKey, Counter> = Family::default();
        let failed: Family<ProtocolKey, Counter> = Family::default();
        // Every protocol's series exist from the start, at zero.
        let of = |protocol| {
            let key = ProtocolKey { protocol };
            ConnectionMetrics {
                open: open.get_or_create(&key).clone(),
                opened: opened.get_or_create(&key).clone(),
                failed: failed.get_or_create(&key).clone(),
            }
        };
        Self {
            http1: of("http1"),
            http2: of("http2"),
            tcp: of("tcp"),
            open,
            opened,
            failed,
            ejections: Family::default(),
        }
    }
}

impl UpstreamMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "graymesh_proxy_upstream_connections",
            "Open upstream connections, pooled idle ones included",
            self.open.clone(),
        );
        registry.register(
            "graymesh_proxy_upstream_connections_opened",
            "Upstream connections established (HTTP/2: handshake done)",
            self.opened.clone(),
        );
        registry.register(
            "graymesh_proxy_upstream_connect_failures",
            "Upstream connections that could not be established (error, timeout, failed HTTP/2 \
             handshake)",
            self.failed.clone(),
        );
        registry.register(
            "graymesh_proxy_outlier_ejections",
            "Endpoints ejected by outlier detection, by cluster",
            self.ejections.clone(),
        );
    }

    /// Outlier detection ejected an endpoint of `cluster`.
    pub fn ejected(&self, cluster: &str) {
        let (service, version) = split_cluster(cluster);
        let key = DestinationKey {
            destination_service: service.to_string(),
            destination_version: version.to_string(),
        };
        self.ejections.get_or_create(&key).inc();
    }
}

/// `graymesh_proxy_outlier_ejected_endpoints`, counted at each scrape: per cluster that has had
/// an ejection, how many of its endpoints are ejected now.
#[derive(Debug)]
pub struct EjectedEndpoints(pub Arc<Upstreams>);

impl Collector for EjectedEndpoints {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = crate::upstream::outlier::now_ms();
        let family = Family::<DestinationKey, Gauge>::default();
        for (cluster, ejected) in self.0.ejected(now) {
            let (service, version) = split_cluster(&cluster);
            let key = DestinationKey {
                destination_service: service.to_string(),
                destination_version: version.to_string(),
            };
            family
                .get_or_create(&key)
                .inc_by(i64::try_from(ejected).unwrap_or(i64::MAX));
        }
        let metric = encoder.encode_descriptor(
            "graymesh_proxy_outlier_ejected_endpoints",
            "Endpoints ejected now, per cluster that has had an ejection",
            None,
            family.metric_type(),
        )?;
        family.encode(metric)
    }
}
