//! Route configurations compiled for the data path: virtual hosts indexed by domain, routes in
//! order with their matchers, and what to do with a matched request.

use super::hash::HashKey;
use super::matcher::{HeaderMatch, PathMatch, QueryMatch};
use super::path_rewrite::PathRewrite;
use crate::metrics::Destination;
use envoy_types::pb::envoy::config::core::v3::{
    header_value_option::HeaderAppendAction, HeaderValueOption,
};
use envoy_types::pb::envoy::config::route::v3 as rt;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use http::{HeaderName, HeaderValue};
use prost::Message;
use std::sync::Arc;
use std::time::Duration;

pub const FAULT_FILTER: &str = "envoy.filters.http.fault";

#[derive(Debug, Default)]
pub struct RouteConfig {
    pub name: String,
    pub vhosts: Vec<VirtualHost>,
    exact: foldhash::HashMap<String, usize>,
    /// `*.example.com` as (`.example.com`, vhost), longest first.
    suffix: Vec<(String, usize)>,
    /// `example.*` as (`example.`, vhost), longest first.
    prefix: Vec<(String, usize)>,
    any: Option<usize>,
}

impl RouteConfig {
    /// The virtual host for an authority (Host header or `:authority`), Envoy's order: exact,
    /// then suffix wildcards, then prefix wildcards (longest first), then `*`.
    pub fn vhost(&self, authority: &str) -> Option<&VirtualHost> {
        // Lower-cased only when it has to be: clients send lower case almost always.
        let lowered;
        let host = if authority.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = authority.to_ascii_lowercase();
            lowered.as_str()
        } else {
            authority
        };
        let found = self
            .exact
            .get(host)
            .copied()
            .or_else(|| {
                self.suffix
                    .iter()
                    .find(|(s, _)| host.ends_with(s.as_str()))
                    .map(|(_, i)| *i)
            })
            .or_else(|| {
                self.prefix
                    .iter()
                    .find(|(p, _)| host.starts_with(p.as_str()))
                    .map(|(_, i)| *i)
            })
            .or(self.any);
        found.and_then(|i| self.vhosts.get(i))
    }
}

#[derive(Debug)]
pub struct VirtualHost {
    pub name: String,
    pub routes: Vec<Route>,
}

#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub path: PathMatch,
    pub case_sensitive: bool,
    pub headers: Vec<HeaderMatch>,
    pub query: Vec<QueryMatch>,
    pub action: Action,
    pub request_ops: HeaderOps,
    pub response_ops: HeaderOps,
    pub fault: Option<Fault>,
}

#[derive(Debug)]
pub enum Action {
    Forward(Forward),
    Redirect(Redirect),
}

#[derive(Debug)]
pub struct Forward {
    pub clusters: Vec<WeightedCluster>,
    pub total_weight: u64,
    /// `None`: no timeout (Envoy's `0s`).
    pub timeout: Option<Duration>,
    pub retry: Option<RetrySpec>,
    /// `None` for most routes: their path is forwarded as received, untouched.
    pub path_rewrite: Option<PathRewrite>,
    pub host_rewrite: Option<HeaderValue>,
    pub mirrors: Vec<Mirror>,
    pub hash: Vec<HashKey>,
}

#[derive(Debug)]
pub struct WeightedCluster {
    pub name: String,
    /// Its requests' destination labels, made once here rather than per request.
    pub destination: Arc<Destination>,
    pub weight: u64,
    pub request_ops: HeaderOps,
    pub response_ops: HeaderOps,
}

#[derive(Debug, Clone)]
pub struct Mirror {
    pub cluster: String,
    /// Parts per million of requests mirrored.
    pub ppm: u32,
}

#[derive(Debug, Clone, Default)]
pub struct RetrySpec {
    pub num_retries: u32,
    pub per_try_timeout: Option<Duration>,
    pub on_5xx: bool,
    pub on_gateway_error: bool,
    pub on_connect_failure: bool,
    pub on_reset: bool,
    pub on_retriable_codes: bool,
    pub retriable_codes: Vec<u16>,
    /// gRPC status codes that are retried (cancelled, deadline-exceeded, resource-exhausted, unavailable).
    pub grpc_codes: Vec<u32>,
    /// `retriable-4xx`: a 409 is retried.
    pub on_conflict: bool,
    /// The back-off between tries: `retry_back_off`'s base and maximum interval (Envoy's
    /// defaults: 25 ms, and ten times the base).
    pub back_off_base: Duration,
    pub back_off_max: Duration,
}

impl RetrySpec {
    /// How long to wait before try `n + 1` (`n` ≥ 1): full jitter over base × 2^(n-1), capped.
    pub fn back_off(&self, n: u32) -> Duration {
        let ceiling = self
            .back_off_base
            .saturating_mul(1 << (n.max(1) - 1).min(16))
            .min(self.back_off_max);
        ceiling.mul_f64(rand::random::<f64>())
    }
}

#[derive(Debug, Clone)]
pub struct Redirect {
    pub host: Option<String>,
    pub port: Option<u32>,
    pub scheme: Option<String>,
    pub path: RedirectPath,
    /// The request's query string is left out (not when `path` brings its own).
    pub strip_query: bool,
    pub status: u16,
}

/// The path of a redirect's `Location`.
#[derive(Debug, Clone)]
pub enum RedirectPath {
    /// The request's path.
    Kept,
    /// `path_redirect`: this path; with a query string of its own, the request's is dropped.
    Replaced(String),
    /// `prefix_rewrite` or `regex_rewrite` of the request's path.
    Rewritten(PathRewrite),
}

#[derive(Debug, Clone)]
pub struct Fault {
    pub delay: Option<(Duration, u32)>,
    /// (HTTP status, gRPC status, ppm)
    pub abort: Option<(Option<u16>, Option<u32>, u32)>,
}

#[derive(Debug, Default, Clone)]
pub struct HeaderOps {
    /// (name, value, overwrite): overwrite replaces existing values, else the value is appended.
    pub add: Vec<(HeaderName, HeaderValue, bool)>,
    pub remove: Vec<HeaderName>,
}

impl HeaderOps {
    fn compile(add: &[HeaderValueOption], remove: &[String]) -> Result<Self, String> {
        let mut ops = HeaderOps::default();
        for h in add {
            let Some(hv) = &h.header else { continue };
            let name = HeaderName::try_from(hv.key.as_str())
                .map_err(|_| format!("invalid header name {:?}", hv.key))?;
            let value = HeaderValue::try_from(hv.value.as_str())
                .map_err(|_| format!("invalid value for header {:?}", hv.key))?;
            let overwrite = h.append_action == HeaderAppendAction::OverwriteIfExistsOrAdd as i32
                || h.append_action == HeaderAppendAction::OverwriteIfExists as i32;
            ops.add.push((name, value, overwrite));
        }
        for r in remove {
            ops.remove.push(
                HeaderName::try_from(r.as_str())
                    .map_err(|_| format!("invalid header name {r:?}"))?,
            );
        }
        Ok(ops)
    }

    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }

    pub fn apply(&self, headers: &mut http::HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value, overwrite) in &self.add {
            if *overwrite {
                headers.insert(name.clone(), value.clone());
            } else {
                headers.append(name.clone(), value.clone());
            }
        }
    }
}

// === compile ===

pub fn compile(rc: &rt::RouteConfiguration) -> Result<RouteConfig, String> {
    let mut out = RouteConfig {
        name: rc.name.clone(),
        ..Default::default()
    };
    for (i, vh) in rc.virtual_hosts.iter().enumerate() {
        for d in &vh.domains {
            let d = d.to_ascii_lowercase();
            if d == "*" {
                out.any.get_or_insert(i);
            } else if let Some(suffix) = d.strip_prefix('*') {
                out.suffix.push((suffix.to_string(), i));
            } else if let Some(prefix) = d.strip_suffix('*') {
                out.prefix.push((prefix.to_string(), i));
            } else if out.exact.insert(d.clone(), i).is_some() {
                return Err(format!("domain {d:?} is in more than one virtual host"));
            }
        }
        let routes = vh
            .routes
            .iter()
            .map(|r| {
                route(r).map_err(|e| format!("virtual host {}: route {:?}: {e}", vh.name, r.name))
            })
            .collect::<Result<Vec<_>, _>>()?;
        out.vhosts.push(VirtualHost {
            name: vh.name.clone(),
            routes,
        });
    }
    out.suffix.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
    out.prefix.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    Ok(out)
}

fn route(r: &rt::Route) -> Result<Route, String> {
    let m = r.r#match.clone().unwrap_or_default();
    let case_sensitive = m.case_sensitive.as_ref().is_none_or(|b| b.value);
    let action = match &r.action {
        Some(rt::route::Action::Route(a)) => Action::Forward(forward(a)?),
        Some(rt::route::Action::Redirect(a)) => Action::Redirect(redirect(a)?),
        _ => return Err("only route and redirect actions are supported".into()),
    };
    let fault = match r.typed_per_filter_config.get(FAULT_FILTER) {
        Some(any) => Some(fault(
            &HttpFault::decode(any.value.as_slice()).map_err(|e| format!("fault config: {e}"))?,
        )),
        None => None,
    };
    Ok(Route {
        name: r.name.clone(),
        path: PathMatch::compile(m.path_specifier.as_ref(), case_sensitive)?,
        case_sensitive,
        headers: m
            .headers
            .iter()
            .map(HeaderMatch::compile)
            .collect::<Result<_, _>>()?,
        query: m
            .query_parameters
            .iter()
            .map(QueryMatch::compile)
            .collect::<Result<_, _>>()?,
        action,
        request_ops: HeaderOps::compile(&r.request_headers_to_add, &r.request_headers_to_remove)?,
        response_ops: HeaderOps::compile(
            &r.response_headers_to_add,
            &r.response_headers_to_remove,
        )?,
        fault,
    })
}

pub(super) fn duration(d: &envoy_types::pb::google::protobuf::Duration) -> Duration {
    Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32)
}

fn forward(a: &rt::RouteAction) -> Result<Forward, String> {
    use rt::route_action::ClusterSpecifier as C;
    let clusters = match &a.cluster_specifier {
        Some(C::Cluster(name)) => vec![WeightedCluster {
            name: name.clone(),
            destination: Destination::of_cluster(name),
            weight: 1,
            request_ops: HeaderOps::default(),
            response_ops: HeaderOps::default(),
        }],
        Some(C::WeightedClusters(w)) => w
            .clusters
            .iter()
            .filter(|c| c.weight.as_ref().is_some_and(|w| w.value > 0))
            .map(|c| {
                Ok(WeightedCluster {
                    name: c.name.clone(),
                    destination: Destination::of_cluster(&c.name),
                    weight: u64::from(c.weight.as_ref().map(|w| w.value).unwrap_or(0)),
                    request_ops: HeaderOps::compile(
                        &c.request_headers_to_add,
                        &c.request_headers_to_remove,
                    )?,
                    response_ops: HeaderOps::compile(
                        &c.response_headers_to_add,
                        &c.response_headers_to_remove,
                    )?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?,
        _ => return Err("a route needs a cluster or weighted clusters".into()),
    };
    if clusters.is_empty() {
        return Err("weighted clusters: no cluster has a weight above 0".into());
    }
    let total_weight = clusters.iter().map(|c| c.weight).sum();
    let host_rewrite = match &a.host_rewrite_specifier {
        Some(rt::route_action::HostRewriteSpecifier::HostRewriteLiteral(h)) => Some(
            HeaderValue::try_from(h.as_str()).map_err(|_| format!("invalid host rewrite {h:?}"))?,
        ),
        _ => None,
    };
    Ok(Forward {
        clusters,
        total_weight,
        timeout: a.timeout.as_ref().map(duration).filter(|d| !d.is_zero()),
        retry: a.retry_policy.as_ref().map(retry),
        path_rewrite: PathRewrite::of_route(&a.prefix_rewrite, a.regex_rewrite.as_ref())?,
        host_rewrite,
        mirrors: a
            .request_mirror_policies
            .iter()
            .map(|m| Mirror {
                cluster: m.cluster.clone(),
                ppm: ppm(m
                    .runtime_fraction
                    .as_ref()
                    .and_then(|f| f.default_value.as_ref())),
            })
            .collect(),
        hash: hash_keys(&a.hash_policy)?,
    })
}

fn ppm(p: Option<&envoy_types::pb::envoy::r#type::v3::FractionalPercent>) -> u32 {
    let Some(p) = p else { return 1_000_000 };
    let scale = match p.denominator {
        0 => 10_000,
        1 => 100,
        _ => 1,
    };
    p.numerator.saturating_mul(scale).min(1_000_000)
}

fn hash_keys(policies: &[rt::route_action::HashPolicy]) -> Result<Vec<HashKey>, String> {
    let mut keys = Vec::with_capacity(policies.len());
    for p in policies {
        keys.extend(HashKey::compile(p)?);
    }
    Ok(keys)
}

fn retry(p: &rt::RetryPolicy) -> RetrySpec {
    let mut spec = RetrySpec {
        num_retries: p.num_retries.as_ref().map(|n| n.value).unwrap_or(1),
        per_try_timeout: p
            .per_try_timeout
            .as_ref()
            .map(duration)
            .filter(|d| !d.is_zero()),
        retriable_codes: p
            .retriable_status_codes
            .iter()
            .filter_map(|c| u16::try_from(*c).ok())
            .collect(),
        ..Default::default()
    };
    let base = p
        .retry_back_off
        .as_ref()
        .and_then(|b| b.base_interval.as_ref())
        .map(duration)
        .filter(|d| !d.is_zero())
        .unwrap_or(Duration::from_millis(25));
    spec.back_off_base = base;
    spec.back_off_max = p
        .retry_back_off
        .as_ref()
        .and_then(|b| b.max_interval.as_ref())
        .map(duration)
        .filter(|d| !d.is_zero())
        .unwrap_or(base * 10)
        .max(base);
    for cond in p.retry_on.split(',').map(str::trim) {
        match cond {
            "5xx" => spec.on_5xx = true,
            "gateway-error" => spec.on_gateway_error = true,
            "connect-failure" => spec.on_connect_failure = true,
            "reset" | "refused-stream" => spec.on_reset = true,
            "retriable-status-codes" => spec.on_retriable_codes = true,
            "cancelled" => spec.grpc_codes.push(1),
            "deadline-exceeded" => spec.grpc_codes.push(4),
            "resource-exhausted" => spec.grpc_codes.push(8),
            "unavailable" => spec.grpc_codes.push(14),
            "retriable-4xx" => spec.on_conflict = true,
            "" => {}
            other => tracing::debug!(condition = other, "retry condition not supported; ignored"),
        }
    }
    spec
}

fn redirect(r: &rt::RedirectAction) -> Result<Redirect, String> {
    use rt::redirect_action::{PathRewriteSpecifier as P, SchemeRewriteSpecifier as S};
    let status = match r.response_code {
        1 => 302,
        2 => 303,
        3 => 307,
        4 => 308,
        _ => 301,
    };
    let path = match &r.path_rewrite_specifier {
        None => RedirectPath::Kept,
        Some(P::PathRedirect(p)) => RedirectPath::Replaced(p.clone()),
        Some(P::PrefixRewrite(p)) => RedirectPath::Rewritten(PathRewrite::Prefix(p.clone())),
        Some(P::RegexRewrite(x)) => RedirectPath::Rewritten(PathRewrite::regex(x)?),
        Some(_) => return Err(
            "redirect: only path_redirect, prefix_rewrite and regex_rewrite rewrite the path here"
                .into(),
        ),
    };
    Ok(Redirect {
        host: Some(r.host_redirect.clone()).filter(|h| !h.is_empty()),
        port: Some(r.port_redirect).filter(|p| *p != 0),
        scheme: match &r.scheme_rewrite_specifier {
            Some(S::SchemeRedirect(s)) => Some(s.clone()),
            Some(S::HttpsRedirect(true)) => Some("https".into()),
            _ => None,
        },
        path,
        strip_query: r.strip_query,
        status,
    })
}

fn fault(f: &HttpFault) -> Fault {
    use envoy_types::pb::envoy::extensions::filters::common::fault::v3::fault_delay::FaultDelaySecifier;
    use envoy_types::pb::envoy::extensions::filters::http::fault::v3::fault_abort::ErrorType;
    Fault {
        delay: f
            .delay
            .as_ref()
            .and_then(|d| match &d.fault_delay_secifier {
                Some(FaultDelaySecifier::FixedDelay(x)) => {
                    Some((duration(x), ppm(d.percentage.as_ref())))
                }
                _ => None,
            }),
        abort: f.abort.as_ref().map(|a| {
            let pct = ppm(a.percentage.as_ref());
            match a.error_type {
                Some(ErrorType::HttpStatus(c)) => (u16::try_from(c).ok(), None, pct),
                Some(ErrorType::GrpcStatus(c)) => (None, Some(c), pct),
                _ => (Some(503), None, pct),
            }
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: i64, ms: i32) -> envoy_types::pb::google::protobuf::Duration {
        envoy_types::pb::google::protobuf::Duration {
            seconds: s,
            nanos: ms * 1_000_000,
        }
    }

    #[test]
    fn retry_back_off_and_conditions_come_from_the_policy() {
        let defaults = retry(&rt::RetryPolicy {
            retry_on: "5xx,retriable-4xx,not-a-condition".into(),
            ..Default::default()
        });
        assert!(defaults.on_5xx && defaults.on_conflict);
        let retried = |code| crate::http::forward::classify_status(code, None, Some(&defaults)).1;
        assert!(retried(409) && retried(503) && !retried(404));
        assert_eq!(defaults.back_off_base, Duration::from_millis(25));
        assert_eq!(defaults.back_off_max, Duration::from_millis(250));
        let set = retry(&rt::RetryPolicy {
            retry_on: "gateway-error".into(),
            retry_back_off: Some(rt::retry_policy::RetryBackOff {
                base_interval: Some(secs(0, 100)),
                max_interval: Some(secs(1, 0)),
            }),
            ..Default::default()
        });
        assert_eq!(set.back_off_base, Duration::from_millis(100));
        assert_eq!(set.back_off_max, Duration::from_secs(1));
        for n in 1..=8 {
            let ceiling = (Duration::from_millis(100) * (1 << (n - 1))).min(Duration::from_secs(1));
            for _ in 0..50 {
                assert!(set.back_off(n) <= ceiling, "try {n}");
            }
        }
    }
}
