//! Gauges read at scrape time from the config store and the cache, so they are never stale.

use graymesh_model::Kind;
use graymesh_sources::ConfigState;
use graymesh_xds::SnapshotCache;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

#[derive(Debug)]
struct ConfigCollector {
    config: watch::Receiver<ConfigState>,
    cache: SnapshotCache,
}

pub fn register(
    registry: &mut Registry,
    config: watch::Receiver<ConfigState>,
    cache: SnapshotCache,
) {
    registry.register_collector(Box::new(ConfigCollector { config, cache }));
}

impl Collector for ConfigCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let state = self.config.borrow().clone();
        let generation = self.cache.current();
        let mut objects = encoder.encode_descriptor(
            "graymesh_config_objects",
            "Config objects being served, by kind",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for kind in Kind::ALL {
            let n = state
                .config
                .counts()
                .iter()
                .find(|(k, _)| *k == kind)
                .map(|(_, n)| *n)
                .unwrap_or(0);
            let labels = [("kind", kind.as_str())];
            ConstGauge::new(n as i64).encode(objects.encode_family(&labels)?)?;
        }
        let gauges = [
            (
                "graymesh_config_errors",
                "Errors in the latest config load (0 when it applied)",
                state.errors.len() as i64,
            ),
            (
                "graymesh_config_version",
                "Version of the config being served",
                state.version as i64,
            ),
            (
                "graymesh_generation",
                "Version of the latest published xDS generation",
                generation.version as i64,
            ),
            (
                "graymesh_registry_services",
                "Services in the registry",
                generation.registry.services.len() as i64,
            ),
            (
                "graymesh_registry_instances",
                "Instances in the registry",
                generation.registry.instance_count() as i64,
            ),
        ];
        for (name, help, value) in gauges {
            let metric = ConstGauge::new(value);
            let enc = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
            metric.encode(enc)?;
        }
        Ok(())
    }
}
