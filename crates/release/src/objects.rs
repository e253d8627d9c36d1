//! A [`TrafficPlan`] as the ordinary Istio objects that carry it: one VirtualService (the content
//! route to the new version first, then the weighted split, old version first and new one last)
//! and one DestinationRule (a subset per version, the sticky hash key as `consistentHash`; a
//! baggage member as `httpHeaderName: baggage` plus the rule's annotation
//! `graymesh.io/hash-baggage-member`), both named `<application>-release` and labelled
//! `graymesh.io/managed-by: release`.

use crate::plan::{ContentMatch, TrafficPlan};
use graymesh_model::baggage;
use graymesh_model::istio::{
    ConsistentHashLb, Destination, DestinationRule, HttpCookie, HttpMatchRequest, HttpRoute,
    HttpRouteDestination, LoadBalancerSettings, PortSelector, StringMatch, Subset, TrafficPolicy,
    VirtualService,
};
use graymesh_model::oam::{Application, Component, CookieMatch, MatchRule};
use graymesh_model::object::ISTIO_API_VERSIONS;
use graymesh_model::{Object, ObjectMeta, Spec};
use std::collections::BTreeMap;

pub const MANAGED_BY_LABEL: &str = "graymesh.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "release";
/// Annotation naming the Application (`namespace/name`) an object was generated from.
pub const APPLICATION_ANNOTATION: &str = "graymesh.io/application";
/// Annotation saying which state of the rollout an object carries (`step 2: canary-20`,
/// `promoted`, `rolled-back`).
pub const STATE_ANNOTATION: &str = "graymesh.io/rollout-state";
/// Suffix of the generated objects' names.
pub const NAME_SUFFIX: &str = graymesh_model::oam::GENERATED_SUFFIX;
/// The names of the two routes of the generated VirtualService.
pub const CONTENT_ROUTE: &str = "release-content";
pub const SPLIT_ROUTE: &str = "release-split";

/// The objects one rollout state implies.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    pub virtual_service: Object,
    pub destination_rule: Object,
}

impl Generated {
    pub fn objects(&self) -> [&Object; 2] {
        [&self.virtual_service, &self.destination_rule]
    }
}

pub(crate) fn objects(app: &Application, plan: &TrafficPlan<'_>, state: String) -> Generated {
    let meta = metadata(app, plan, state);
    let mut rule_meta = meta.clone();
    if let Some(member) = baggage_member(plan) {
        rule_meta
            .annotations
            .insert(baggage::MEMBER_ANNOTATION.to_string(), member.clone());
    }
    let object = |meta, spec| Object {
        api_version: ISTIO_API_VERSIONS[0].to_string(),
        meta,
        spec,
        origin: app.origin.clone(),
    };
    Generated {
        virtual_service: object(meta, Spec::VirtualService(virtual_service(plan))),
        destination_rule: object(rule_meta, Spec::DestinationRule(destination_rule(plan))),
    }
}

/// The trait's baggage member, if that is its hash key.
fn baggage_member<'p>(plan: &'p TrafficPlan<'_>) -> Option<&'p String> {
    plan.canary.hash_key.as_ref()?.baggage.as_ref()
}

fn metadata(app: &Application, plan: &TrafficPlan<'_>, state: String) -> ObjectMeta {
    let namespace = plan
        .canary
        .namespace
        .clone()
        .unwrap_or_else(|| app.meta.namespace.clone());
    let application = format!("{}/{}", app.meta.namespace, app.meta.name);
    ObjectMeta {
        name: format!("{}{NAME_SUFFIX}", app.meta.name),
        namespace,
        labels: BTreeMap::from([(MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string())]),
        annotations: BTreeMap::from([
            (APPLICATION_ANNOTATION.to_string(), application),
            (STATE_ANNOTATION.to_string(), state),
        ]),
        resource_version: None,
    }
}

fn virtual_service(plan: &TrafficPlan<'_>) -> VirtualService {
    let host = &plan.old.properties.host;
    let mut http = Vec::new();
    if let Some(content) = &plan.content {
        http.push(HttpRoute {
            name: Some(CONTENT_ROUTE.to_string()),
            matches: vec![match_request(content)],
            route: vec![destination(plan.new, None)],
            ..HttpRoute::default()
        });
    }
    // One destination takes all the traffic without a weight, as Istio users write it.
    let weighted = plan.split.len() > 1;
    http.push(HttpRoute {
        name: Some(SPLIT_ROUTE.to_string()),
        route: old_first(&plan.split, plan.new)
            .map(|(c, w)| destination(c, weighted.then_some(*w)))
            .collect(),
        ..HttpRoute::default()
    });
    VirtualService {
        hosts: vec![host.clone()],
        http,
        ..VirtualService::default()
    }
}

/// The split with the old version first and the new one last, whatever order the step listed
/// them in. The proxy places a sticky user at a fixed point of the cumulative weights walked in
/// this order, so with the new version last, raising its weight only moves users old → new: a
/// user in the canary at 5% is still in it at 20%. One order for every step matters as much: a
/// step listing the versions the other way round would deal the cohorts anew.
fn old_first<'s, 'a>(
    split: &'s [(&'a Component, u32)],
    new: &'a Component,
) -> impl Iterator<Item = &'s (&'a Component, u32)> {
    let is_new = move |(c, _): &&(&Component, u32)| c.name == new.name;
    split
        .iter()
        .filter(move |d| !is_new(d))
        .chain(split.iter().filter(move |d| is_new(d)))
}

fn destination(component: &Component, weight: Option<u32>) -> HttpRouteDestination {
    let p = &component.properties;
    HttpRouteDestination {
        destination: Destination {
            host: p.host.clone(),
            subset: Some(p.version.clone()),
            port: Some(PortSelector { number: p.port }),
        },
        weight,
        headers: None,
    }
}

fn match_request(content: &ContentMatch<'_>) -> HttpMatchRequest {
    let mut headers = BTreeMap::new();
    if let Some(h) = content.header {
        headers.insert(h.key.clone(), string_match(h.match_rule, &h.value));
    }
    if let Some(c) = content.cookie {
        headers.insert("cookie".to_string(), cookie_match(c));
    }
    HttpMatchRequest {
        uri: content.uri.map(|u| string_match(u.match_rule, &u.path)),
        headers,
        ..HttpMatchRequest::default()
    }
}

fn string_match(rule: MatchRule, value: &str) -> StringMatch {
    match rule {
        MatchRule::Exact => StringMatch::Exact(value.to_string()),
        MatchRule::Prefix => StringMatch::Prefix(value.to_string()),
        MatchRule::Regex => StringMatch::Regex(value.to_string()),
    }
}

/// A cookie is one `name=value` pair of the `cookie` header, so it is matched with a regex on
/// that header, anchored at a pair boundary: the pair is first or follows `; `, and its value
/// ends at `;` or at the end. A regex rule must match the whole value.
fn cookie_match(cookie: &CookieMatch) -> StringMatch {
    let value = match cookie.match_rule {
        MatchRule::Exact => regex::escape(&cookie.value),
        MatchRule::Prefix => format!("{}[^;]*", regex::escape(&cookie.value)),
        MatchRule::Regex => format!("(?:{})", cookie.value),
    };
    let name = regex::escape(&cookie.name);
    StringMatch::Regex(format!("^(?:.*;\\s*)?{name}={value}(?:;.*)?$"))
}

fn destination_rule(plan: &TrafficPlan<'_>) -> DestinationRule {
    let subset = |c: &Component| Subset {
        name: c.properties.version.clone(),
        labels: BTreeMap::from([("version".to_string(), c.properties.version.clone())]),
        traffic_policy: None,
    };
    let consistent_hash = plan.canary.hash_key.as_ref().and_then(|key| {
        match (&key.header, &key.cookie, &key.baggage) {
            (Some(header), _, _) => Some(ConsistentHashLb {
                http_header_name: Some(header.clone()),
                ..ConsistentHashLb::default()
            }),
            (None, Some(cookie), _) => Some(ConsistentHashLb {
                http_cookie: Some(HttpCookie {
                    name: cookie.clone(),
                    path: None,
                    ttl: None,
                }),
                ..ConsistentHashLb::default()
            }),
            // Istio's consistentHash has no baggage key: the whole header, narrowed to the
            // member by the rule's annotation (see `graymesh_model::baggage`).
            (None, None, Some(_)) => Some(ConsistentHashLb {
                http_header_name: Some(baggage::HEADER.to_string()),
                ..ConsistentHashLb::default()
            }),
            // Validation requires one key.
            (None, None, None) => None,
        }
    });
    DestinationRule {
        host: plan.old.properties.host.clone(),
        traffic_policy: consistent_hash.map(|hash| TrafficPolicy {
            load_balancer: Some(LoadBalancerSettings {
                simple: None,
                consistent_hash: Some(hash),
            }),
            ..TrafficPolicy::default()
        }),
        subsets: vec![subset(plan.old), subset(plan.new)],
        export_to: Vec::new(),
    }
}
