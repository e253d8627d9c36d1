//! Checks of an Application's workflow: unique step names, nothing after the end of a rollout,
//! weights naming the trait's two versions and summing to 100, content matches that compile,
//! suspend timeouts, analysis thresholds in range.

use super::{header_match, pattern, uri_match, Findings};
use crate::oam::{
    AnalysisStep, Application, CanaryTraffic, ContentStep, StepAction, SuspendStep, TrafficWeight,
};
use std::collections::BTreeMap;

pub(super) fn check(f: &mut Findings, app: &Application, canary: &CanaryTraffic) {
    let steps = &app.spec.workflow;
    if steps.is_empty() {
        f.error(
            "spec.workflow.steps",
            "at least one step is needed, e.g. a canary-rollout-weight step",
        );
    }
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    let mut ended_at: Option<(usize, &str)> = None;
    // A trait naming a missing component is reported once, not again at every revision.
    let v = &canary.versions;
    let known = app.component(&v.old_version).is_some() && app.component(&v.new_version).is_some();
    for (i, step) in steps.iter().enumerate() {
        let path = format!("spec.workflow.steps[{i}]");
        if step.name.trim().is_empty() {
            f.error(
                format!("{path}.name"),
                "name must not be empty, e.g. name: canary-10",
            );
        } else if let Some(first) = seen.insert(&step.name, i) {
            f.error(
                format!("{path}.name"),
                format!(
                    "duplicate step name {:?}, already used by spec.workflow.steps[{first}]",
                    step.name
                ),
            );
        }
        if let Some((end, kind)) = ended_at {
            f.error(
                &path,
                format!("comes after the {kind} step spec.workflow.steps[{end}], which ends the rollout; it would never run"),
            );
        }
        let props = format!("{path}.properties");
        match &step.action {
            StepAction::Weight(w) => traffic(
                f,
                &format!("{props}.traffic"),
                &w.traffic,
                canary,
                true,
                known,
            ),
            StepAction::Content(c) => content(f, &props, c, canary, known),
            StepAction::Suspend(s) => suspend(f, &props, s),
            StepAction::Analysis(a) => analysis(f, &props, a),
            StepAction::Promote | StepAction::Rollback => {
                ended_at = ended_at.or(Some((i, step.action.type_name())));
            }
        }
    }
}

/// Revisions are the trait's two components, each at most once, weights summing to 100.
fn traffic(
    f: &mut Findings,
    path: &str,
    list: &[TrafficWeight],
    canary: &CanaryTraffic,
    required: bool,
    known: bool,
) {
    let v = &canary.versions;
    if list.is_empty() {
        if required {
            f.error(
                path,
                format!("at least one revision is needed, e.g. [{{revision: {}, weight: 90}}, {{revision: {}, weight: 10}}]", v.old_version, v.new_version),
            );
        }
        return;
    }
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, t) in list.iter().enumerate() {
        let field = format!("{path}[{i}]");
        if known && t.revision != v.old_version && t.revision != v.new_version {
            f.error(
                format!("{field}.revision"),
                format!("{:?} is not a version being released; use the trait's oldVersion {:?} or newVersion {:?}", t.revision, v.old_version, v.new_version),
            );
        } else if let Some(first) = seen.insert(&t.revision, i) {
            f.error(
                format!("{field}.revision"),
                format!(
                    "{:?} is already given a weight at {path}[{first}]",
                    t.revision
                ),
            );
        }
        if t.weight > 100 {
            f.error(
                format!("{field}.weight"),
                format!("weight {} is out of range, must be 0..=100", t.weight),
            );
        }
    }
    let sum: u64 = list.iter().map(|t| u64::from(t.weight)).sum();
    if sum != 100 {
        f.error(path, format!("weights sum to {sum}, must be 100"));
    }
}

fn content(f: &mut Findings, path: &str, step: &ContentStep, canary: &CanaryTraffic, known: bool) {
    let own = step.header.is_some() || step.cookie.is_some() || step.uri.is_some();
    if !own && canary.header.is_none() && canary.uri.is_none() {
        f.error(
            path,
            "no condition: set header, cookie or uri here, or header or uri on the canary-traffic trait",
        );
    }
    if let Some(header) = &step.header {
        header_match(f, &format!("{path}.header"), header);
        if header.key == "cookie" && step.cookie.is_some() {
            f.error(
                format!("{path}.header.key"),
                "the cookie header is matched by `cookie` in this step; match one cookie with `cookie` only",
            );
        }
    }
    if let Some(cookie) = &step.cookie {
        let field = format!("{path}.cookie");
        let token = |c: char| c.is_ascii_graphic() && !"()<>@,;:\\\"/[]?={}".contains(c);
        if cookie.name.is_empty() || !cookie.name.chars().all(token) {
            f.error(
                format!("{field}.name"),
                format!("cookie name {:?} is not valid: use letters, digits and -_.!#$%&'*+^`|~, e.g. name: canary", cookie.name),
            );
        }
        pattern(
            f,
            &format!("{field}.value"),
            cookie.match_rule,
            &cookie.value,
        );
    }
    if let Some(uri) = &step.uri {
        uri_match(f, &format!("{path}.uri"), uri);
    }
    traffic(
        f,
        &format!("{path}.traffic"),
        &step.traffic,
        canary,
        false,
        known,
    );
}

fn suspend(f: &mut Findings, path: &str, step: &SuspendStep) {
    match (step.timeout, step.default_action) {
        (Some(timeout), _) if timeout.as_std().is_zero() => f.error(
            format!("{path}.timeout"),
            "timeout must be more than 0; leave it out to wait for a manual resume",
        ),
        (None, Some(_)) => f.error(
            format!("{path}.defaultAction"),
            "defaultAction is taken when the timeout runs out; set a timeout too, e.g. timeout: 30m",
        ),
        _ => {}
    }
}

fn analysis(f: &mut Findings, path: &str, step: &AnalysisStep) {
    if step.interval.as_std().is_zero() {
        f.error(
            format!("{path}.interval"),
            "interval must be more than 0, e.g. interval: 1m",
        );
    }
    let at_least_one = [
        ("checks", u64::from(step.checks)),
        ("minRequests", step.min_requests),
        ("maxFailures", u64::from(step.max_failures)),
    ];
    for (name, value) in at_least_one {
        if value == 0 {
            f.error(
                format!("{path}.{name}"),
                format!("{name} must be at least 1"),
            );
        }
    }
    if step.success_rate.is_none() && step.latency_p99.is_none() && step.grpc_error_rate.is_none() {
        f.error(
            path,
            "no threshold: set at least one of successRate, latencyP99, grpcErrorRate",
        );
    }
    thresholds(f, path, step);
}

/// Each threshold is absolute or relative to the old version (not both) and in range.
fn thresholds(f: &mut Findings, path: &str, step: &AnalysisStep) {
    if let Some(t) = &step.success_rate {
        let field = format!("{path}.successRate");
        one_of(
            f,
            &field,
            [
                ("min", t.min.is_some()),
                ("maxDropFromBaseline", t.max_drop_from_baseline.is_some()),
            ],
        );
        percent(f, &format!("{field}.min"), t.min);
        percent(
            f,
            &format!("{field}.maxDropFromBaseline"),
            t.max_drop_from_baseline,
        );
    }
    if let Some(t) = &step.latency_p99 {
        let field = format!("{path}.latencyP99");
        one_of(
            f,
            &field,
            [
                ("max", t.max.is_some()),
                ("maxRatioToBaseline", t.max_ratio_to_baseline.is_some()),
            ],
        );
        if t.max.is_some_and(|d| d.as_std().is_zero()) {
            f.error(
                format!("{field}.max"),
                "max must be more than 0, e.g. max: 500ms",
            );
        }
        if let Some(ratio) = t
            .max_ratio_to_baseline
            .filter(|r| !(1.0..=100.0).contains(r))
        {
            f.error(
                format!("{field}.maxRatioToBaseline"),
                format!("ratio {ratio} is out of range, must be 1..=100 (1.5 allows the new version a p99 50% above the old one's)"),
            );
        }
    }
    if let Some(t) = &step.grpc_error_rate {
        let field = format!("{path}.grpcErrorRate");
        one_of(
            f,
            &field,
            [
                ("max", t.max.is_some()),
                ("maxRiseFromBaseline", t.max_rise_from_baseline.is_some()),
            ],
        );
        percent(f, &format!("{field}.max"), t.max);
        percent(
            f,
            &format!("{field}.maxRiseFromBaseline"),
            t.max_rise_from_baseline,
        );
    }
}

/// Exactly one of two ways to state a threshold: absolute or relative to the old version.
fn one_of(f: &mut Findings, field: &str, options: [(&str, bool); 2]) {
    let [(a, has_a), (b, has_b)] = options;
    match (has_a, has_b) {
        (true, true) => f.error(field, format!("sets both {a} and {b}; a threshold is either absolute ({a}) or relative to the old version ({b})")),
        (false, false) => f.error(field, format!("set one of {a} (absolute) or {b} (relative to the old version)")),
        _ => {}
    }
}

fn percent(f: &mut Findings, field: &str, value: Option<f64>) {
    // A negated range check, so that NaN is out of range too.
    if let Some(value) = value.filter(|v| !(0.0..=100.0).contains(v)) {
        f.error(
            field,
            format!("{value} is out of range, must be a percentage 0..=100"),
        );
    }
}
