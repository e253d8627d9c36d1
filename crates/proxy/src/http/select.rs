//! Choosing a route for a request: virtual host by authority, then the first route whose path,
//! headers and query parameters all match. Written against [`RequestView`] so that hyper's parsed
//! requests and the HTTP/1 fast path's borrowed heads are matched by the same code.

use crate::table::{HashKey, PathMatch, Redirect, RedirectPath, RegexRewrite, Route, RouteConfig};
use crate::upstream::balance;
use http::request::Parts;
use std::borrow::Cow;
use std::net::SocketAddr;

/// What routing reads of a request.
pub trait RequestView {
    /// `:authority`, or the Host header.
    fn authority(&self) -> &str;
    fn method(&self) -> &str;
    /// The path and query as the client sent them (origin form).
    fn path_and_query(&self) -> &str;
    fn scheme(&self) -> &str;
    /// The first value of a header, by lower-case name.
    fn header(&self, name: &str) -> Option<&str>;
    /// Calls `each` with every value of a header, by lower-case name, until it returns `Some`.
    fn find_in_header<'a, T>(
        &'a self,
        name: &str,
        each: &mut dyn FnMut(&'a str) -> Option<T>,
    ) -> Option<T>;

    fn path(&self) -> &str {
        let pq = self.path_and_query();
        pq.split_once('?').map_or(pq, |(p, _)| p)
    }

    fn query(&self) -> Option<&str> {
        self.path_and_query().split_once('?').map(|(_, q)| q)
    }
}

impl RequestView for Parts {
    fn authority(&self) -> &str {
        self.uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| {
                self.headers
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
            })
            .unwrap_or("")
    }

    fn method(&self) -> &str {
        self.method.as_str()
    }

    fn path_and_query(&self) -> &str {
        self.uri.path_and_query().map_or("/", |p| p.as_str())
    }

    fn scheme(&self) -> &str {
        self.uri.scheme_str().unwrap_or("http")
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn find_in_header<'a, T>(
        &'a self,
        name: &str,
        each: &mut dyn FnMut(&'a str) -> Option<T>,
    ) -> Option<T> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(each)
    }
}

pub fn route<'t>(rc: &'t RouteConfig, req: &impl RequestView) -> Option<&'t Route> {
    let vhost = rc.vhost(req.authority())?;
    let path = req.path();
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
                .all(|h| h.matches(header_value(req, &h.name).as_deref()))
            && r.query.iter().all(|q| q.matches(req.query()))
    })
}

/// A request header's value, including the pseudo-headers Envoy lets routes match. A header
/// sent more than once is matched, as Envoy does, on its values joined with `,` (the only case
/// that allocates).
fn header_value<'a>(req: &'a impl RequestView, name: &str) -> Option<Cow<'a, str>> {
    match name {
        ":authority" => Some(Cow::Borrowed(req.authority())),
        ":method" => Some(Cow::Borrowed(req.method())),
        ":path" => Some(Cow::Borrowed(req.path_and_query())),
        ":scheme" => Some(Cow::Borrowed(req.scheme())),
        _ => joined_header(req, name),
    }
}

fn joined_header<'a>(req: &'a impl RequestView, name: &str) -> Option<Cow<'a, str>> {
    let mut value: Option<Cow<'a, str>> = None;
    req.find_in_header(name, &mut |v: &'a str| {
        value = Some(match value.take() {
            None => Cow::Borrowed(v),
            Some(before) => Cow::Owned(format!("{before},{v}")),
        });
        None::<()>
    });
    value
}

/// The consistent-hash key of a request: the first of the route's hash policies that applies.
pub fn hash_key(keys: &[HashKey], req: &impl RequestView, peer: SocketAddr) -> Option<u64> {
    keys.iter().find_map(|k| match k {
        HashKey::Header { name, rewrite } => header_key(req, name, rewrite.as_deref()),
        HashKey::Cookie { name, .. } => cookie(req, name).map(|v| balance::hash_of(v.as_bytes())),
        HashKey::SourceIp => Some(balance::hash_ip(peer.ip())),
        HashKey::Query(name) => req.query().and_then(|q| {
            q.split('&').find_map(|kv| {
                kv.split_once('=')
                    .filter(|(k, _)| k == name)
                    .map(|(_, v)| balance::hash_of(v.as_bytes()))
            })
        }),
    })
}

/// When no hash policy keys the request and one is a cookie policy with a `ttl`: a new cookie
/// value, its key, and the `Set-Cookie` that gives it to the client, so its next requests keep
/// the version (and endpoint) this one gets.
pub fn generated_cookie(keys: &[HashKey]) -> Option<(u64, http::HeaderValue)> {
    keys.iter().find_map(|k| match k {
        HashKey::Cookie {
            name,
            generate: Some(set),
        } => {
            let value = format!("{:016x}", rand::random::<u64>());
            let header = set.header(name, &value)?;
            Some((balance::hash_of(value.as_bytes()), header))
        }
        _ => None,
    })
}

/// Whether a request none of `keys` keys would get a cookie from [`generated_cookie`].
pub fn generates_cookie(keys: &[HashKey]) -> bool {
    keys.iter().any(|k| {
        matches!(
            k,
            HashKey::Cookie {
                generate: Some(_),
                ..
            }
        )
    })
}

/// A header's key as Envoy derives it: every value of the header, each rewritten if the policy
/// says so, sorted, hashed together. One value, the usual case, is hashed alone and with no
/// buffer; several lines of one header (rare) are collected to be sorted.
fn header_key(req: &impl RequestView, name: &str, rewrite: Option<&RegexRewrite>) -> Option<u64> {
    let mut first = None;
    let several = req
        .find_in_header(name, &mut |v| match first {
            None => {
                first = Some(v);
                None
            }
            Some(_) => Some(()),
        })
        .is_some();
    let first = first?;
    if !several {
        return Some(match rewrite {
            None => balance::hash_of(first.as_bytes()),
            Some(r) => balance::hash_of_pieces(|out| r.write(first, out)),
        });
    }
    let mut values: Vec<Cow<'_, str>> = Vec::new();
    req.find_in_header(name, &mut |v| {
        values.push(rewrite.map_or(Cow::Borrowed(v), |r| Cow::Owned(r.rewrite(v))));
        None::<()>
    });
    values.sort_unstable();
    Some(balance::hash_of_values(values.iter().map(|v| v.as_bytes())))
}

fn cookie<'a>(req: &'a impl RequestView, name: &str) -> Option<&'a str> {
    req.find_in_header("cookie", &mut |v: &'a str| {
        v.split(';').find_map(|c| {
            let (k, v) = c.trim().split_once('=')?;
            (k == name).then_some(v)
        })
    })
}

/// The `Location` of a redirect: the request's URL with what the route replaces. `matched` is
/// how the route matched the path (what a `prefix_rewrite` replaces).
pub fn redirect_location(r: &Redirect, matched: &PathMatch, req: &impl RequestView) -> String {
    let authority = req.authority();
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => (h, Some(p)),
        _ => (authority, None),
    };
    let host = r.host.as_deref().unwrap_or(host);
    let port = r.port.map(|p| p.to_string()).or(port.map(str::to_string));
    let scheme = r.scheme.as_deref().unwrap_or(req.scheme());
    let mut location = match port {
        Some(p) => format!("{scheme}://{host}:{p}"),
        None => format!("{scheme}://{host}"),
    };
    let path_start = location.len();
    match &r.path {
        RedirectPath::Kept => location.push_str(req.path()),
        RedirectPath::Replaced(path) => location.push_str(path),
        RedirectPath::Rewritten(rewrite) => {
            rewrite.write(matched, req.path(), &mut |piece| location.push_str(piece));
        }
    }
    // Envoy's rules: the path is absolute; a `path_redirect` with a query string of its own
    // replaces the request's, and is kept whatever `strip_query` says.
    if !location[path_start..].starts_with('/') {
        location.insert(path_start, '/');
    }
    let own_query = matches!(&r.path, RedirectPath::Replaced(p) if p.contains('?'));
    if let (false, false, Some(query)) = (own_query, r.strip_query, req.query()) {
        location.push('?');
        location.push_str(query);
    }
    location
}
