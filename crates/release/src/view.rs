//! A rollout as people and scripts read it (`graymesh rollout status`, the admin API): where it
//! is, what traffic that means, what it waits for, and what it decided. Built from the stored
//! Application and Rollout only; the telemetry per version is added by the caller.

use crate::analysis::VersionStats;
use crate::controller::{versions, Release};
use crate::{plan, ContentMatch, RolloutState};
use graymesh_model::oam::{MatchRule, StepAction};
use graymesh_model::rollout::{AnalysisProgress, Decision};
use graymesh_model::RolloutPhase;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutView {
    pub namespace: String,
    pub name: String,
    pub service: String,
    pub old_version: String,
    pub new_version: String,
    /// `NotStarted`, `Progressing`, `Paused`, `Promoted`, `RolledBack`.
    pub phase: String,
    /// 0-based; `steps` is the workflow's length.
    pub step: usize,
    pub steps: usize,
    pub step_name: String,
    pub step_type: String,
    /// Every step's name, by index (decisions name steps by index).
    pub step_names: Vec<String>,
    /// The split of requests that match no content rule, by version.
    pub weights: Vec<VersionWeight>,
    /// Requests matching this go to the new version whatever the weights say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_match: Option<String>,
    /// What the rollout waits for now, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisProgress>,
    /// The last store write that failed, when the latest attempt failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub step_started_ms: u64,
    pub decisions: Vec<Decision>,
    /// Telemetry per version over `statsWindowSeconds` (filled by the admin API).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stats: Vec<VersionStatsView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats_window_seconds: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VersionWeight {
    pub version: String,
    pub weight: u32,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionStatsView {
    pub version: String,
    pub requests: u64,
    /// Percent of requests without a 5xx; absent without requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl VersionStatsView {
    pub fn new(version: &str, stats: Result<VersionStats, String>) -> Self {
        match stats {
            Ok(s) => Self {
                version: version.to_string(),
                requests: s.requests,
                success_rate: (s.requests > 0).then(|| {
                    100.0 * (s.requests.saturating_sub(s.server_errors)) as f64 / s.requests as f64
                }),
                p99_ms: s.p99.map(|d| d.as_secs_f64() * 1000.0),
                error: None,
            },
            Err(e) => Self {
                version: version.to_string(),
                requests: 0,
                success_rate: None,
                p99_ms: None,
                error: Some(e),
            },
        }
    }
}

/// The view of `release` at `now_ms`; `error` is the controller's last failed write.
pub fn view(release: &Release, error: Option<String>, now_ms: u64) -> RolloutView {
    let app = &release.app;
    let (old, new) = versions(app).map_or((String::new(), String::new()), |(o, n)| {
        (o.properties.version.clone(), n.properties.version.clone())
    });
    let service = versions(app).map_or(String::new(), |(o, _)| o.properties.host.clone());
    let status = release.rollout.as_ref();
    let state = match status.map(|s| s.phase) {
        None => None,
        Some(RolloutPhase::Promoted) => Some(RolloutState::Promoted),
        Some(RolloutPhase::RolledBack) => Some(RolloutState::RolledBack),
        Some(RolloutPhase::Progressing) => status.map(|s| RolloutState::Step(s.step)),
    };
    let traffic = state.and_then(|state| plan(app, state).ok());
    let weights = traffic.as_ref().map_or_else(Vec::new, |p| {
        p.split
            .iter()
            .map(|(c, w)| VersionWeight {
                version: c.properties.version.clone(),
                weight: *w,
            })
            .collect()
    });
    let content_match = traffic
        .as_ref()
        .and_then(|p| p.content.as_ref().map(describe_match));
    let step = status.map_or(0, |s| s.step);
    let workflow_step = app.spec.workflow.get(step);
    let phase = match status {
        None => "NotStarted",
        Some(s) if s.paused && !s.phase.is_done() => "Paused",
        Some(s) => match s.phase {
            RolloutPhase::Progressing => "Progressing",
            RolloutPhase::Promoted => "Promoted",
            RolloutPhase::RolledBack => "RolledBack",
        },
    };
    RolloutView {
        namespace: app.meta.namespace.clone(),
        name: app.meta.name.clone(),
        service,
        old_version: old,
        new_version: new,
        phase: phase.to_string(),
        step,
        steps: app.spec.workflow.len(),
        step_name: workflow_step.map_or(String::new(), |s| s.name.clone()),
        step_type: workflow_step.map_or(String::new(), |s| s.action.type_name().to_string()),
        step_names: app.spec.workflow.iter().map(|s| s.name.clone()).collect(),
        weights,
        content_match,
        waiting_for: status.and_then(|s| waiting_for(release, s, now_ms)),
        analysis: status.and_then(|s| s.analysis.clone()),
        error,
        step_started_ms: status.map_or(0, |s| s.step_started_ms),
        decisions: status.map_or_else(Vec::new, |s| s.decisions.clone()),
        stats: Vec::new(),
        stats_window_seconds: None,
    }
}

fn waiting_for(
    release: &Release,
    status: &graymesh_model::RolloutStatus,
    now_ms: u64,
) -> Option<String> {
    if status.phase.is_done() {
        return None;
    }
    if status.paused {
        return Some("paused: `graymesh rollout resume` carries on".to_string());
    }
    let step = release.app.spec.workflow.get(status.step)?;
    let secs_left = |deadline_ms: u64| deadline_ms.saturating_sub(now_ms).div_ceil(1000);
    match &step.action {
        StepAction::Suspend(s) => Some(match (s.timeout, s.default_action) {
            (Some(t), action) => {
                let deadline = status.step_started_ms + t.as_std().as_millis() as u64;
                let action = format!(
                    "{:?}",
                    action.unwrap_or(graymesh_model::oam::SuspendAction::Resume)
                )
                .to_lowercase();
                format!(
                    "`graymesh rollout resume` (or {action} in {}s)",
                    secs_left(deadline)
                )
            }
            (None, _) => "`graymesh rollout resume`".to_string(),
        }),
        StepAction::Analysis(a) => {
            let since = status
                .analysis
                .as_ref()
                .map_or(status.step_started_ms, |p| {
                    p.last_check_ms.max(status.step_started_ms)
                });
            let due = since + a.interval.as_std().as_millis() as u64;
            let passed = status.analysis.as_ref().map_or(0, |p| p.passed);
            Some(format!(
                "analysis check {} of {} in {}s",
                passed + 1,
                a.checks,
                secs_left(due)
            ))
        }
        _ if status.step + 1 >= release.app.spec.workflow.len() => {
            Some("the workflow has no more steps: promote or roll back".to_string())
        }
        _ => None,
    }
}

fn describe_match(m: &ContentMatch<'_>) -> String {
    let rule = |r: MatchRule| match r {
        MatchRule::Exact => "=",
        MatchRule::Prefix => "^=",
        MatchRule::Regex => "~",
    };
    let mut parts = Vec::new();
    if let Some(h) = m.header {
        parts.push(format!(
            "header {} {} {:?}",
            h.key,
            rule(h.match_rule),
            h.value
        ));
    }
    if let Some(c) = m.cookie {
        parts.push(format!(
            "cookie {} {} {:?}",
            c.name,
            rule(c.match_rule),
            c.value
        ));
    }
    if let Some(u) = m.uri {
        parts.push(format!("uri {} {:?}", rule(u.match_rule), u.path));
    }
    parts.join(" and ")
}
