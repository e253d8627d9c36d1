//! Hash-policy keys compiled from Envoy's `RouteAction.hash_policy`. A header key may carry a
//! `regex_rewrite` (`RegexRewrite`), applied to each value before it is hashed, as Envoy does; a
//! value with no match is hashed unchanged.

use super::regex_rewrite::RegexRewrite;
use envoy_types::pb::envoy::config::route::v3 as rt;

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

#[cfg(test)]
mod tests;
