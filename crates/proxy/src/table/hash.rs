//! Hash-policy keys compiled from Envoy's `RouteAction.hash_policy`, and the one transformation a
//! key can carry: a header policy's `regex_rewrite`, applied as Envoy applies it. Envoy calls
//! RE2's `GlobalReplace` on each value: every non-overlapping match, left to right, is replaced
//! by the substitution (`\0`–`\9` name groups, `\\` is a backslash), an empty match where the
//! previous match ended is skipped, and a value with no match is hashed unchanged.
//!
//! A rewrite runs on every request of a hashed route that carries the header, so it never
//! allocates or locks once a thread has used it: it hands its output out in pieces (the hash
//! needs no buffer) and keeps its capture slots per thread.
//!
//! Refused, where Envoy would take the policy and then hash something other than it says: a
//! substitution naming a group the pattern lacks (RE2 then replaces nothing) or with a `\`
//! followed by anything but a digit or `\` (RE2 then cuts its output short). Like the route
//! matchers, patterns are compiled by the `regex` crate, whose syntax is RE2's; its `\d`, `\s`,
//! `\w` and `\b` are Unicode-aware where RE2's are ASCII, so portable patterns spell such classes
//! out (`[ \t]`).

use envoy_types::pb::envoy::config::route::v3 as rt;
use envoy_types::pb::envoy::r#type::matcher::v3::RegexMatchAndSubstitute;
use regex::{CaptureLocations, Regex};
use std::cell::RefCell;
use std::fmt;
use thread_local::ThreadLocal;

#[derive(Debug, Clone)]
pub enum HashKey {
    /// A request header by lower-case name; its values are rewritten before they are hashed if
    /// the policy has a `regex_rewrite` (boxed: its per-thread slots are large).
    Header {
        name: String,
        rewrite: Option<Box<RegexRewrite>>,
    },
    /// A cookie by name; with `generate`, a request that has none is given one (Envoy's cookie
    /// policy with a `ttl`): keyed by a new value the response sets.
    Cookie {
        name: String,
        generate: Option<CookieToSet>,
    },
    SourceIp,
    Query(String),
}

impl HashKey {
    /// A plain header key.
    pub fn header(name: &str) -> Self {
        HashKey::Header {
            name: name.to_ascii_lowercase(),
            rewrite: None,
        }
    }

    /// `None` for a policy that never yields a key here (filter state, `source_ip: false`).
    pub fn compile(h: &rt::route_action::HashPolicy) -> Result<Option<Self>, String> {
        use rt::route_action::hash_policy::PolicySpecifier as P;
        let Some(spec) = h.policy_specifier.as_ref() else {
            return Ok(None);
        };
        Ok(Some(match spec {
            P::Header(x) => HashKey::Header {
                name: x.header_name.to_ascii_lowercase(),
                rewrite: x
                    .regex_rewrite
                    .as_ref()
                    .map(RegexRewrite::compile)
                    .transpose()
                    .map_err(|e| format!("hash policy on header {:?}: {e}", x.header_name))?
                    .map(Box::new),
            },
            P::Cookie(c) => HashKey::Cookie {
                name: c.name.clone(),
                generate: c.ttl.as_ref().map(|ttl| CookieToSet {
                    max_age: (ttl.seconds > 0 || ttl.nanos > 0).then_some(ttl.seconds.max(0)),
                    path: Some(c.path.clone()).filter(|p| !p.is_empty()),
                }),
            },
            P::ConnectionProperties(c) if c.source_ip => HashKey::SourceIp,
            P::QueryParameter(q) => HashKey::Query(q.name.clone()),
            _ => return Ok(None),
        }))
    }
}

/// The cookie a cookie hash policy with a `ttl` sets when a request has none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieToSet {
    /// `Max-Age` in seconds; `None` for a TTL of 0: a session cookie.
    pub max_age: Option<i64>,
    pub path: Option<String>,
}

impl CookieToSet {
    /// `name=value; Max-Age=N; Path=P; HttpOnly` (unquoted, unlike Envoy's, so the value the
    /// client sends back hashes exactly as the one generated).
    pub fn header(&self, name: &str, value: &str) -> Option<http::HeaderValue> {
        let mut text = format!("{name}={value}");
        if let Some(age) = self.max_age {
            text.push_str(&format!("; Max-Age={age}"));
        }
        if let Some(path) = &self.path {
            text.push_str(&format!("; Path={path}"));
        }
        text.push_str("; HttpOnly");
        http::HeaderValue::from_str(&text).ok()
    }
}

// === impl RegexRewrite ===

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
