//! Sticky canary cohorts keyed on one W3C baggage member, a graymesh extension of Istio's DSL.
//!
//! W3C baggage carries many members in one header (`baggage: user-id=alice,tenant=acme;p=1`),
//! and Istio's `consistentHash` can only hash a whole header. A DestinationRule hashes on one
//! member by hashing on `httpHeaderName: baggage` and naming the member in the annotation
//! [`MEMBER_ANNOTATION`]. The spec stays plain Istio, so every Istio tool reads it as it is (and
//! hashes the whole header); the annotation only narrows what pilot's translation hashes, to the
//! member's value. The release model writes it for a `canary-traffic` trait's `hashKey.baggage`.

use crate::istio::DestinationRule;
use crate::ObjectMeta;

/// The W3C baggage header.
pub const HEADER: &str = "baggage";
/// On a DestinationRule: the baggage member whose value its `httpHeaderName: baggage` hash keys
/// hash, instead of the whole header.
pub const MEMBER_ANNOTATION: &str = "graymesh.io/hash-baggage-member";

/// The member a DestinationRule's baggage hash keys hash, if it names one.
pub fn member(meta: &ObjectMeta) -> Option<&str> {
    meta.annotations.get(MEMBER_ANNOTATION).map(String::as_str)
}

/// Header names are case-insensitive.
pub fn is_header(name: &str) -> bool {
    name.eq_ignore_ascii_case(HEADER)
}

/// Whether any `consistentHash` of the rule, top level or subset, hashes the baggage header.
pub fn hashed_by(dr: &DestinationRule) -> bool {
    let policies = dr
        .subsets
        .iter()
        .filter_map(|s| s.traffic_policy.as_ref())
        .chain(dr.traffic_policy.as_ref());
    policies
        .filter_map(|p| p.load_balancer.as_ref()?.consistent_hash.as_ref())
        .filter_map(|h| h.http_header_name.as_deref())
        .any(is_header)
}

/// Why `key` cannot name a baggage member, if it cannot. W3C baggage keys are RFC 7230 tokens,
/// and case-sensitive.
pub fn key_problem(key: &str) -> Option<String> {
    if key.is_empty() {
        return Some("a baggage member name must not be empty".to_string());
    }
    let bad = key.chars().find(|c| !is_token_char(*c))?;
    Some(format!(
        "{key:?} is not a W3C baggage key: {bad:?} is not allowed; a key is a token of letters, digits and !#$%&'*+-.^_`|~"
    ))
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}
