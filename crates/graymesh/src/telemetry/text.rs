//! Reading a proxy's `/metrics` (Prometheus / OpenMetrics text): only what the analysis needs,
//! `graymesh_proxy_requests_total` and `graymesh_proxy_request_duration_seconds_bucket`, only
//! `direction="outbound"` (see
//! ARCHITECTURE.md, "Telemetry for analysis": each request is counted once, by its caller's
//! proxy), summed per (destination_service, destination_version); and
//! `graymesh_proxy_start_time_seconds`, which tells one process from the next.
//!
//! Every other line is skipped unread; a malformed line of those two families is an error
//! naming the line, so a proxy that writes something unexpected is seen on /debug/telemetryz
//! instead of silently counting nothing.

use super::counters::{Counters, SeriesKey};
use std::collections::HashMap;

const REQUESTS: &str = "graymesh_proxy_requests_total";
const BUCKETS: &str = "graymesh_proxy_request_duration_seconds_bucket";
const START_TIME: &str = "graymesh_proxy_start_time_seconds";
/// The direction counted; the other one (`inbound`, the destination's sidecar) would count the
/// same requests a second time.
pub const COUNTED_DIRECTION: &str = "outbound";

/// One scrape of one proxy.
#[derive(Debug, Default)]
pub struct Scrape {
    /// When the proxy process started, if it says (`graymesh_proxy_start_time_seconds`).
    pub start_time: Option<f64>,
    /// Its cumulative counters, per (service, version).
    pub series: HashMap<SeriesKey, Counters>,
}

pub fn parse(text: &str) -> Result<Scrape, String> {
    let mut out = Scrape::default();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim_end();
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..name_end];
        if name != REQUESTS && name != BUCKETS && name != START_TIME {
            continue; // comments, other families, blank lines
        }
        let at = |e: String| format!("line {}: {e}: {line:?}", index + 1);
        let sample = Sample::parse(&line[name_end..]).map_err(at)?;
        if name == START_TIME {
            out.start_time = Some(sample.value);
            continue;
        }
        if sample.label("direction") != Some(COUNTED_DIRECTION) {
            continue;
        }
        let key = SeriesKey {
            service: sample.label("destination_service").unwrap_or("").into(),
            version: sample.label("destination_version").unwrap_or("").into(),
        };
        let counters = out.series.entry(key).or_default();
        let added = if name == REQUESTS {
            add_request(counters, &sample)
        } else {
            add_bucket(counters, &sample)
        };
        added.map_err(at)?;
    }
    Ok(out)
}

fn add_request(c: &mut Counters, s: &Sample) -> Result<(), String> {
    let n = count(s.value)?;
    c.requests += n;
    let code = s.label("response_code").unwrap_or("");
    if code.len() == 3 && code.starts_with('5') {
        c.server_errors += n;
    }
    match s.label("grpc_status") {
        None | Some("") => {}
        Some(status) => {
            c.grpc_requests += n;
            if status != "0" {
                c.grpc_errors += n;
            }
        }
    }
    Ok(())
}

fn add_bucket(c: &mut Counters, s: &Sample) -> Result<(), String> {
    let le = match s.label("le") {
        Some("+Inf") | Some("Inf") => f64::INFINITY,
        Some(text) => text
            .parse::<f64>()
            .map_err(|_| format!("bucket bound le={text:?} is not a number"))?,
        None => return Err("bucket without an le label".into()),
    };
    if le.is_nan() || le < 0.0 {
        return Err(format!("bucket bound le={le} is not a non-negative number"));
    }
    c.add_bucket(le, count(s.value)?);
    Ok(())
}

/// Counters are whole numbers; anything else (negative, NaN, fractional) is not ours.
fn count(value: f64) -> Result<u64, String> {
    if value.is_finite() && value >= 0.0 && value.fract() == 0.0 {
        Ok(value as u64)
    } else {
        Err(format!("value {value} is not a count"))
    }
}

/// A sample's labels, in the order written.
type Labels = Vec<(String, String)>;

/// One sample line: its labels and value (timestamp and exemplar, if any, ignored).
struct Sample {
    labels: Labels,
    value: f64,
}

impl Sample {
    /// `rest` is the line after the metric name: `{a="b",...} 12` or ` 12`.
    fn parse(rest: &str) -> Result<Self, String> {
        let (labels, after) = match rest.strip_prefix('{') {
            Some(inner) => labels(inner)?,
            None => (Vec::new(), rest),
        };
        let value_text = after
            .split_whitespace()
            .next()
            .ok_or("no value after the labels")?;
        let value = match value_text {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            other => other
                .parse::<f64>()
                .map_err(|_| format!("value {other:?} is not a number"))?,
        };
        Ok(Self { labels, value })
    }

    fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `a="b",c="d\"e"} rest` ⇒ the pairs and `rest`.
fn labels(mut s: &str) -> Result<(Labels, &str), String> {
    let mut out = Vec::new();
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix('}') {
            return Ok((out, rest));
        }
        let (name, rest) = s
            .split_once('=')
            .ok_or("label without '=' (or labels not closed by '}')")?;
        let name = name.trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("bad label name {name:?}"));
        }
        let rest = rest
            .strip_prefix('"')
            .ok_or_else(|| format!("label {name}: value not quoted"))?;
        let (value, rest) =
            quoted(rest).ok_or_else(|| format!("label {name}: unterminated value"))?;
        out.push((name.to_string(), value));
        s = rest.trim_start();
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        } else if !s.starts_with('}') {
            return Err(format!(
                "label {name}: expected ',' or '}}' after the value"
            ));
        }
    }
}

/// The text up to the closing quote, unescaped (`\\`, `\"`, `\n`), and what follows it.
fn quoted(s: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &s[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => value.push('\n'),
                other => value.push(other),
            },
            other => value.push(other),
        }
    }
    None
}
