//! Envoy resources as JSON, the way Envoy's own config dump prints them (snake_case fields,
//! `@type` on every Any, enums by name), for `/debug/config_dump` and translation table tests.
//!
//! Only fields translation sets are rendered; a field at its default is left out. A wrapper
//! (`UInt32Value`, `Percent`) where being set to 0 differs from being unset is shown when set.

use crate::resources::NamedResource;
use crate::translate::Translation;
use crate::types::TypeUrl;
use envoy_types::pb::envoy::config::cluster::v3 as cl;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::endpoint::v3 as ep;
use envoy_types::pb::envoy::config::listener::v3 as ls;
use envoy_types::pb::envoy::config::route::v3 as rt;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3 as fault;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3 as tcp;
use envoy_types::pb::envoy::extensions::upstreams::http::v3 as upstream_http;
use envoy_types::pb::envoy::r#type::matcher::v3 as matcher;
use envoy_types::pb::google::protobuf::{Any, Duration};
use prost::{Message, Name};
use serde_json::{json, Map, Value};

/// Builds an object, leaving out nulls, empty arrays/objects/strings, `false` and zero.
#[derive(Default)]
struct Obj(Map<String, Value>);

impl Obj {
    fn put(mut self, key: &str, value: impl Into<Value>) -> Self {
        let v = value.into();
        let empty = match &v {
            Value::Null => true,
            Value::Bool(b) => !b,
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.is_empty(),
            Value::Number(n) => n.as_f64() == Some(0.0),
        };
        if !empty {
            self.0.insert(key.to_string(), v);
        }
        self
    }

    /// Like `put`, but keeps a present-but-empty message as `{}`.
    fn msg(mut self, key: &str, value: Option<Value>) -> Self {
        if let Some(v) = value {
            self.0.insert(key.to_string(), v);
        }
        self
    }

    fn done(self) -> Value {
        Value::Object(self.0)
    }
}

fn list<T>(items: &[T], f: impl Fn(&T) -> Value) -> Value {
    Value::Array(items.iter().map(f).collect())
}

pub fn duration(d: &Duration) -> Value {
    let nanos = d.nanos;
    let text = if nanos == 0 {
        format!("{}s", d.seconds)
    } else if nanos % 1_000_000 == 0 {
        format!("{}.{:03}s", d.seconds, nanos / 1_000_000)
    } else if nanos % 1_000 == 0 {
        format!("{}.{:06}s", d.seconds, nanos / 1_000)
    } else {
        format!("{}.{:09}s", d.seconds, nanos)
    };
    Value::String(text)
}

/// The whole translation, grouped by type, as config dumps show it.
pub fn translation(t: &Translation) -> Value {
    json!({
        "listeners": list(&t.listeners, listener),
        "routes": list(&t.routes, route_configuration),
        "clusters": list(&t.clusters, cluster),
        "endpoints": list(&t.endpoints, load_assignment),
    })
}

/// One encoded resource, decoded and rendered.
pub fn resource(t: TypeUrl, r: &NamedResource) -> Value {
    let bytes = r.any.value.as_slice();
    let rendered = match t {
        TypeUrl::Listener => ls::Listener::decode(bytes).map(|m| listener(&m)),
        TypeUrl::Route => rt::RouteConfiguration::decode(bytes).map(|m| route_configuration(&m)),
        TypeUrl::Cluster => cl::Cluster::decode(bytes).map(|m| cluster(&m)),
        TypeUrl::Endpoint => ep::ClusterLoadAssignment::decode(bytes).map(|m| load_assignment(&m)),
    };
    rendered.unwrap_or_else(|e| json!({ "name": r.name, "error": e.to_string() }))
}

pub fn any(a: &Any) -> Value {
    let bytes = a.value.as_slice();
    let body = if a.type_url == hcm::HttpConnectionManager::type_url() {
        hcm::HttpConnectionManager::decode(bytes)
            .map(|m| http_connection_manager(&m))
            .ok()
    } else if a.type_url == fault::HttpFault::type_url() {
        fault::HttpFault::decode(bytes).map(|m| http_fault(&m)).ok()
    } else if a.type_url == tcp::TcpProxy::type_url() {
        tcp::TcpProxy::decode(bytes).map(|m| tcp_proxy(&m)).ok()
    } else if a.type_url == upstream_http::HttpProtocolOptions::type_url() {
        upstream_http::HttpProtocolOptions::decode(bytes)
            .map(|m| upstream_http_options(&m))
            .ok()
    } else {
        None
    };
    let mut out = Map::new();
    out.insert("@type".into(), Value::String(a.type_url.clone()));
    if let Some(Value::Object(fields)) = body {
        out.extend(fields);
    }
    Value::Object(out)
}

fn address(a: &core::Address) -> Value {
    match &a.address {
        Some(core::address::Address::SocketAddress(s)) => {
            let port = match s.port_specifier {
                Some(core::socket_address::PortSpecifier::PortValue(p)) => p,
                _ => 0,
            };
            json!({ "socket_address": { "address": s.address, "port_value": port } })
        }
        _ => json!({}),
    }
}

fn config_source(c: &core::ConfigSource) -> Value {
    let ads = matches!(
        c.config_source_specifier,
        Some(core::config_source::ConfigSourceSpecifier::Ads(_))
    );
    Obj::default()
        .msg("ads", ads.then(|| json!({})))
        .put(
            "resource_api_version",
            if c.resource_api_version == 2 {
                "V3"
            } else {
                "AUTO"
            },
        )
        .done()
}

// === listeners ===

pub fn listener(l: &ls::Listener) -> Value {
    Obj::default()
        .put("name", l.name.clone())
        .msg("address", l.address.as_ref().map(address))
        .msg("api_listener", l.api_listener.as_ref().map(|a| json!({ "api_listener": a.api_listener.as_ref().map(any) })))
        .put("filter_chains", list(&l.filter_chains, |fc| {
            json!({ "filters": list(&fc.filters, |f| {
                let typed = match &f.config_type { Some(ls::filter::ConfigType::TypedConfig(a)) => any(a), _ => Value::Null };
                Obj::default().put("name", f.name.clone()).put("typed_config", typed).done()
            }) })
        }))
        .done()
}

fn http_connection_manager(h: &hcm::HttpConnectionManager) -> Value {
    let rds = match &h.route_specifier {
        Some(hcm::http_connection_manager::RouteSpecifier::Rds(r)) => Some(json!({
            "config_source": r.config_source.as_ref().map(config_source),
            "route_config_name": r.route_config_name,
        })),
        _ => None,
    };
    Obj::default()
        .put("stat_prefix", h.stat_prefix.clone())
        .put(
            "codec_type",
            hcm::http_connection_manager::CodecType::try_from(h.codec_type)
                .map(|c| c.as_str_name())
                .unwrap_or("UNKNOWN"),
        )
        .msg("rds", rds)
        .put(
            "http_filters",
            list(&h.http_filters, |f| {
                let typed = match &f.config_type {
                    Some(hcm::http_filter::ConfigType::TypedConfig(a)) => any(a),
                    _ => Value::Null,
                };
                Obj::default()
                    .put("name", f.name.clone())
                    .put("typed_config", typed)
                    .done()
            }),
        )
        .done()
}

fn http_fault(f: &fault::HttpFault) -> Value {
    use envoy_types::pb::envoy::extensions::filters::common::fault::v3::fault_delay::FaultDelaySecifier;
    let delay = f.delay.as_ref().map(|d| {
        let fixed = match &d.fault_delay_secifier {
            Some(FaultDelaySecifier::FixedDelay(x)) => duration(x),
            _ => Value::Null,
        };
        Obj::default()
            .put("fixed_delay", fixed)
            .put("percentage", d.percentage.as_ref().map(percent))
            .done()
    });
    let abort = f.abort.as_ref().map(|a| {
        let o = Obj::default().put("percentage", a.percentage.as_ref().map(percent));
        match a.error_type {
            Some(fault::fault_abort::ErrorType::HttpStatus(c)) => o.put("http_status", c),
            Some(fault::fault_abort::ErrorType::GrpcStatus(c)) => {
                o.msg("grpc_status", Some(json!(c)))
            }
            _ => o,
        }
        .done()
    });
    Obj::default()
        .msg("delay", delay)
        .msg("abort", abort)
        .done()
}

fn percent(p: &envoy_types::pb::envoy::r#type::v3::FractionalPercent) -> Value {
    let denominator = ["HUNDRED", "TEN_THOUSAND", "MILLION"]
        .get(p.denominator as usize)
        .copied()
        .unwrap_or("HUNDRED");
    json!({ "numerator": p.numerator, "denominator": denominator })
}

// === routes ===

pub fn route_configuration(r: &rt::RouteConfiguration) -> Value {
    Obj::default()
        .put("name", r.name.clone())
        .put("virtual_hosts", list(&r.virtual_hosts, |v| {
            json!({ "name": v.name, "domains": v.domains, "routes": list(&v.routes, route) })
        }))
        .done()
}

fn route(r: &rt::Route) -> Value {
    let mut o = Obj::default()
        .put("name", r.name.clone())
        .msg("match", r.r#match.as_ref().map(route_match));
    o = match &r.action {
        Some(rt::route::Action::Route(a)) => o.msg("route", Some(route_action(a))),
        Some(rt::route::Action::Redirect(a)) => o.msg("redirect", Some(redirect(a))),
        _ => o,
    };
    let per_filter: Map<String, Value> = r
        .typed_per_filter_config
        .iter()
        .map(|(k, v)| (k.clone(), any(v)))
        .collect();
    o.put(
        "request_headers_to_add",
        list(&r.request_headers_to_add, header_value_option),
    )
    .put(
        "request_headers_to_remove",
        r.request_headers_to_remove.clone(),
    )
    .put(
        "response_headers_to_add",
        list(&r.response_headers_to_add, header_value_option),
    )
    .put(
        "response_headers_to_remove",
        r.response_headers_to_remove.clone(),
    )
    .put("typed_per_filter_config", Value::Object(per_filter))
    .done()
}

fn route_match(m: &rt::RouteMatch) -> Value {
    let mut o = Obj::default();
    o = match &m.path_specifier {
        Some(rt::route_match::PathSpecifier::Prefix(p)) => o.msg("prefix", Some(json!(p))),
        Some(rt::route_match::PathSpecifier::Path(p)) => o.msg("path", Some(json!(p))),
        Some(rt::route_match::PathSpecifier::SafeRegex(r)) => {
            o.msg("safe_regex", Some(json!({ "regex": r.regex })))
        }
        _ => o,
    };
    o.msg(
        "case_sensitive",
        m.case_sensitive.as_ref().map(|b| json!(b.value)),
    )
    .put("headers", list(&m.headers, header_matcher))
    .put(
        "query_parameters",
        list(&m.query_parameters, |q| {
            let o = Obj::default().put("name", q.name.clone());
            match &q.query_parameter_match_specifier {
                Some(rt::query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(s)) => {
                    o.put("string_match", string_matcher(s))
                }
                Some(rt::query_parameter_matcher::QueryParameterMatchSpecifier::PresentMatch(
                    b,
                )) => o.put("present_match", *b),
                None => o,
            }
            .done()
        }),
    )
    .done()
}

fn header_matcher(h: &rt::HeaderMatcher) -> Value {
    use rt::header_matcher::HeaderMatchSpecifier as S;
    let o = Obj::default().put("name", h.name.clone());
    let o = match &h.header_match_specifier {
        Some(S::StringMatch(s)) => o.put("string_match", string_matcher(s)),
        Some(S::PresentMatch(b)) => o.put("present_match", *b),
        _ => o,
    };
    o.put("invert_match", h.invert_match)
        .put(
            "treat_missing_header_as_empty",
            h.treat_missing_header_as_empty,
        )
        .done()
}

fn string_matcher(s: &matcher::StringMatcher) -> Value {
    use matcher::string_matcher::MatchPattern as P;
    let o = match &s.match_pattern {
        Some(P::Exact(v)) => Obj::default().msg("exact", Some(json!(v))),
        Some(P::Prefix(v)) => Obj::default().msg("prefix", Some(json!(v))),
        Some(P::SafeRegex(r)) => {
            Obj::default().msg("safe_regex", Some(json!({ "regex": r.regex })))
        }
        _ => Obj::default(),
    };
    o.put("ignore_case", s.ignore_case).done()
}

fn header_value_option(h: &core::HeaderValueOption) -> Value {
    let action = core::header_value_option::HeaderAppendAction::try_from(h.append_action)
        .map(|a| a.as_str_name())
        .unwrap_or("UNKNOWN");
    let header = h
        .header
        .as_ref()
        .map(|v| json!({ "key": v.key, "value": v.value }));
    Obj::default()
        .msg("header", header)
        .put("append_action", action)
        .done()
}

fn route_action(a: &rt::RouteAction) -> Value {
    use rt::route_action::ClusterSpecifier as C;
    let o = match &a.cluster_specifier {
        Some(C::Cluster(c)) => Obj::default().put("cluster", c.clone()),
        Some(C::WeightedClusters(w)) => Obj::default().put("weighted_clusters", json!({ "clusters": list(&w.clusters, |c| {
            Obj::default()
                .put("name", c.name.clone())
                .put("weight", c.weight.as_ref().map(|w| w.value))
                .put("request_headers_to_add", list(&c.request_headers_to_add, header_value_option))
                .put("request_headers_to_remove", c.request_headers_to_remove.clone())
                .put("response_headers_to_add", list(&c.response_headers_to_add, header_value_option))
                .put("response_headers_to_remove", c.response_headers_to_remove.clone())
                .done()
        }) })),
        _ => Obj::default(),
    };
    let host_rewrite = match &a.host_rewrite_specifier {
        Some(rt::route_action::HostRewriteSpecifier::HostRewriteLiteral(h)) => json!(h),
        _ => Value::Null,
    };
    o.msg("timeout", a.timeout.as_ref().map(duration))
        .msg(
            "retry_policy",
            a.retry_policy.as_ref().map(|r| {
                Obj::default()
                    .put("retry_on", r.retry_on.clone())
                    .put("retriable_status_codes", r.retriable_status_codes.clone())
                    .put("num_retries", r.num_retries.as_ref().map(|n| n.value))
                    .put("per_try_timeout", r.per_try_timeout.as_ref().map(duration))
                    .done()
            }),
        )
        .put("hash_policy", list(&a.hash_policy, hash_policy))
        .msg(
            "max_stream_duration",
            a.max_stream_duration.as_ref().map(
                |m| json!({ "max_stream_duration": m.max_stream_duration.as_ref().map(duration) }),
            ),
        )
        .put(
            "request_mirror_policies",
            list(&a.request_mirror_policies, |m| {
                Obj::default()
                    .put("cluster", m.cluster.clone())
                    .put(
                        "runtime_fraction",
                        m.runtime_fraction
                            .as_ref()
                            .and_then(|f| f.default_value.as_ref())
                            .map(|p| json!({ "default_value": percent(p) })),
                    )
                    .done()
            }),
        )
        .put("prefix_rewrite", a.prefix_rewrite.clone())
        .msg("regex_rewrite", a.regex_rewrite.as_ref().map(regex_rewrite))
        .put("host_rewrite_literal", host_rewrite)
        .done()
}

fn hash_policy(h: &rt::route_action::HashPolicy) -> Value {
    use rt::route_action::hash_policy::PolicySpecifier as P;
    match &h.policy_specifier {
        Some(P::Header(x)) => {
            let rewrite = x.regex_rewrite.as_ref().map(regex_rewrite);
            json!({ "header": Obj::default().put("header_name", x.header_name.clone()).msg("regex_rewrite", rewrite).done() })
        }
        Some(P::Cookie(c)) => {
            json!({ "cookie": Obj::default().put("name", c.name.clone()).put("path", c.path.clone()).put("ttl", c.ttl.as_ref().map(duration)).done() })
        }
        Some(P::QueryParameter(q)) => json!({ "query_parameter": { "name": q.name } }),
        Some(P::ConnectionProperties(c)) => {
            json!({ "connection_properties": { "source_ip": c.source_ip } })
        }
        _ => json!({}),
    }
}

fn regex_rewrite(r: &matcher::RegexMatchAndSubstitute) -> Value {
    let regex = r.pattern.as_ref().map(|p| p.regex.clone());
    json!({ "pattern": { "regex": regex }, "substitution": r.substitution })
}

fn redirect(r: &rt::RedirectAction) -> Value {
    use rt::redirect_action::{PathRewriteSpecifier as P, SchemeRewriteSpecifier as S};
    let code = rt::redirect_action::RedirectResponseCode::try_from(r.response_code)
        .map(|c| c.as_str_name())
        .unwrap_or("UNKNOWN");
    let mut o = Obj::default()
        .put("host_redirect", r.host_redirect.clone())
        .put("port_redirect", r.port_redirect);
    if let Some(S::SchemeRedirect(s)) = &r.scheme_rewrite_specifier {
        o = o.put("scheme_redirect", s.clone());
    }
    match &r.path_rewrite_specifier {
        Some(P::PathRedirect(p)) => o = o.put("path_redirect", p.clone()),
        Some(P::PrefixRewrite(p)) => o = o.put("prefix_rewrite", p.clone()),
        Some(P::RegexRewrite(x)) => o = o.msg("regex_rewrite", Some(regex_rewrite(x))),
        _ => {}
    }
    o.put("response_code", code)
        .put("strip_query", r.strip_query)
        .done()
}

fn tcp_proxy(t: &tcp::TcpProxy) -> Value {
    use tcp::tcp_proxy::ClusterSpecifier as C;
    let o = Obj::default().put("stat_prefix", t.stat_prefix.clone());
    match &t.cluster_specifier {
        Some(C::Cluster(c)) => o.put("cluster", c.clone()),
        Some(C::WeightedClusters(w)) => o.put(
            "weighted_clusters",
            json!({ "clusters": list(&w.clusters, |c| json!({ "name": c.name, "weight": c.weight })) }),
        ),
        None => o,
    }
    .done()
}

// === clusters and endpoints ===

fn upstream_http_options(o: &upstream_http::HttpProtocolOptions) -> Value {
    use upstream_http::http_protocol_options::UpstreamProtocolOptions as U;
    let common = o.common_http_protocol_options.as_ref().map(|c| {
        Obj::default()
            .put("idle_timeout", c.idle_timeout.as_ref().map(duration))
            .put(
                "max_requests_per_connection",
                c.max_requests_per_connection.as_ref().map(|v| v.value),
            )
            .done()
    });
    let http2 = |h: &envoy_types::pb::envoy::config::core::v3::Http2ProtocolOptions| {
        Obj::default()
            .put(
                "max_concurrent_streams",
                h.max_concurrent_streams.as_ref().map(|v| v.value),
            )
            .done()
    };
    let (downstream, explicit) = match &o.upstream_protocol_options {
        Some(U::UseDownstreamProtocolConfig(d)) => (
            Some(
                Obj::default()
                    .msg(
                        "http_protocol_options",
                        d.http_protocol_options.as_ref().map(|_| json!({})),
                    )
                    .msg(
                        "http2_protocol_options",
                        d.http2_protocol_options.as_ref().map(http2),
                    )
                    .done(),
            ),
            None,
        ),
        Some(U::ExplicitHttpConfig(e)) => {
            use upstream_http::http_protocol_options::explicit_http_config::ProtocolConfig as P;
            let config = match &e.protocol_config {
                Some(P::Http2ProtocolOptions(h)) => json!({"http2_protocol_options": http2(h)}),
                Some(P::HttpProtocolOptions(_)) => json!({"http_protocol_options": {}}),
                Some(P::Http3ProtocolOptions(_)) => json!({"http3_protocol_options": {}}),
                None => json!({}),
            };
            (None, Some(config))
        }
        _ => (None, None),
    };
    Obj::default()
        .msg("common_http_protocol_options", common)
        .msg("explicit_http_config", explicit)
        .msg("use_downstream_protocol_config", downstream)
        .done()
}

pub fn cluster(c: &cl::Cluster) -> Value {
    use cl::cluster::{ClusterDiscoveryType, DiscoveryType, LbConfig};
    let kind = match c.cluster_discovery_type {
        Some(ClusterDiscoveryType::Type(t)) => DiscoveryType::try_from(t).ok(),
        _ => None,
    };
    // By the enum, not by position in a list of names: LbPolicy has a reserved hole at 4.
    let lb = cl::cluster::LbPolicy::try_from(c.lb_policy)
        .map(|p| p.as_str_name())
        .unwrap_or("UNKNOWN");
    let ring = match &c.lb_config {
        Some(LbConfig::RingHashLbConfig(r)) => Some(
            Obj::default()
                .put(
                    "minimum_ring_size",
                    r.minimum_ring_size.as_ref().map(|v| v.value),
                )
                .done(),
        ),
        _ => None,
    };
    Obj::default()
        .put("name", c.name.clone())
        .put("type", kind.map(|k| k.as_str_name()))
        .msg(
            "eds_cluster_config",
            c.eds_cluster_config.as_ref().map(|e| {
                json!({
                    "eds_config": e.eds_config.as_ref().map(config_source),
                    "service_name": e.service_name,
                })
            }),
        )
        .put("connect_timeout", c.connect_timeout.as_ref().map(duration))
        .msg("lb_policy", Some(json!(lb)))
        .msg("ring_hash_lb_config", ring)
        .msg(
            "common_lb_config",
            c.common_lb_config.as_ref().map(|l| {
                Obj::default()
                    .msg(
                        "healthy_panic_threshold",
                        l.healthy_panic_threshold
                            .as_ref()
                            .map(|p| json!({ "value": p.value })),
                    )
                    .done()
            }),
        )
        .msg(
            "circuit_breakers",
            c.circuit_breakers.as_ref().map(|cb| {
                json!({ "thresholds": list(&cb.thresholds, |t| {
            Obj::default()
                .put("max_connections", t.max_connections.as_ref().map(|v| v.value))
                .put("max_pending_requests", t.max_pending_requests.as_ref().map(|v| v.value))
                .put("max_requests", t.max_requests.as_ref().map(|v| v.value))
                .put("max_retries", t.max_retries.as_ref().map(|v| v.value))
                .done()
        }) })
            }),
        )
        .msg(
            "outlier_detection",
            c.outlier_detection.as_ref().map(|o| {
                Obj::default()
                    .msg("consecutive_5xx", wrapped(&o.consecutive_5xx))
                    .msg(
                        "enforcing_consecutive_5xx",
                        wrapped(&o.enforcing_consecutive_5xx),
                    )
                    .msg(
                        "consecutive_gateway_failure",
                        wrapped(&o.consecutive_gateway_failure),
                    )
                    .msg(
                        "enforcing_consecutive_gateway_failure",
                        wrapped(&o.enforcing_consecutive_gateway_failure),
                    )
                    .msg("enforcing_success_rate", wrapped(&o.enforcing_success_rate))
                    .put("interval", o.interval.as_ref().map(duration))
                    .put(
                        "base_ejection_time",
                        o.base_ejection_time.as_ref().map(duration),
                    )
                    .msg("max_ejection_percent", wrapped(&o.max_ejection_percent))
                    .done()
            }),
        )
        .msg(
            "load_assignment",
            c.load_assignment.as_ref().map(load_assignment),
        )
        .put(
            "typed_extension_protocol_options",
            Value::Object(
                c.typed_extension_protocol_options
                    .iter()
                    .map(|(k, v)| (k.clone(), any(v)))
                    .collect(),
            ),
        )
        .done()
}

/// A `UInt32Value` as its number when set, 0 included.
fn wrapped(v: &Option<envoy_types::pb::google::protobuf::UInt32Value>) -> Option<Value> {
    v.as_ref().map(|v| json!(v.value))
}

pub fn load_assignment(c: &ep::ClusterLoadAssignment) -> Value {
    json!({
        "cluster_name": c.cluster_name,
        "endpoints": list(&c.endpoints, |l| {
            let locality = l.locality.as_ref().map(|x| {
                Obj::default().put("region", x.region.clone()).put("zone", x.zone.clone()).put("sub_zone", x.sub_zone.clone()).done()
            });
            Obj::default()
                .msg("locality", locality)
                .put("load_balancing_weight", l.load_balancing_weight.as_ref().map(|w| w.value))
                .put("lb_endpoints", list(&l.lb_endpoints, lb_endpoint))
                .done()
        }),
    })
}

fn lb_endpoint(e: &ep::LbEndpoint) -> Value {
    let endpoint = match &e.host_identifier {
        Some(ep::lb_endpoint::HostIdentifier::Endpoint(x)) => {
            x.address.as_ref().map(|a| json!({ "address": address(a) }))
        }
        _ => None,
    };
    let health = core::HealthStatus::try_from(e.health_status)
        .ok()
        .map(|h| h.as_str_name());
    Obj::default()
        .msg("endpoint", endpoint)
        .put("health_status", health)
        .put(
            "load_balancing_weight",
            e.load_balancing_weight.as_ref().map(|w| w.value),
        )
        .done()
}
