//! Outlier detection: an endpoint that answers too many consecutive 5xx (or gateway errors:
//! 502/503/504 and connect failures) is ejected for `base_ejection_time × times ejected`, and comes
//! back by itself when that passes. At most `max_ejection_percent` of a cluster is ejected at
//! once, but always at least one endpoint may be (as Envoy does).

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
        let times = self.times_ejected.fetch_add(1, Ordering::Relaxed) + 1;
        let ms = u64::try_from(spec.base_ejection_time.as_millis())
            .unwrap_or(u64::MAX)
            .saturating_mul(u64::from(times));
        self.ejected_until
            .store(now.saturating_add(ms.max(1)), Ordering::Relaxed);
        self.consecutive_5xx.store(0, Ordering::Relaxed);
        self.consecutive_gateway.store(0, Ordering::Relaxed);
        true
    }
}

/// Whether one more endpoint of `total` may be ejected when `ejected` already are.
pub fn room_to_eject(ejected: usize, total: usize, max_percent: u32) -> bool {
    if ejected == 0 {
        return total > 0;
    }
    (ejected + 1) * 100 <= total * max_percent as usize
}
