//! Benchmark 2: failed requests during consecutive full shifts under load.
//!
//! Shift `i` applies the Application with old/new swapped from shift `i - 1` (v1 → v2, then
//! v2 → v1, …): weight steps 90/10 … 0/100, each held `--hold-ms` by a self-resuming gate, then
//! promote. The next shift is applied once pilot has recorded the promote decision. The load runs
//! all along; its failures are counted by the load itself.

use crate::application::full_shift;
use crate::load::{Load, Totals};
use crate::mesh::{now_ms, PilotApi};
use serde_json::json;
use std::time::{Duration, Instant};

pub struct ShiftFigures {
    pub from: &'static str,
    pub to: &'static str,
    /// From load start: when the Application was applied, when the promote was recorded.
    pub applied_at: Duration,
    pub promoted_at: Duration,
    /// What the load saw between the two.
    pub load: Totals,
}

pub async fn run(
    pilot: &PilotApi,
    load: &Load,
    shifts: usize,
    first_round: usize,
    hold_ms: u64,
    limit: Duration,
    deadline: Instant,
) -> anyhow::Result<Vec<ShiftFigures>> {
    let mut figures = Vec::new();
    for i in 0..shifts {
        if Instant::now() > deadline {
            eprintln!("shifts: time budget spent after {i} shifts");
            break;
        }
        let (from, to) = if i % 2 == 0 {
            ("v1", "v2")
        } else {
            ("v2", "v1")
        };
        let before = load.totals();
        let applied_at = load.started.elapsed();
        let applied_ms = now_ms();
        pilot
            .apply(&full_shift(first_round + i, from, to, hold_ms))
            .await?;
        let view = pilot.wait_decision("promote", applied_ms, limit).await?;
        anyhow::ensure!(
            view["phase"] == "Promoted" && view["newVersion"] == to,
            "shift {i}: not promoted to {to}: {view:#}"
        );
        if (i + 1) % 10 == 0 {
            let t = load.totals();
            eprintln!(
                "shift {}: {} requests so far, {} failed",
                i + 1,
                t.requests(),
                t.failed
            );
        }
        figures.push(ShiftFigures {
            from,
            to,
            applied_at,
            promoted_at: load.started.elapsed(),
            load: load.totals().since(&before),
        });
    }
    Ok(figures)
}

pub fn summary(
    shifts: &[ShiftFigures],
    totals: &Totals,
    elapsed: Duration,
    failures: &[String],
) -> serde_json::Value {
    let durations: Vec<f64> = shifts
        .iter()
        .map(|s| (s.promoted_at - s.applied_at).as_secs_f64() * 1000.0)
        .collect();
    let failed_in: Vec<serde_json::Value> = shifts
        .iter()
        .enumerate()
        .filter(|(_, s)| s.load.failed > 0)
        .map(|(i, s)| {
            json!({
                "shift": i,
                "from": s.from,
                "to": s.to,
                "failed": s.load.failed,
                "applied_at_s": s.applied_at.as_secs_f64(),
                "promoted_at_s": s.promoted_at.as_secs_f64(),
            })
        })
        .collect();
    let requests = totals.requests();
    json!({
        "shifts": shifts.len(),
        "requests": requests,
        "failed": totals.failed,
        "error_ratio": totals.failed as f64 / requests.max(1) as f64,
        "answered_v1": totals.v1,
        "answered_v2": totals.v2,
        "seconds": elapsed.as_secs_f64(),
        "rate_per_s": requests as f64 / elapsed.as_secs_f64().max(1e-9),
        "shift_ms": crate::rollback::percentiles(&durations),
        "shifts_with_failures": failed_in,
        "first_failures": failures,
    })
}
