//! Clusters compiled for the data path: where to send (endpoints with weights), how to pick
//! (load-balancing policy), and the limits and health rules that apply.

use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
use envoy_types::pb::envoy::config::core::v3::{
    address, socket_address::PortSpecifier, HealthStatus,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint::HostIdentifier, ClusterLoadAssignment,
};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbPolicy {
    RoundRobin,
    LeastRequest,
    Random,
    RingHash,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// Endpoint weight times its locality's weight share, at least 1.
    pub weight: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub max_connections: u32,
    pub max_pending_requests: u32,
    pub max_requests: u32,
    pub max_retries: u32,
    /// Envoy's `retry_budget`: when set it replaces `max_retries` with a share of the requests
    /// in flight (per mille of them, never below `min_concurrency`).
    pub retry_budget: Option<RetryBudget>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryBudget {
    pub per_mille: u32,
    pub min_concurrency: u32,
}

impl Thresholds {
    /// How many requests may be retrying at once while `active` requests are in flight.
    pub fn retry_limit(&self, active: usize) -> usize {
        match self.retry_budget {
            Some(b) => {
                let share = active.saturating_mul(b.per_mille as usize) / 1000;
                share.max(b.min_concurrency as usize)
            }
            None => self.max_retries as usize,
        }
    }
}

impl Default for Thresholds {
    /// Envoy's defaults.
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_pending_requests: 1024,
            max_requests: 1024,
            max_retries: 3,
            retry_budget: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierSpec {
    pub consecutive_5xx: Option<u32>,
    pub consecutive_gateway_failure: Option<u32>,
    /// Each `interval` an endpoint goes without being ejected takes one off its ejection count
    /// (the multiplier of its next ejection time), as Envoy's sweeps do.
    pub interval: Duration,
    pub base_ejection_time: Duration,
    /// An ejection lasts at most this (Envoy's `max_ejection_time`, 300 s unless set, and never
    /// less than `base_ejection_time`).
    pub max_ejection_time: Duration,
    pub max_ejection_percent: u32,
}

/// Which HTTP version requests to a cluster's endpoints use (the cluster's
/// `envoy.extensions.upstreams.http.v3.HttpProtocolOptions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    /// The one the client spoke (`use_downstream_protocol_config`, or no option at all).
    #[default]
    Downstream,
    /// `explicit_http_config.http_protocol_options`.
    Http1,
    /// `explicit_http_config.http2_protocol_options`: HTTP2 and GRPC ports.
    Http2,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSpec {
    pub name: String,
    pub lb: LbPolicy,
    pub upstream: UpstreamProtocol,
    pub endpoints: Vec<Endpoint>,
    pub connect_timeout: Duration,
    pub thresholds: Thresholds,
    pub outlier: Option<OutlierSpec>,
}

pub fn eds_service_name(c: &Cluster) -> Option<String> {
    let eds = matches!(c.cluster_discovery_type, Some(cluster::ClusterDiscoveryType::Type(t)) if t == cluster::DiscoveryType::Eds as i32);
    if !eds {
        return None;
    }
    let name = c
        .eds_cluster_config
        .as_ref()
        .map(|e| e.service_name.clone())
        .unwrap_or_default();
    Some(if name.is_empty() {
        c.name.clone()
    } else {
        name
    })
}

/// `assignment` is the cluster's EDS resource, if it has arrived (a cluster without endpoints yet
/// is kept: requests to it fail with 503 until they come).
pub fn compile(
    c: &Cluster,
    assignment: Option<&ClusterLoadAssignment>,
) -> Result<ClusterSpec, String> {
    use cluster::ClusterDiscoveryType as D;
    let endpoints = match c.cluster_discovery_type {
        Some(D::Type(t)) if t == cluster::DiscoveryType::Eds as i32 => {
            assignment.map(endpoints).transpose()?.unwrap_or_default()
        }
        Some(D::Type(t)) if t == cluster::DiscoveryType::Static as i32 => c
            .load_assignment
            .as_ref()
            .map(endpoints)
            .transpose()?
            .unwrap_or_default(),
        _ => return Err("only EDS and STATIC clusters are supported".into()),
    };
    let lb = match cluster::LbPolicy::try_from(c.lb_policy) {
        Ok(cluster::LbPolicy::RoundRobin) => LbPolicy::RoundRobin,
        Ok(cluster::LbPolicy::LeastRequest) => LbPolicy::LeastRequest,
        Ok(cluster::LbPolicy::Random) => LbPolicy::Random,
        Ok(cluster::LbPolicy::RingHash) | Ok(cluster::LbPolicy::Maglev) => LbPolicy::RingHash,
        _ => {
            return Err(format!(
                "load-balancing policy {} is not supported",
                c.lb_policy
            ))
        }
    };
    Ok(ClusterSpec {
        name: c.name.clone(),
        lb,
        upstream: upstream_protocol(c)?,
        endpoints,
        connect_timeout: c
            .connect_timeout
            .as_ref()
            .map(super::route::duration)
            .unwrap_or(Duration::from_secs(5)),
        thresholds: thresholds(c),
        outlier: c.outlier_detection.as_ref().map(|o| OutlierSpec {
            consecutive_5xx: o.consecutive_5xx.as_ref().map(|v| v.value).filter(|_| {
                o.enforcing_consecutive_5xx
                    .as_ref()
                    .is_none_or(|e| e.value > 0)
            }),
            consecutive_gateway_failure: o
                .consecutive_gateway_failure
                .as_ref()
                .map(|v| v.value)
                .filter(|_| {
                    o.enforcing_consecutive_gateway_failure
                        .as_ref()
                        .is_some_and(|e| e.value > 0)
                }),
            interval: o
                .interval
                .as_ref()
                .map(super::route::duration)
                .unwrap_or(Duration::from_secs(10)),
            base_ejection_time: o
                .base_ejection_time
                .as_ref()
                .map(super::route::duration)
                .unwrap_or(Duration::from_secs(30)),
            max_ejection_time: o
                .max_ejection_time
                .as_ref()
                .map(super::route::duration)
                .unwrap_or(Duration::from_secs(300)),
            max_ejection_percent: o
                .max_ejection_percent
                .as_ref()
                .map(|v| v.value)
                .unwrap_or(10)
                .min(100),
        }),
    })
}

fn thresholds(c: &Cluster) -> Thresholds {
    let mut t = Thresholds::default();
    if let Some(th) = c
        .circuit_breakers
        .as_ref()
        .and_then(|cb| cb.thresholds.first())
    {
        let set = |slot: &mut u32, v: &Option<envoy_types::pb::google::protobuf::UInt32Value>| {
            if let Some(v) = v {
                *slot = v.value;
            }
        };
        set(&mut t.max_connections, &th.max_connections);
        set(&mut t.max_pending_requests, &th.max_pending_requests);
        set(&mut t.max_requests, &th.max_requests);
        set(&mut t.max_retries, &th.max_retries);
        t.retry_budget = th.retry_budget.as_ref().map(|b| RetryBudget {
            // Envoy's defaults: 20 % of the active requests, at least 3.
            per_mille: b
                .budget_percent
                .as_ref()
                .map_or(200, |p| (p.value.clamp(0.0, 100.0) * 10.0).round() as u32),
            min_concurrency: b.min_retry_concurrency.as_ref().map_or(3, |v| v.value),
        });
    }
    t
}

/// Healthy (or unknown-health) endpoints with IP addresses. Each locality's weight is shared
/// among its usable endpoints in proportion to their own weights, so a locality keeps its share of
/// traffic while it has any usable endpoint.
fn endpoints(a: &ClusterLoadAssignment) -> Result<Vec<Endpoint>, String> {
    let mut out = Vec::new();
    for locality in &a.endpoints {
        let locality_weight = locality
            .load_balancing_weight
            .as_ref()
            .map(|w| w.value)
            .unwrap_or(1);
        if locality_weight == 0 {
            continue;
        }
        let mut usable = Vec::new();
        for e in &locality.lb_endpoints {
            let health = HealthStatus::try_from(e.health_status).unwrap_or(HealthStatus::Unknown);
            if !matches!(health, HealthStatus::Unknown | HealthStatus::Healthy) {
                continue;
            }
            let Some(HostIdentifier::Endpoint(ep)) = &e.host_identifier else {
                continue;
            };
            let Some(address::Address::SocketAddress(sa)) =
                ep.address.as_ref().and_then(|a| a.address.as_ref())
            else {
                continue;
            };
            let ip: IpAddr = sa
                .address
                .parse()
                .map_err(|_| format!("endpoint address {:?} is not an IP address", sa.address))?;
            let Some(PortSpecifier::PortValue(port)) = sa.port_specifier else {
                return Err("endpoint without a port".into());
            };
            let port =
                u16::try_from(port).map_err(|_| format!("endpoint port {port} out of range"))?;
            let weight = e
                .load_balancing_weight
                .as_ref()
                .map(|w| w.value)
                .unwrap_or(1)
                .max(1);
            usable.push((SocketAddr::new(ip, port), weight));
        }
        let local_total: u64 = usable.iter().map(|(_, w)| u64::from(*w)).sum();
        for (addr, weight) in usable {
            let scaled =
                (u64::from(weight) * u64::from(locality_weight) * 1000 / local_total.max(1)).max(1);
            out.push(Endpoint {
                addr,
                weight: u32::try_from(scaled).unwrap_or(u32::MAX),
            });
        }
    }
    Ok(out)
}

/// The cluster's upstream protocol, from its typed HTTP protocol options.
fn upstream_protocol(c: &Cluster) -> Result<UpstreamProtocol, String> {
    use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
        http_protocol_options::{
            explicit_http_config::ProtocolConfig as P, UpstreamProtocolOptions as U,
        },
        HttpProtocolOptions,
    };
    use prost::Message;
    const KEY: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
    let Some(any) = c.typed_extension_protocol_options.get(KEY) else {
        return Ok(UpstreamProtocol::Downstream);
    };
    let options = HttpProtocolOptions::decode(any.value.as_slice())
        .map_err(|e| format!("{KEY}: cannot decode: {e}"))?;
    Ok(match options.upstream_protocol_options {
        Some(U::ExplicitHttpConfig(e)) => match e.protocol_config {
            Some(P::Http2ProtocolOptions(_)) => UpstreamProtocol::Http2,
            Some(P::HttpProtocolOptions(_)) => UpstreamProtocol::Http1,
            Some(P::Http3ProtocolOptions(_)) => {
                return Err(format!("{KEY}: HTTP/3 upstreams are not supported"))
            }
            None => UpstreamProtocol::Downstream,
        },
        Some(U::AutoConfig(_)) => {
            return Err(format!(
                "{KEY}: auto_config (ALPN) is not supported: plaintext upstreams only"
            ))
        }
        Some(U::UseDownstreamProtocolConfig(_)) | None => UpstreamProtocol::Downstream,
    })
}
