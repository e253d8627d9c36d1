//! Benchmark 1: rollback latency across the sidecars.
//!
//! Each round applies the Application (50/50, then a gate), waits until the rollout is at the
//! gate and every sidecar has answered v2, records every answer for a moment at 50/50, sends
//! `POST /v1/rollouts/default/reviews/rollback` and, per sidecar, finds the first moment after
//! which every new request answered v1: the send instant of the first request after the last
//! one that did not answer v1 (the figure's resolution is the gap between two requests of a
//! sidecar). A sidecar's figure counts once a tail of v1-only answers `STABLE` long follows it.

use crate::application::half_then_gate;
use crate::client::Version;
use crate::load::{Load, Sample};
use crate::mesh::{now_ms, wait, PilotApi};
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// v1-only answers needed after the switch before a sidecar's figure counts.
const STABLE: Duration = Duration::from_millis(500);
/// Answers recorded at 50/50 before the command (also checks the split is in place).
const BEFORE: Duration = Duration::from_millis(300);

/// When a sidecar's new requests all answered v1, relative to the command.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Switch {
    /// Send instant of the first request of the v1-only tail, after the command.
    pub at: Duration,
    /// Send instant of the last request that did not answer v1 (zero: none after the command).
    pub last_other: Duration,
}

/// The switch in `samples` (sorted by send instant) for a command at `t0`; `None` until a
/// v1-only tail at least `stable` long is there.
pub fn switch(samples: &[Sample], t0: Instant, stable: Duration) -> Option<Switch> {
    let after: Vec<&Sample> = samples.iter().filter(|s| s.sent >= t0).collect();
    let last_other = after.iter().rposition(|s| s.answer != Some(Version::V1));
    let first = after.get(last_other.map_or(0, |k| k + 1))?;
    let tail = after.last()?.sent.duration_since(first.sent);
    (tail >= stable).then(|| Switch {
        at: first.sent.duration_since(t0),
        last_other: last_other.map_or(Duration::ZERO, |k| after[k].sent.duration_since(t0)),
    })
}

pub struct RoundFigures {
    /// Per sidecar.
    pub switches: Vec<Switch>,
    /// The command's answer (its write is done when pilot answers).
    pub command_reply: Duration,
    /// When the command was sent, µs since the Unix epoch (to line up with pilot's log).
    pub command_at_unix_us: u128,
    /// Share of v2 among the answers recorded at 50/50 before the command.
    pub v2_share_before: f64,
}

pub async fn round(
    pilot: &PilotApi,
    load: &Load,
    round: usize,
    limit: Duration,
) -> anyhow::Result<RoundFigures> {
    let v2_before: Vec<u64> = load
        .logs
        .iter()
        .map(|l| l.v2.load(Ordering::Relaxed))
        .collect();
    let applied_ms = now_ms();
    pilot.apply(&half_then_gate(round)).await?;
    let view = pilot.wait_decision("advance", applied_ms, limit).await?;
    anyhow::ensure!(
        view["step"] == 1 && view["phase"] == "Progressing",
        "round {round}: the rollout is not at the gate: {view:#}"
    );
    wait(limit, "every sidecar to answer v2 at 50/50", || async {
        load.logs
            .iter()
            .zip(&v2_before)
            .all(|(l, before)| l.v2.load(Ordering::Relaxed) > *before)
    })
    .await?;
    for log in &load.logs {
        log.take_samples();
    }
    load.record.store(true, Ordering::Relaxed);
    tokio::time::sleep(BEFORE).await;

    let command_at_unix_us = unix_us();
    let t0 = Instant::now();
    pilot.command("rollback").await?;
    let command_reply = t0.elapsed();
    wait(
        limit,
        "every sidecar's requests to all answer v1",
        || async {
            load.logs.iter().all(|l| {
                let samples = l.take_samples_copy();
                switch(&samples, t0, STABLE).is_some()
            })
        },
    )
    .await?;
    load.record.store(false, Ordering::Relaxed);

    let mut switches = Vec::new();
    let (mut v2, mut total) = (0usize, 0usize);
    for log in &load.logs {
        let samples = log.take_samples();
        let before: Vec<&Sample> = samples.iter().filter(|s| s.sent < t0).collect();
        total += before.len();
        v2 += before
            .iter()
            .filter(|s| s.answer == Some(Version::V2))
            .count();
        switches.extend(switch(&samples, t0, STABLE));
    }
    Ok(RoundFigures {
        switches,
        command_reply,
        command_at_unix_us,
        v2_share_before: v2 as f64 / total.max(1) as f64,
    })
}

/// The figures over all rounds, as JSON.
pub fn summary(rounds: &[RoundFigures]) -> serde_json::Value {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let overall: Vec<f64> = rounds
        .iter()
        .map(|r| r.switches.iter().map(|s| ms(s.at)).fold(0.0, f64::max))
        .collect();
    let per_sidecar: Vec<f64> = rounds
        .iter()
        .flat_map(|r| r.switches.iter().map(|s| ms(s.at)))
        .collect();
    let lower: Vec<f64> = rounds
        .iter()
        .map(|r| {
            r.switches
                .iter()
                .map(|s| ms(s.last_other))
                .fold(0.0, f64::max)
        })
        .collect();
    let replies: Vec<f64> = rounds.iter().map(|r| ms(r.command_reply)).collect();
    let shares: Vec<f64> = rounds.iter().map(|r| r.v2_share_before).collect();
    let each: Vec<serde_json::Value> = rounds
        .iter()
        .zip(&overall)
        .map(|(r, max)| {
            json!({
                "command_at_unix_us": r.command_at_unix_us,
                "command_reply_ms": ms(r.command_reply),
                "all_on_v1_ms": max,
                "per_sidecar_ms": r.switches.iter().map(|s| ms(s.at)).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "rounds": rounds.len(),
        "overall_ms": percentiles(&overall),
        "each_round": each,
        "per_sidecar_ms": percentiles(&per_sidecar),
        "last_non_v1_ms": percentiles(&lower),
        "command_reply_ms": percentiles(&replies),
        "v2_share_before": percentiles(&shares),
    })
}

fn unix_us() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros())
}

/// p50, p99 and max (nearest rank) of `values`.
pub fn percentiles(values: &[f64]) -> serde_json::Value {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = |p: f64| {
        let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
        sorted.get(i - 1).copied().unwrap_or(f64::NAN)
    };
    json!({
        "n": sorted.len(),
        "min": sorted.first().copied().unwrap_or(f64::NAN),
        "p50": rank(0.50),
        "p99": rank(0.99),
        "max": sorted.last().copied().unwrap_or(f64::NAN),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(t0: Instant, answers: &[(u64, Option<Version>)]) -> Vec<Sample> {
        answers
            .iter()
            .map(|(ms, answer)| Sample {
                sent: t0 + Duration::from_millis(*ms),
                answer: *answer,
            })
            .collect()
    }

    #[test]
    fn the_switch_is_the_first_request_after_the_last_non_v1_answer() {
        let t0 = Instant::now();
        let (v1, v2) = (Some(Version::V1), Some(Version::V2));
        let s = samples(
            t0,
            &[(0, v2), (10, v1), (20, v2), (30, None), (40, v1), (600, v1)],
        );
        let found = switch(&s, t0, STABLE).map(|s| (s.at, s.last_other));
        let expected = (Duration::from_millis(40), Duration::from_millis(30));
        assert_eq!(found, Some(expected));
        // the v1-only tail is not long enough yet
        assert_eq!(switch(&s[..5], t0, STABLE), None);
    }
}
