//! Envoy's `RegexMatchAndSubstitute`, applied as Envoy applies it: RE2's `GlobalReplace`. Every
//! non-overlapping match, left to right, is replaced by the substitution (`\0`–`\9` name groups,
//! `\\` is a backslash), an empty match where the previous match ended is skipped, and a value
//! with no match comes out unchanged. Used by hash-policy header keys and by routes' and
//! redirects' path rewrites.
//!
//! A rewrite runs on every request of a route that has one, so it never allocates or locks once
//! a thread has used it: it hands its output out in pieces (a hash needs no buffer, an HTTP/1
//! head is written straight into its buffer) and keeps its capture slots per thread.
//!
//! Refused, where Envoy would take the config and then do something other than it says: a
//! substitution naming a group the pattern lacks (RE2 then replaces nothing) or with a `\`
//! followed by anything but a digit or `\` (RE2 then cuts its output short). The substitution is
//! parsed into pieces once, here, rather than translated into the `regex` crate's `${N}` syntax,
//! so a `$` in it stays a `$`. Like the route matchers, patterns are compiled by the `regex`
//! crate, whose syntax is RE2's; its `\d`, `\s`, `\w` and `\b` are Unicode-aware where RE2's are
//! ASCII, so portable patterns spell such classes out (`[ \t]`).

use envoy_types::pb::envoy::r#type::matcher::v3::RegexMatchAndSubstitute;
use regex::{CaptureLocations, Regex};
use std::cell::RefCell;
use std::fmt;
use thread_local::ThreadLocal;

/// A compiled `RegexMatchAndSubstitute`.
pub struct RegexRewrite {
    regex: Regex,
    substitution: Vec<Piece>,
    /// Capture slots, one set per thread: `captures_read_at` fills them in place.
    slots: ThreadLocal<RefCell<CaptureLocations>>,
}

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Group(usize),
}

impl RegexRewrite {
    pub fn compile(r: &RegexMatchAndSubstitute) -> Result<Self, String> {
        let pattern = r
            .pattern
            .as_ref()
            .map(|p| p.regex.as_str())
            .ok_or("regex_rewrite has no pattern")?;
        let regex = Regex::new(pattern)
            .map_err(|e| format!("invalid regex_rewrite pattern {pattern:?}: {e}"))?;
        let substitution = substitution(&r.substitution, regex.captures_len())?;
        Ok(Self {
            regex,
            substitution,
            slots: ThreadLocal::new(),
        })
    }

    /// Hands the rewritten `value` to `out`, piece by piece, in order; their concatenation is
    /// what RE2's `GlobalReplace` makes of `value`.
    pub fn write(&self, value: &str, out: &mut dyn FnMut(&str)) {
        let cell = self
            .slots
            .get_or(|| RefCell::new(self.regex.capture_locations()));
        match cell.try_borrow_mut() {
            Ok(mut slots) => self.write_with(&mut slots, value, out),
            // Only if `out` rewrote with this same rewrite: correct, at the cost of a buffer.
            Err(_) => self.write_with(&mut self.regex.capture_locations(), value, out),
        }
    }

    /// The rewritten value as one string (several values of one header are sorted by it).
    pub fn rewrite(&self, value: &str) -> String {
        let mut s = String::with_capacity(value.len());
        self.write(value, &mut |piece| s.push_str(piece));
        s
    }

    /// RE2's `GlobalReplace` loop, with the text between matches handed out lazily.
    fn write_with(&self, slots: &mut CaptureLocations, value: &str, out: &mut dyn FnMut(&str)) {
        let (mut at, mut copied, mut last_end) = (0, 0, None);
        while at <= value.len() {
            let Some(m) = self.regex.captures_read_at(slots, value, at) else {
                break;
            };
            if m.is_empty() && last_end == Some(m.end()) {
                // An empty match where the last one ended: step over one character.
                at += value[at..].chars().next().map_or(1, char::len_utf8);
                continue;
            }
            out(&value[copied..m.start()]);
            for piece in &self.substitution {
                match piece {
                    Piece::Text(text) => out(text),
                    Piece::Group(i) => out(slots.get(*i).map_or("", |(s, e)| &value[s..e])),
                }
            }
            (at, copied, last_end) = (m.end(), m.end(), Some(m.end()));
        }
        out(&value[copied..]);
    }
}

/// Envoy's substitution syntax (RE2's rewrite string) in pieces.
fn substitution(s: &str, groups: usize) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            text.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => text.push('\\'),
            Some(d @ '0'..='9') => {
                let group = (d as usize) - ('0' as usize);
                if group >= groups {
                    return Err(format!(
                        "substitution {s:?} names group \\{group}, the pattern has {} group(s)",
                        groups - 1
                    ));
                }
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                pieces.push(Piece::Group(group));
            }
            other => {
                let after = other.map_or("the end".to_string(), |c| format!("{c:?}"));
                return Err(format!(
                    "substitution {s:?}: a backslash is followed by {after}; use \\0-\\9 for a group or \\\\ for a backslash"
                ));
            }
        }
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

impl fmt::Debug for RegexRewrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegexRewrite")
            .field("pattern", &self.regex.as_str())
            .field("substitution", &self.substitution)
            .finish()
    }
}

impl Clone for RegexRewrite {
    fn clone(&self) -> Self {
        Self {
            regex: self.regex.clone(),
            substitution: self.substitution.clone(),
            slots: ThreadLocal::new(),
        }
    }
}

#[cfg(test)]
mod tests;
