//! What the pilot process costs, read from outside: CPU time and memory from `/proc/<pid>`, and
//! its own push-latency histogram from `/metrics`.
//!
//! Reads only; never signals or otherwise touches the process.

use anyhow::{bail, Context as _};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Linux reports utime/stime in USER_HZ, which is 100 on every mainstream architecture.
const USER_HZ: f64 = 100.0;

#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSample {
    /// utime + stime of all threads, seconds (10 ms resolution).
    pub cpu_s: f64,
    pub rss_kib: u64,
    /// Peak resident set size so far.
    pub hwm_kib: u64,
}

/// Sample the process, or `None` when no pid was given.
pub fn sample(pid: Option<u32>) -> anyhow::Result<Option<ProcSample>> {
    let Some(pid) = pid else { return Ok(None) };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat (is pilot still running?)"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    Ok(Some(ProcSample {
        cpu_s: cpu_seconds(&stat)?,
        rss_kib: status_kib(&status, "VmRSS:")?,
        hwm_kib: status_kib(&status, "VmHWM:")?,
    }))
}

/// Fields 14 and 15 of `/proc/PID/stat`, counted after the `)` that ends the command name.
fn cpu_seconds(stat: &str) -> anyhow::Result<f64> {
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so field N is at index N - 3.
    let ticks = |n: usize| -> anyhow::Result<u64> {
        let f = fields.get(n - 3).context("short /proc stat")?;
        Ok(f.parse()?)
    };
    Ok((ticks(14)? + ticks(15)?) as f64 / USER_HZ)
}

fn status_kib(status: &str, key: &str) -> anyhow::Result<u64> {
    let line = status
        .lines()
        .find(|l| l.starts_with(key))
        .with_context(|| format!("no {key} in /proc status"))?;
    let value = line[key.len()..].split_whitespace().next().unwrap_or("");
    Ok(value.parse()?)
}

// === Prometheus histogram ===

/// One scrape of a histogram: cumulative bucket counts by upper bound, sum and count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    pub buckets: BTreeMap<String, u64>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    /// What was observed between `earlier` and `self`.
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        Histogram {
            buckets: self
                .buckets
                .iter()
                .map(|(le, n)| {
                    (
                        le.clone(),
                        n - earlier.buckets.get(le).copied().unwrap_or(0),
                    )
                })
                .collect(),
            sum: self.sum - earlier.sum,
            count: self.count - earlier.count,
        }
    }

    /// The upper bound of the bucket holding quantile `q` (seconds); `None` when empty.
    pub fn quantile_bound(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let wanted = (q * self.count as f64).ceil() as u64;
        let mut bounds: Vec<(f64, u64)> = self
            .buckets
            .iter()
            .map(|(le, n)| (le.parse().unwrap_or(f64::INFINITY), *n))
            .collect();
        bounds.sort_by(|a, b| a.0.total_cmp(&b.0));
        bounds
            .into_iter()
            .find(|(_, n)| *n >= wanted)
            .map(|(le, _)| le)
    }
}

/// Parse histogram `name` out of a Prometheus text exposition.
pub fn parse_histogram(text: &str, name: &str) -> Histogram {
    let bucket_prefix = format!("{name}_bucket{{le=\"");
    let mut h = Histogram::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(&bucket_prefix) {
            if let Some((le, n)) = rest.split_once("\"}") {
                h.buckets
                    .insert(le.to_string(), n.trim().parse().unwrap_or(0));
            }
        } else if let Some(v) = line.strip_prefix(&format!("{name}_sum ")) {
            h.sum = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = line.strip_prefix(&format!("{name}_count ")) {
            h.count = v.trim().parse().unwrap_or(0);
        }
    }
    h
}

/// `GET /metrics` over plain HTTP/1.0 on loopback; returns the body.
pub async fn scrape(addr: &str) -> anyhow::Result<String> {
    let exchange = async {
        let mut conn = TcpStream::connect(addr).await?;
        let head = format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        conn.write_all(head.as_bytes()).await?;
        let mut raw = Vec::new();
        conn.read_to_end(&mut raw).await?;
        anyhow::Ok(String::from_utf8_lossy(&raw).into_owned())
    };
    let raw = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .context("scraping /metrics timed out")??;
    let Some((status, body)) = raw.split_once("\r\n\r\n") else {
        bail!("malformed HTTP response from {addr}");
    };
    if !status.starts_with("HTTP/1.1 200") && !status.starts_with("HTTP/1.0 200") {
        bail!("/metrics answered: {}", status.lines().next().unwrap_or(""));
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests;
