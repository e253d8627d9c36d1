//! Checks shared by several kinds: ports, percentages, weights, hosts, regexes.
//!
//! Each takes the field path it reports under, so the error points at what the user wrote.

use super::Findings;
use crate::istio::Percent;

pub(super) const MAX_PORT: u32 = 65_535;

pub(super) fn port(f: &mut Findings, field: impl Into<String>, number: u32) {
    if !(1..=MAX_PORT).contains(&number) {
        f.error(
            field,
            format!("port {number} is out of range, must be 1..={MAX_PORT}"),
        );
    }
}

pub(super) fn optional_port(f: &mut Findings, field: impl Into<String>, number: Option<u32>) {
    if let Some(number) = number {
        port(f, field, number);
    }
}

pub(super) fn percent(f: &mut Findings, field: String, percent: Option<&Percent>) {
    let Some(Percent { value }) = percent else {
        return;
    };
    // Written as a negated range check so that NaN is out of range too.
    if !(0.0..=100.0).contains(value) {
        f.error(
            format!("{field}.value"),
            format!("percentage {value} is out of range, must be 0..=100"),
        );
    }
}

/// Weights of the destinations of one route (`path` is the `route` list): each 0..=100 and, when
/// there is more than one destination, summing to 100 as Istio requires.
pub(super) fn weights(f: &mut Findings, path: &str, weights: &[Option<u32>]) {
    for (i, weight) in weights.iter().enumerate() {
        if let Some(weight) = weight.filter(|w| *w > 100) {
            f.error(
                format!("{path}[{i}].weight"),
                format!("weight {weight} is out of range, must be 0..=100"),
            );
        }
    }
    if weights.len() < 2 {
        return;
    }
    let sum: u64 = weights.iter().map(|w| u64::from(w.unwrap_or(0))).sum();
    if sum != 100 {
        let hint = if weights.iter().any(Option::is_none) {
            " (a destination without a weight counts as 0)"
        } else {
            ""
        };
        f.error(path, format!("weights sum to {sum}, must be 100{hint}"));
    }
}

/// A non-empty list of non-empty hosts; `example` shows the user what a host looks like here.
pub(super) fn hosts(f: &mut Findings, field: &str, hosts: &[String], example: &str) {
    if hosts.is_empty() {
        f.error(
            field,
            format!("at least one host is required, e.g. {example}"),
        );
    }
    for (i, host) in hosts.iter().enumerate() {
        if host.trim().is_empty() {
            f.error(format!("{field}[{i}]"), "host must not be empty");
        }
    }
}

/// Istio's regexes are RE2; the `regex` crate implements the same syntax.
pub(super) fn regex(f: &mut Findings, field: String, pattern: &str) {
    if let Err(e) = regex::Regex::new(pattern) {
        f.error(
            field,
            format!(
                "invalid regex {pattern:?} (RE2 syntax): {}",
                regex_problem(&e)
            ),
        );
    }
}

/// An RE2 rewrite string (Envoy's `substitution`): `\0`..`\9` name the pattern's groups and
/// `\\` is a backslash. Anything else after a backslash, or a group the pattern lacks, would make
/// Envoy rewrite nothing or cut the path short, and the graymesh proxy refuses it. An invalid
/// pattern is reported by [`regex`].
pub(super) fn substitution(f: &mut Findings, field: String, pattern: &str, rewrite: &str) {
    let Ok(compiled) = regex::Regex::new(pattern) else {
        return;
    };
    let groups = compiled.captures_len() - 1;
    let mut chars = rewrite.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            continue;
        }
        let problem = match chars.next() {
            Some('\\') => continue,
            Some(d @ '0'..='9') if d.to_digit(10).is_some_and(|n| n as usize <= groups) => continue,
            Some(d @ '0'..='9') => format!("names group \\{d}, the match has {groups} group(s)"),
            Some(other) => format!("has a backslash before {other:?}"),
            None => "ends with a backslash".to_string(),
        };
        let hint = "use \\1-\\9 for a group, \\0 for the whole match, \\\\ for a backslash";
        f.error(field, format!("rewrite {rewrite:?} {problem}; {hint}"));
        return;
    }
}

/// The regex crate's syntax errors span several lines (pattern, caret, cause); keep the cause.
fn regex_problem(error: &regex::Error) -> String {
    let text = error.to_string();
    text.lines()
        .rev()
        .find_map(|line| line.strip_prefix("error: "))
        .map_or_else(|| text.replace('\n', " "), str::to_string)
}
