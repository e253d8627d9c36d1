//! The envelope every object comes in (apiVersion, kind, metadata, spec) and the validated set.

use crate::istio::{DestinationRule, Gateway, ServiceEntry, VirtualService};
use crate::oam::{ApplicationSpec, OAM_API_VERSION};
use crate::rollout::{RolloutStatus, ROLLOUT_API_VERSION};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

pub const DEFAULT_NAMESPACE: &str = "default";

/// The apiVersions accepted for Istio networking objects, newest first.
pub const ISTIO_API_VERSIONS: &[&str] = &[
    "networking.istio.io/v1",
    "networking.istio.io/v1beta1",
    "networking.istio.io/v1alpha3",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    VirtualService,
    DestinationRule,
    ServiceEntry,
    Gateway,
    /// An OAM Application: a gray release, run by the release controller.
    Application,
    /// Where an Application's rollout stands, written by the release controller.
    Rollout,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::ServiceEntry,
        Kind::Gateway,
        Kind::Application,
        Kind::Rollout,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::Gateway => "Gateway",
            Kind::Application => "Application",
            Kind::Rollout => "Rollout",
        }
    }

    /// The apiVersions an object of this kind may be written with, newest first.
    pub fn api_versions(&self) -> &'static [&'static str] {
        match self {
            Kind::Application => &[OAM_API_VERSION],
            Kind::Rollout => &[ROLLOUT_API_VERSION],
            _ => ISTIO_API_VERSIONS,
        }
    }

    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an object was read from: a file and the index of the document inside it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Origin {
    pub file: String,
    pub document: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    pub name: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
}

fn default_namespace() -> String {
    DEFAULT_NAMESPACE.to_string()
}

// A config holds tens to thousands of objects, built once per change: boxing the large variant would
// save little memory and put a `Box` in every match on a spec.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Spec {
    VirtualService(VirtualService),
    DestinationRule(DestinationRule),
    ServiceEntry(ServiceEntry),
    Gateway(Gateway),
    Application(ApplicationSpec),
    Rollout(RolloutStatus),
}

impl Spec {
    pub fn kind(&self) -> Kind {
        match self {
            Spec::VirtualService(_) => Kind::VirtualService,
            Spec::DestinationRule(_) => Kind::DestinationRule,
            Spec::ServiceEntry(_) => Kind::ServiceEntry,
            Spec::Gateway(_) => Kind::Gateway,
            Spec::Application(_) => Kind::Application,
            Spec::Rollout(_) => Kind::Rollout,
        }
    }
}

/// One parsed (not yet cross-validated) object.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub api_version: String,
    pub meta: ObjectMeta,
    pub spec: Spec,
    pub origin: Origin,
}

impl Object {
    pub fn kind(&self) -> Kind {
        self.spec.kind()
    }

    /// `Kind namespace/name`, the way errors and logs name an object.
    pub fn display_name(&self) -> String {
        format!("{} {}/{}", self.kind(), self.meta.namespace, self.meta.name)
    }

    /// The object as the JSON users would write (apiVersion, kind, metadata, spec).
    pub fn to_json(&self) -> serde_json::Value {
        let spec = match &self.spec {
            Spec::VirtualService(s) => serde_json::to_value(s),
            Spec::DestinationRule(s) => serde_json::to_value(s),
            Spec::ServiceEntry(s) => serde_json::to_value(s),
            Spec::Gateway(s) => serde_json::to_value(s),
            Spec::Application(s) => Ok(s.to_json()),
            Spec::Rollout(s) => serde_json::to_value(s),
        }
        .unwrap_or(serde_json::Value::Null);
        serde_json::json!({
            "apiVersion": self.api_version,
            "kind": self.kind().as_str(),
            "metadata": self.meta,
            "spec": spec,
        })
    }
}

/// A typed object of one kind, as held by a validated [`ConfigSet`].
#[derive(Debug, Clone, PartialEq)]
pub struct Resource<T> {
    pub meta: ObjectMeta,
    pub origin: Origin,
    pub spec: T,
}

/// A complete, validated configuration: the only thing translation ever reads.
///
/// Objects of each kind are sorted by (namespace, name) so that everything derived from a set is
/// deterministic.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConfigSet {
    pub virtual_services: Vec<Resource<VirtualService>>,
    pub destination_rules: Vec<Resource<DestinationRule>>,
    pub service_entries: Vec<Resource<ServiceEntry>>,
    pub gateways: Vec<Resource<Gateway>>,
    /// Gray releases, validated on their own (the objects they generate are ordinary ones).
    pub applications: Vec<Resource<ApplicationSpec>>,
    pub rollouts: Vec<Resource<RolloutStatus>>,
    /// Hosts declared by ServiceEntries, built on first use (host resolution is on every hot
    /// path of translation).
    declared_hosts: DeclaredHosts,
}

/// A cache derived from `service_entries`: never compared, and not carried by clones (a clone
/// may be edited, so it builds its own).
#[derive(Debug, Default)]
struct DeclaredHosts(std::sync::OnceLock<std::collections::HashSet<String>>);

impl Clone for DeclaredHosts {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl PartialEq for DeclaredHosts {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl ConfigSet {
    pub fn len(&self) -> usize {
        self.virtual_services.len()
            + self.destination_rules.len()
            + self.service_entries.len()
            + self.gateways.len()
            + self.applications.len()
            + self.rollouts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of objects per kind, for metrics.
    pub fn counts(&self) -> [(Kind, usize); 6] {
        [
            (Kind::VirtualService, self.virtual_services.len()),
            (Kind::DestinationRule, self.destination_rules.len()),
            (Kind::ServiceEntry, self.service_entries.len()),
            (Kind::Gateway, self.gateways.len()),
            (Kind::Application, self.applications.len()),
            (Kind::Rollout, self.rollouts.len()),
        ]
    }

    /// Every object of the set as an [`Object`] (kinds in [`Kind::ALL`] order, each sorted by
    /// namespace and name), e.g. to list them or to merge them with objects being applied.
    /// A `Resource` does not keep the apiVersion it was written with: objects get the newest one
    /// of their kind.
    pub fn objects(&self) -> Vec<Object> {
        fn wrap<T: Clone>(
            resources: &[Resource<T>],
            spec: fn(T) -> Spec,
        ) -> impl Iterator<Item = Object> + '_ {
            resources.iter().map(move |r| {
                let spec = spec(r.spec.clone());
                Object {
                    api_version: spec.kind().api_versions()[0].to_string(),
                    meta: r.meta.clone(),
                    spec,
                    origin: r.origin.clone(),
                }
            })
        }
        wrap(&self.virtual_services, Spec::VirtualService)
            .chain(wrap(&self.destination_rules, Spec::DestinationRule))
            .chain(wrap(&self.service_entries, Spec::ServiceEntry))
            .chain(wrap(&self.gateways, Spec::Gateway))
            .chain(wrap(&self.applications, Spec::Application))
            .chain(wrap(&self.rollouts, Spec::Rollout))
            .collect()
    }

    /// Resolve a host as written in an object of `namespace` the way Istio does: a host written
    /// exactly as a ServiceEntry declares it stays as it is; any other short name (no dot) becomes
    /// `<name>.<namespace>.svc.cluster.local`; a dotted name is taken as written.
    pub fn resolve_host(&self, host: &str, namespace: &str) -> String {
        if host.contains('.') || host == "*" {
            return host.to_string(); // taken as written whether declared or not
        }
        let declared = self.declared_hosts.0.get_or_init(|| {
            self.service_entries
                .iter()
                .flat_map(|se| se.spec.hosts.iter().cloned())
                .collect()
        });
        crate::host::resolve(host, namespace, declared.contains(host))
    }
}
