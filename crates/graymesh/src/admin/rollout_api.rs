//! The rollout API `graymesh rollout …` uses:
//!
//! - `GET /v1/rollouts[?namespace=NS]`: every Application's rollout, as [`RolloutView`]s
//! - `GET /v1/rollouts/{ns}/{name}`: one, with telemetry per version over the current analysis
//!   interval (30 s at other steps)
//! - `POST /v1/rollouts/{ns}/{name}/{resume|pause|promote|rollback}`: one store write, answered
//!   with the rollout after it (409 when the command does not apply now, with the reason)
//!
//! Any pilot takes commands (the write is fenced by the Rollout's resource version); only the
//! leader's controller advances steps.

use super::{error, AdminState};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use graymesh_model::oam::StepAction;
use graymesh_release::controller::{self, version_ref, versions, Command, CommandError};
use graymesh_release::view::{view, RolloutView, VersionStatsView};
use serde::Deserialize;
use std::time::Duration;

const DEFAULT_STATS_WINDOW: Duration = Duration::from_secs(30);

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    namespace: Option<String>,
}

pub async fn list(State(s): State<AdminState>, Query(q): Query<ListQuery>) -> Response {
    let now = controller::now_ms();
    let views: Vec<RolloutView> = controller::releases(&s.store.objects())
        .iter()
        .filter(|r| {
            q.namespace
                .as_ref()
                .is_none_or(|ns| *ns == r.app.meta.namespace)
        })
        .map(|r| view(r, s.controller.error(&key(r)), now))
        .collect();
    Json(views).into_response()
}

pub async fn get_one(
    State(s): State<AdminState>,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    match controller::find(&s.store, &namespace, &name) {
        Ok(release) => Json(with_stats(&s, &release).await).into_response(),
        Err(e) => command_error(e),
    }
}

pub async fn command(
    State(s): State<AdminState>,
    Path((namespace, name, command)): Path<(String, String, String)>,
) -> Response {
    let Some(command) = Command::parse(&command) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("unknown rollout command {command:?}; one of resume, pause, promote, rollback"),
        );
    };
    match controller::run_command(&s.store, &namespace, &name, command).await {
        Ok(_) => match controller::find(&s.store, &namespace, &name) {
            Ok(release) => Json(view(&release, None, controller::now_ms())).into_response(),
            Err(e) => command_error(e),
        },
        Err(e) => command_error(e),
    }
}

fn key(r: &controller::Release) -> controller::AppKey {
    (r.app.meta.namespace.clone(), r.app.meta.name.clone())
}

/// The view with each version's telemetry over the analysis interval (or 30 s).
async fn with_stats(s: &AdminState, release: &controller::Release) -> RolloutView {
    let mut out = view(
        release,
        s.controller.error(&key(release)),
        controller::now_ms(),
    );
    let window = release
        .rollout
        .as_ref()
        .and_then(|r| release.app.spec.workflow.get(r.step))
        .and_then(|step| match &step.action {
            StepAction::Analysis(a) => Some(a.interval.as_std()),
            _ => None,
        })
        .unwrap_or(DEFAULT_STATS_WINDOW);
    if let Some((old, new)) = versions(&release.app) {
        let metrics = s.controller.metrics();
        for component in [old, new] {
            let version = version_ref(&release.app, component);
            let stats = metrics.window(&version, window).await;
            out.stats
                .push(VersionStatsView::new(&version.version, stats));
        }
        out.stats_window_seconds = Some(window.as_secs());
    }
    out
}

fn command_error(e: CommandError) -> Response {
    let status = match &e {
        CommandError::NotFound(_) => StatusCode::NOT_FOUND,
        CommandError::Refused(_) => StatusCode::CONFLICT,
        CommandError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, e.to_string())
}
