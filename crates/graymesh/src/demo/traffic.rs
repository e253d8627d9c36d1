//! The demo's traffic generator: requests at a fixed rate to one service through the caller's
//! sidecar, each answer kept with when it was sent and which version gave it, so the demo can
//! say how many failed and how long a rollback took to reach every new request.

use graymesh_testkit::Http1Client;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One answer: when the request was sent (ms since the epoch), the version that answered (if
/// any said so), and whether it succeeded (2xx).
#[derive(Debug, Clone)]
pub struct Sample {
    pub sent_ms: u64,
    pub version: Option<String>,
    pub ok: bool,
}

/// Requests to one service, until stopped or the bounds are reached.
pub struct Traffic {
    pub service: String,
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
}

/// At most this many requests per service, and this long, whatever happens.
const MAX_REQUESTS: usize = 2_000_000;
const MAX_DURATION: Duration = Duration::from_secs(3600);

impl Traffic {
    /// Send `rate` requests per second to `target` (a sidecar's local port for `service`),
    /// from two workers; every 10th request is a tester's (`x-canary: true`), users are
    /// `user-<n>` (`x-user-id`).
    pub fn start(service: &str, target: SocketAddr, rate: u32) -> Traffic {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let workers = 2u32;
        let period = Duration::from_secs_f64(f64::from(workers) / f64::from(rate.max(1)));
        for worker in 0..workers {
            let (samples, stop) = (samples.clone(), stop.clone());
            let url = format!("http://{target}/{service}/1");
            tokio::spawn(async move {
                let http = Http1Client::new().with_timeout(Duration::from_secs(5));
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let started = tokio::time::Instant::now();
                let mut n: u64 = u64::from(worker);
                while !stop.load(Ordering::Relaxed) && started.elapsed() < MAX_DURATION {
                    tick.tick().await;
                    n += u64::from(workers);
                    let user = format!("user-{}", n % 1000);
                    let mut headers = vec![("x-user-id", user.as_str())];
                    if n.is_multiple_of(10) {
                        headers.push(("x-canary", "true"));
                    }
                    let sent_ms = graymesh_release::controller::now_ms();
                    let sample = match http.get(&url, &headers).await {
                        Ok(r) => Sample {
                            sent_ms,
                            version: r.version,
                            ok: r.status.is_success(),
                        },
                        Err(_) => Sample {
                            sent_ms,
                            version: None,
                            ok: false,
                        },
                    };
                    let mut all = samples.lock().unwrap_or_else(|e| e.into_inner());
                    if all.len() >= MAX_REQUESTS {
                        return;
                    }
                    all.push(sample);
                }
            });
        }
        Traffic {
            service: service.to_string(),
            samples,
            stop,
        }
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Vec<Sample> {
        self.samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Counts of a run of samples.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Counts {
    pub sent: u64,
    pub failed: u64,
    /// Answers (ok or not) by the version that gave them.
    pub by_version: BTreeMap<String, u64>,
    pub failed_by_version: BTreeMap<String, u64>,
}

pub fn count(samples: &[Sample]) -> Counts {
    let mut counts = Counts::default();
    for s in samples {
        let version = s.version.clone().unwrap_or_else(|| "none".to_string());
        counts.sent += 1;
        *counts.by_version.entry(version.clone()).or_default() += 1;
        if !s.ok {
            counts.failed += 1;
            *counts.failed_by_version.entry(version).or_default() += 1;
        }
    }
    counts
}

/// How long after `since_ms` every request sent went to `version`: the send time of the first
/// request after the last one answered by another version (0 if none was), provided at least
/// `settle` of requests follow it. `None` while that is not known yet.
pub fn all_to_after(
    samples: &[Sample],
    version: &str,
    since_ms: u64,
    settle_ms: u64,
) -> Option<u64> {
    let after: Vec<&Sample> = samples.iter().filter(|s| s.sent_ms >= since_ms).collect();
    let last_sent = after.iter().map(|s| s.sent_ms).max()?;
    let first_clean = match after
        .iter()
        .rposition(|s| s.version.as_deref() != Some(version))
    {
        None => since_ms,
        Some(i) => after.get(i + 1)?.sent_ms,
    };
    (last_sent >= first_clean + settle_ms).then(|| first_clean - since_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(sent_ms: u64, version: &str) -> Sample {
        Sample {
            sent_ms,
            version: Some(version.to_string()),
            ok: true,
        }
    }

    #[test]
    fn the_rollback_latency_is_the_first_request_after_the_last_one_on_the_other_version() {
        let samples = [
            s(90, "v2"),
            s(100, "v2"),
            s(110, "v1"),
            s(130, "v2"),
            s(140, "v1"),
            s(400, "v1"),
        ];
        assert_eq!(all_to_after(&samples, "v1", 100, 200), Some(40));
        assert_eq!(
            all_to_after(&samples, "v1", 100, 300),
            None,
            "not settled long enough yet"
        );
        assert_eq!(all_to_after(&samples[4..], "v1", 100, 100), Some(0));
        let counts = count(&[
            s(1, "v1"),
            Sample {
                sent_ms: 2,
                version: None,
                ok: false,
            },
        ]);
        assert_eq!(
            (counts.sent, counts.failed, counts.failed_by_version["none"]),
            (2, 1, 1)
        );
    }
}
