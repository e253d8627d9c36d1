//! Request matchers compiled from Envoy's: paths, headers, query parameters. Regexes use the
//! `regex` crate (RE2 syntax, linear time), compiled once per table.

use envoy_types::pb::envoy::config::route::v3 as rt;
use envoy_types::pb::envoy::r#type::matcher::v3 as m;
use regex::Regex;

#[derive(Debug, Clone)]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    Regex(Regex),
}

impl StringMatch {
    pub fn compile(sm: &m::StringMatcher) -> Result<(Self, bool), String> {
        use m::string_matcher::MatchPattern as P;
        let ignore_case = sm.ignore_case;
        let lower = |s: &String| {
            if ignore_case {
                s.to_ascii_lowercase()
            } else {
                s.clone()
            }
        };
        let compiled = match &sm.match_pattern {
            Some(P::Exact(s)) => StringMatch::Exact(lower(s)),
            Some(P::Prefix(s)) => StringMatch::Prefix(lower(s)),
            Some(P::Suffix(s)) => StringMatch::Suffix(lower(s)),
            Some(P::Contains(s)) => StringMatch::Contains(lower(s)),
            Some(P::SafeRegex(r)) => StringMatch::Regex(regex(&r.regex, ignore_case)?),
            _ => return Err("unsupported string matcher".into()),
        };
        Ok((compiled, ignore_case))
    }

    pub fn matches(&self, value: &str) -> bool {
        match self {
            StringMatch::Exact(s) => value == s,
            StringMatch::Prefix(s) => value.starts_with(s.as_str()),
            StringMatch::Suffix(s) => value.ends_with(s.as_str()),
            StringMatch::Contains(s) => value.contains(s.as_str()),
            StringMatch::Regex(r) => r.is_match(value),
        }
    }
}

/// Envoy regexes match the whole value.
pub fn regex(pattern: &str, ignore_case: bool) -> Result<Regex, String> {
    let flags = if ignore_case { "(?i)" } else { "" };
    Regex::new(&format!("^{flags}(?:{pattern})$"))
        .map_err(|e| format!("invalid regex {pattern:?}: {e}"))
}

#[derive(Debug, Clone)]
pub enum PathMatch {
    Prefix(String),
    Exact(String),
    Regex(Regex),
}

impl PathMatch {
    pub fn compile(
        spec: Option<&rt::route_match::PathSpecifier>,
        case_sensitive: bool,
    ) -> Result<Self, String> {
        use rt::route_match::PathSpecifier as P;
        let fold = |s: &String| {
            if case_sensitive {
                s.clone()
            } else {
                s.to_ascii_lowercase()
            }
        };
        Ok(match spec {
            Some(P::Prefix(p)) => PathMatch::Prefix(fold(p)),
            Some(P::Path(p)) => PathMatch::Exact(fold(p)),
            Some(P::SafeRegex(r)) => PathMatch::Regex(regex(&r.regex, !case_sensitive)?),
            Some(P::PathSeparatedPrefix(p)) => PathMatch::Prefix(fold(p)),
            None => PathMatch::Prefix("/".into()),
            Some(_) => return Err("unsupported path matcher".into()),
        })
    }

    /// `path` without the query string; lower-cased by the caller when matching is case-insensitive.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Prefix(p) => path.starts_with(p.as_str()),
            PathMatch::Exact(p) => path == p,
            PathMatch::Regex(r) => r.is_match(path),
        }
    }
}

#[derive(Debug, Clone)]
pub enum HeaderCheck {
    Present(bool),
    Value {
        matcher: StringMatch,
        ignore_case: bool,
    },
}

#[derive(Debug, Clone)]
pub struct HeaderMatch {
    /// Lower-cased: header names match case-insensitively.
    pub name: String,
    pub check: HeaderCheck,
    pub invert: bool,
    pub missing_as_empty: bool,
}

impl HeaderMatch {
    pub fn compile(h: &rt::HeaderMatcher) -> Result<Self, String> {
        use rt::header_matcher::HeaderMatchSpecifier as S;
        let check = match &h.header_match_specifier {
            Some(S::PresentMatch(p)) => HeaderCheck::Present(*p),
            Some(S::StringMatch(sm)) => {
                let (matcher, ignore_case) = StringMatch::compile(sm)?;
                HeaderCheck::Value {
                    matcher,
                    ignore_case,
                }
            }
            #[allow(deprecated)]
            Some(S::ExactMatch(s)) => HeaderCheck::Value {
                matcher: StringMatch::Exact(s.clone()),
                ignore_case: false,
            },
            #[allow(deprecated)]
            Some(S::PrefixMatch(s)) => HeaderCheck::Value {
                matcher: StringMatch::Prefix(s.clone()),
                ignore_case: false,
            },
            #[allow(deprecated)]
            Some(S::SafeRegexMatch(r)) => HeaderCheck::Value {
                matcher: StringMatch::Regex(regex(&r.regex, false)?),
                ignore_case: false,
            },
            None => HeaderCheck::Present(true),
            Some(_) => return Err(format!("header {:?}: unsupported matcher", h.name)),
        };
        Ok(Self {
            name: h.name.to_ascii_lowercase(),
            check,
            invert: h.invert_match,
            missing_as_empty: h.treat_missing_header_as_empty,
        })
    }

    /// `value` is the header's value (several values joined by `,`), `None` when absent.
    pub fn matches(&self, value: Option<&str>) -> bool {
        let value = if value.is_none() && self.missing_as_empty {
            Some("")
        } else {
            value
        };
        let hit = match (&self.check, value) {
            (HeaderCheck::Present(want), v) => v.is_some() == *want,
            (HeaderCheck::Value { .. }, None) => return false, // absent never matches, even inverted
            (
                HeaderCheck::Value {
                    matcher,
                    ignore_case,
                },
                Some(v),
            ) => {
                if *ignore_case {
                    matcher.matches(&v.to_ascii_lowercase())
                } else {
                    matcher.matches(v)
                }
            }
        };
        hit != self.invert
    }
}

#[derive(Debug, Clone)]
pub struct QueryMatch {
    pub name: String,
    /// `None`: the parameter must be present.
    pub value: Option<(StringMatch, bool)>,
}

impl QueryMatch {
    pub fn compile(q: &rt::QueryParameterMatcher) -> Result<Self, String> {
        use rt::query_parameter_matcher::QueryParameterMatchSpecifier as S;
        let value = match &q.query_parameter_match_specifier {
            Some(S::StringMatch(sm)) => Some(StringMatch::compile(sm)?),
            Some(S::PresentMatch(_)) | None => None,
        };
        Ok(Self {
            name: q.name.clone(),
            value,
        })
    }

    pub fn matches(&self, query: Option<&str>) -> bool {
        let Some(query) = query else { return false };
        query
            .split('&')
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k == self.name).then_some(v)
            })
            .any(|v| match &self.value {
                None => true,
                Some((m, ignore_case)) => {
                    if *ignore_case {
                        m.matches(&v.to_ascii_lowercase())
                    } else {
                        m.matches(v)
                    }
                }
            })
    }
}
