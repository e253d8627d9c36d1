//! Consistent-hash keys: on the DestinationRule (top level or subset) in Istio, on the route in
//! Envoy, so every route carries the keys of its destinations' rules as `RouteAction.hash_policy`.
//! Envoy reads them to pick an endpoint in a ring-hash cluster; graymesh's proxy also hashes them
//! to pick among weighted clusters, which keeps a user on one version through a canary rollout.
//!
//! A rule hashing on `httpHeaderName: baggage` and naming a member in the annotation
//! `graymesh.io/hash-baggage-member` (`graymesh_model::baggage`) hashes that member's value, cut
//! out of the W3C baggage header by a `regex_rewrite` ([`baggage_member_rewrite`]). Envoy,
//! proxyless gRPC and graymesh's proxy all apply it the same way.

use super::Context;
use envoy_types::pb::envoy::config::route::v3::route_action::{self, HashPolicy};
use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatchAndSubstitute, RegexMatcher};
use graymesh_model::baggage;
use graymesh_model::istio::HttpRouteDestination;

/// The hash keys of every destination of a route, each once, in the destinations' order. A
/// weighted route needs them as much as a single-destination one; asking only the first
/// destination would miss a key set on another subset alone.
pub(super) fn destinations_hash_policy(
    ctx: &Context<'_>,
    live: &[&HttpRouteDestination],
    ns: &str,
) -> Vec<HashPolicy> {
    let mut out: Vec<HashPolicy> = Vec::new();
    for d in live {
        let host = ctx.config.resolve_host(&d.destination.host, ns);
        let policy = hash_policy(ctx, &host, d.destination.subset.as_deref());
        if let Some(policy) = policy.filter(|p| !out.contains(p)) {
            out.push(policy);
        }
    }
    out
}

/// The hash key the DestinationRule of `host` sets for `subset` (its own, else the top level's).
pub(super) fn hash_policy(
    ctx: &Context<'_>,
    host: &str,
    subset: Option<&str>,
) -> Option<HashPolicy> {
    use route_action::hash_policy::{
        ConnectionProperties, Cookie, Header, PolicySpecifier, QueryParameter,
    };
    let rule = ctx.destination_rule(host)?;
    let own = subset
        .and_then(|s| rule.spec.subsets.iter().find(|x| x.name == s))
        .and_then(|s| s.traffic_policy.as_ref());
    let policy = super::clusters::merge(rule.spec.traffic_policy.as_ref(), own);
    let h = policy.load_balancer.and_then(|lb| lb.consistent_hash)?;
    let spec = if let Some(name) = h.http_header_name {
        let member = baggage::member(&rule.meta).filter(|_| baggage::is_header(&name));
        PolicySpecifier::Header(Header {
            header_name: name,
            regex_rewrite: member.map(baggage_member_rewrite),
        })
    } else if let Some(c) = h.http_cookie {
        PolicySpecifier::Cookie(Cookie {
            name: c.name,
            path: c.path.unwrap_or_default(),
            ttl: c.ttl.map(|d| super::pb::duration(d.as_std())),
            ..Default::default()
        })
    } else if let Some(name) = h.http_query_parameter_name {
        PolicySpecifier::QueryParameter(QueryParameter { name })
    } else if h.use_source_ip == Some(true) {
        PolicySpecifier::ConnectionProperties(ConnectionProperties { source_ip: true })
    } else {
        // Validation refuses a consistentHash without a key.
        return None;
    };
    Some(HashPolicy {
        terminal: false,
        policy_specifier: Some(spec),
    })
}

/// The rewrite that turns a `baggage` header value into the value of its member `member` (a W3C
/// key, as validation ensures): `user-id=alice,tenant=acme;p=1` ⇒ `alice`.
///
/// The pattern matches the whole header when the member is there, so `\1` replaces all of it with
/// the value. It follows the W3C grammar: members separated by `,`, optional spaces or tabs
/// around keys, `=`, values, `;` and `,`; a value ends at whitespace, `;` (its properties) or `,`;
/// a key is matched exactly and case-sensitively, at the start of a member only (`xuser-id=` and
/// a property `;user-id=` are not it). If the member occurs twice the last one counts, as
/// OpenTelemetry's propagator keeps the last. The value is hashed as sent, percent-encoding and
/// all: a regex cannot decode it, and a client sends one user's value the same way each time.
///
/// Without the member (or with an empty value) nothing matches and Envoy hashes the header
/// unchanged, so such requests are spread by their whole baggage, each distinct baggage one
/// cohort. A fallback alternative (`|^.*$`) that rewrote them all to one value was rejected:
/// that would make every one of them a single user, on one version and one endpoint; the empty
/// key's point is 0.958, so at a 5% canary all of them would be in the canary. Requests without
/// a baggage header carry no key and are split at random, as for any header key.
pub fn baggage_member_rewrite(member: &str) -> RegexMatchAndSubstitute {
    let key = regex::escape(member);
    RegexMatchAndSubstitute {
        pattern: Some(RegexMatcher {
            regex: format!("^(?:.*,)?[ \\t]*{key}[ \\t]*=[ \\t]*([^,; \\t]+)[ \\t]*(?:[;,].*)?$"),
            ..Default::default()
        }),
        substitution: "\\1".to_string(),
    }
}
