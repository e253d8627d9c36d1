//! The resource names the CLI and the admin API accept, kubectl-style: `virtualservices`,
//! `virtualservice`, `vs`, `VirtualService` all name one kind. `services` and `endpoints` are
//! read from the registry, not from the config store.

use graymesh_model::Kind;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Config(Kind),
    Services,
    Endpoints,
}

const CONFIG_NAMES: [(Kind, &[&str]); 6] = [
    (
        Kind::VirtualService,
        &["virtualservices", "virtualservice", "vs"],
    ),
    (
        Kind::DestinationRule,
        &["destinationrules", "destinationrule", "dr"],
    ),
    (
        Kind::ServiceEntry,
        &["serviceentries", "serviceentry", "se"],
    ),
    (Kind::Gateway, &["gateways", "gateway", "gw"]),
    (
        Kind::Application,
        &["applications", "application", "app", "apps"],
    ),
    (Kind::Rollout, &["rollouts", "rollout", "ro"]),
];

/// Every accepted name, for error messages.
pub const KNOWN: &str = "virtualservices (vs), destinationrules (dr), serviceentries (se), \
                         gateways (gw), applications (app), rollouts (ro), services (svc), \
                         endpoints (ep)";

pub fn parse(name: &str) -> Result<Resource, String> {
    let lower = name.to_lowercase();
    for (kind, names) in CONFIG_NAMES {
        if names.contains(&lower.as_str()) {
            return Ok(Resource::Config(kind));
        }
    }
    match lower.as_str() {
        "services" | "service" | "svc" => Ok(Resource::Services),
        "endpoints" | "endpoint" | "ep" | "instances" => Ok(Resource::Endpoints),
        _ => Err(format!("unknown resource type {name:?}; one of {KNOWN}")),
    }
}

/// A config kind only (what the config API stores).
pub fn parse_config(name: &str) -> Result<Kind, String> {
    match parse(name)? {
        Resource::Config(kind) => Ok(kind),
        _ => Err(format!(
            "{name:?} comes from the registry, not the config store; one of virtualservices, destinationrules, serviceentries, gateways, applications, rollouts"
        )),
    }
}

/// The plural lower-case name, as used in URLs and printed by the CLI.
pub fn plural(kind: Kind) -> &'static str {
    CONFIG_NAMES
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, names)| names[0])
        .unwrap_or("objects")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_style_names() {
        for name in ["virtualservices", "VirtualService", "vs"] {
            assert_eq!(parse(name), Ok(Resource::Config(Kind::VirtualService)));
        }
        assert_eq!(parse("se"), Ok(Resource::Config(Kind::ServiceEntry)));
        assert_eq!(parse("services"), Ok(Resource::Services));
        assert_eq!(parse("endpoints"), Ok(Resource::Endpoints));
        assert!(parse("pods")
            .unwrap_err()
            .contains("unknown resource type \"pods\""));
        assert!(parse_config("services").is_err());
        assert_eq!(plural(Kind::ServiceEntry), "serviceentries");
    }
}
