//! Checks of one VirtualService on its own: routes, weights, matches, retries, faults, redirects.
//!
//! Whether subsets exist is a question about the whole set and lives in `references`.

use super::{fields, Findings};
use crate::istio::{
    grpc_status_code, Destination, FaultAbort, HttpFaultInjection, HttpMatchRequest, HttpRedirect,
    HttpRewrite, HttpRoute, OptionalStringMatch, StringMatch, TcpRoute, VirtualService,
    GRPC_STATUS_CODES,
};
use std::collections::BTreeMap;

/// More retries than this is a configuration mistake, not a policy: it multiplies load on a
/// struggling upstream.
const MAX_RETRY_ATTEMPTS: u32 = 100;
const REDIRECT_CODES: [u32; 5] = [301, 302, 303, 307, 308];

pub(super) fn check(f: &mut Findings, vs: &VirtualService) {
    fields::hosts(f, "spec.hosts", &vs.hosts, "hosts: [reviews]");
    if vs.http.is_empty() && vs.tcp.is_empty() {
        f.error("spec", "no routes: add `http` or `tcp` routes");
    }
    let mut route_names = BTreeMap::new();
    for (i, route) in vs.http.iter().enumerate() {
        let path = format!("spec.http[{i}]");
        unique_route_name(f, &path, route, &mut route_names);
        http_route(f, &path, route);
    }
    for (i, route) in vs.tcp.iter().enumerate() {
        tcp_route(f, &format!("spec.tcp[{i}]"), route);
    }
}

/// Route names show up in Envoy's config and in metrics, so two routes must not share one.
fn unique_route_name<'a>(
    f: &mut Findings,
    path: &str,
    route: &'a HttpRoute,
    seen: &mut BTreeMap<&'a str, String>,
) {
    let Some(name) = route.name.as_deref() else {
        return;
    };
    match seen.get(name) {
        Some(first) => f.error(
            format!("{path}.name"),
            format!("duplicate route name {name:?}, already used by {first}"),
        ),
        None => {
            seen.insert(name, path.to_string());
        }
    }
}

fn http_route(f: &mut Findings, path: &str, route: &HttpRoute) {
    match (route.route.is_empty(), route.redirect.is_some()) {
        (true, false) => f.error(path, "needs a `route` (destinations) or a `redirect`"),
        (false, true) => f.error(path, "has both `route` and `redirect`; use one"),
        _ => {}
    }
    for (j, dest) in route.route.iter().enumerate() {
        let dest_path = format!("{path}.route[{j}].destination");
        destination(f, &dest_path, &dest.destination);
    }
    let weights: Vec<_> = route.route.iter().map(|d| d.weight).collect();
    fields::weights(f, &format!("{path}.route"), &weights);
    for (k, request) in route.matches.iter().enumerate() {
        match_request(f, &format!("{path}.match[{k}]"), request);
    }
    if let Some(redirect) = &route.redirect {
        self::redirect(f, &format!("{path}.redirect"), redirect);
    }
    if let Some(rewrite) = &route.rewrite {
        if route.redirect.is_some() {
            // Istio rejects it too: a redirect answers the client, nothing would be rewritten.
            f.error(
                path,
                "has both `redirect` and `rewrite`; a redirect rewrites nothing",
            );
        }
        self::rewrite(f, &format!("{path}.rewrite"), rewrite);
    }
    http_policies(f, path, route);
}

/// What a route does besides choosing destinations: retries, faults, mirroring.
fn http_policies(f: &mut Findings, path: &str, route: &HttpRoute) {
    let attempts = route.retries.as_ref().map_or(0, |r| r.attempts);
    if attempts > MAX_RETRY_ATTEMPTS {
        let message =
            format!("{attempts} attempts is too many, must be at most {MAX_RETRY_ATTEMPTS}");
        f.error(format!("{path}.retries.attempts"), message);
    }
    if let Some(fault) = &route.fault {
        self::fault(f, &format!("{path}.fault"), fault);
    }
    if let Some(mirror) = &route.mirror {
        destination(f, &format!("{path}.mirror"), mirror);
    }
    let mirror_percentage = route.mirror_percentage.as_ref();
    fields::percent(f, format!("{path}.mirrorPercentage"), mirror_percentage);
}

fn tcp_route(f: &mut Findings, path: &str, route: &TcpRoute) {
    if route.route.is_empty() {
        f.error(format!("{path}.route"), "needs at least one destination");
    }
    for (j, dest) in route.route.iter().enumerate() {
        destination(
            f,
            &format!("{path}.route[{j}].destination"),
            &dest.destination,
        );
    }
    let weights: Vec<_> = route.route.iter().map(|d| d.weight).collect();
    fields::weights(f, &format!("{path}.route"), &weights);
    for (k, attributes) in route.matches.iter().enumerate() {
        fields::optional_port(f, format!("{path}.match[{k}].port"), attributes.port);
    }
}

fn destination(f: &mut Findings, path: &str, destination: &Destination) {
    if destination.host.trim().is_empty() {
        f.error(
            format!("{path}.host"),
            "host is required, e.g. host: reviews",
        );
    }
    if destination.subset.as_deref().is_some_and(str::is_empty) {
        f.error(
            format!("{path}.subset"),
            "subset must not be empty; leave it out instead",
        );
    }
    if let Some(port) = destination.port {
        fields::port(f, format!("{path}.port.number"), port.number);
    }
}

// === Matches ===

fn match_request(f: &mut Findings, path: &str, request: &HttpMatchRequest) {
    let single = [
        ("uri", &request.uri),
        ("scheme", &request.scheme),
        ("method", &request.method),
        ("authority", &request.authority),
    ];
    for (name, string_match) in single {
        if let Some(string_match) = string_match {
            self::string_match(f, format!("{path}.{name}"), string_match);
        }
    }
    for (header, string_match) in &request.headers {
        self::string_match(f, format!("{path}.headers.{header}"), string_match);
    }
    for (param, string_match) in &request.query_params {
        self::string_match(f, format!("{path}.queryParams.{param}"), string_match);
    }
    for (header, optional) in &request.without_headers {
        optional_match(f, format!("{path}.withoutHeaders.{header}"), optional);
    }
    fields::optional_port(f, format!("{path}.port"), request.port);
}

fn string_match(f: &mut Findings, path: String, string_match: &StringMatch) {
    if let StringMatch::Regex(pattern) = string_match {
        fields::regex(f, format!("{path}.regex"), pattern);
    }
}

fn optional_match(f: &mut Findings, path: String, optional: &OptionalStringMatch) {
    let set: Vec<&str> = [
        ("exact", optional.exact.is_some()),
        ("prefix", optional.prefix.is_some()),
        ("regex", optional.regex.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, is_set)| is_set.then_some(name))
    .collect();
    if set.len() > 1 {
        let message = format!(
            "sets {}; use at most one of exact, prefix, regex",
            set.join(", ")
        );
        f.error(path.as_str(), message);
    }
    if let Some(pattern) = &optional.regex {
        fields::regex(f, format!("{path}.regex"), pattern);
    }
}

// === Rewrites, redirects and faults ===

/// Istio's rules: something to rewrite, and at most one way of rewriting the path.
fn rewrite(f: &mut Findings, path: &str, rewrite: &HttpRewrite) {
    match (&rewrite.uri, &rewrite.uri_regex_rewrite) {
        (Some(_), Some(_)) => f.error(path, "sets both uri and uriRegexRewrite; use one"),
        (None, None) if rewrite.authority.is_none() => f.error(
            path,
            "rewrites nothing: set uri, uriRegexRewrite or authority",
        ),
        _ => {}
    }
    let Some(regex) = &rewrite.uri_regex_rewrite else {
        return;
    };
    let path = format!("{path}.uriRegexRewrite");
    if regex.pattern.is_empty() {
        f.error(
            format!("{path}.match"),
            "must not be empty, e.g. match: ^/v1(/.*)$",
        );
    } else {
        fields::regex(f, format!("{path}.match"), &regex.pattern);
    }
    if regex.rewrite.is_empty() {
        f.error(
            format!("{path}.rewrite"),
            "must not be empty, e.g. rewrite: /v2\\1",
        );
    } else {
        fields::substitution(f, format!("{path}.rewrite"), &regex.pattern, &regex.rewrite);
    }
}

fn redirect(f: &mut Findings, path: &str, redirect: &HttpRedirect) {
    fields::optional_port(f, format!("{path}.port"), redirect.port);
    if redirect.port.is_some() && redirect.derive_port.is_some() {
        f.error(path, "sets both port and derivePort; use one");
    }
    if let Some(code) = redirect
        .redirect_code
        .filter(|c| !REDIRECT_CODES.contains(c))
    {
        f.error(
            format!("{path}.redirectCode"),
            format!("{code} is not a redirect code, must be one of 301, 302, 303, 307, 308"),
        );
    }
}

fn fault(f: &mut Findings, path: &str, fault: &HttpFaultInjection) {
    if fault.delay.is_none() && fault.abort.is_none() {
        f.error(path, "needs a `delay` or an `abort`");
    }
    if let Some(delay) = &fault.delay {
        fields::percent(
            f,
            format!("{path}.delay.percentage"),
            delay.percentage.as_ref(),
        );
    }
    if let Some(abort) = &fault.abort {
        self::abort(f, &format!("{path}.abort"), abort);
        fields::percent(
            f,
            format!("{path}.abort.percentage"),
            abort.percentage.as_ref(),
        );
    }
}

fn abort(f: &mut Findings, path: &str, abort: &FaultAbort) {
    match (abort.http_status, abort.grpc_status.as_deref()) {
        (None, None) => f.error(
            path,
            "needs httpStatus (e.g. 503) or grpcStatus (e.g. UNAVAILABLE)",
        ),
        (Some(_), Some(_)) => f.error(path, "sets both httpStatus and grpcStatus; use one"),
        (Some(status), None) if !(100..=599).contains(&status) => f.error(
            format!("{path}.httpStatus"),
            format!("HTTP status {status} is out of range, must be 100..=599"),
        ),
        (None, Some(name)) if grpc_status_code(name).is_none() => {
            let names: Vec<&str> = GRPC_STATUS_CODES.iter().map(|(n, _)| *n).collect();
            f.error(
                format!("{path}.grpcStatus"),
                format!(
                    "unknown gRPC status {name:?}, expected one of {}",
                    names.join(", ")
                ),
            );
        }
        _ => {}
    }
}
