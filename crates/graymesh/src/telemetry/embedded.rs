//! The embedded source: pilot scrapes every connected proxy's `/metrics` each period and keeps,
//! per proxy, the increases between consecutive scrapes for a bounded history. A window is the
//! sum of the increases scraped inside it, over every proxy, including proxies that have
//! disconnected since (what they counted stays until it ages out).
//!
//! It never extrapolates: requests a proxy counted before pilot first scraped it are in no
//! window (pilot cannot tell when they happened), and a window is as fine as the scrape period.
//! A restarted proxy is told by its start time (`graymesh_proxy_start_time_seconds`), its admin
//! address, or a counter going down; its counts are then taken from zero.

use super::counters::{Counters, Increase, SeriesKey, WindowSum};
use super::text::{self, Scrape};
use super::{http_get, HttpClient, ResolveHost};
use graymesh_release::analysis::{MetricsSource, StatsFuture, VersionRef, VersionStats};
use graymesh_xds::node::NodeKind;
use graymesh_xds::status::AdminTarget;
use graymesh_xds::SyncStatus;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// A `/metrics` answer larger than this is refused (a proxy has a few hundred series).
const MAX_SCRAPE_BYTES: usize = 16 << 20;

/// Pilot's scrapes of the proxies and what they counted; cheap to clone (shared state).
#[derive(Clone)]
pub struct EmbeddedTelemetry {
    state: Arc<Mutex<State>>,
    period: Duration,
    history: Duration,
}

#[derive(Default)]
struct State {
    /// Keyed by node id.
    proxies: BTreeMap<String, ProxyRecord>,
}

struct ProxyRecord {
    kind: NodeKind,
    namespace: String,
    admin_addr: SocketAddr,
    connected: bool,
    /// The last successful scrape and the address it came from.
    last: Option<(SocketAddr, Scrape)>,
    /// When each successful scrape ended, with the increases since the one before.
    increases: VecDeque<(Instant, Vec<(SeriesKey, Increase)>)>,
    scrapes: u64,
    failures: u64,
    last_attempt_unix_ms: Option<u64>,
    last_success_unix_ms: Option<u64>,
    last_success: Option<Instant>,
    last_error: Option<String>,
    last_seen: Instant,
}

impl EmbeddedTelemetry {
    pub fn new(period: Duration, history: Duration) -> Self {
        Self {
            state: Arc::default(),
            period,
            history,
        }
    }

    /// Scrape the proxies connected to this pilot every period, forever.
    pub async fn run(self, status: SyncStatus) {
        let client = super::http_client();
        let timeout = self
            .period
            .clamp(Duration::from_millis(250), Duration::from_secs(5));
        let mut tick = tokio::time::interval(self.period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.scrape_all(&client, status.admin_targets(), timeout)
                .await;
            self.prune(Instant::now());
        }
    }

    /// Scrape `targets` at once, recording each as it answers (or fails, or times out).
    async fn scrape_all(&self, client: &HttpClient, targets: Vec<AdminTarget>, timeout: Duration) {
        self.mark_connected(&targets);
        let mut scrapes = tokio::task::JoinSet::new();
        for target in targets {
            let client = client.clone();
            scrapes.spawn(async move {
                let result = scrape(&client, &target, timeout).await;
                (target, result)
            });
        }
        while let Some(done) = scrapes.join_next().await {
            if let Ok((target, result)) = done {
                self.record(&target, Instant::now(), result);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn mark_connected(&self, targets: &[AdminTarget]) {
        let connected: BTreeSet<&str> = targets.iter().map(|t| t.node_id.as_str()).collect();
        for (id, record) in self.lock().proxies.iter_mut() {
            record.connected = connected.contains(id.as_str());
        }
    }

    /// One scrape of `target` that ended at `at`.
    pub(super) fn record(&self, target: &AdminTarget, at: Instant, result: Result<Scrape, String>) {
        let mut state = self.lock();
        let record = state
            .proxies
            .entry(target.node_id.clone())
            .or_insert_with(|| ProxyRecord::new(target, at));
        record.kind = target.kind;
        record.namespace.clone_from(&target.namespace);
        record.admin_addr = target.admin_addr;
        record.connected = true;
        record.last_seen = at;
        record.scrapes += 1;
        record.last_attempt_unix_ms = Some(unix_ms(SystemTime::now()));
        match result {
            Ok(scrape) => record.scraped(target.admin_addr, at, scrape),
            Err(e) => {
                record.failures += 1;
                record.last_error = Some(e);
            }
        }
    }

    pub(super) fn prune(&self, now: Instant) {
        let Some(oldest) = now.checked_sub(self.history) else {
            return;
        };
        self.lock().proxies.retain(|_, p| {
            while p.increases.front().is_some_and(|(at, _)| *at <= oldest) {
                p.increases.pop_front();
            }
            p.connected || p.last_seen > oldest
        });
    }

    /// What every proxy counted for `key` in the last `window` before `now`.
    pub(super) fn window_at(
        &self,
        key: &SeriesKey,
        window: Duration,
        now: Instant,
    ) -> Result<VersionStats, String> {
        if window > self.history {
            return Err(format!(
                "window {window:?} is longer than the {:?} of history pilot keeps (--telemetry-history); use a shorter interval or --prometheus",
                self.history
            ));
        }
        let start = now.checked_sub(window).unwrap_or(now);
        let state = self.lock();
        let scraped = state
            .proxies
            .values()
            .any(|p| p.last_success.is_some_and(|t| t > start));
        if !scraped {
            return Err(format!(
                "no proxy was scraped successfully in the last {window:?} (see /debug/telemetryz)"
            ));
        }
        let mut sum = WindowSum::default();
        for proxy in state.proxies.values() {
            for (at, increases) in &proxy.increases {
                if *at <= start || *at > now {
                    continue;
                }
                for (k, increase) in increases {
                    if k == key {
                        sum.add(increase);
                    }
                }
            }
        }
        Ok(sum.stats())
    }

    /// Every series any proxy counted traffic for in the history kept.
    pub fn series(&self) -> BTreeSet<SeriesKey> {
        let state = self.lock();
        state
            .proxies
            .values()
            .flat_map(|p| {
                p.increases
                    .iter()
                    .flat_map(|(_, i)| i.iter().map(|(k, _)| k.clone()))
            })
            .collect()
    }

    /// Each proxy: when it was scraped, how it went.
    pub fn proxies(&self) -> Vec<ProxyScrapes> {
        let now = Instant::now();
        self.lock()
            .proxies
            .iter()
            .map(|(id, p)| ProxyScrapes {
                node_id: id.clone(),
                kind: p.kind,
                namespace: p.namespace.clone(),
                admin_addr: p.admin_addr,
                connected: p.connected,
                scrapes: p.scrapes,
                failures: p.failures,
                last_attempt_unix_ms: p.last_attempt_unix_ms,
                last_success_unix_ms: p.last_success_unix_ms,
                last_success_age_ms: p
                    .last_success
                    .map(|t| now.saturating_duration_since(t).as_millis() as u64),
                last_error: p.last_error.clone(),
                series: p.last.as_ref().map_or(0, |(_, s)| s.series.len()),
            })
            .collect()
    }

    pub fn period(&self) -> Duration {
        self.period
    }
}

impl ProxyRecord {
    fn new(target: &AdminTarget, at: Instant) -> Self {
        Self {
            kind: target.kind,
            namespace: target.namespace.clone(),
            admin_addr: target.admin_addr,
            connected: true,
            last: None,
            increases: VecDeque::new(),
            scrapes: 0,
            failures: 0,
            last_attempt_unix_ms: None,
            last_success_unix_ms: None,
            last_success: None,
            last_error: None,
            last_seen: at,
        }
    }

    fn scraped(&mut self, addr: SocketAddr, at: Instant, scrape: Scrape) {
        self.last_success = Some(at);
        self.last_success_unix_ms = Some(unix_ms(SystemTime::now()));
        self.last_error = None;
        let increases: Vec<(SeriesKey, Increase)> = match &self.last {
            // The first scrape is only a baseline: when its counts happened is unknown.
            None => Vec::new(),
            // Another admin address or start time is another process, counting from zero.
            Some((last_addr, last))
                if *last_addr != addr || last.start_time != scrape.start_time =>
            {
                since(&scrape, None)
            }
            Some((_, last)) => since(&scrape, Some(last)),
        };
        if !increases.is_empty() {
            self.increases.push_back((at, increases));
        }
        self.last = Some((addr, scrape));
    }
}

/// Each series' increase since `earlier` (of the same process), or since zero.
fn since(scrape: &Scrape, earlier: Option<&Scrape>) -> Vec<(SeriesKey, Increase)> {
    let before = |k: &SeriesKey| -> Option<&Counters> { earlier?.series.get(k) };
    scrape
        .series
        .iter()
        .filter_map(|(k, c)| Some((k.clone(), c.increase_since(before(k))?)))
        .collect()
}

/// A proxy's scrapes, for /debug/telemetryz.
#[derive(Debug, Clone, Serialize)]
pub struct ProxyScrapes {
    pub node_id: String,
    pub kind: NodeKind,
    pub namespace: String,
    pub admin_addr: SocketAddr,
    pub connected: bool,
    pub scrapes: u64,
    pub failures: u64,
    pub last_attempt_unix_ms: Option<u64>,
    pub last_success_unix_ms: Option<u64>,
    pub last_success_age_ms: Option<u64>,
    pub last_error: Option<String>,
    /// Outbound (service, version) series in its last successful scrape.
    pub series: usize,
}

/// One GET of a proxy's /metrics, parsed.
async fn scrape(
    client: &HttpClient,
    target: &AdminTarget,
    timeout: Duration,
) -> Result<Scrape, String> {
    let url = format!("http://{}/metrics", target.admin_addr);
    let body = http_get(client, &url, timeout, MAX_SCRAPE_BYTES).await?;
    text::parse(&String::from_utf8_lossy(&body)).map_err(|e| format!("{url}: {e}"))
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

// === impl MetricsSource ===

/// [`EmbeddedTelemetry`] answering the analysis' questions.
pub struct EmbeddedSource {
    pub telemetry: EmbeddedTelemetry,
    pub resolve: ResolveHost,
}

impl MetricsSource for EmbeddedSource {
    fn window<'a>(&'a self, version: &'a VersionRef, window: Duration) -> StatsFuture<'a> {
        let key = SeriesKey {
            service: (self.resolve)(version),
            version: version.version.clone(),
        };
        let result = self.telemetry.window_at(&key, window, Instant::now());
        Box::pin(async move { result })
    }
}
