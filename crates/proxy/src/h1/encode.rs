//! Writing HTTP/1 heads into a reusable buffer: the request sent upstream (hop-by-hop headers
//! and any received `x-graymesh-source` dropped, the route's header operations applied, this
//! proxy's source and a `traceparent` added), the response sent downstream, and the proxy's own
//! replies.

use super::head::{trim, ResponseHead, View};
use crate::http::select::RequestView;
use crate::metrics::source::SOURCE_HEADER;
use crate::table::{Forward, HeaderOps, PathMatch, PathRewrite, Route};
use http::{HeaderName, HeaderValue};

/// The header operations of a route and its weighted cluster, folded in the order they apply:
/// which received headers are dropped and which are added.
#[derive(Default)]
pub struct Edits<'t> {
    dropped: Vec<&'t HeaderName>,
    added: Vec<(&'t HeaderName, &'t HeaderValue)>,
}

impl<'t> Edits<'t> {
    pub fn new(ops: [&'t HeaderOps; 2]) -> Self {
        let mut edits = Edits::default();
        for o in ops {
            for name in &o.remove {
                edits.drop(name);
            }
            for (name, value, overwrite) in &o.add {
                if *overwrite {
                    edits.drop(name);
                }
                edits.added.push((name, value));
            }
        }
        edits
    }

    fn drop(&mut self, name: &'t HeaderName) {
        self.dropped.push(name);
        self.added.retain(|(n, _)| *n != name);
    }

    fn drops(&self, name: &[u8]) -> bool {
        self.dropped
            .iter()
            .any(|d| name.eq_ignore_ascii_case(d.as_str().as_bytes()))
    }

    fn adds(&self, name: &str) -> bool {
        self.added.iter().any(|(n, _)| n.as_str() == name)
    }

    fn write_added(&self, out: &mut Vec<u8>) {
        for (name, value) in &self.added {
            header(out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
}

fn header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Headers that describe one hop of a request, not the request (the source header names the
/// previous hop: it is replaced, never passed on).
fn request_hop_by_hop(name: &[u8], value: &[u8]) -> bool {
    const HOP: [&[u8]; 9] = [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"host",
        b"x-graymesh-source",
    ];
    HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
        || (name.eq_ignore_ascii_case(b"te") && !trim(value).eq_ignore_ascii_case(b"trailers"))
}

/// The request as the upstream receives it (head only; the body follows as received), with
/// `source` as its `x-graymesh-source`.
pub fn request_head(
    out: &mut Vec<u8>,
    req: &View<'_>,
    route: &Route,
    f: &Forward,
    edits: &Edits,
    source: Option<&HeaderValue>,
) {
    out.clear();
    out.extend_from_slice(req.method().as_bytes());
    out.push(b' ');
    match &f.path_rewrite {
        Some(rewrite) => rewritten_path(out, req, &route.path, rewrite),
        None => out.extend_from_slice(req.path_and_query().as_bytes()),
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let host = f
        .host_rewrite
        .as_ref()
        .map_or(req.authority().as_bytes(), |h| h.as_bytes());
    if !host.is_empty() && !edits.drops(b"host") {
        header(out, b"host", host);
    }
    // Headers the client's `Connection` header names are for this hop only, too.
    let listed = req
        .headers()
        .find(|(n, _)| n.eq_ignore_ascii_case(b"connection"))
        .map(|(_, v)| v);
    let named_by_connection = |name: &[u8]| {
        listed.is_some_and(|v| {
            v.split(|b| *b == b',')
                .any(|t| trim(t).eq_ignore_ascii_case(name))
        })
    };
    for (name, value) in req.headers() {
        if !request_hop_by_hop(name, value) && !edits.drops(name) && !named_by_connection(name) {
            header(out, name, value);
        }
    }
    edits.write_added(out);
    if let Some(value) = source {
        header(out, SOURCE_HEADER.as_str().as_bytes(), value.as_bytes());
    }
    if !edits.adds("traceparent") && !req.has_header(b"traceparent") {
        header(out, b"traceparent", &crate::http::new_traceparent());
    }
    out.extend_from_slice(b"\r\n");
}

/// The path as the route rewrites it, written in place, with the query string as received.
fn rewritten_path(out: &mut Vec<u8>, req: &View<'_>, matched: &PathMatch, rewrite: &PathRewrite) {
    rewrite.write(matched, req.path(), &mut |piece| {
        out.extend_from_slice(piece.as_bytes())
    });
    if let Some(q) = req.query() {
        out.push(b'?');
        out.extend_from_slice(q.as_bytes());
    }
}

/// The upstream's response head as the client receives it.
pub fn response_head(
    out: &mut Vec<u8>,
    buf: &[u8],
    head: &ResponseHead,
    edits: &Edits,
    close: bool,
) {
    out.clear();
    status_line(out, head.status, &buf[head.reason.clone()]);
    for (name, value) in &head.headers {
        let name = &buf[name.clone()];
        let hop = name.eq_ignore_ascii_case(b"connection")
            || name.eq_ignore_ascii_case(b"keep-alive")
            || name.eq_ignore_ascii_case(b"proxy-connection");
        if !hop && !edits.drops(name) {
            header(out, name, &buf[value.clone()]);
        }
    }
    edits.write_added(out);
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

fn status_line(out: &mut Vec<u8>, status: u16, reason: &[u8]) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason);
    out.extend_from_slice(b"\r\n");
}

/// A reply made by the proxy itself (`x-graymesh-local-reply` says why).
pub struct LocalReply {
    pub status: u16,
    pub message: String,
    pub flag: &'static str,
    pub extra: Option<(&'static str, Vec<u8>)>,
}

impl LocalReply {
    pub fn new(status: u16, message: impl Into<String>, flag: &'static str) -> Self {
        Self {
            status,
            message: message.into(),
            flag,
            extra: None,
        }
    }

    pub fn write(&self, out: &mut Vec<u8>, close: bool) {
        out.clear();
        let reason = http::StatusCode::from_u16(self.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        status_line(out, self.status, reason.as_bytes());
        header(out, b"content-type", b"text/plain");
        if !self.flag.is_empty() {
            header(out, b"x-graymesh-local-reply", self.flag.as_bytes());
        }
        if let Some((name, value)) = &self.extra {
            header(out, name.as_bytes(), value);
        }
        let len = self.message.len() + usize::from(!self.message.is_empty());
        header(
            out,
            b"content-length",
            itoa::Buffer::new().format(len).as_bytes(),
        );
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !self.message.is_empty() {
            out.extend_from_slice(self.message.as_bytes());
            out.push(b'\n');
        }
    }
}

/// A redirect: `location` and no body.
pub fn redirect(out: &mut Vec<u8>, status: u16, location: &str, close: bool) {
    out.clear();
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    status_line(out, status, reason.as_bytes());
    header(out, b"location", location.as_bytes());
    header(out, b"content-length", b"0");
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}
