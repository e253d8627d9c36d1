//! Choosing a route for a request: virtual host by authority, then the first route whose path,
//! headers and query parameters all match.

use crate::table::{Route, RouteConfig};
use http::request::Parts;

pub fn authority(parts: &Parts) -> &str {
    parts
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            parts
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("")
}

pub fn route<'t>(rc: &'t RouteConfig, parts: &Parts) -> Option<&'t Route> {
    let vhost = rc.vhost(authority(parts))?;
    let path = parts.uri.path();
    let mut lowered: Option<String> = None;
    vhost.routes.iter().find(|r| {
        let path_ok = if r.case_sensitive {
            r.path.matches(path)
        } else {
            r.path
                .matches(lowered.get_or_insert_with(|| path.to_ascii_lowercase()))
        };
        path_ok
            && r.headers
                .iter()
                .all(|h| h.matches(header_value(parts, &h.name)))
            && r.query.iter().all(|q| q.matches(parts.uri.query()))
    })
}

/// A request header's value, including the pseudo-headers Envoy lets routes match.
fn header_value<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    match name {
        ":authority" => Some(authority(parts)),
        ":method" => Some(parts.method.as_str()),
        ":path" => parts.uri.path_and_query().map(|p| p.as_str()),
        ":scheme" => Some(parts.uri.scheme_str().unwrap_or("http")),
        _ => parts.headers.get(name).and_then(|v| v.to_str().ok()),
    }
}
