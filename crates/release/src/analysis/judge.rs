//! The verdict of one analysis check: the new version's stats against the step's thresholds and
//! the old version's stats. Pure; every reason names the measured values and the threshold.

use super::VersionStats;
use graymesh_model::oam::{
    AnalysisStep, ErrorRateThreshold, LatencyThreshold, SuccessRateThreshold,
};
use std::time::Duration;

/// Slack for comparing percentages and ratios computed in floating point, so that a measured
/// value equal to its threshold (99.5 − 99.0 against a drop of 0.5) passes.
const EPSILON: f64 = 1e-9;

/// What one check says. The text is for people: it names the values and thresholds compared.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Every threshold held.
    Pass(String),
    /// At least one threshold was broken; the text lists every broken one.
    Fail(String),
    /// Not enough to judge (too little traffic, no baseline to compare with): neither a pass
    /// nor a failure.
    Hold(String),
}

/// Judge `canary` (the new version) against `step`'s thresholds, relative ones against
/// `baseline` (the old version). Too little traffic to the new version holds; any broken
/// threshold fails, even when another one could not be judged; otherwise a threshold that
/// could not be judged holds; otherwise the check passes. gRPC error rates are judged only
/// when the new version had gRPC calls.
pub fn judge(step: &AnalysisStep, baseline: &VersionStats, canary: &VersionStats) -> Verdict {
    if canary.requests < step.min_requests {
        return Verdict::Hold(format!(
            "{} requests to the new version < minRequests {}",
            canary.requests, step.min_requests
        ));
    }
    if canary.requests == 0 {
        // Only with minRequests 0 (validation refuses it): no rate can be computed.
        return Verdict::Hold("no requests to the new version: nothing to judge".into());
    }
    let mut findings = Findings::default();
    if let Some(t) = &step.success_rate {
        success_rate(t, baseline, canary, &mut findings);
    }
    if let Some(t) = &step.latency_p99 {
        latency(t, baseline, canary, &mut findings);
    }
    if let Some(t) = &step.grpc_error_rate {
        grpc_error_rate(t, baseline, canary, &mut findings);
    }
    findings.verdict(canary.requests)
}

/// The outcome of each threshold, in the order checked.
#[derive(Default)]
struct Findings {
    passed: Vec<String>,
    failed: Vec<String>,
    held: Vec<String>,
}

impl Findings {
    fn check(&mut self, ok: bool, passed: String, failed: String) {
        if ok {
            self.passed.push(passed);
        } else {
            self.failed.push(failed);
        }
    }

    fn verdict(self, requests: u64) -> Verdict {
        if !self.failed.is_empty() {
            Verdict::Fail(self.failed.join("; "))
        } else if !self.held.is_empty() {
            Verdict::Hold(self.held.join("; "))
        } else {
            let mut parts = vec![format!("{requests} requests")];
            parts.extend(self.passed);
            Verdict::Pass(parts.join("; "))
        }
    }
}

// === thresholds ===

fn success_rate(
    t: &SuccessRateThreshold,
    baseline: &VersionStats,
    canary: &VersionStats,
    f: &mut Findings,
) {
    let rate = success_percent(canary);
    if let Some(min) = t.min {
        f.check(
            rate + EPSILON >= min,
            format!("success rate {}% >= min {}%", num(rate), num(min)),
            format!("success rate {}% < min {}%", num(rate), num(min)),
        );
    }
    if let Some(max_drop) = t.max_drop_from_baseline {
        if baseline.requests == 0 {
            f.held.push(format!(
                "success rate {}%: no requests to the old version to compare with (maxDropFromBaseline {max_drop})",
                num(rate)
            ));
        } else {
            let base = success_percent(baseline);
            points_from_baseline(
                f,
                "success rate",
                base - rate,
                Shift::Drop,
                (rate, base),
                max_drop,
            );
        }
    }
}

fn latency(t: &LatencyThreshold, baseline: &VersionStats, canary: &VersionStats, f: &mut Findings) {
    let Some(p99) = canary.p99 else {
        f.held
            .push("no p99 latency measured for the new version".to_string());
        return;
    };
    if let Some(max) = t.max {
        let max = max.as_std();
        f.check(
            p99 <= max,
            format!("p99 {} <= max {}", ms(p99), ms(max)),
            format!("p99 {} > max {}", ms(p99), ms(max)),
        );
    }
    if let Some(max_ratio) = t.max_ratio_to_baseline {
        match baseline.p99.filter(|_| baseline.requests > 0) {
            Some(base) => latency_ratio(f, p99, base, max_ratio),
            None => f.held.push(format!(
                "p99 {}: no requests to the old version to compare with (maxRatioToBaseline {max_ratio})",
                ms(p99)
            )),
        }
    }
}

fn latency_ratio(f: &mut Findings, p99: Duration, base: Duration, max_ratio: f64) {
    // A baseline p99 of zero (clock granularity) makes any ratio infinite: compare against the
    // smallest measurable time instead.
    let ratio = p99.as_secs_f64() / base.as_secs_f64().max(1e-6);
    let text = format!(
        "p99 {} is {}x the old version's {}",
        ms(p99),
        num(ratio),
        ms(base)
    );
    f.check(
        ratio <= max_ratio + EPSILON,
        format!("{text} (max {}x)", num(max_ratio)),
        format!("{text} > max {}x", num(max_ratio)),
    );
}

fn grpc_error_rate(
    t: &ErrorRateThreshold,
    baseline: &VersionStats,
    canary: &VersionStats,
    f: &mut Findings,
) {
    if canary.grpc_requests == 0 {
        return; // HTTP-only traffic: nothing to judge, and nothing held up by it
    }
    let rate = percent(canary.grpc_errors, canary.grpc_requests);
    if let Some(max) = t.max {
        f.check(
            rate <= max + EPSILON,
            format!("gRPC error rate {}% <= max {}%", num(rate), num(max)),
            format!("gRPC error rate {}% > max {}%", num(rate), num(max)),
        );
    }
    if let Some(max_rise) = t.max_rise_from_baseline {
        if baseline.grpc_requests == 0 {
            f.held.push(format!(
                "gRPC error rate {}%: no gRPC calls to the old version to compare with (maxRiseFromBaseline {max_rise})",
                num(rate)
            ));
        } else {
            let base = percent(baseline.grpc_errors, baseline.grpc_requests);
            points_from_baseline(
                f,
                "gRPC error rate",
                rate - base,
                Shift::Rise,
                (rate, base),
                max_rise,
            );
        }
    }
}

/// Which way a rate may move from the old version's by at most some points.
enum Shift {
    Drop,
    Rise,
}

/// `what` moved `points` (in the bad direction; negative is better) from the old version's:
/// `(rate, base)` are the new and the old version's rates.
fn points_from_baseline(
    f: &mut Findings,
    what: &str,
    points: f64,
    shift: Shift,
    (rate, base): (f64, f64),
    max: f64,
) {
    let (way, name) = match shift {
        Shift::Drop => ("below", "drop"),
        Shift::Rise => ("above", "rise"),
    };
    let text = format!(
        "{what} {}% is {} points {way} the old version's {}%",
        num(rate),
        num(points.max(0.0)),
        num(base)
    );
    f.check(
        points <= max + EPSILON,
        format!("{text} (max {name} {})", num(max)),
        format!("{text} > max {name} {}", num(max)),
    );
}

/// Requests answered without a 5xx, in percent; callers make sure there were requests.
fn success_percent(s: &VersionStats) -> f64 {
    percent(s.requests - s.server_errors.min(s.requests), s.requests)
}

// === formatting ===

/// `part` of `whole` in percent; callers make sure `whole` is not zero.
fn percent(part: u64, whole: u64) -> f64 {
    part as f64 * 100.0 / whole as f64
}

/// At most two decimals, no trailing zeros: `51.2`, `99`, `0.35`.
fn num(value: f64) -> String {
    let text = format!("{value:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".to_string()
    } else {
        text.to_string()
    }
}

/// Milliseconds, at most two decimals: `812ms`, `0.35ms`.
fn ms(d: Duration) -> String {
    format!("{}ms", num(d.as_secs_f64() * 1000.0))
}
