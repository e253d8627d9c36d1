//! RouteConfigurations: a VirtualService's `http` routes, in order, become Envoy routes of one
//! virtual host per service port. Without a VirtualService a service gets one default route to
//! its own cluster; with one, requests no route matches get 404, as in Istio. A VirtualService
//! none of whose routes applies to the node and port counts as absent (Istio discards it).

use super::hash_policy::{destinations_hash_policy, hash_policy};
use super::{cluster_name, pb, Context};
use envoy_types::pb::envoy::config::core::v3::{
    header_value_option::HeaderAppendAction, HeaderValue, HeaderValueOption,
};
use envoy_types::pb::envoy::config::route::v3::{
    header_matcher::HeaderMatchSpecifier,
    query_parameter_matcher::QueryParameterMatchSpecifier,
    redirect_action::{PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier},
    route::Action,
    route_action::{self, ClusterSpecifier, MaxStreamDuration, RequestMirrorPolicy},
    route_match::PathSpecifier,
    weighted_cluster::ClusterWeight,
    HeaderMatcher, QueryParameterMatcher, RedirectAction, RetryPolicy, Route, RouteAction,
    RouteConfiguration, RouteMatch, VirtualHost, WeightedCluster,
};
use envoy_types::pb::envoy::extensions::filters::common::fault::v3 as common_fault;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3 as fault;
use envoy_types::pb::envoy::r#type::matcher::v3::RegexMatchAndSubstitute;
use envoy_types::pb::google::protobuf::BoolValue;
use graymesh_model::istio::{
    grpc_status_code, DerivePort, Destination, HeaderOperations, Headers, HttpFaultInjection,
    HttpMatchRequest, HttpRedirect, HttpRetry, HttpRoute, HttpRouteDestination,
    OptionalStringMatch, StringMatch, VirtualService,
};
use graymesh_model::Resource;
use graymesh_sources::Service;

pub const FAULT_FILTER: &str = "envoy.filters.http.fault";

/// The route configuration a listener for `service:port` uses. It serves exactly one service, so
/// its one virtual host matches any authority.
pub fn route_config(ctx: &Context<'_>, service: &Service, port: u32) -> RouteConfiguration {
    let mut vhost = virtual_host(ctx, service, port);
    vhost.domains = vec!["*".to_string()];
    RouteConfiguration {
        name: format!("{}:{port}", service.host),
        virtual_hosts: vec![vhost],
        ..Default::default()
    }
}

/// The virtual host of `service:port`, with every name a client may use for it as domains.
pub fn virtual_host(ctx: &Context<'_>, service: &Service, port: u32) -> VirtualHost {
    let mut routes: Vec<Route> = ctx
        .virtual_services(&service.host)
        .iter()
        .flat_map(|vs| vs_routes(ctx, vs, Some(&service.host), port))
        .collect();
    if routes.is_empty() {
        routes.push(default_route(ctx, &service.host, port));
    }
    VirtualHost {
        name: format!("{}:{port}", service.host),
        domains: domains(ctx, service, port),
        routes,
        ..Default::default()
    }
}

fn domains(ctx: &Context<'_>, service: &Service, port: u32) -> Vec<String> {
    let mut names = vec![service.host.clone()];
    let suffix = format!(
        ".{}.{}",
        service.namespace,
        graymesh_model::host::CLUSTER_DOMAIN
    );
    if let Some(short) = service.host.strip_suffix(&suffix) {
        names.push(format!("{short}.{}", service.namespace));
        names.push(format!("{short}.{}.svc", service.namespace));
        if service.namespace == ctx.class.namespace {
            names.push(short.to_string());
        }
    }
    names
        .iter()
        .flat_map(|n| [n.clone(), format!("{n}:{port}")])
        .collect()
}

fn default_route(ctx: &Context<'_>, host: &str, port: u32) -> Route {
    Route {
        name: "default".into(),
        r#match: Some(RouteMatch {
            path_specifier: Some(PathSpecifier::Prefix("/".into())),
            ..Default::default()
        }),
        action: Some(Action::Route(RouteAction {
            cluster_specifier: Some(ClusterSpecifier::Cluster(cluster_name(port, None, host))),
            timeout: Some(pb::duration(std::time::Duration::ZERO)),
            // A consistent-hash DestinationRule needs the hash key on the route even here.
            hash_policy: hash_policy(ctx, host, None).into_iter().collect(),
            retry_policy: retry_policy(&DEFAULT_RETRIES),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// The Envoy routes of a VirtualService's `http` routes that apply on `port`. `routed_host` is the
/// service the routes serve (a sidecar's virtual host), `None` at a gateway, where `port` is the
/// gateway server's port.
pub(super) fn vs_routes(
    ctx: &Context<'_>,
    vs: &Resource<VirtualService>,
    routed_host: Option<&str>,
    port: u32,
) -> Vec<Route> {
    let mut out = Vec::new();
    for (i, http) in vs.spec.http.iter().enumerate() {
        let name = http
            .name
            .clone()
            .unwrap_or_else(|| format!("{}.{i}", vs.meta.name));
        let matches: Vec<Option<&HttpMatchRequest>> = if http.matches.is_empty() {
            vec![None]
        } else {
            http.matches.iter().map(Some).collect()
        };
        for m in matches {
            if !applies(ctx, m, port) {
                continue;
            }
            out.push(route(ctx, vs, http, m, &name, routed_host, port));
        }
    }
    out
}

/// A match with a `port` or `sourceLabels` applies only to that port and to nodes so labelled.
fn applies(ctx: &Context<'_>, m: Option<&HttpMatchRequest>, port: u32) -> bool {
    let Some(m) = m else { return true };
    m.port.is_none_or(|p| p == port) && ctx.node_has_labels(&m.source_labels)
}

fn route(
    ctx: &Context<'_>,
    vs: &Resource<VirtualService>,
    http: &HttpRoute,
    m: Option<&HttpMatchRequest>,
    name: &str,
    routed_host: Option<&str>,
    port: u32,
) -> Route {
    let mut r = Route {
        name: name.to_string(),
        r#match: Some(route_match(m)),
        ..Default::default()
    };
    if let Some(h) = http.headers.as_ref() {
        add_headers(
            h,
            (
                &mut r.request_headers_to_add,
                &mut r.request_headers_to_remove,
            ),
            (
                &mut r.response_headers_to_add,
                &mut r.response_headers_to_remove,
            ),
        );
    }
    if let Some(fault) = &http.fault {
        r.typed_per_filter_config
            .insert(FAULT_FILTER.to_string(), pb::any(&fault_config(fault)));
    }
    let live = live_destinations(http);
    if let [only] = live.as_slice() {
        // With one destination there is no cluster entry to carry its header operations: they
        // apply to the route, after the route's own (Istio's order).
        if let Some(h) = &only.headers {
            add_headers(
                h,
                (
                    &mut r.request_headers_to_add,
                    &mut r.request_headers_to_remove,
                ),
                (
                    &mut r.response_headers_to_add,
                    &mut r.response_headers_to_remove,
                ),
            );
        }
    }
    r.action = Some(match &http.redirect {
        Some(redirect) => Action::Redirect(redirect_action(redirect, port)),
        None => Action::Route(route_action(ctx, vs, http, &live, routed_host, port)),
    });
    r
}

/// The destinations that get traffic. With several, a zero weight means none (Istio drops those)
/// and validation counts a missing weight as 0; a lone destination gets everything.
fn live_destinations(http: &HttpRoute) -> Vec<&HttpRouteDestination> {
    if http.route.len() == 1 {
        return http.route.iter().collect();
    }
    http.route
        .iter()
        .filter(|d| d.weight.unwrap_or(0) > 0)
        .collect()
}

fn route_match(m: Option<&HttpMatchRequest>) -> RouteMatch {
    let Some(m) = m else {
        return RouteMatch {
            path_specifier: Some(PathSpecifier::Prefix("/".into())),
            ..Default::default()
        };
    };
    let path = match &m.uri {
        None => PathSpecifier::Prefix("/".into()),
        Some(StringMatch::Exact(p)) => PathSpecifier::Path(p.clone()),
        Some(StringMatch::Prefix(p)) => PathSpecifier::Prefix(p.clone()),
        Some(StringMatch::Regex(p)) => PathSpecifier::SafeRegex(pb::regex(p)),
    };
    let mut headers: Vec<HeaderMatcher> =
        m.headers.iter().map(|(k, v)| header(k, v, false)).collect();
    for (pseudo, value) in [
        (":authority", &m.authority),
        (":method", &m.method),
        (":scheme", &m.scheme),
    ] {
        if let Some(v) = value {
            headers.push(header(pseudo, v, false));
        }
    }
    headers.extend(m.without_headers.iter().map(|(k, v)| without_header(k, v)));
    RouteMatch {
        case_sensitive: m.ignore_uri_case.then_some(BoolValue { value: false }),
        headers,
        query_parameters: m
            .query_params
            .iter()
            .map(|(k, v)| QueryParameterMatcher {
                name: k.clone(),
                query_parameter_match_specifier: Some(QueryParameterMatchSpecifier::StringMatch(
                    pb::string_matcher(v, false),
                )),
            })
            .collect(),
        path_specifier: Some(path),
        ..Default::default()
    }
}

fn header(name: &str, m: &StringMatch, invert: bool) -> HeaderMatcher {
    HeaderMatcher {
        name: name.to_string(),
        invert_match: invert,
        header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(pb::string_matcher(
            m, false,
        ))),
        ..Default::default()
    }
}

/// `withoutHeaders: {x: {}}` means "x is absent"; with a value, "x does not match it", which an
/// absent header satisfies too (Envoy only sees that when told to treat it as empty, as Istio does).
fn without_header(name: &str, m: &OptionalStringMatch) -> HeaderMatcher {
    let value = m
        .exact
        .clone()
        .map(StringMatch::Exact)
        .or_else(|| m.prefix.clone().map(StringMatch::Prefix))
        .or_else(|| m.regex.clone().map(StringMatch::Regex));
    match value {
        Some(v) => HeaderMatcher {
            treat_missing_header_as_empty: true,
            ..header(name, &v, true)
        },
        None => HeaderMatcher {
            name: name.to_string(),
            invert_match: true,
            header_match_specifier: Some(HeaderMatchSpecifier::PresentMatch(true)),
            ..Default::default()
        },
    }
}

fn route_action(
    ctx: &Context<'_>,
    vs: &Resource<VirtualService>,
    http: &HttpRoute,
    live: &[&HttpRouteDestination],
    routed_host: Option<&str>,
    port: u32,
) -> RouteAction {
    let ns = &vs.meta.namespace;
    let cluster_specifier = if live.len() == 1 {
        ClusterSpecifier::Cluster(destination_cluster(
            ctx,
            &live[0].destination,
            ns,
            routed_host,
            port,
        ))
    } else {
        ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: live
                .iter()
                .map(|d| {
                    let mut cw = ClusterWeight {
                        name: destination_cluster(ctx, &d.destination, ns, routed_host, port),
                        weight: Some(pb::u32v(d.weight.unwrap_or(0))),
                        ..Default::default()
                    };
                    if let Some(h) = &d.headers {
                        add_headers(
                            h,
                            (
                                &mut cw.request_headers_to_add,
                                &mut cw.request_headers_to_remove,
                            ),
                            (
                                &mut cw.response_headers_to_add,
                                &mut cw.response_headers_to_remove,
                            ),
                        );
                    }
                    cw
                })
                .collect(),
            ..Default::default()
        })
    };
    let timeout = http.timeout.map(|d| d.as_std()).unwrap_or_default();
    let mut action = RouteAction {
        cluster_specifier: Some(cluster_specifier),
        timeout: Some(pb::duration(timeout)),
        retry_policy: match &http.retries {
            Some(r) => retry_policy(r),
            None => retry_policy(&DEFAULT_RETRIES),
        },
        hash_policy: destinations_hash_policy(ctx, live, ns),
        ..Default::default()
    };
    if let Some(t) = http.timeout {
        // gRPC clients read the route timeout from max_stream_duration.
        action.max_stream_duration = Some(MaxStreamDuration {
            max_stream_duration: Some(pb::duration(t.as_std())),
            ..Default::default()
        });
    }
    if let Some(mirror) = &http.mirror {
        action.request_mirror_policies.push(RequestMirrorPolicy {
            cluster: destination_cluster(ctx, mirror, ns, routed_host, port),
            runtime_fraction: Some(
                envoy_types::pb::envoy::config::core::v3::RuntimeFractionalPercent {
                    default_value: Some(pb::percent(
                        http.mirror_percentage.map(|p| p.value).unwrap_or(100.0),
                    )),
                    ..Default::default()
                },
            ),
            ..Default::default()
        });
    }
    if let Some(rw) = &http.rewrite {
        if let Some(uri) = &rw.uri {
            action.prefix_rewrite = uri.clone();
        }
        // Istio's rewrite string is RE2's, as Envoy's substitution is: passed on as written.
        if let Some(regex) = &rw.uri_regex_rewrite {
            action.regex_rewrite = Some(RegexMatchAndSubstitute {
                pattern: Some(pb::regex(&regex.pattern)),
                substitution: regex.rewrite.clone(),
            });
        }
        if let Some(authority) = &rw.authority {
            action.host_rewrite_specifier = Some(
                route_action::HostRewriteSpecifier::HostRewriteLiteral(authority.clone()),
            );
        }
    }
    action
}

/// Istio's default retry conditions, and the status codes its `retriable-status-codes` means.
const DEFAULT_RETRY_ON: &str =
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";
const DEFAULT_RETRIABLE_STATUS_CODES: [u32; 1] = [503];

/// Istio retries every route twice on its default conditions unless told otherwise.
const DEFAULT_RETRIES: HttpRetry = HttpRetry {
    attempts: 2,
    per_try_timeout: None,
    retry_on: None,
};

/// `attempts: 0` turns retries off.
fn retry_policy(r: &HttpRetry) -> Option<RetryPolicy> {
    if r.attempts == 0 {
        return None;
    }
    let (retry_on, retriable_status_codes) = match &r.retry_on {
        Some(text) => split_retry_on(text),
        None => (
            DEFAULT_RETRY_ON.to_string(),
            DEFAULT_RETRIABLE_STATUS_CODES.to_vec(),
        ),
    };
    Some(RetryPolicy {
        retry_on,
        retriable_status_codes,
        num_retries: Some(pb::u32v(r.attempts)),
        per_try_timeout: r.per_try_timeout.map(|d| pb::duration(d.as_std())),
        ..Default::default()
    })
}

/// Istio's `retryOn` may list HTTP status codes among the conditions (`5xx,429`); Envoy takes the
/// codes apart, and only under the `retriable-status-codes` condition.
fn split_retry_on(text: &str) -> (String, Vec<u32>) {
    let mut conditions: Vec<&str> = Vec::new();
    let mut codes = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.parse::<u32>() {
            Ok(code) if (100..=599).contains(&code) => codes.push(code),
            _ => conditions.push(part),
        }
    }
    if !codes.is_empty() && !conditions.contains(&"retriable-status-codes") {
        conditions.push("retriable-status-codes");
    }
    (conditions.join(","), codes)
}

/// The cluster a destination names. Without a port: the routed port when the destination is the
/// routed service, else the destination's only port, else the routed (or gateway) port (Istio's
/// rule).
pub(super) fn destination_cluster(
    ctx: &Context<'_>,
    d: &Destination,
    ns: &str,
    routed_host: Option<&str>,
    port: u32,
) -> String {
    let host = ctx.config.resolve_host(&d.host, ns);
    let dest_port = d.port.map(|p| p.number).unwrap_or_else(|| {
        if Some(host.as_str()) == routed_host {
            port
        } else {
            ctx.registry
                .services
                .get(&host)
                .filter(|s| s.ports.len() == 1)
                .map(|s| s.ports[0].number)
                .unwrap_or(port)
        }
    });
    cluster_name(dest_port, d.subset.as_deref(), &host)
}

/// A `headers` block (request and response operations) onto a route's or a weighted cluster's
/// lists of headers to add and remove.
fn add_headers(
    h: &Headers,
    request: (&mut Vec<HeaderValueOption>, &mut Vec<String>),
    response: (&mut Vec<HeaderValueOption>, &mut Vec<String>),
) {
    add_header_ops(h.request.as_ref(), request.0, request.1);
    add_header_ops(h.response.as_ref(), response.0, response.1);
}

fn add_header_ops(
    ops: Option<&HeaderOperations>,
    add: &mut Vec<HeaderValueOption>,
    remove: &mut Vec<String>,
) {
    let Some(ops) = ops else { return };
    let option = |k: &String, v: &String, action: HeaderAppendAction| HeaderValueOption {
        header: Some(HeaderValue {
            key: k.clone(),
            value: v.clone(),
            ..Default::default()
        }),
        append_action: action as i32,
        ..Default::default()
    };
    add.extend(
        ops.set
            .iter()
            .map(|(k, v)| option(k, v, HeaderAppendAction::OverwriteIfExistsOrAdd)),
    );
    add.extend(
        ops.add
            .iter()
            .map(|(k, v)| option(k, v, HeaderAppendAction::AppendIfExistsOrAdd)),
    );
    remove.extend(ops.remove.iter().cloned());
}

/// `port` is the port the route serves: Istio's `FROM_REQUEST_PORT`, since Envoy cannot take the
/// port from the request.
fn redirect_action(r: &HttpRedirect, port: u32) -> RedirectAction {
    let code = match r.redirect_code.unwrap_or(301) {
        302 => RedirectResponseCode::Found,
        303 => RedirectResponseCode::SeeOther,
        307 => RedirectResponseCode::TemporaryRedirect,
        308 => RedirectResponseCode::PermanentRedirect,
        _ => RedirectResponseCode::MovedPermanently,
    };
    RedirectAction {
        host_redirect: r.authority.clone().unwrap_or_default(),
        port_redirect: match r.derive_port {
            Some(DerivePort::FromRequestPort) => port,
            _ => r.port.unwrap_or(0),
        },
        response_code: code as i32,
        scheme_rewrite_specifier: r.scheme.clone().map(SchemeRewriteSpecifier::SchemeRedirect),
        path_rewrite_specifier: r.uri.clone().map(PathRewriteSpecifier::PathRedirect),
        ..Default::default()
    }
}

fn fault_config(f: &HttpFaultInjection) -> fault::HttpFault {
    fault::HttpFault {
        delay: f.delay.as_ref().map(|d| common_fault::FaultDelay {
            percentage: Some(pb::percent(d.percentage.map(|p| p.value).unwrap_or(100.0))),
            fault_delay_secifier: Some(common_fault::fault_delay::FaultDelaySecifier::FixedDelay(
                pb::duration(d.fixed_delay.as_std()),
            )),
        }),
        abort: f.abort.as_ref().map(|a| fault::FaultAbort {
            percentage: Some(pb::percent(a.percentage.map(|p| p.value).unwrap_or(100.0))),
            error_type: match (a.http_status, &a.grpc_status) {
                (Some(code), _) => Some(fault::fault_abort::ErrorType::HttpStatus(code)),
                (None, Some(name)) => {
                    grpc_status_code(name).map(fault::fault_abort::ErrorType::GrpcStatus)
                }
                (None, None) => None,
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}
