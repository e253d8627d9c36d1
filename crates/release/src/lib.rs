//! Gray release, the pure part: what each state of an OAM Application's rollout means as
//! ordinary Istio objects.
//!
//! [`generate`] takes a validated [`Application`] and a [`RolloutState`] (a step of its
//! workflow, or promoted, or rolled back) and returns the VirtualService and DestinationRule
//! that state implies. It does no I/O and keeps no state: the release controller that will run
//! workflows inside pilot and write these objects to the store is planned, not built; nothing
//! here applies anything.

pub mod analysis;
pub mod controller;
mod objects;
mod plan;
#[cfg(test)]
mod tests;
pub mod view;

pub use objects::{
    Generated, APPLICATION_ANNOTATION, CONTENT_ROUTE, MANAGED_BY_LABEL, MANAGED_BY_VALUE,
    NAME_SUFFIX, SPLIT_ROUTE, STATE_ANNOTATION,
};
pub use plan::{plan, ContentMatch, RolloutState, TrafficPlan};

use graymesh_model::oam::Application;

/// Why an Application cannot be translated. Validation rejects every Application that would
/// fail here except for a step index past the workflow, which is the caller's mistake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseError {
    #[error("{application}: has no canary-traffic trait, so no service to release")]
    NoCanaryTrait { application: String },
    #[error("{application}: names component {name:?}, which it does not define")]
    NoSuchComponent { application: String, name: String },
    #[error("{application}: has no step {index} (its workflow has {steps} steps, 0-based)")]
    NoSuchStep {
        application: String,
        index: usize,
        steps: usize,
    },
}

/// The VirtualService and DestinationRule that `state` of `app`'s rollout implies.
pub fn generate(app: &Application, state: RolloutState) -> Result<Generated, ReleaseError> {
    let plan = plan(app, state)?;
    Ok(objects::objects(app, &plan, describe(app, state)))
}

/// The value of the [`STATE_ANNOTATION`]: `step 2: canary-20`, `promoted`, `rolled-back`.
fn describe(app: &Application, state: RolloutState) -> String {
    match state {
        RolloutState::Step(i) => {
            let name = app.spec.workflow.get(i).map_or("", |s| s.name.as_str());
            format!("{state}: {name}")
        }
        RolloutState::Promoted | RolloutState::RolledBack => state.to_string(),
    }
}
