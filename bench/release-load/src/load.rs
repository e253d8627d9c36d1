//! The load through the sidecars: paced keep-alive workers, a few per sidecar, each bounded in
//! requests and in time. Every answer is counted per sidecar; while `record` is on, each one is
//! also kept with the instant its request was sent (what the rollback figure is computed from).

use crate::client::{Answer, Connection, Version};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long one request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Failure messages kept (the first ones), to say what failed.
const KEPT_FAILURES: usize = 20;

/// One answer, as recorded while `record` is on.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub sent: Instant,
    pub answer: Option<Version>,
}

/// What the workers of one sidecar saw.
#[derive(Debug, Default)]
pub struct SidecarLog {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    pub v1: AtomicU64,
    pub v2: AtomicU64,
    pub samples: Mutex<Vec<Sample>>,
}

impl SidecarLog {
    pub fn take_samples(&self) -> Vec<Sample> {
        let mut samples = std::mem::take(&mut *lock(&self.samples));
        samples.sort_by_key(|s| s.sent);
        samples
    }

    /// A sorted copy, leaving the samples in place.
    pub fn take_samples_copy(&self) -> Vec<Sample> {
        let mut samples = lock(&self.samples).clone();
        samples.sort_by_key(|s| s.sent);
        samples
    }
}

/// How the load runs.
#[derive(Debug, Clone, Copy)]
pub struct LoadPlan {
    /// Requests per second per worker.
    pub rate_per_worker: f64,
    pub workers_per_sidecar: usize,
    /// Bounds of each worker.
    pub max_requests: u64,
    pub max_duration: Duration,
}

pub struct Load {
    pub logs: Vec<Arc<SidecarLog>>,
    pub record: Arc<AtomicBool>,
    pub started: Instant,
    failures: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(targets: &[SocketAddr], plan: LoadPlan) -> Load {
        let logs: Vec<Arc<SidecarLog>> = targets.iter().map(|_| Arc::default()).collect();
        let record = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let mut workers = Vec::new();
        let origin = Instant::now();
        for (target, log) in targets.iter().zip(&logs) {
            for w in 0..plan.workers_per_sidecar {
                let worker = Worker {
                    target: *target,
                    log: log.clone(),
                    record: record.clone(),
                    stop: stop.clone(),
                    failures: failures.clone(),
                    origin,
                    plan,
                };
                // Spread the workers' first requests over one interval.
                let offset = w as f64 / plan.workers_per_sidecar as f64;
                workers.push(tokio::spawn(worker.run(offset)));
            }
        }
        Load {
            logs,
            record,
            started: origin,
            failures,
            stop,
            workers,
        }
    }

    pub fn totals(&self) -> Totals {
        let sum = |f: fn(&SidecarLog) -> &AtomicU64| {
            self.logs.iter().map(|l| f(l).load(Ordering::Relaxed)).sum()
        };
        Totals {
            ok: sum(|l| &l.ok),
            failed: sum(|l| &l.failed),
            v1: sum(|l| &l.v1),
            v2: sum(|l| &l.v2),
        }
    }

    /// Stop the workers and wait for them (each finishes its request in flight, ≤ 2 s).
    pub async fn stop(mut self) -> (Totals, Duration, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for w in std::mem::take(&mut self.workers) {
            let _ = w.await;
        }
        let elapsed = self.started.elapsed();
        let totals = self.totals();
        let failures = lock(&self.failures).clone();
        (totals, elapsed, failures)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    pub ok: u64,
    pub failed: u64,
    pub v1: u64,
    pub v2: u64,
}

impl Totals {
    pub fn requests(&self) -> u64 {
        self.ok + self.failed
    }

    pub fn since(&self, earlier: &Totals) -> Totals {
        Totals {
            ok: self.ok - earlier.ok,
            failed: self.failed - earlier.failed,
            v1: self.v1 - earlier.v1,
            v2: self.v2 - earlier.v2,
        }
    }
}

// === impl Worker ===

struct Worker {
    target: SocketAddr,
    log: Arc<SidecarLog>,
    record: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    failures: Arc<Mutex<Vec<String>>>,
    origin: Instant,
    plan: LoadPlan,
}

impl Worker {
    async fn run(self, offset: f64) {
        let interval = Duration::from_secs_f64(1.0 / self.plan.rate_per_worker);
        let start = Instant::now() + interval.mul_f64(offset);
        let mut connection: Option<Connection> = None;
        let mut sent = 0u64;
        while sent < self.plan.max_requests
            && start.elapsed() < self.plan.max_duration
            && !self.stop.load(Ordering::Relaxed)
        {
            // Paced from a fixed origin: a slow answer is followed by catch-up, not by a lower rate.
            let due = start + interval.mul_f64(sent as f64);
            tokio::time::sleep_until(due.into()).await;
            sent += 1;
            let at = Instant::now();
            let answer = self.request(&mut connection).await;
            self.count(at, answer);
        }
    }

    async fn request(&self, connection: &mut Option<Connection>) -> Answer {
        let mut conn = match connection.take() {
            Some(conn) => conn,
            None => Connection::open(self.target, REQUEST_TIMEOUT).await?,
        };
        let answer = conn.get(REQUEST_TIMEOUT).await;
        if answer.is_ok() && conn.is_reusable() {
            *connection = Some(conn);
        }
        answer
    }

    fn count(&self, sent: Instant, answer: Answer) {
        let version = match answer {
            Ok(version) => {
                self.log.ok.fetch_add(1, Ordering::Relaxed);
                match version {
                    Version::V1 => self.log.v1.fetch_add(1, Ordering::Relaxed),
                    Version::V2 => self.log.v2.fetch_add(1, Ordering::Relaxed),
                    Version::Other => 0,
                };
                Some(version)
            }
            Err(e) => {
                self.log.failed.fetch_add(1, Ordering::Relaxed);
                let mut failures = lock(&self.failures);
                if failures.len() < KEPT_FAILURES {
                    let at = sent.duration_since(self.origin).as_secs_f64();
                    failures.push(format!("t={at:.3}s {}: {e}", self.target));
                }
                None
            }
        };
        if self.record.load(Ordering::Relaxed) {
            lock(&self.log.samples).push(Sample {
                sent,
                answer: version,
            });
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
