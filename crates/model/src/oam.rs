//! The OAM `Application` (`core.oam.dev/v1beta1`) as graymesh reads it: one service released
//! from an old to a new version by a workflow of steps.
//!
//! KubeVela's shape is kept: `spec.components[]` with a `type` and `properties`, `traits[]`
//! attached to a component, `spec.workflow.steps[]` with `name`, `type` and `properties`. Only
//! the types below are understood (component `webservice`, trait `canary-traffic`, the six step
//! types); anything else is a parse error naming the field. This module is data only: parsing is
//! in `parse/application.rs`, checks in `validate/application.rs`, and what a step means for
//! traffic in the `graymesh-release` crate.

use crate::duration::Duration;
use crate::object::{ObjectMeta, Origin};
use serde::{Deserialize, Serialize};

pub const OAM_API_VERSION: &str = "core.oam.dev/v1beta1";
pub const APPLICATION_KIND: &str = "Application";
/// Suffix of the names of the VirtualService and DestinationRule generated for an Application.
pub const GENERATED_SUFFIX: &str = "-release";

/// One parsed (not yet validated) Application.
#[derive(Debug, Clone, PartialEq)]
pub struct Application {
    pub meta: ObjectMeta,
    pub spec: ApplicationSpec,
    pub origin: Origin,
}

impl Application {
    /// `Application namespace/name`, the way errors name it.
    pub fn display_name(&self) -> String {
        format!(
            "{APPLICATION_KIND} {}/{}",
            self.meta.namespace, self.meta.name
        )
    }

    pub fn component(&self, name: &str) -> Option<&Component> {
        self.spec.components.iter().find(|c| c.name == name)
    }

    /// The application's `canary-traffic` trait and the component it is attached to (the first
    /// one; validation allows exactly one).
    pub fn canary_traffic(&self) -> Option<(&Component, &CanaryTraffic)> {
        self.spec.components.iter().find_map(|c| {
            // `Trait` has one variant today; a `match` keeps this honest when it gets more.
            c.traits
                .iter()
                .map(|t| match t {
                    Trait::CanaryTraffic(canary) => (c, canary),
                })
                .next()
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApplicationSpec {
    pub components: Vec<Component>,
    pub workflow: Vec<WorkflowStep>,
}

/// A component of type `webservice`: one version of a service.
#[derive(Debug, Clone, PartialEq)]
pub struct Component {
    pub name: String,
    pub properties: WebService,
    pub traits: Vec<Trait>,
}

/// `webservice` properties: which service this component is, and the version it runs (the
/// value of the instances' `version` label).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebService {
    pub host: String,
    pub port: u32,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Trait {
    CanaryTraffic(CanaryTraffic),
}

/// `canary-traffic`: which two components are the old and the new version of one service, where
/// the generated routing objects go, and the default content match and sticky key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CanaryTraffic {
    /// Namespace of the generated VirtualService and DestinationRule; the Application's if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub versions: Versions,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<HeaderMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<UriMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_key: Option<HashKey>,
}

/// Component names of the stable and the gray version.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Versions {
    pub old_version: String,
    pub new_version: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchRule {
    Exact,
    Prefix,
    Regex,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderMatch {
    pub match_rule: MatchRule,
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CookieMatch {
    pub match_rule: MatchRule,
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UriMatch {
    pub match_rule: MatchRule,
    pub path: String,
}

/// What keeps a user on one version: exactly one of a header, a cookie or a baggage member.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HashKey {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baggage: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowStep {
    pub name: String,
    pub action: StepAction,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StepAction {
    Weight(WeightStep),
    Content(ContentStep),
    Suspend(SuspendStep),
    Analysis(AnalysisStep),
    Promote,
    Rollback,
}

impl StepAction {
    /// The step `type` as written in YAML.
    pub fn type_name(&self) -> &'static str {
        match self {
            StepAction::Weight(_) => "canary-rollout-weight",
            StepAction::Content(_) => "canary-rollout-content",
            StepAction::Suspend(_) => "suspend",
            StepAction::Analysis(_) => "analysis",
            StepAction::Promote => "promote",
            StepAction::Rollback => "rollback",
        }
    }
}

/// `canary-rollout-weight`: split all traffic between the versions.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WeightStep {
    pub traffic: Vec<TrafficWeight>,
}

/// `revision` is a component name: the trait's `oldVersion` or `newVersion`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficWeight {
    pub revision: String,
    pub weight: u32,
}

/// `canary-rollout-content`: requests matching every given condition go to the new version;
/// with `traffic`, the other requests are split by it at the same time. Without any condition,
/// the trait's `header` and `uri` are used.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContentStep {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<HeaderMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<CookieMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<UriMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traffic: Vec<TrafficWeight>,
}

/// `suspend`: a manual gate. With a timeout, `defaultAction` is taken when it runs out.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SuspendStep {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_action: Option<SuspendAction>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SuspendAction {
    Resume,
    Rollback,
}

/// `analysis`: every `interval`, compare the new version with the old one. Fewer than
/// `minRequests` requests to the new version in an interval is a "hold"; `maxFailures` failed
/// checks mean rollback.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnalysisStep {
    pub interval: Duration,
    /// How many checks (passed, not held) end the step with a pass.
    #[serde(default = "default_checks")]
    pub checks: u32,
    pub min_requests: u64,
    pub max_failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_rate: Option<SuccessRateThreshold>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p99: Option<LatencyThreshold>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_error_rate: Option<ErrorRateThreshold>,
}

fn default_checks() -> u32 {
    1
}

/// Percent of requests answered without a 5xx: at least `min`, or at most
/// `maxDropFromBaseline` percentage points below the old version's.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SuccessRateThreshold {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_drop_from_baseline: Option<f64>,
}

/// p99 latency: at most `max`, or at most `maxRatioToBaseline` times the old version's.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LatencyThreshold {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ratio_to_baseline: Option<f64>,
}

/// Percent of gRPC calls with a non-OK status: at most `max`, or at most
/// `maxRiseFromBaseline` percentage points above the old version's.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ErrorRateThreshold {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rise_from_baseline: Option<f64>,
}

// === impl ApplicationSpec ===

impl ApplicationSpec {
    /// The spec in KubeVela's shape (components with `type` and `properties`, traits, workflow
    /// steps), which parsing reads back to an equal spec: how a stored Application is written.
    pub fn to_json(&self) -> serde_json::Value {
        let value =
            |v: Result<serde_json::Value, serde_json::Error>| v.unwrap_or(serde_json::Value::Null);
        let components: Vec<serde_json::Value> = self
            .components
            .iter()
            .map(|c| {
                let traits: Vec<serde_json::Value> = c
                    .traits
                    .iter()
                    .map(|t| match t {
                        Trait::CanaryTraffic(canary) => serde_json::json!({
                            "type": "canary-traffic",
                            "properties": value(serde_json::to_value(canary)),
                        }),
                    })
                    .collect();
                let mut component = serde_json::json!({
                    "name": c.name,
                    "type": "webservice",
                    "properties": value(serde_json::to_value(&c.properties)),
                });
                if !traits.is_empty() {
                    component["traits"] = serde_json::Value::Array(traits);
                }
                component
            })
            .collect();
        let steps: Vec<serde_json::Value> = self
            .workflow
            .iter()
            .map(|step| {
                let properties = match &step.action {
                    StepAction::Weight(w) => Some(value(serde_json::to_value(w))),
                    StepAction::Content(c) => Some(value(serde_json::to_value(c))),
                    StepAction::Suspend(s) => Some(value(serde_json::to_value(s))),
                    StepAction::Analysis(a) => Some(value(serde_json::to_value(a))),
                    StepAction::Promote | StepAction::Rollback => None,
                };
                let mut out =
                    serde_json::json!({"name": step.name, "type": step.action.type_name()});
                if let Some(p) = properties {
                    out["properties"] = p;
                }
                out
            })
            .collect();
        serde_json::json!({"components": components, "workflow": {"steps": steps}})
    }
}

impl Application {
    /// The Application as a stored object (kind `Application`).
    pub fn into_object(self) -> crate::Object {
        crate::Object {
            api_version: OAM_API_VERSION.to_string(),
            meta: self.meta,
            spec: crate::Spec::Application(self.spec),
            origin: self.origin,
        }
    }

    /// The Application a stored one holds.
    pub fn from_resource(resource: &crate::Resource<ApplicationSpec>) -> Self {
        Self {
            meta: resource.meta.clone(),
            spec: resource.spec.clone(),
            origin: resource.origin.clone(),
        }
    }
}
