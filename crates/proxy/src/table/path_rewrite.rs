//! How a route changes the path: Envoy's `prefix_rewrite` or `regex_rewrite`, on a forwarded
//! request (`RouteAction`) or in a redirect's `Location` (`RedirectAction`). Both rewrite the
//! path only; the query string is the caller's to keep (or, in a redirect, to strip).
//!
//! Applied per request, so writing never allocates: the new path is handed out in pieces.

use super::matcher::PathMatch;
use super::regex_rewrite::RegexRewrite;
use envoy_types::pb::envoy::r#type::matcher::v3::RegexMatchAndSubstitute;

#[derive(Debug, Clone)]
pub enum PathRewrite {
    /// Replaces the matched prefix; an exact or regex match matched the whole path.
    Prefix(String),
    /// Every match of the pattern in the path is replaced (RE2's `GlobalReplace`).
    Regex(Box<RegexRewrite>),
}

impl PathRewrite {
    /// A `RouteAction`'s rewrite, if it has one. Envoy refuses a route with both.
    pub fn of_route(
        prefix: &str,
        regex: Option<&RegexMatchAndSubstitute>,
    ) -> Result<Option<Self>, String> {
        match (prefix.is_empty(), regex) {
            (true, None) => Ok(None),
            (false, None) => Ok(Some(PathRewrite::Prefix(prefix.to_string()))),
            (true, Some(regex)) => Self::regex(regex).map(Some),
            (false, Some(_)) => Err("sets both prefix_rewrite and regex_rewrite; use one".into()),
        }
    }

    pub fn regex(regex: &RegexMatchAndSubstitute) -> Result<Self, String> {
        Ok(PathRewrite::Regex(Box::new(RegexRewrite::compile(regex)?)))
    }

    /// Hands `path` (without its query string) as rewritten to `out`, in pieces; `matched` is
    /// how the route matched it. A rewrite that leaves the path relative (or empty) gets a
    /// leading `/`: a request target, and a redirect's path, must have one.
    pub fn write(&self, matched: &PathMatch, path: &str, out: &mut dyn FnMut(&str)) {
        let mut started = false;
        let mut absolute = |piece: &str| {
            if piece.is_empty() {
                return;
            }
            if !started && !piece.starts_with('/') {
                out("/");
            }
            started = true;
            out(piece);
        };
        match self {
            PathRewrite::Prefix(prefix) => {
                absolute(prefix);
                absolute(unmatched_rest(matched, path));
            }
            PathRewrite::Regex(regex) => regex.write(path, &mut absolute),
        }
        if !started {
            out("/");
        }
    }

    /// The rewritten path as one string (the general path and redirects build a URI anyway).
    pub fn rewrite(&self, matched: &PathMatch, path: &str) -> String {
        let mut s = String::with_capacity(path.len() + 16);
        self.write(matched, path, &mut |piece| s.push_str(piece));
        s
    }
}

/// What follows the matched prefix; nothing after an exact or regex match.
fn unmatched_rest<'p>(matched: &PathMatch, path: &'p str) -> &'p str {
    match matched {
        // The prefix matched (case-folded, which keeps byte lengths), so this is a boundary.
        PathMatch::Prefix(p) => path.get(p.len()..).unwrap_or(""),
        PathMatch::Exact(_) | PathMatch::Regex(_) => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::r#type::matcher::v3::RegexMatcher;

    fn regex(pattern: &str, substitution: &str) -> RegexMatchAndSubstitute {
        RegexMatchAndSubstitute {
            pattern: Some(RegexMatcher {
                regex: pattern.into(),
                ..Default::default()
            }),
            substitution: substitution.into(),
        }
    }

    #[test]
    fn a_prefix_rewrite_replaces_what_the_route_matched() {
        let rewrite = PathRewrite::of_route("/v2", None).unwrap().unwrap();
        let prefix = PathMatch::Prefix("/api".into());
        assert_eq!(rewrite.rewrite(&prefix, "/api/users"), "/v2/users");
        let exact = PathMatch::Exact("/api/users".into());
        assert_eq!(rewrite.rewrite(&exact, "/api/users"), "/v2");
    }

    #[test]
    fn a_regex_rewrite_replaces_every_match_in_the_path() {
        let rewrite = PathRewrite::of_route("", Some(&regex("/(\\d+)", "/n\\1")))
            .unwrap()
            .unwrap();
        let any = PathMatch::Prefix("/".into());
        assert_eq!(rewrite.rewrite(&any, "/a/12/b/3"), "/a/n12/b/n3");
        assert_eq!(rewrite.rewrite(&any, "/none"), "/none");
    }

    #[test]
    fn a_rewritten_path_is_always_absolute() {
        let strip = PathRewrite::of_route("", Some(&regex("^/api/?", "")))
            .unwrap()
            .unwrap();
        let any = PathMatch::Prefix("/".into());
        assert_eq!(strip.rewrite(&any, "/api/users"), "/users");
        assert_eq!(strip.rewrite(&any, "/api"), "/");
        let emptied = PathRewrite::of_route("users", None).unwrap().unwrap();
        assert_eq!(
            emptied.rewrite(&PathMatch::Exact("/api".into()), "/api"),
            "/users"
        );
    }

    #[test]
    fn a_route_rewrites_one_way_and_with_a_valid_pattern() {
        assert!(PathRewrite::of_route("", None).unwrap().is_none());
        let both = PathRewrite::of_route("/v2", Some(&regex("a", "b"))).unwrap_err();
        assert_eq!(both, "sets both prefix_rewrite and regex_rewrite; use one");
        let bad = PathRewrite::of_route("", Some(&regex("/(v1", "/v2"))).unwrap_err();
        assert!(
            bad.starts_with("invalid regex_rewrite pattern \"/(v1\""),
            "{bad}"
        );
    }
}
