//! Outlier detection: an endpoint that answers too many consecutive 5xx (or gateway errors:
//! 502/503/504 and connect failures) is ejected at once for `base_ejection_time × times ejected`
//! (at most `max_ejection_time`), and comes back by itself when that passes. Each `interval` it
//! then stays in takes one off its count, as Envoy's sweeps do; unlike Envoy, which readmits at
//! its next sweep, it comes back the moment its time is up. At most `max_ejection_percent` of a
//! cluster is ejected at once, but always at least one endpoint may be (as Envoy does).

use crate::table::OutlierSpec;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use tokio::time::Instant;

/// Milliseconds since the first call; tokio's clock, so tests can pause and advance it.
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(Instant::now().duration_since(start).as_millis()).unwrap_or(u64::MAX)
}

#[derive(Debug, Default)]
pub struct EndpointHealth {
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    times_ejected: AtomicU32,
    /// `now_ms()` until which the endpoint is ejected; 0 when it is not.
    ejected_until: AtomicU64,
}

/// What an attempt against an endpoint ended with, for outlier tracking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// A 5xx status; `gateway` for 502, 503, 504.
    ServerError {
        gateway: bool,
    },
    /// Connect failure, reset, or timeout: counted as a gateway error.
    LocalFailure,
}

impl EndpointHealth {
    pub fn is_ejected(&self, now: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now
    }

    pub fn times_ejected(&self) -> u32 {
        self.times_ejected.load(Ordering::Relaxed)
    }

    /// Record an outcome; returns true when this call ejected the endpoint. `may_eject` says
    /// whether the cluster's ejection limit leaves room for one more.
    pub fn record(
        &self,
        outcome: Outcome,
        spec: &OutlierSpec,
        may_eject: impl FnOnce() -> bool,
    ) -> bool {
        let (fivexx, gateway) = match outcome {
            Outcome::Success => {
                self.consecutive_5xx.store(0, Ordering::Relaxed);
                self.consecutive_gateway.store(0, Ordering::Relaxed);
                return false;
            }
            Outcome::ServerError { gateway } => (true, gateway),
            Outcome::LocalFailure => (true, true),
        };
        let n5 = if fivexx {
            self.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            0
        };
        let ng = if gateway {
            self.consecutive_gateway.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            0
        };
        let tripped = spec.consecutive_5xx.is_some_and(|t| t > 0 && n5 >= t)
            || spec
                .consecutive_gateway_failure
                .is_some_and(|t| t > 0 && ng >= t);
        let now = now_ms();
        if !tripped || self.is_ejected(now) || !may_eject() {
            return false;
        }
        // The count comes down by one for each interval since the last ejection ended.
        let last_until = self.ejected_until.load(Ordering::Relaxed);
        let interval = millis(spec.interval);
        let healthy_intervals = if last_until > 0 && interval > 0 {
            u32::try_from(now.saturating_sub(last_until) / interval).unwrap_or(u32::MAX)
        } else {
            0
        };
        let times = self
            .times_ejected
            .load(Ordering::Relaxed)
            .saturating_sub(healthy_intervals)
            + 1;
        self.times_ejected.store(times, Ordering::Relaxed);
        let base = millis(spec.base_ejection_time);
        let ms = base
            .saturating_mul(u64::from(times))
            .min(millis(spec.max_ejection_time).max(base));
        self.ejected_until
            .store(now.saturating_add(ms.max(1)), Ordering::Relaxed);
        self.consecutive_5xx.store(0, Ordering::Relaxed);
        self.consecutive_gateway.store(0, Ordering::Relaxed);
        true
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Whether one more endpoint of `total` may be ejected when `ejected` already are.
pub fn room_to_eject(ejected: usize, total: usize, max_percent: u32) -> bool {
    if ejected == 0 {
        return total > 0;
    }
    (ejected + 1) * 100 <= total * max_percent as usize
}
