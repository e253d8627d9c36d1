//! The benchmark's phases: open the streams, wait for the initial sync, then for each edit step
//! write the config file and wait until every stream the edit concerns has received the new route
//! and ACKed it. Every wait is bounded by the plan's timeout.

use crate::chain::XdsType;
use crate::collector::Collector;
use crate::pilot_stats::{self, Histogram, ProcSample};
use crate::report::{self, cpu_between, percentiles_json, proc_json, round, Percentiles};
use crate::stream::{self, StreamSpec};
use anyhow::{bail, Context as _};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};

const PUSH_LATENCY: &str = "graymesh_xds_push_latency_seconds";

#[derive(Debug, Clone)]
pub struct Plan {
    pub xds: String,
    pub streams: usize,
    pub services: usize,
    pub per_connection: usize,
    /// Listener name with `{}` standing for the service index.
    pub listener_template: String,
    pub timeout: Duration,
    pub settle: Duration,
    pub quiet: Duration,
    pub pilot_pid: Option<u32>,
    pub metrics_addr: Option<String>,
    pub edit_file: Option<PathBuf>,
    pub steps: Vec<EditStep>,
}

#[derive(Debug, Clone)]
pub struct EditStep {
    pub content_file: PathBuf,
    pub edited: Edited,
}

/// Which services an edit changes the route of: streams of those services must see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edited {
    All,
    Services(BTreeSet<usize>),
}

impl Edited {
    /// `all`, or service indices and ranges: `0`, `0,5,9`, `0-99`.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        if text == "all" {
            return Ok(Self::All);
        }
        let mut set = BTreeSet::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let (a, b): (usize, usize) = (a.parse()?, b.parse()?);
            if a > b {
                bail!("--edited: range {part} runs backwards");
            }
            set.extend(a..=b);
        }
        Ok(Self::Services(set))
    }

    fn contains(&self, service: usize) -> bool {
        match self {
            Self::All => true,
            Self::Services(s) => s.contains(&service),
        }
    }
}

/// The figures, and whether every wait ended because what it waited for happened.
pub struct Outcome {
    pub json: Value,
    pub complete: bool,
}

pub async fn run(plan: &Plan) -> anyhow::Result<Outcome> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut collector = Collector::new(rx, plan.streams);
    let channels = connect(plan).await?;
    let (sync, mut complete) = initial_sync(plan, &channels, tx, &mut collector).await?;
    let mut edits = Vec::new();
    for step in &plan.steps {
        let settling = pilot_stats::sample(plan.pilot_pid)?;
        collector
            .until(Instant::now() + plan.settle, |_| false)
            .await;
        let (figures, done) = edit_step(plan, step, settling, &mut collector).await?;
        complete &= done;
        edits.push(figures);
    }
    let json = json!({
        "streams": plan.streams,
        "services": plan.services,
        "connections": channels.len(),
        "initial_sync": sync,
        "edits": edits,
        "pilot_end": proc_json(pilot_stats::sample(plan.pilot_pid)?),
    });
    Ok(Outcome { json, complete })
}

/// One HTTP/2 connection per `per_connection` streams; tonic multiplexes streams over each.
async fn connect(plan: &Plan) -> anyhow::Result<Vec<Channel>> {
    let count = plan.streams.div_ceil(plan.per_connection.max(1));
    let endpoint = Endpoint::from_shared(format!("http://{}", plan.xds))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5));
    let mut channels = Vec::with_capacity(count);
    for _ in 0..count {
        let channel = endpoint
            .connect()
            .await
            .with_context(|| format!("connecting to xDS at {}", plan.xds))?;
        channels.push(channel);
    }
    Ok(channels)
}

async fn initial_sync(
    plan: &Plan,
    channels: &[Channel],
    tx: mpsc::UnboundedSender<stream::Event>,
    collector: &mut Collector,
) -> anyhow::Result<(Value, bool)> {
    let before = pilot_stats::sample(plan.pilot_pid)?;
    let started = Instant::now();
    for index in 0..plan.streams {
        let listener = plan
            .listener_template
            .replace("{}", &(index % plan.services).to_string());
        let channel = channels[index / plan.per_connection.max(1)].clone();
        tokio::spawn(stream::run(
            channel,
            StreamSpec { index, listener },
            tx.clone(),
        ));
    }
    let deadline = started + plan.timeout;
    collector.until(deadline, Collector::sync_settled).await;
    let after = pilot_stats::sample(plan.pilot_pid)?;
    let synced: Vec<Instant> = collector.synced.iter().flatten().copied().collect();
    let all = collector.synced_count() == plan.streams;
    let last = synced.iter().max().map(|t| ms(*t - started));
    let json = json!({
        "synced": collector.synced_count(),
        "closed": collector.closed_count(),
        "close_reasons": collector.close_reasons(),
        "all_synced_s": if all { json!(last.map(|l| round(l / 1000.0))) } else { Value::Null },
        "per_stream_ms": percentiles_json(Percentiles::of(synced.iter().map(|t| ms(*t - started)).collect())),
        "responses": by_type(&collector.responses),
        "pilot_cpu_s": cpu_between(before, after),
        "pilot": proc_json(after),
    });
    print_sync(plan, collector, last, before, after);
    Ok((json, all))
}

fn print_sync(
    plan: &Plan,
    c: &Collector,
    last_ms: Option<f64>,
    before: Option<ProcSample>,
    after: Option<ProcSample>,
) {
    report::print_line(
        "initial sync",
        format!(
            "{}/{} streams synced, {} closed, last after {:.3} s",
            c.synced_count(),
            plan.streams,
            c.closed_count(),
            last_ms.unwrap_or(f64::NAN) / 1000.0
        ),
    );
    for (reason, n) in c.close_reasons().iter().take(3) {
        report::print_line("  closed", format!("{n} × {reason}"));
    }
    if let (Some(b), Some(a)) = (before, after) {
        report::print_line(
            "  pilot during sync",
            format!(
                "CPU {:.2} s, RSS {:.1} MiB",
                a.cpu_s - b.cpu_s,
                a.rss_kib as f64 / 1024.0
            ),
        );
    }
}

async fn edit_step(
    plan: &Plan,
    step: &EditStep,
    settling: Option<ProcSample>,
    collector: &mut Collector,
) -> anyhow::Result<(Value, bool)> {
    let target = plan
        .edit_file
        .as_deref()
        .context("--edit-content-file needs --edit-file")?;
    let content = std::fs::read(&step.content_file)
        .with_context(|| format!("reading {}", step.content_file.display()))?;
    let expected: BTreeSet<usize> = (0..plan.streams)
        .filter(|i| step.edited.contains(i % plan.services) && collector.closed[*i].is_none())
        .collect();
    let metrics_before = scrape_histogram(plan).await;
    collector.mark();
    let before = pilot_stats::sample(plan.pilot_pid)?;
    let (edited_at, edited_wall) = write_atomically(target, &content)?;
    let all_in = collector
        .until(edited_at + plan.timeout, |c| {
            expected.iter().all(|s| c.changes.contains_key(s))
        })
        .await;
    let at_last_ack = pilot_stats::sample(plan.pilot_pid)?;
    collector
        .until(Instant::now() + plan.quiet, |_| false)
        .await;
    let after_quiet = pilot_stats::sample(plan.pilot_pid)?;
    let pushes = scrape_histogram(plan)
        .await
        .zip(metrics_before)
        .map(|(after, before)| after.since(&before));
    let figures = EditFigures {
        step,
        expected: &expected,
        edited_at,
        edited_wall,
        samples: [settling, before, at_last_ack, after_quiet],
        pushes: pushes.as_ref(),
    };
    Ok((figures.report(collector), all_in))
}

/// Everything one edit step measured, turned into JSON and a printed summary.
struct EditFigures<'a> {
    step: &'a EditStep,
    expected: &'a BTreeSet<usize>,
    edited_at: Instant,
    edited_wall: SystemTime,
    /// Pilot when the settle pause began, right before the edit, when the last expected ACK was
    /// in, and after the quiet period.
    samples: [Option<ProcSample>; 4],
    pushes: Option<&'a Histogram>,
}

impl EditFigures<'_> {
    fn report(&self, c: &Collector) -> Value {
        let since = |t: Instant| ms(t.saturating_duration_since(self.edited_at));
        let mine = || {
            c.changes
                .values()
                .filter(|ch| self.expected.contains(&ch.stream))
        };
        let acked = Percentiles::of(mine().map(|ch| since(ch.acked)).collect());
        let received = Percentiles::of(mine().map(|ch| since(ch.received)).collect());
        let first = mine().map(|ch| since(ch.received)).reduce(f64::min);
        let last_response = c.responses.iter().map(|r| since(r.2)).reduce(f64::max);
        let unexpected_changes = c.changes.len() - mine().count();
        let to_others = c
            .responses
            .iter()
            .filter(|(s, _, _)| !self.expected.contains(s))
            .count();
        let [settling, before, last_ack, quiet] = self.samples;
        let json = json!({
            "content_file": self.step.content_file.display().to_string(),
            "edited_unix_s": self.edited_wall.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0),
            "expected_streams": self.expected.len(),
            "got_new_route": mine().count(),
            "ack_after_edit_ms": percentiles_json(acked),
            "received_after_edit_ms": percentiles_json(received),
            "first_received_ms": first.map(round),
            "last_response_ms": last_response.map(round),
            "responses_after_edit": by_type(&c.responses),
            "responses_to_unconcerned_streams": to_others,
            "route_changes_on_unconcerned_streams": unexpected_changes,
            "repeat_route_changes": c.extra_changes,
            "pilot_cpu_while_idle_before_s": cpu_between(settling, before),
            "pilot_cpu_to_last_ack_s": cpu_between(before, last_ack),
            "pilot_cpu_incl_quiet_s": cpu_between(before, quiet),
            "pilot": proc_json(quiet),
            "pilot_push_latency": report::histogram_json(self.pushes),
        });
        self.print(c, acked, first);
        json
    }

    fn print(&self, c: &Collector, acked: Option<Percentiles>, first: Option<f64>) {
        let got = c
            .changes
            .keys()
            .filter(|s| self.expected.contains(s))
            .count();
        report::print_line(
            &format!("edit {}", file_name(&self.step.content_file)),
            format!(
                "{got}/{} concerned streams ACKed the new route",
                self.expected.len()
            ),
        );
        report::print_line("  edit → ACK", report::percentiles_text(acked));
        report::print_line(
            "  edit → first new route",
            format!("{:.1} ms", first.unwrap_or(f64::NAN)),
        );
        if let [Some(settling), Some(before), Some(last_ack), _] = self.samples {
            report::print_line(
                "  pilot CPU edit → last ACK",
                format!("{:.2} s", last_ack.cpu_s - before.cpu_s),
            );
            // An idle pilot burns nothing; CPU here means work nobody asked for.
            report::print_line(
                "  pilot CPU while idle before",
                format!("{:.2} s", before.cpu_s - settling.cpu_s),
            );
        }
    }
}

/// Replace `target` in one step (write beside it, then rename), so pilot never reads a half
/// written file. The edit's time is taken before the write starts.
fn write_atomically(target: &Path, content: &[u8]) -> anyhow::Result<(Instant, SystemTime)> {
    let name = target
        .file_name()
        .and_then(|n| n.to_str())
        .context("--edit-file has no file name")?;
    let tmp = target.with_file_name(format!(".{name}.bench-tmp"));
    let at = (Instant::now(), SystemTime::now());
    std::fs::write(&tmp, content).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, target).with_context(|| format!("replacing {}", target.display()))?;
    Ok(at)
}

/// Pilot's push-latency histogram, or `None` (with a note) when it cannot be read.
async fn scrape_histogram(plan: &Plan) -> Option<Histogram> {
    let addr = plan.metrics_addr.as_deref()?;
    match pilot_stats::scrape(addr).await {
        Ok(text) => Some(pilot_stats::parse_histogram(&text, PUSH_LATENCY)),
        Err(e) => {
            eprintln!("xds-load: cannot scrape {addr}/metrics: {e:#}");
            None
        }
    }
}

fn by_type(responses: &[(usize, XdsType, Instant)]) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for (_, kind, _) in responses {
        *counts.entry(kind.short()).or_insert(0) += 1;
    }
    counts
}

fn file_name(path: &Path) -> String {
    let name = path.file_name().unwrap_or(path.as_os_str());
    name.to_string_lossy().into_owned()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edited_lists_and_ranges() -> anyhow::Result<()> {
        assert_eq!(Edited::parse("all")?, Edited::All);
        let e = Edited::parse("0,5-7")?;
        assert!(e.contains(0) && e.contains(6) && !e.contains(1) && !e.contains(8));
        assert!(Edited::parse("7-5").is_err());
        assert!(Edited::parse("x").is_err());
        Ok(())
    }
}
