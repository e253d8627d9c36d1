//! HTTP/1 request and response heads, parsed in place: a head is a set of offsets into the
//! connection's read buffer, so nothing is copied or allocated per request once the connection's
//! header list has grown to its size. Framing is decided here, strictly: anything two readers
//! could frame differently (Content-Length with Transfer-Encoding, differing Content-Lengths, a
//! coding other than chunked) is refused, never re-framed.

use crate::http::select::RequestView;
use crate::listeners::MAX_HEADERS;
use std::ops::Range;

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// No body (a request without Content-Length or Transfer-Encoding, a HEAD response, 204, 304).
    #[default]
    Empty,
    Length(u64),
    Chunked,
    /// A response that ends when the upstream closes the connection.
    UntilClose,
}

/// Why a request head is refused: the status and a short reason for the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: &'static str,
}

const fn refuse(status: u16, reason: &'static str) -> Refusal {
    Refusal { status, reason }
}

/// A parsed request head: offsets into the buffer it was parsed from.
#[derive(Debug, Default)]
pub struct RequestHead {
    pub method: Range<usize>,
    pub target: Range<usize>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    pub headers: Vec<(Range<usize>, Range<usize>)>,
    /// Bytes of the head, request line to the blank line included.
    pub len: usize,
    pub framing: Framing,
    /// The client wants the connection kept open after this request.
    pub keep_alive: bool,
    pub upgrade: bool,
    pub expect_continue: bool,
}

/// `Ok(true)`: `head` holds a complete head; `Ok(false)`: more bytes are needed.
pub fn parse_request(buf: &[u8], head: &mut RequestHead) -> Result<bool, Refusal> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut storage);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(false),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(refuse(431, "too many request headers"))
        }
        Err(_) => return Err(refuse(400, "malformed request head")),
    };
    let at = |s: &[u8]| offset(buf, s);
    let method = req.method.unwrap_or("");
    let target = req.path.unwrap_or("");
    head.method = at(method.as_bytes());
    head.target = at(target.as_bytes());
    head.minor = req.version.unwrap_or(1);
    head.len = len;
    head.headers.clear();
    head.headers.extend(
        req.headers
            .iter()
            .map(|h| (at(h.name.as_bytes()), at(h.value))),
    );
    let facts = HeadFacts::of(req.headers.iter().map(|h| (h.name.as_bytes(), h.value)))?;
    head.framing = match (facts.chunked, facts.length) {
        (Some(_), _) if head.minor == 0 => {
            return Err(refuse(400, "Transfer-Encoding in an HTTP/1.0 request"))
        }
        (Some(_), Some(_)) => {
            return Err(refuse(
                400,
                "both Content-Length and Transfer-Encoding: refusing an ambiguous request",
            ))
        }
        (Some(true), None) => Framing::Chunked,
        (Some(false), None) => {
            return Err(refuse(400, "Transfer-Encoding must be exactly chunked"))
        }
        (None, Some(n)) => Framing::Length(n),
        (None, None) => Framing::Empty,
    };
    head.keep_alive = if head.minor == 0 {
        facts.keep_alive
    } else {
        !facts.close
    };
    head.upgrade = facts.upgrade_token && facts.upgrade_header;
    head.expect_continue = facts.expect_continue;
    Ok(true)
}

fn offset(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = (part.as_ptr() as usize).saturating_sub(buf.as_ptr() as usize);
    start..start + part.len()
}

/// What the framing and connection headers of a head say.
#[derive(Default)]
struct HeadFacts {
    /// Transfer-Encoding present: `Some(true)` when it is exactly `chunked`.
    chunked: Option<bool>,
    /// The last transfer coding is `chunked` (how a response's body is then framed).
    chunked_last: bool,
    length: Option<u64>,
    close: bool,
    keep_alive: bool,
    upgrade_token: bool,
    upgrade_header: bool,
    expect_continue: bool,
}

impl HeadFacts {
    fn of<'a>(headers: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> Result<Self, Refusal> {
        let mut f = HeadFacts::default();
        for (name, value) in headers {
            if name.eq_ignore_ascii_case(b"content-length") {
                for part in value.split(|b| *b == b',') {
                    let n =
                        parse_length(trim(part)).ok_or(refuse(400, "invalid Content-Length"))?;
                    if f.length.is_some_and(|m| m != n) {
                        return Err(refuse(400, "differing Content-Length values"));
                    }
                    f.length = Some(n);
                }
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                let exactly_chunked =
                    f.chunked.is_none() && trim(value).eq_ignore_ascii_case(b"chunked");
                f.chunked = Some(exactly_chunked);
                f.chunked_last = value
                    .split(|b| *b == b',')
                    .next_back()
                    .is_some_and(|t| trim(t).eq_ignore_ascii_case(b"chunked"));
            } else if name.eq_ignore_ascii_case(b"connection") {
                for token in value.split(|b| *b == b',').map(trim) {
                    f.close |= token.eq_ignore_ascii_case(b"close");
                    f.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                    f.upgrade_token |= token.eq_ignore_ascii_case(b"upgrade");
                }
            } else if name.eq_ignore_ascii_case(b"upgrade") {
                f.upgrade_header = true;
            } else if name.eq_ignore_ascii_case(b"expect") {
                f.expect_continue = trim(value).eq_ignore_ascii_case(b"100-continue");
            }
        }
        Ok(f)
    }
}

fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0u64, |n, d| n * 10 + u64::from(d - b'0')),
    )
}

pub fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

// === request view ===

/// A parsed request head together with the buffer it points into: what routing reads.
pub struct View<'a> {
    pub buf: &'a [u8],
    pub head: &'a RequestHead,
}

impl<'a> View<'a> {
    fn text(&self, r: &Range<usize>) -> &'a str {
        std::str::from_utf8(&self.buf[r.clone()]).unwrap_or("")
    }

    pub fn headers(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + '_ {
        self.head
            .headers
            .iter()
            .map(|(n, v)| (&self.buf[n.clone()], &self.buf[v.clone()]))
    }

    /// For an absolute-form target (`http://host/path`, how HTTP proxy clients send), the
    /// authority and the origin-form rest.
    fn absolute(&self) -> Option<(&'a str, &'a str)> {
        let target = self.text(&self.head.target);
        let rest = target
            .strip_prefix("http://")
            .or_else(|| target.strip_prefix("https://"))?;
        Some(match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        })
    }

    pub fn has_header(&self, name: &[u8]) -> bool {
        self.headers().any(|(n, _)| n.eq_ignore_ascii_case(name))
    }
}

impl RequestView for View<'_> {
    fn authority(&self) -> &str {
        match self.absolute() {
            Some((authority, _)) => authority,
            None => self.header("host").unwrap_or(""),
        }
    }

    fn method(&self) -> &str {
        self.text(&self.head.method)
    }

    fn path_and_query(&self) -> &str {
        match self.absolute() {
            Some((_, rest)) if rest.starts_with('/') => rest,
            Some(_) => "/",
            None => self.text(&self.head.target),
        }
    }

    fn scheme(&self) -> &str {
        "http"
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    fn find_in_header<'b, T>(
        &'b self,
        name: &str,
        each: &mut dyn FnMut(&'b str) -> Option<T>,
    ) -> Option<T> {
        self.headers()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
            .find_map(each)
    }
}

// === responses ===

/// A parsed response head: offsets into the upstream read buffer.
#[derive(Debug, Default)]
pub struct ResponseHead {
    pub status: u16,
    pub reason: Range<usize>,
    pub minor: u8,
    pub headers: Vec<(Range<usize>, Range<usize>)>,
    pub len: usize,
    pub framing: Framing,
    /// The upstream connection can carry another request after this response.
    pub reusable: bool,
}

/// Parses a response to a request (`head_request`: the request was HEAD). 1xx heads other
/// than 101 are skipped: `Ok(Some(n))` with `status` 100..199 tells the caller to drop `n` bytes
/// and parse again.
pub fn parse_response(
    buf: &[u8],
    head_request: bool,
    head: &mut ResponseHead,
) -> Result<Option<usize>, &'static str> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut storage);
    let len = match res.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err("malformed response head from upstream"),
    };
    let status = res.code.unwrap_or(0);
    head.status = status;
    head.minor = res.version.unwrap_or(1);
    head.reason = offset(buf, res.reason.unwrap_or("").as_bytes());
    head.len = len;
    head.headers.clear();
    head.headers.extend(
        res.headers
            .iter()
            .map(|h| (offset(buf, h.name.as_bytes()), offset(buf, h.value))),
    );
    let facts = HeadFacts::of(res.headers.iter().map(|h| (h.name.as_bytes(), h.value)))
        .map_err(|r| r.reason)?;
    head.framing = if head_request || status == 204 || status == 304 || (100..200).contains(&status)
    {
        Framing::Empty
    } else {
        match (facts.chunked, facts.length) {
            (Some(_), _) if facts.chunked_last => Framing::Chunked,
            (Some(_), _) => Framing::UntilClose,
            (None, Some(n)) => Framing::Length(n),
            (None, None) => Framing::UntilClose,
        }
    };
    head.reusable = head.framing != Framing::UntilClose
        && if head.minor == 0 {
            facts.keep_alive
        } else {
            !facts.close
        };
    Ok(Some(len))
}
