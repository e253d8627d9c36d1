//! An Application's spec, read in two passes: first the KubeVela frame (components, traits and
//! steps, each with a `type` and free-form `properties`), then each `properties` as the typed
//! struct its `type` names, so an error points at `spec.workflow.steps[2].properties.traffic`.

use super::envelope::{typed, Problem};
use crate::oam::{
    AnalysisStep, ApplicationSpec, CanaryTraffic, Component, ContentStep, StepAction, SuspendStep,
    Trait, WebService, WeightStep, WorkflowStep,
};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

const COMPONENT_TYPES: &str = "webservice";
const TRAIT_TYPES: &str = "canary-traffic";
const STEP_TYPES: &str =
    "canary-rollout-weight, canary-rollout-content, suspend, analysis, promote, rollback";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawSpec {
    components: Vec<RawComponent>,
    #[serde(default)]
    workflow: Option<RawWorkflow>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawComponent {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    properties: Option<Value>,
    #[serde(default)]
    traits: Vec<RawTrait>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawTrait {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    properties: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawWorkflow {
    steps: Vec<RawStep>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawStep {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    properties: Option<Value>,
}

/// `spec` of an Application, or every problem found in it.
pub(super) fn read_spec(value: Value) -> Result<ApplicationSpec, Vec<Problem>> {
    let raw: RawSpec = typed(value, "spec").map_err(|p| vec![p])?;
    let mut problems = Vec::new();
    let components = raw
        .components
        .into_iter()
        .enumerate()
        .filter_map(|(i, c)| keep(component(i, c), &mut problems))
        .collect();
    let steps = raw.workflow.map(|w| w.steps).unwrap_or_default();
    let workflow = steps
        .into_iter()
        .enumerate()
        .filter_map(|(i, s)| keep(step(i, s), &mut problems))
        .collect();
    if problems.is_empty() {
        Ok(ApplicationSpec {
            components,
            workflow,
        })
    } else {
        Err(problems)
    }
}

fn keep<T>(result: Result<T, Vec<Problem>>, problems: &mut Vec<Problem>) -> Option<T> {
    result.map_err(|mut found| problems.append(&mut found)).ok()
}

fn component(i: usize, raw: RawComponent) -> Result<Component, Vec<Problem>> {
    let path = format!("spec.components[{i}]");
    let mut problems = Vec::new();
    let properties = match raw.kind.as_str() {
        "webservice" => keep(
            properties::<WebService>(raw.properties, &path, "webservice"),
            &mut problems,
        ),
        other => {
            problems.push(unsupported(&path, "component", other, COMPONENT_TYPES));
            None
        }
    };
    let traits = raw
        .traits
        .into_iter()
        .enumerate()
        .filter_map(|(t, raw)| {
            keep(
                component_trait(&format!("{path}.traits[{t}]"), raw),
                &mut problems,
            )
        })
        .collect();
    match properties {
        Some(properties) if problems.is_empty() => Ok(Component {
            name: raw.name,
            properties,
            traits,
        }),
        _ => Err(problems),
    }
}

fn component_trait(path: &str, raw: RawTrait) -> Result<Trait, Vec<Problem>> {
    match raw.kind.as_str() {
        "canary-traffic" => properties::<CanaryTraffic>(raw.properties, path, "canary-traffic")
            .map(Trait::CanaryTraffic),
        other => Err(vec![unsupported(path, "trait", other, TRAIT_TYPES)]),
    }
}

fn step(i: usize, raw: RawStep) -> Result<WorkflowStep, Vec<Problem>> {
    let path = format!("spec.workflow.steps[{i}]");
    let p = raw.properties;
    let action = match raw.kind.as_str() {
        "canary-rollout-weight" => {
            StepAction::Weight(properties::<WeightStep>(p, &path, &raw.kind)?)
        }
        "canary-rollout-content" => {
            StepAction::Content(optional_properties::<ContentStep>(p, &path)?)
        }
        "suspend" => StepAction::Suspend(optional_properties::<SuspendStep>(p, &path)?),
        "analysis" => StepAction::Analysis(properties::<AnalysisStep>(p, &path, &raw.kind)?),
        "promote" => no_properties(p, &path, StepAction::Promote)?,
        "rollback" => no_properties(p, &path, StepAction::Rollback)?,
        other => return Err(vec![unsupported(&path, "step", other, STEP_TYPES)]),
    };
    Ok(WorkflowStep {
        name: raw.name,
        action,
    })
}

fn properties<T: DeserializeOwned>(
    value: Option<Value>,
    path: &str,
    kind: &str,
) -> Result<T, Vec<Problem>> {
    let field = format!("{path}.properties");
    let value = value.ok_or_else(|| {
        vec![Problem::new(
            &field,
            format!("missing; a {kind} needs properties"),
        )]
    })?;
    typed(value, &field).map_err(|p| vec![p])
}

/// Properties that may be left out entirely (every field has a default).
fn optional_properties<T: DeserializeOwned + Default>(
    value: Option<Value>,
    path: &str,
) -> Result<T, Vec<Problem>> {
    match value {
        None | Some(Value::Null) => Ok(T::default()),
        Some(value) => typed(value, &format!("{path}.properties")).map_err(|p| vec![p]),
    }
}

/// `promote` and `rollback` take nothing; an empty `properties: {}` is accepted.
fn no_properties(
    value: Option<Value>,
    path: &str,
    action: StepAction,
) -> Result<StepAction, Vec<Problem>> {
    match value {
        None | Some(Value::Null) => Ok(action),
        Some(Value::Object(map)) if map.is_empty() => Ok(action),
        Some(_) => Err(vec![Problem::new(
            format!("{path}.properties"),
            format!("a {} step takes no properties", action.type_name()),
        )]),
    }
}

fn unsupported(path: &str, what: &str, found: &str, supported: &str) -> Problem {
    Problem::new(
        format!("{path}.type"),
        format!("unsupported {what} type {found:?}; supported: {supported}"),
    )
}
