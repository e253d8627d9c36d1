//! The body type that flows through the proxy, and local (proxy-generated) replies.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Header names the data path reads or writes on every request, parsed once.
pub mod names {
    use http::HeaderName;
    pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
    pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
    pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
    /// Set on replies the proxy made itself, with the reason flag (`NR`, `UH`, …).
    pub const LOCAL_REPLY: HeaderName = HeaderName::from_static("x-graymesh-local-reply");
}
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

pub fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn incoming(body: hyper::body::Incoming) -> Body {
    body.map_err(|e| Box::new(e) as BoxError).boxed_unsync()
}

/// gRPC status codes used in local replies.
pub const GRPC_UNAVAILABLE: u32 = 14;
pub const GRPC_DEADLINE_EXCEEDED: u32 = 4;
pub const GRPC_UNIMPLEMENTED: u32 = 12;

/// A reply made by the proxy itself. gRPC callers get HTTP 200 with `grpc-status` (a
/// trailers-only response) so their libraries report a proper status instead of a protocol error.
pub fn local_reply(
    status: StatusCode,
    message: &str,
    grpc: bool,
    flag: &'static str,
) -> Response<Body> {
    let mut builder = Response::builder().header(names::LOCAL_REPLY, flag);
    if grpc {
        builder = builder
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/grpc")
            .header(names::GRPC_STATUS, grpc_status_for(status))
            .header(
                "grpc-message",
                HeaderValue::from_str(message)
                    .unwrap_or(HeaderValue::from_static("graymesh proxy error")),
            );
        return builder
            .body(empty())
            .unwrap_or_else(|_| Response::new(empty()));
    }
    builder
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(full(format!("{message}\n")))
        .unwrap_or_else(|_| Response::new(empty()))
}

/// The gRPC status Envoy maps an HTTP status to.
pub fn grpc_status_for(status: StatusCode) -> u32 {
    match status.as_u16() {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => GRPC_UNIMPLEMENTED,
        429 | 502 | 503 | 504 => GRPC_UNAVAILABLE,
        _ => 2,
    }
}

pub fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// A request's `grpc-timeout` (1 to 8 digits and a unit: H, M, S, m, u, n).
pub fn grpc_timeout(headers: &http::HeaderMap) -> Option<std::time::Duration> {
    use std::time::Duration;
    let raw = headers.get(names::GRPC_TIMEOUT)?.as_bytes();
    let (digits, unit) = raw.split_at(raw.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(match unit {
        b"H" => Duration::from_secs(n * 3600),
        b"M" => Duration::from_secs(n * 60),
        b"S" => Duration::from_secs(n),
        b"m" => Duration::from_millis(n),
        b"u" => Duration::from_micros(n),
        b"n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The copy of a streamed request body kept for a retry: complete once the body has ended, if
/// it stayed within the size limit and carried no trailers.
#[derive(Debug, Default)]
pub struct Recording {
    bytes: bytes::BytesMut,
    limit: usize,
    ended: bool,
    too_big: bool,
    /// Woken when the copy is settled: complete, or known never to be.
    settled: std::sync::Arc<tokio::sync::Notify>,
}

impl Recording {
    /// The whole body, once it has ended and if it could be kept.
    pub fn complete(copy: &std::sync::Mutex<Recording>) -> Option<Bytes> {
        let r = copy.lock().unwrap_or_else(|e| e.into_inner());
        (r.ended && !r.too_big).then(|| r.bytes.clone().freeze())
    }

    /// Waits until the copy is settled: the whole body, or `None` when it could not be kept.
    /// (A body that never ends never settles: callers bound the wait.)
    pub async fn settled(copy: &std::sync::Mutex<Recording>) -> Option<Bytes> {
        let notify = copy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .settled
            .clone();
        loop {
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let r = copy.lock().unwrap_or_else(|e| e.into_inner());
                if r.too_big {
                    return None;
                }
                if r.ended {
                    return Some(r.bytes.clone().freeze());
                }
            }
            notified.await;
        }
    }
}

/// `body`, streamed as it is, while a copy of up to `limit` bytes is kept.
pub fn recorded(body: Body, limit: usize) -> (Body, std::sync::Arc<std::sync::Mutex<Recording>>) {
    let copy = std::sync::Arc::new(std::sync::Mutex::new(Recording {
        limit,
        ended: hyper::body::Body::is_end_stream(&body),
        ..Default::default()
    }));
    let body = RecordingBody {
        inner: body,
        copy: copy.clone(),
    };
    (body.boxed_unsync(), copy)
}

struct RecordingBody {
    inner: Body,
    copy: std::sync::Arc<std::sync::Mutex<Recording>>,
}

impl hyper::body::Body for RecordingBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        if let std::task::Poll::Ready(frame) = &polled {
            let mut r = this.copy.lock().unwrap_or_else(|e| e.into_inner());
            // The sender may stop polling once the body says it has ended.
            r.ended |= this.inner.is_end_stream();
            match frame {
                Some(Ok(f)) => match f.data_ref() {
                    Some(data) if r.bytes.len() + data.len() <= r.limit => {
                        r.bytes.extend_from_slice(data)
                    }
                    _ => r.too_big = true,
                },
                Some(Err(_)) => r.too_big = true,
                None => r.ended = true,
            }
            if r.ended || r.too_big {
                r.settled.notify_waiters();
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// `body`, ended at `deadline` if it has not ended by then (a route timeout or a gRPC deadline
/// covers the whole response, not only its head): a gRPC response then ends with trailers
/// `grpc-status: 4` (DEADLINE_EXCEEDED), any other fails (its stream or connection is cut).
pub fn with_deadline(body: Body, deadline: tokio::time::Instant, grpc: bool) -> Body {
    DeadlineBody {
        inner: body,
        timer: Box::pin(tokio::time::sleep_until(deadline)),
        grpc,
        expired: false,
    }
    .boxed_unsync()
}

struct DeadlineBody {
    inner: Body,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
    grpc: bool,
    expired: bool,
}

impl hyper::body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        use std::future::Future;
        use std::task::Poll;
        if self.expired {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if self.timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.expired = true;
        if self.grpc {
            let mut trailers = http::HeaderMap::new();
            trailers.insert(
                names::GRPC_STATUS,
                HeaderValue::from(GRPC_DEADLINE_EXCEEDED),
            );
            trailers.insert(
                "grpc-message",
                HeaderValue::from_static("deadline exceeded while the response streamed"),
            );
            return Poll::Ready(Some(Ok(hyper::body::Frame::trailers(trailers))));
        }
        Poll::Ready(Some(Err(
            "response not complete within the route timeout".into()
        )))
    }

    fn is_end_stream(&self) -> bool {
        self.expired || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// `body`, streamed as it is, with a flag that tells whether the client's side of it failed
/// (invalid chunking, a reset): an attempt that then fails failed because of the client.
pub fn watched(body: Body) -> (Body, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    let failed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let body = WatchedBody {
        inner: body,
        failed: failed.clone(),
    };
    (body.boxed_unsync(), failed)
}

struct WatchedBody {
    inner: Body,
    failed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl hyper::body::Body for WatchedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Err(_))) = &polled {
            self.failed
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::grpc_timeout;
    use std::time::Duration;

    /// A body that never yields: an upstream that stalls mid-response.
    fn stalled() -> super::Body {
        use http_body_util::BodyExt;
        let never =
            futures::stream::pending::<Result<hyper::body::Frame<bytes::Bytes>, super::BoxError>>();
        http_body_util::StreamBody::new(never).boxed_unsync()
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_grpc_response_ends_with_deadline_exceeded_trailers() {
        use http_body_util::BodyExt;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        let mut body = super::with_deadline(stalled(), deadline, true);
        let frame = body.frame().await.unwrap().unwrap();
        let trailers = frame.into_trailers().unwrap();
        assert_eq!(trailers["grpc-status"], "4");
        assert!(body.frame().await.is_none(), "then the body ends");
        assert!(tokio::time::Instant::now() >= deadline);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_plain_response_fails_at_the_deadline() {
        use http_body_util::BodyExt;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        let mut body = super::with_deadline(stalled(), deadline, false);
        assert!(body.frame().await.unwrap().is_err());
    }

    #[test]
    fn grpc_timeout_units_and_bad_values() {
        let parse = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert("grpc-timeout", v.parse().unwrap());
            grpc_timeout(&h)
        };
        assert_eq!(parse("300m"), Some(Duration::from_millis(300)));
        assert_eq!(parse("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse("5u"), Some(Duration::from_micros(5)));
        for bad in ["m", "123456789S", "10x", "1.5S", "-1S"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
