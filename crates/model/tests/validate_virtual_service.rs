//! VirtualService validation through the public API, with the exact messages users see.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test binary: panicking on the unexpected is the point

mod support;

use graymesh_model::istio::DerivePort;
use support::{errors, object, reviews_backend, valid};

const PREFIX: &str = "vs.yaml: VirtualService default/reviews: ";

/// Errors of a VirtualService `reviews` (with `spec`) next to the reviews backend, with the common
/// `file: object: ` prefix taken off so the tables below stay readable.
fn vs_errors(spec: &str) -> Vec<String> {
    let vs = object("VirtualService", "default", "reviews", spec);
    let backend = reviews_backend();
    errors(&[("backend.yaml", &backend), ("vs.yaml", &vs)])
        .into_iter()
        .map(|e| e.strip_prefix(PREFIX).map(str::to_string).unwrap_or(e))
        .collect()
}

#[test]
fn a_canary_split_with_header_match_is_valid() {
    let vs = object(
        "VirtualService",
        "default",
        "reviews",
        r#"
hosts: [reviews]
http:
- name: jason
  match: [{headers: {end-user: {exact: jason}}, uri: {regex: "^/reviews/[0-9]+$"}}]
  route: [{destination: {host: reviews, subset: v2}}]
- name: split
  route:
  - {destination: {host: reviews, subset: v1}, weight: 90}
  - {destination: {host: reviews.default.svc.cluster.local, subset: v2}, weight: 10}
  mirror: {host: reviews, subset: v2}
  mirrorPercentage: {value: 5}
  retries: {attempts: 3, perTryTimeout: 1s}
  fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 0.5}}}
"#,
    );
    let set = valid(&[("backend.yaml", &reviews_backend()), ("vs.yaml", &vs)]);
    assert_eq!(set.virtual_services.len(), 1);
    assert_eq!(
        set.virtual_services[0].spec.http[1].route[0].weight,
        Some(90)
    );
}

#[test]
fn weights_must_sum_to_100() {
    let spec = r#"
hosts: [reviews]
http:
- route:
  - {destination: {host: reviews, subset: v1}, weight: 80}
  - {destination: {host: reviews, subset: v2}, weight: 10}
- route:
  - {destination: {host: reviews, subset: v1}, weight: 90}
  - {destination: {host: reviews, subset: v2}}
- route:
  - {destination: {host: reviews, subset: v1}, weight: 150}
- route:
  - {destination: {host: reviews, subset: v1}, weight: 0}
  - {destination: {host: reviews, subset: v2}, weight: 100}
- route:
  - {destination: {host: reviews, subset: v1}, weight: 40}
"#;
    assert_eq!(
        vs_errors(spec),
        [
            "spec.http[0].route: weights sum to 90, must be 100",
            "spec.http[1].route: weights sum to 90, must be 100 (a destination without a weight counts as 0)",
            "spec.http[2].route[0].weight: weight 150 is out of range, must be 0..=100",
        ]
    );
}

#[test]
fn tcp_routes_follow_the_same_weight_rule() {
    let spec = r#"
hosts: [reviews]
tcp:
- match: [{port: 70000}]
  route:
  - {destination: {host: reviews, subset: v1, port: {number: 9080}}, weight: 50}
  - {destination: {host: reviews, subset: v2, port: {number: 9080}}, weight: 40}
- route: []
"#;
    assert_eq!(
        vs_errors(spec),
        [
            "spec.tcp[0].route: weights sum to 90, must be 100",
            "spec.tcp[0].match[0].port: port 70000 is out of range, must be 1..=65535",
            "spec.tcp[1].route: needs at least one destination",
        ]
    );
}

#[test]
fn regexes_must_compile_as_re2() {
    let spec = r#"
hosts: [reviews]
http:
- match:
  - uri: {regex: "/api/(v1"}
    headers: {x-user: {regex: "(?=admin)"}}
    withoutHeaders: {x-debug: {regex: "[z-a]"}}
  route: [{destination: {host: reviews}}]
"#;
    assert_eq!(
        vs_errors(spec),
        [
            "spec.http[0].match[0].uri.regex: invalid regex \"/api/(v1\" (RE2 syntax): unclosed group",
            "spec.http[0].match[0].headers.x-user.regex: invalid regex \"(?=admin)\" (RE2 syntax): look-around, including look-ahead and look-behind, is not supported",
            "spec.http[0].match[0].withoutHeaders.x-debug.regex: invalid regex \"[z-a]\" (RE2 syntax): invalid character class range, the start must be <= the end",
        ]
    );
}

#[test]
fn subsets_must_be_defined_by_a_destination_rule_for_the_resolved_host() {
    let spec = r#"
hosts: [reviews]
http:
- route:
  - {destination: {host: reviews, subset: v3}}
  mirror: {host: ratings, subset: v1}
"#;
    assert_eq!(
        vs_errors(spec),
        [
            "spec.http[0].route[0].destination.subset: subset \"v3\" of host \"reviews.default.svc.cluster.local\" is not defined by any DestinationRule (defined: v1, v2)",
            "spec.http[0].mirror.subset: subset \"v1\" of host \"ratings.default.svc.cluster.local\" is not defined by any DestinationRule (no DestinationRule has this host)",
        ]
    );
}

#[test]
fn a_route_needs_exactly_one_of_route_and_redirect() {
    let spec = r#"
hosts: [reviews]
http:
- match: [{uri: {prefix: /old}}]
- redirect: {uri: /new, redirectCode: 304, port: 0}
  route: [{destination: {host: reviews}}]
"#;
    assert_eq!(
        vs_errors(spec),
        [
            "spec.http[0]: needs a `route` (destinations) or a `redirect`",
            "spec.http[1]: has both `route` and `redirect`; use one",
            "spec.http[1].redirect.port: port 0 is out of range, must be 1..=65535",
            "spec.http[1].redirect.redirectCode: 304 is not a redirect code, must be one of 301, 302, 303, 307, 308",
        ]
    );
}

#[test]
fn route_names_are_unique_and_ports_in_range() {
    let spec = r#"
hosts: [reviews]
http:
- name: main
  match: [{port: 0}]
  route: [{destination: {host: reviews, port: {number: 65536}}}]
- name: main
  route: [{destination: {host: "", subset: ""}}]
"#;
    assert_eq!(
        vs_errors(spec),
        [
            "spec.http[0].route[0].destination.port.number: port 65536 is out of range, must be 1..=65535",
            "spec.http[0].match[0].port: port 0 is out of range, must be 1..=65535",
            "spec.http[1].name: duplicate route name \"main\", already used by spec.http[0]",
            "spec.http[1].route[0].destination.host: host is required, e.g. host: reviews",
            "spec.http[1].route[0].destination.subset: subset must not be empty; leave it out instead",
        ]
    );
}

#[test]
fn retries_mirrors_and_faults_stay_in_bounds() {
    let spec = r#"
hosts: [reviews]
http:
- route: [{destination: {host: reviews}}]
  retries: {attempts: 1000}
  mirror: {host: reviews}
  mirrorPercentage: {value: 150}
  fault:
    delay: {fixedDelay: 5s, percentage: {value: -1}}
    abort: {httpStatus: 700}
- route: [{destination: {host: reviews}}]
  fault: {abort: {percentage: {value: 10}}}
- route: [{destination: {host: reviews}}]
  fault: {abort: {grpcStatus: Unavailable}}
- route: [{destination: {host: reviews}}]
  fault: {abort: {grpcStatus: UNAVAILABLE, httpStatus: 503}}
- route: [{destination: {host: reviews}}]
  fault: {}
"#;
    assert_eq!(
        vs_errors(spec),
        [
            "spec.http[0].retries.attempts: 1000 attempts is too many, must be at most 100",
            "spec.http[0].fault.delay.percentage.value: percentage -1 is out of range, must be 0..=100",
            "spec.http[0].fault.abort.httpStatus: HTTP status 700 is out of range, must be 100..=599",
            "spec.http[0].mirrorPercentage.value: percentage 150 is out of range, must be 0..=100",
            "spec.http[1].fault.abort: needs httpStatus (e.g. 503) or grpcStatus (e.g. UNAVAILABLE)",
            "spec.http[2].fault.abort.grpcStatus: unknown gRPC status \"Unavailable\", expected one of OK, CANCELLED, UNKNOWN, INVALID_ARGUMENT, DEADLINE_EXCEEDED, NOT_FOUND, ALREADY_EXISTS, PERMISSION_DENIED, RESOURCE_EXHAUSTED, FAILED_PRECONDITION, ABORTED, OUT_OF_RANGE, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS, UNAUTHENTICATED",
            "spec.http[3].fault.abort: sets both httpStatus and grpcStatus; use one",
            "spec.http[4].fault: needs a `delay` or an `abort`",
        ]
    );
}

#[test]
fn without_headers_takes_at_most_one_match() {
    let spec = r#"
hosts: [reviews]
http:
- match: [{withoutHeaders: {x-canary: {}, x-debug: {exact: "1", prefix: "1"}}}]
  route: [{destination: {host: reviews}}]
"#;
    assert_eq!(
        vs_errors(spec),
        ["spec.http[0].match[0].withoutHeaders.x-debug: sets exact, prefix; use at most one of exact, prefix, regex"]
    );
}

#[test]
fn hosts_and_routes_are_required() {
    assert_eq!(
        vs_errors("hosts: []"),
        [
            "spec.hosts: at least one host is required, e.g. hosts: [reviews]",
            "spec: no routes: add `http` or `tcp` routes",
        ]
    );
}

#[test]
fn a_regex_rewrite_and_a_derived_redirect_port_are_valid() {
    let spec = r#"
hosts: [reviews]
http:
- match: [{uri: {prefix: /api}}]
  rewrite: {uriRegexRewrite: {match: "^/api/v1/(\\w+)/(\\d+)$", rewrite: '/v2/\2/\1\\x'}}
  route: [{destination: {host: reviews}}]
- match: [{uri: {prefix: /old}}]
  redirect: {uri: /new, derivePort: FROM_REQUEST_PORT}
"#;
    let vs = object("VirtualService", "default", "reviews", spec);
    let set = valid(&[("backend.yaml", &reviews_backend()), ("vs.yaml", &vs)]);
    let http = &set.virtual_services[0].spec.http;
    let regex = http[0]
        .rewrite
        .as_ref()
        .unwrap()
        .uri_regex_rewrite
        .as_ref()
        .unwrap();
    assert_eq!(
        (regex.pattern.as_str(), regex.rewrite.as_str()),
        (r"^/api/v1/(\w+)/(\d+)$", r"/v2/\2/\1\\x")
    );
    assert_eq!(
        http[1].redirect.as_ref().unwrap().derive_port,
        Some(DerivePort::FromRequestPort)
    );
}

#[test]
fn a_uri_rewrite_is_one_of_uri_and_a_valid_regex_rewrite() {
    let spec = r#"
hosts: [reviews]
http:
- rewrite: {uri: /v2, uriRegexRewrite: {match: "^/v1", rewrite: /v2}}
  route: [{destination: {host: reviews}}]
- rewrite: {uriRegexRewrite: {match: "^/v1/(a", rewrite: /v2}}
  route: [{destination: {host: reviews}}]
- rewrite: {uriRegexRewrite: {match: "^/v1/(a)$", rewrite: '/v2/\2'}}
  route: [{destination: {host: reviews}}]
- rewrite: {uriRegexRewrite: {match: "", rewrite: '/v2\n'}}
  route: [{destination: {host: reviews}}]
- rewrite: {}
  redirect: {uri: /new, port: 8080, derivePort: FROM_PROTOCOL_DEFAULT}
"#;
    assert_eq!(
        vs_errors(spec),
        [
            "spec.http[0].rewrite: sets both uri and uriRegexRewrite; use one",
            "spec.http[1].rewrite.uriRegexRewrite.match: invalid regex \"^/v1/(a\" (RE2 syntax): unclosed group",
            "spec.http[2].rewrite.uriRegexRewrite.rewrite: rewrite \"/v2/\\\\2\" names group \\2, the match has 1 group(s); use \\1-\\9 for a group, \\0 for the whole match, \\\\ for a backslash",
            "spec.http[3].rewrite.uriRegexRewrite.match: must not be empty, e.g. match: ^/v1(/.*)$",
            "spec.http[3].rewrite.uriRegexRewrite.rewrite: rewrite \"/v2\\\\n\" has a backslash before 'n'; use \\1-\\9 for a group, \\0 for the whole match, \\\\ for a backslash",
            "spec.http[4].redirect: sets both port and derivePort; use one",
            "spec.http[4]: has both `redirect` and `rewrite`; a redirect rewrites nothing",
            "spec.http[4].rewrite: rewrites nothing: set uri, uriRegexRewrite or authority",
        ]
    );
}

/// Parse errors (serde's, with the field path) of a VirtualService `reviews` with `spec`.
fn parse_errors(spec: &str) -> Vec<String> {
    let vs = object("VirtualService", "default", "reviews", spec);
    let errors = graymesh_model::parse_str("vs.yaml", &vs).unwrap_err();
    errors
        .iter()
        .map(|e| e.to_string().replacen(PREFIX, "", 1))
        .collect()
}

#[test]
fn unknown_rewrite_fields_and_derive_port_values_are_refused() {
    let spec = r#"
hosts: [reviews]
http:
- rewrite: {uriRegexRewrite: {match: "^/v1", rewrite: /v2, flags: i}}
  route: [{destination: {host: reviews}}]
"#;
    assert_eq!(
        parse_errors(spec),
        ["spec.http[0].rewrite.uriRegexRewrite.flags: unknown field `flags`, expected `match` or `rewrite`"]
    );
    let spec = r#"
hosts: [reviews]
http:
- redirect: {uri: /new, derivePort: FROM_ELSEWHERE}
"#;
    assert_eq!(
        parse_errors(spec),
        ["spec.http[0].redirect.derivePort: unknown variant `FROM_ELSEWHERE`, expected `FROM_PROTOCOL_DEFAULT` or `FROM_REQUEST_PORT`"]
    );
}
