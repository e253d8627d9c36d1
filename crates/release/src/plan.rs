//! Where a rollout stands, and what traffic split that implies: the steps up to and including
//! the current one, folded in order.
//!
//! A weight step sets the split; a content step sets the match that sends requests to the new
//! version (and, with `traffic`, the split of the others); suspend and analysis steps keep what
//! the steps before them set; promote and rollback end the rollout with all traffic on one
//! version. A content match stays in force through later weight steps until the rollout ends.

use crate::ReleaseError;
use graymesh_model::oam::{
    Application, CanaryTraffic, Component, ContentStep, CookieMatch, HeaderMatch, StepAction,
    TrafficWeight, UriMatch,
};

/// Where a rollout is: at a step of its workflow (0-based), or ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutState {
    Step(usize),
    Promoted,
    RolledBack,
}

impl RolloutState {
    /// Every state an Application can be in: each step, then the two ends.
    pub fn all(app: &Application) -> Vec<RolloutState> {
        (0..app.spec.workflow.len())
            .map(RolloutState::Step)
            .chain([RolloutState::Promoted, RolloutState::RolledBack])
            .collect()
    }
}

/// `step 2`, `promoted`, `rolled-back`, the way messages name a state.
impl std::fmt::Display for RolloutState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RolloutState::Step(i) => write!(f, "step {i}"),
            RolloutState::Promoted => f.write_str("promoted"),
            RolloutState::RolledBack => f.write_str("rolled-back"),
        }
    }
}

/// The traffic one state implies, in terms of the Application's components.
#[derive(Debug, Clone, PartialEq)]
pub struct TrafficPlan<'a> {
    pub old: &'a Component,
    pub new: &'a Component,
    pub canary: &'a CanaryTraffic,
    /// Requests matching this go to the new version; checked before the split.
    pub content: Option<ContentMatch<'a>>,
    /// Everyone else, split by weight (one entry = all of it).
    pub split: Vec<(&'a Component, u32)>,
}

/// The conditions of a content step (all must hold).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ContentMatch<'a> {
    pub header: Option<&'a HeaderMatch>,
    pub cookie: Option<&'a CookieMatch>,
    pub uri: Option<&'a UriMatch>,
}

/// What `state` means for traffic. Fails only for an Application validation would reject
/// (no trait, a name that is not a component) or a step index past the workflow.
pub fn plan(app: &Application, state: RolloutState) -> Result<TrafficPlan<'_>, ReleaseError> {
    let application = app.display_name();
    let (_, canary) = app
        .canary_traffic()
        .ok_or_else(|| ReleaseError::NoCanaryTrait {
            application: application.clone(),
        })?;
    let component = |name: &str| {
        app.component(name)
            .ok_or_else(|| ReleaseError::NoSuchComponent {
                application: application.clone(),
                name: name.to_string(),
            })
    };
    let old = component(&canary.versions.old_version)?;
    let new = component(&canary.versions.new_version)?;
    let mut plan = TrafficPlan {
        old,
        new,
        canary,
        content: None,
        split: vec![(old, 100)],
    };
    let last = match state {
        RolloutState::Promoted => return Ok(plan.all_to(new)),
        RolloutState::RolledBack => return Ok(plan.all_to(old)),
        RolloutState::Step(index) => index,
    };
    let steps = app
        .spec
        .workflow
        .get(..=last)
        .ok_or(ReleaseError::NoSuchStep {
            application: application.clone(),
            index: last,
            steps: app.spec.workflow.len(),
        })?;
    for step in steps {
        plan = match &step.action {
            StepAction::Weight(w) => plan.split_by(&w.traffic, component)?,
            StepAction::Content(c) => plan.content_by(c).split_by(&c.traffic, component)?,
            StepAction::Suspend(_) | StepAction::Analysis(_) => plan,
            StepAction::Promote => plan.all_to(new),
            StepAction::Rollback => plan.all_to(old),
        };
    }
    Ok(plan)
}

impl<'a> TrafficPlan<'a> {
    fn all_to(self, component: &'a Component) -> Self {
        Self {
            content: None,
            split: vec![(component, 100)],
            ..self
        }
    }

    /// An empty list (a content step without `traffic`) keeps the split as it is.
    fn split_by(
        self,
        traffic: &[TrafficWeight],
        component: impl Fn(&str) -> Result<&'a Component, ReleaseError>,
    ) -> Result<Self, ReleaseError> {
        if traffic.is_empty() {
            return Ok(self);
        }
        let split = traffic
            .iter()
            .map(|t| Ok((component(&t.revision)?, t.weight)))
            .collect::<Result<_, ReleaseError>>()?;
        Ok(Self { split, ..self })
    }

    /// The step's own conditions, or the trait's header and uri when it names none.
    fn content_by(self, step: &'a ContentStep) -> Self {
        let own = ContentMatch {
            header: step.header.as_ref(),
            cookie: step.cookie.as_ref(),
            uri: step.uri.as_ref(),
        };
        let content = if own == ContentMatch::default() {
            ContentMatch {
                header: self.canary.header.as_ref(),
                cookie: None,
                uri: self.canary.uri.as_ref(),
            }
        } else {
            own
        };
        Self {
            content: Some(content),
            ..self
        }
    }
}
