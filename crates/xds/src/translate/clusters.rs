//! Clusters: one per service port, plus one per DestinationRule subset, each with the traffic
//! policy that applies (a subset's own policy replaces the rule's top-level one field by field,
//! as in Istio).

use super::{cluster_name, endpoints, pb, Context, Translation};
use crate::node::NodeKind;
use envoy_types::pb::envoy::config::cluster::v3::{
    circuit_breakers::Thresholds,
    cluster::{
        ClusterDiscoveryType, CommonLbConfig, DiscoveryType, EdsClusterConfig, LbConfig, LbPolicy,
        RingHashLbConfig,
    },
    CircuitBreakers, Cluster, OutlierDetection as PbOutlier,
};
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    http_protocol_options::{
        explicit_http_config::ProtocolConfig, ExplicitHttpConfig, UpstreamProtocolOptions,
        UseDownstreamHttpConfig,
    },
    HttpProtocolOptions as UpstreamHttpOptions,
};
use envoy_types::pb::envoy::r#type::v3::Percent;
use graymesh_model::istio::{
    ConnectionPoolSettings, DestinationRule, HttpSettings, LoadBalancerSettings, OutlierDetection,
    Resolution, SimpleLb, TrafficPolicy,
};
use graymesh_model::Resource;
use graymesh_sources::Service;
use std::collections::BTreeMap;
use std::time::Duration;

/// Where Envoy reads a cluster's upstream HTTP settings.
pub const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// Istio's default connect timeout.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub fn for_service_port(
    ctx: &Context<'_>,
    service: &Service,
    port: u32,
    rule: Option<&Resource<DestinationRule>>,
    out: &mut Translation,
) {
    let top = rule.and_then(|r| r.spec.traffic_policy.as_ref());
    let name = cluster_name(port, None, &service.host);
    out.endpoints.push(endpoints::load_assignment(
        &name,
        service,
        port,
        &BTreeMap::new(),
    ));
    out.clusters.push(cluster(
        ctx,
        name,
        top.cloned().unwrap_or_default(),
        service,
    ));
    for subset in rule.map(|r| r.spec.subsets.as_slice()).unwrap_or_default() {
        let name = cluster_name(port, Some(&subset.name), &service.host);
        out.endpoints.push(endpoints::load_assignment(
            &name,
            service,
            port,
            &subset.labels,
        ));
        let policy = merge(top, subset.traffic_policy.as_ref());
        out.clusters.push(cluster(ctx, name, policy, service));
    }
}

/// The effective policy of a subset: its own settings where given, the rule's otherwise.
pub fn merge(top: Option<&TrafficPolicy>, own: Option<&TrafficPolicy>) -> TrafficPolicy {
    let top = top.cloned().unwrap_or_default();
    let Some(own) = own else { return top };
    TrafficPolicy {
        load_balancer: own.load_balancer.clone().or(top.load_balancer),
        connection_pool: own.connection_pool.clone().or(top.connection_pool),
        outlier_detection: own.outlier_detection.clone().or(top.outlier_detection),
    }
}

fn cluster(ctx: &Context<'_>, name: String, policy: TrafficPolicy, service: &Service) -> Cluster {
    let pool = policy.connection_pool.as_ref();
    let connect_timeout = pool
        .and_then(|p| p.tcp.as_ref())
        .and_then(|t| t.connect_timeout)
        .map(|d| d.as_std())
        .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    let mut cluster = Cluster {
        name: name.clone(),
        connect_timeout: Some(pb::duration(connect_timeout)),
        circuit_breakers: Some(circuit_breakers(pool)),
        outlier_detection: policy.outlier_detection.as_ref().map(outlier),
        common_lb_config: policy.outlier_detection.as_ref().map(panic_threshold),
        ..Default::default()
    };
    // HTTP2 and GRPC ports speak HTTP/2 to the upstream whatever the client spoke (Istio's
    // choice, and what Envoy needs to be told: without it a cluster is HTTP/1.1). Proxyless gRPC
    // clients always speak HTTP/2 and get no option they would not use.
    let h2 = ctx.class.kind.is_proxy()
        && service
            .port(port_of(&name))
            .is_some_and(|p| matches!(p.protocol.as_str(), "HTTP2" | "GRPC" | "GRPC-WEB"));
    if let Some(options) = http_protocol_options(pool.and_then(|p| p.http.as_ref()), h2) {
        cluster
            .typed_extension_protocol_options
            .insert(HTTP_PROTOCOL_OPTIONS.to_string(), pb::any(&options));
    }
    apply_lb(&mut cluster, policy.load_balancer.as_ref(), ctx.class.kind);
    let dns = matches!(
        service.resolution,
        Resolution::Dns | Resolution::DnsRoundRobin
    );
    if dns && ctx.class.kind.is_proxy() {
        // Sidecars and gateways resolve DNS names themselves; proxyless clients only accept EDS.
        cluster.cluster_discovery_type =
            Some(ClusterDiscoveryType::Type(DiscoveryType::StrictDns as i32));
        let port = port_of(&name);
        cluster.load_assignment = Some(endpoints::load_assignment(
            &name,
            service,
            port,
            &subset_labels(ctx, &name),
        ));
    } else {
        cluster.cluster_discovery_type =
            Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32));
        cluster.eds_cluster_config = Some(EdsClusterConfig {
            eds_config: Some(pb::ads()),
            service_name: name,
        });
    }
    cluster
}

fn port_of(cluster_name: &str) -> u32 {
    cluster_name
        .split('|')
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

fn subset_labels(ctx: &Context<'_>, cluster_name: &str) -> BTreeMap<String, String> {
    let mut parts = cluster_name.split('|').skip(2);
    let (Some(subset), Some(host)) = (parts.next(), parts.next()) else {
        return BTreeMap::new();
    };
    ctx.destination_rule(host)
        .and_then(|r| r.spec.subsets.iter().find(|s| s.name == subset))
        .map(|s| s.labels.clone())
        .unwrap_or_default()
}

fn apply_lb(cluster: &mut Cluster, lb: Option<&LoadBalancerSettings>, kind: NodeKind) {
    let Some(lb) = lb else { return };
    if let Some(hash) = &lb.consistent_hash {
        cluster.lb_policy = LbPolicy::RingHash as i32;
        cluster.lb_config = Some(LbConfig::RingHashLbConfig(RingHashLbConfig {
            minimum_ring_size: hash
                .minimum_ring_size
                .map(|v| envoy_types::pb::google::protobuf::UInt64Value { value: v }),
            ..Default::default()
        }));
        return;
    }
    cluster.lb_policy = match lb.simple {
        Some(SimpleLb::LeastRequest) => LbPolicy::LeastRequest as i32,
        // gRPC clients support only round robin, least request and ring hash.
        Some(SimpleLb::Random) if kind.is_proxy() => LbPolicy::Random as i32,
        _ => LbPolicy::RoundRobin as i32,
    };
}

/// As Istio: every limit not set by `connectionPool` is effectively unlimited (Envoy's own
/// defaults, e.g. 3 concurrent retries, would throttle ordinary traffic).
fn circuit_breakers(pool: Option<&ConnectionPoolSettings>) -> CircuitBreakers {
    let tcp = pool.and_then(|p| p.tcp.as_ref());
    let http = pool.and_then(|p| p.http.as_ref());
    let limit = |v: Option<u32>| Some(pb::u32v(v.unwrap_or(u32::MAX)));
    CircuitBreakers {
        thresholds: vec![Thresholds {
            max_connections: limit(tcp.and_then(|t| t.max_connections)),
            max_pending_requests: limit(http.and_then(|h| h.http1_max_pending_requests)),
            max_requests: limit(http.and_then(|h| h.http2_max_requests)),
            max_retries: limit(http.and_then(|h| h.max_retries)),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// As Istio: a consecutive-error check is enforced when its threshold is above 0 and off at 0
/// (Envoy would otherwise eject on 0 errors, and never enforces gateway errors by default); the
/// success-rate check Envoy enables by default is off.
fn outlier(o: &OutlierDetection) -> PbOutlier {
    let enforcing = |threshold: u32| pb::u32v(if threshold > 0 { 100 } else { 0 });
    PbOutlier {
        consecutive_5xx: o.consecutive_5xx_errors.map(pb::u32v),
        enforcing_consecutive_5xx: o.consecutive_5xx_errors.map(enforcing),
        consecutive_gateway_failure: o.consecutive_gateway_errors.map(pb::u32v),
        enforcing_consecutive_gateway_failure: o.consecutive_gateway_errors.map(enforcing),
        enforcing_success_rate: Some(pb::u32v(0)),
        interval: o.interval.map(|d| pb::duration(d.as_std())),
        base_ejection_time: o.base_ejection_time.map(|d| pb::duration(d.as_std())),
        max_ejection_percent: o.max_ejection_percent.map(pb::u32v),
        ..Default::default()
    }
}

/// `minHealthPercent`: below it Envoy stops honouring ejections (panic mode). Istio sets it
/// whenever outlier detection is on, to 0 when not given, where Envoy's own default is 50.
fn panic_threshold(o: &OutlierDetection) -> CommonLbConfig {
    CommonLbConfig {
        healthy_panic_threshold: Some(Percent {
            value: f64::from(o.min_health_percent.unwrap_or(0)),
        }),
        ..Default::default()
    }
}

/// The upstream HTTP options: HTTP/2 always for `h2` ports, otherwise the protocol the client
/// spoke; and `connectionPool.http`'s per-connection settings (idle timeout and requests per
/// connection for every protocol, concurrent streams for HTTP/2). `None` when there is nothing
/// to say (an HTTP port without such settings).
fn http_protocol_options(http: Option<&HttpSettings>, h2: bool) -> Option<UpstreamHttpOptions> {
    let http = http.cloned().unwrap_or_default();
    let settings = http.idle_timeout.is_some()
        || http.max_requests_per_connection.is_some()
        || http.max_concurrent_streams.is_some();
    if !h2 && !settings {
        return None;
    }
    let common = settings.then(|| core::HttpProtocolOptions {
        idle_timeout: http.idle_timeout.map(|d| pb::duration(d.as_std())),
        max_requests_per_connection: http.max_requests_per_connection.map(pb::u32v),
        ..Default::default()
    });
    let http2 = core::Http2ProtocolOptions {
        max_concurrent_streams: http.max_concurrent_streams.map(pb::u32v),
        ..Default::default()
    };
    let protocol = if h2 {
        UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
            protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(http2)),
        })
    } else {
        UpstreamProtocolOptions::UseDownstreamProtocolConfig(UseDownstreamHttpConfig {
            http_protocol_options: Some(core::Http1ProtocolOptions::default()),
            http2_protocol_options: Some(http2),
            ..Default::default()
        })
    };
    Some(UpstreamHttpOptions {
        common_http_protocol_options: common,
        upstream_protocol_options: Some(protocol),
        ..Default::default()
    })
}
