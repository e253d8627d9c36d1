//! The calling service of a request, for the `source_service` and `source_version` labels.
//!
//! Requests on an outbound (or gateway) listener come from this proxy's own service. The proxy
//! says so to the next hop in `x-graymesh-source: <service>;<version>`; a sidecar's inbound
//! listener reads it for its labels and removes it before the app sees it (as Istio strips its
//! peer-metadata headers). A value a client sent to an outbound listener is never forwarded: it
//! is replaced by the proxy's own, or removed when the proxy has no service identity, so a
//! caller cannot claim another service through its own sidecar.
//!
//! Received values are interned per thread: once a caller has been seen on a thread, reading its
//! header takes no allocation and no lock.

use http::{HeaderMap, HeaderName, HeaderValue};
use std::cell::RefCell;
use std::sync::Arc;

pub const SOURCE_HEADER: HeaderName = HeaderName::from_static("x-graymesh-source");

/// Longest service or version accepted from the header (a DNS name is at most 253).
const MAX_PART: usize = 253;
/// Distinct values a thread keeps interned; past it the table starts over.
const MAX_INTERNED: usize = 256;

/// The calling side of a request.
pub type Source = super::Workload;

/// What an outbound listener says of its requests' source: the labels and the header it sends.
#[derive(Debug, Clone)]
pub struct OwnSource {
    pub source: Arc<Source>,
    /// `None` when the identity cannot be written in the header (see [`Source::parse`]).
    pub header: Option<HeaderValue>,
}

impl OwnSource {
    /// The proxy's identity (`--service`, `--service-version`); `None` without a service.
    pub fn new(service: &str, version: &str) -> Option<Self> {
        if service.is_empty() {
            return None;
        }
        let value = format!("{service};{version}");
        let header =
            Source::parse(value.as_bytes()).and_then(|_| HeaderValue::from_str(&value).ok());
        Some(Self {
            source: Source::new(service, version),
            header,
        })
    }
}

impl Source {
    /// `<service>;<version>`: a non-empty service and a possibly empty version, each of ASCII
    /// letters, digits, `.`, `-` and `_`, at most 253 bytes. Anything else is `None` (the request
    /// is then counted with empty source labels).
    pub fn parse(value: &[u8]) -> Option<Source> {
        let (service, version) = split(value)?;
        Some(Source {
            service: service.to_string(),
            version: version.to_string(),
        })
    }
}

fn split(value: &[u8]) -> Option<(&str, &str)> {
    let at = value.iter().position(|b| *b == b';')?;
    let (service, version) = (&value[..at], &value[at + 1..]);
    let valid = |part: &[u8]| {
        part.len() <= MAX_PART
            && part
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    };
    if service.is_empty() || !valid(service) || !valid(version) {
        return None;
    }
    // Both parts are ASCII, checked above.
    Some((
        std::str::from_utf8(service).ok()?,
        std::str::from_utf8(version).ok()?,
    ))
}

thread_local! {
    static INTERNED: RefCell<foldhash::HashMap<Box<[u8]>, Arc<Source>>> = RefCell::default();
}

/// The source a received header value names, shared with every request that sent the same.
pub fn received(value: &[u8]) -> Option<Arc<Source>> {
    INTERNED.with(|table| {
        let mut table = table.borrow_mut();
        if let Some(source) = table.get(value) {
            return Some(source.clone());
        }
        let source = Arc::new(Source::parse(value)?);
        if table.len() >= MAX_INTERNED {
            table.clear();
        }
        table.insert(value.into(), source.clone());
        Some(source)
    })
}

/// What crosses to the next hop: never the received header; this proxy's own, when it has one.
pub fn replace(headers: &mut HeaderMap, own: Option<&HeaderValue>) {
    match own {
        Some(value) => {
            headers.insert(SOURCE_HEADER, value.clone());
        }
        None => {
            headers.remove(SOURCE_HEADER);
        }
    }
}
