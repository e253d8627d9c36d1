//! The pure part of the controller: given an Application, its Rollout (if any) and the time,
//! what is due next, and the Rollout each decision leads to. No I/O, no clock of its own.

use crate::analysis::Verdict;
use crate::RolloutState;
use graymesh_model::oam::{Application, StepAction, SuspendAction};
use graymesh_model::rollout::AnalysisProgress;
use graymesh_model::{RolloutPhase, RolloutStatus};

/// What the controller should do for one Application now.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Nothing is due (a gate is closed, a check is not due, the rollout ended, it is paused).
    Wait,
    /// Go to step `index` (writing what it implies), for `reason`.
    Enter { index: usize, reason: String },
    /// An analysis check is due.
    Check,
}

/// What is due for `app` (at resource version `app_version`) with its Rollout `status` at `now_ms`.
pub fn next(
    app: &Application,
    app_version: &str,
    status: Option<&RolloutStatus>,
    now_ms: u64,
) -> Next {
    let Some(status) = status else {
        return Next::Enter {
            index: 0,
            reason: "rollout started".to_string(),
        };
    };
    let last = app.spec.workflow.len().saturating_sub(1);
    if status.application_version != app_version {
        return match status.phase {
            // A new release of the same Application: run its workflow from the start.
            RolloutPhase::Promoted | RolloutPhase::RolledBack => Next::Enter {
                index: 0,
                reason: "the Application changed after the rollout ended: a new rollout"
                    .to_string(),
            },
            RolloutPhase::Progressing => Next::Enter {
                index: status.step.min(last),
                reason: "the Application changed: carrying on at the same step with the new spec"
                    .to_string(),
            },
        };
    }
    if status.phase.is_done() || status.paused {
        return Next::Wait;
    }
    let Some(step) = app.spec.workflow.get(status.step) else {
        return Next::Wait;
    };
    let following = status.step + 1;
    match &step.action {
        StepAction::Weight(_) | StepAction::Content(_) if following <= last => Next::Enter {
            index: following,
            reason: format!("step {:?} applied", step.name),
        },
        // The last step set the traffic and nothing follows: it stays until a user decides.
        StepAction::Weight(_) | StepAction::Content(_) => Next::Wait,
        StepAction::Suspend(suspend) => {
            let Some(timeout) = suspend.timeout else {
                return Next::Wait;
            };
            let timeout_ms = u64::try_from(timeout.as_std().as_millis()).unwrap_or(u64::MAX);
            if now_ms < status.step_started_ms.saturating_add(timeout_ms) {
                return Next::Wait;
            }
            match suspend.default_action.unwrap_or(SuspendAction::Resume) {
                SuspendAction::Resume if following <= last => Next::Enter {
                    index: following,
                    reason: format!("gate {:?} timed out after {timeout}: resume", step.name),
                },
                SuspendAction::Resume => Next::Wait,
                SuspendAction::Rollback => Next::Enter {
                    index: ROLLBACK,
                    reason: format!("gate {:?} timed out after {timeout}: rollback", step.name),
                },
            }
        }
        StepAction::Analysis(analysis) => {
            let interval =
                u64::try_from(analysis.interval.as_std().as_millis()).unwrap_or(u64::MAX);
            let since = status
                .analysis
                .as_ref()
                .map_or(status.step_started_ms, |a| {
                    a.last_check_ms.max(status.step_started_ms)
                });
            if now_ms >= since.saturating_add(interval) {
                Next::Check
            } else {
                Next::Wait
            }
        }
        // Entering these ended the rollout; a status still at one was written by hand.
        StepAction::Promote | StepAction::Rollback => Next::Wait,
    }
}

/// Index meaning "roll back" in [`Next::Enter`] (a gate's default action, a failed analysis).
pub const ROLLBACK: usize = usize::MAX;
/// Index meaning "promote" in [`Next::Enter`] (a user's `rollout promote`).
pub const PROMOTE: usize = usize::MAX - 1;

/// The Rollout after going to step `index` (or [`ROLLBACK`] / [`PROMOTE`]), and the state whose
/// objects must be written with it.
pub fn enter(
    app: &Application,
    app_version: &str,
    previous: Option<&RolloutStatus>,
    index: usize,
    reason: &str,
    now_ms: u64,
) -> (RolloutStatus, RolloutState) {
    let mut status = previous.cloned().unwrap_or_default();
    let restart =
        previous.is_none_or(|p| p.phase.is_done() && p.application_version != app_version);
    if restart {
        status.phase = RolloutPhase::Progressing;
        status.paused = false;
    }
    status.application_version = app_version.to_string();
    let (phase, state, action) = match index {
        ROLLBACK => (
            RolloutPhase::RolledBack,
            RolloutState::RolledBack,
            "rollback",
        ),
        PROMOTE => (RolloutPhase::Promoted, RolloutState::Promoted, "promote"),
        i => match app.spec.workflow.get(i).map(|s| &s.action) {
            Some(StepAction::Promote) => {
                (RolloutPhase::Promoted, RolloutState::Promoted, "promote")
            }
            Some(StepAction::Rollback) => (
                RolloutPhase::RolledBack,
                RolloutState::RolledBack,
                "rollback",
            ),
            _ => (
                RolloutPhase::Progressing,
                RolloutState::Step(i),
                if restart { "start" } else { "advance" },
            ),
        },
    };
    if let RolloutState::Step(i) = state {
        status.step = i;
        status.analysis = matches!(
            app.spec.workflow.get(i).map(|s| &s.action),
            Some(StepAction::Analysis(_))
        )
        .then(AnalysisProgress::default);
    } else if index < PROMOTE {
        status.step = index;
    }
    status.phase = phase;
    status.step_started_ms = now_ms;
    status.paused = status.paused && !phase.is_done();
    let step_name = app
        .spec
        .workflow
        .get(status.step)
        .map_or("", |s| s.name.as_str());
    let reason = match state {
        RolloutState::Step(_) => format!("{reason}; now at step {:?}", step_name),
        _ => reason.to_string(),
    };
    status.decide(now_ms, action, reason);
    (status, state)
}

/// The Rollout after an analysis check with `verdict`, and where it leads: `Some(next index)`
/// (or [`ROLLBACK`]) when the step ends, `None` when it goes on.
pub fn record_check(
    app: &Application,
    status: &RolloutStatus,
    verdict: &Verdict,
    now_ms: u64,
) -> (RolloutStatus, Option<(usize, String)>) {
    let mut status = status.clone();
    let Some(StepAction::Analysis(step)) = app.spec.workflow.get(status.step).map(|s| &s.action)
    else {
        return (status, None);
    };
    let mut progress = status.analysis.take().unwrap_or_default();
    progress.last_check_ms = now_ms;
    let (action, reason) = match verdict {
        Verdict::Pass(r) => {
            progress.passed += 1;
            ("pass", r)
        }
        Verdict::Fail(r) => {
            progress.failed += 1;
            ("fail", r)
        }
        Verdict::Hold(r) => {
            progress.held += 1;
            ("hold", r)
        }
    };
    progress.last_verdict = format!("{action}: {reason}");
    let outcome = if progress.failed >= step.max_failures.max(1) {
        Some((
            ROLLBACK,
            format!(
                "analysis failed {} of {} allowed checks ({reason})",
                progress.failed, step.max_failures
            ),
        ))
    } else if progress.passed >= step.checks.max(1) && status.step + 1 < app.spec.workflow.len() {
        Some((
            status.step + 1,
            format!("analysis passed {} checks ({reason})", progress.passed),
        ))
    } else {
        None
    };
    let (passed, failed, held) = (progress.passed, progress.failed, progress.held);
    status.analysis = Some(progress);
    status.decide(
        now_ms,
        action,
        format!(
            "{reason} (passed {passed}/{}, failed {failed}/{}, held {held})",
            step.checks, step.max_failures
        ),
    );
    (status, outcome)
}

/// What a user can ask of a running rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Pass a manual gate, or carry on after a pause.
    Resume,
    /// Keep the traffic as it is and stop advancing.
    Pause,
    /// Skip the remaining steps: the new version takes all traffic.
    Promote,
    /// All traffic back to the old version.
    Rollback,
}

impl Command {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "resume" => Some(Command::Resume),
            "pause" => Some(Command::Pause),
            "promote" => Some(Command::Promote),
            "rollback" => Some(Command::Rollback),
            _ => None,
        }
    }
}

/// The Rollout after a user's `command`, and the state to write with it; an error says why the
/// command does not apply now.
pub fn command(
    app: &Application,
    app_version: &str,
    status: &RolloutStatus,
    command: Command,
    now_ms: u64,
) -> Result<(RolloutStatus, RolloutState), String> {
    let name = app.display_name();
    if status.phase.is_done() {
        let ended = match status.phase {
            RolloutPhase::Promoted => "was promoted",
            _ => "was rolled back",
        };
        let verb = format!("{command:?}").to_lowercase();
        return Err(format!("the rollout of {name} {ended}; nothing to {verb}"));
    }
    let current = RolloutState::Step(status.step);
    match command {
        Command::Promote => Ok(enter(
            app,
            app_version,
            Some(status),
            PROMOTE,
            "promoted by a user",
            now_ms,
        )),
        Command::Rollback => Ok(enter(
            app,
            app_version,
            Some(status),
            ROLLBACK,
            "rolled back by a user",
            now_ms,
        )),
        Command::Pause => {
            let mut next = status.clone();
            next.paused = true;
            next.decide(now_ms, "pause", "paused by a user: traffic stays as it is");
            Ok((next, current))
        }
        Command::Resume if status.paused => {
            let mut next = status.clone();
            next.paused = false;
            next.decide(now_ms, "resume", "resumed by a user");
            Ok((next, current))
        }
        Command::Resume => match app.spec.workflow.get(status.step) {
            Some(step) if matches!(step.action, StepAction::Suspend(_)) => {
                if status.step + 1 >= app.spec.workflow.len() {
                    return Err(format!(
                        "{name}: gate {:?} is the last step; promote or roll back instead",
                        step.name
                    ));
                }
                let reason = format!("gate {:?} passed by a user", step.name);
                Ok(enter(
                    app,
                    app_version,
                    Some(status),
                    status.step + 1,
                    &reason,
                    now_ms,
                ))
            }
            Some(step) => Err(format!(
                "{name} is not paused and not at a gate: it is at step {} {:?} ({})",
                status.step,
                step.name,
                step.action.type_name()
            )),
            None => Err(format!(
                "{name} is at step {}, past its workflow",
                status.step
            )),
        },
    }
}
