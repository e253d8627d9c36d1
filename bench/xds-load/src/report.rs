//! Figures out of raw samples: percentiles, and the JSON and text the bench script reads.
//!
//! Pure: no I/O besides the final print in [`print_line`].

use crate::pilot_stats::{Histogram, ProcSample};
use serde_json::{json, Value};

/// Nearest-rank percentiles of a sample, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    pub count: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    /// `None` for an empty sample.
    pub fn of(mut samples_ms: Vec<f64>) -> Option<Self> {
        if samples_ms.is_empty() {
            return None;
        }
        samples_ms.sort_by(f64::total_cmp);
        let rank = |q: f64| {
            let n = samples_ms.len();
            let i = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
            samples_ms[i]
        };
        Some(Self {
            count: samples_ms.len(),
            p50: rank(0.50),
            p90: rank(0.90),
            p99: rank(0.99),
            max: rank(1.0),
        })
    }

    pub fn json(&self) -> Value {
        json!({
            "count": self.count,
            "p50_ms": round(self.p50),
            "p90_ms": round(self.p90),
            "p99_ms": round(self.p99),
            "max_ms": round(self.max),
        })
    }

    pub fn text(&self) -> String {
        format!(
            "p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms (n={})",
            self.p50, self.p90, self.p99, self.max, self.count
        )
    }
}

pub fn percentiles_json(p: Option<Percentiles>) -> Value {
    p.map(|p| p.json()).unwrap_or(Value::Null)
}

pub fn percentiles_text(p: Option<Percentiles>) -> String {
    p.map(|p| p.text())
        .unwrap_or_else(|| "no samples".to_string())
}

/// Three decimals are plenty for milliseconds and seconds alike.
pub fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

pub fn proc_json(s: Option<ProcSample>) -> Value {
    s.map(|s| {
        json!({
            "cpu_s": round(s.cpu_s),
            "rss_mib": round(s.rss_kib as f64 / 1024.0),
            "hwm_mib": round(s.hwm_kib as f64 / 1024.0),
        })
    })
    .unwrap_or(Value::Null)
}

/// CPU seconds spent between two samples, when both exist.
pub fn cpu_between(before: Option<ProcSample>, after: Option<ProcSample>) -> Value {
    match (before, after) {
        (Some(b), Some(a)) => json!(round(a.cpu_s - b.cpu_s)),
        _ => Value::Null,
    }
}

/// Pilot's own view of a push: bucket bounds of its push-latency histogram, over one step.
pub fn histogram_json(h: Option<&Histogram>) -> Value {
    let Some(h) = h else { return Value::Null };
    let bound = |q| {
        h.quantile_bound(q).map(|b| {
            if b.is_finite() {
                json!(b)
            } else {
                json!("+Inf")
            }
        })
    };
    json!({
        "pushes": h.count,
        "mean_s": if h.count > 0 { json!(round(h.sum / h.count as f64)) } else { Value::Null },
        "p50_le_s": bound(0.5),
        "p99_le_s": bound(0.99),
    })
}

pub fn print_line(label: &str, text: impl std::fmt::Display) {
    println!("{label:<34} {text}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let p = Percentiles::of((1..=100).map(f64::from).collect());
        assert_eq!(
            p,
            Some(Percentiles {
                count: 100,
                p50: 50.0,
                p90: 90.0,
                p99: 99.0,
                max: 100.0
            })
        );
        let one = Percentiles::of(vec![7.0]).map(|p| (p.p50, p.p99));
        assert_eq!(one, Some((7.0, 7.0)));
        assert_eq!(Percentiles::of(Vec::new()), None);
    }
}
