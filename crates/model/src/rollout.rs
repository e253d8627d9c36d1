//! `Rollout` (`graymesh.io/v1alpha1`): where the release of one Application stands, written by
//! the release controller next to the objects it generates, in the same store write.
//!
//! It is the controller's memory: a pilot that restarts (or another replica that becomes leader)
//! reads it and carries on at the same step, and users read it with `graymesh rollout status` or
//! `graymesh get rollouts`. It holds only plain data; what a state means for traffic is the
//! release crate's business.

use serde::{Deserialize, Serialize};

pub const ROLLOUT_API_VERSION: &str = "graymesh.io/v1alpha1";
pub const ROLLOUT_KIND: &str = "Rollout";
/// How many decisions a Rollout keeps (the oldest are dropped first).
pub const MAX_DECISIONS: usize = 100;

/// The state of one Application's rollout. Named like the Application, in its namespace.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolloutStatus {
    /// The resource version of the Application this rollout runs, when it was last read.
    #[serde(default)]
    pub application_version: String,
    pub phase: RolloutPhase,
    /// The step the rollout is at (0-based); kept after the end to say where it ended.
    #[serde(default)]
    pub step: usize,
    /// When the current step began (ms since the Unix epoch).
    #[serde(default)]
    pub step_started_ms: u64,
    /// A paused rollout keeps its traffic and does not advance until resumed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// Progress of the current step when it is an analysis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisProgress>,
    /// Every decision taken, oldest first (at most [`MAX_DECISIONS`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decisions: Vec<Decision>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
pub enum RolloutPhase {
    /// Running its workflow.
    #[default]
    Progressing,
    /// The new version is the stable one and takes all traffic.
    Promoted,
    /// All traffic is back on the old version.
    RolledBack,
}

impl RolloutPhase {
    pub fn is_done(&self) -> bool {
        !matches!(self, RolloutPhase::Progressing)
    }
}

/// Checks of an analysis step so far.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnalysisProgress {
    pub passed: u32,
    pub failed: u32,
    pub held: u32,
    /// When the last check ended (ms since the Unix epoch); the next is due an interval later.
    #[serde(default)]
    pub last_check_ms: u64,
    /// The last check's verdict and reason, e.g. `hold: 12 requests < minRequests 100`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_verdict: String,
}

/// One thing the controller (or a user's command) decided, and why.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Decision {
    /// ms since the Unix epoch.
    pub at_ms: u64,
    /// The step it was taken at.
    pub step: usize,
    /// `start`, `advance`, `hold`, `pass`, `fail`, `pause`, `resume`, `promote`, `rollback`.
    pub action: String,
    pub reason: String,
}

impl RolloutStatus {
    /// Record a decision, dropping the oldest beyond [`MAX_DECISIONS`].
    pub fn decide(&mut self, at_ms: u64, action: &str, reason: impl Into<String>) {
        self.decisions.push(Decision {
            at_ms,
            step: self.step,
            action: action.to_string(),
            reason: reason.into(),
        });
        if self.decisions.len() > MAX_DECISIONS {
            let extra = self.decisions.len() - MAX_DECISIONS;
            self.decisions.drain(..extra);
        }
    }
}
