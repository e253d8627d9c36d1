//! A forwarded request's body: read ahead when it is small enough (replayable for retries and
//! mirrors, and validated before anything is forwarded), streamed and watched otherwise.

use super::body::{self, Body};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, SizeHint};
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Plain request bodies up to this size are read before forwarding (replayable, validated).
const MAX_REPLAY_BODY: usize = 64 * 1024;
/// Larger plain bodies on a route that mirrors are copied as they stream, up to this, for the
/// mirrors (which send once the request has ended); past it they are not mirrored.
const MAX_MIRROR_BODY: usize = 1024 * 1024;
/// A client must send the first `MAX_REPLAY_BODY` bytes of its body (or all of it) within this.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The request body. A plain HTTP body is read ahead (up to `MAX_REPLAY_BODY`) so a small
/// request can be sent again and a malformed one (bad chunking) is refused with 400 before any of
/// it is forwarded; the rest of a larger one streams, watched, so a client failing later is
/// still answered 400 rather than blamed on the upstream. gRPC bodies are never read ahead: a
/// streaming call may wait for the answer before it ends its request.
pub(crate) enum Payload {
    Buffered(Bytes),
    Stream {
        body: Option<Body>,
        /// Set when the client's side of the streamed body failed.
        client_failed: Option<Arc<AtomicBool>>,
    },
    /// A gRPC request, or a large one on a route that mirrors: streamed (a streaming call may
    /// wait for answers before it ends its request) while a copy is kept, so that once it has
    /// ended it can be sent again.
    Recorded {
        body: Option<Body>,
        copy: Arc<std::sync::Mutex<body::Recording>>,
        /// As for `Stream` (a plain body's client side is watched).
        client_failed: Option<Arc<AtomicBool>>,
    },
}

/// The downstream request body could not be read: the client's fault.
pub enum BadBody {
    /// Bad chunking, a reset.
    Invalid(String),
    /// Not sent within `BODY_READ_TIMEOUT`.
    Timeout,
}

impl Payload {
    /// `want_replay`: the route retries or mirrors; `mirrored`: it mirrors.
    pub(crate) async fn new(
        body: Body,
        grpc: bool,
        want_replay: bool,
        mirrored: bool,
    ) -> Result<Self, BadBody> {
        if grpc {
            if !want_replay {
                return Ok(Payload::Stream {
                    body: Some(body),
                    client_failed: None,
                });
            }
            let (body, copy) = body::recorded(body, MAX_REPLAY_BODY);
            return Ok(Payload::Recorded {
                body: Some(body),
                copy,
                client_failed: None,
            });
        }
        if hyper::body::Body::is_end_stream(&body) {
            return Ok(Payload::Buffered(Bytes::new()));
        }
        // A client that announced a body must send it: within a bound, so a slow one cannot
        // hold the request (and its upstream slot) open.
        match tokio::time::timeout(BODY_READ_TIMEOUT, Self::read_ahead(body, mirrored)).await {
            Ok(read) => read,
            Err(_) => Err(BadBody::Timeout),
        }
    }

    /// Reads up to `MAX_REPLAY_BODY` of a plain body: all of it (buffered), or the start of a
    /// larger one followed by the rest, streamed and watched (and, for mirrors, copied).
    async fn read_ahead(mut body: Body, mirrored: bool) -> Result<Self, BadBody> {
        let mut frames: Vec<Frame<Bytes>> = Vec::new();
        let mut size = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| BadBody::Invalid(e.to_string()))?;
            size += frame.data_ref().map(|d| d.len()).unwrap_or(0);
            let trailers = frame.is_trailers();
            frames.push(frame);
            if size > MAX_REPLAY_BODY || trailers {
                // Too large (or carrying trailers) to hold: send what was read, then the rest.
                let read = ReadAhead {
                    frames: frames.into(),
                    rest: body,
                };
                let (body, failed) = body::watched(read.boxed_unsync());
                if mirrored {
                    let (body, copy) = body::recorded(body, MAX_MIRROR_BODY);
                    return Ok(Payload::Recorded {
                        body: Some(body),
                        copy,
                        client_failed: Some(failed),
                    });
                }
                return Ok(Payload::Stream {
                    body: Some(body),
                    client_failed: Some(failed),
                });
            }
        }
        let mut bytes = bytes::BytesMut::with_capacity(size);
        for f in frames {
            if let Ok(data) = f.into_data() {
                bytes.extend_from_slice(&data);
            }
        }
        Ok(Payload::Buffered(bytes.freeze()))
    }

    pub(crate) fn replayable(&self) -> bool {
        match self {
            Payload::Buffered(_) => true,
            Payload::Stream { .. } => false,
            Payload::Recorded { copy, .. } => body::Recording::complete(copy).is_some(),
        }
    }

    /// Whether the client's side of a streamed body failed while it was being sent.
    pub(crate) fn client_failed(&self) -> bool {
        match self {
            Payload::Stream {
                client_failed: Some(f),
                ..
            }
            | Payload::Recorded {
                client_failed: Some(f),
                ..
            } => f.load(Ordering::Relaxed),
            _ => false,
        }
    }

    pub(crate) fn take(&mut self) -> Body {
        match self {
            // An empty body needs no allocation (`empty()` boxes a zero-sized body).
            Payload::Buffered(b) if b.is_empty() => body::empty(),
            Payload::Buffered(b) => body::full(b.clone()),
            Payload::Stream { body, .. } => body.take().unwrap_or_else(body::empty),
            Payload::Recorded { body, copy, .. } => body.take().unwrap_or_else(|| {
                body::Recording::complete(copy).map_or_else(body::empty, body::full)
            }),
        }
    }
}

/// The frames read ahead, then the rest of the body. Its end is known as the rest's is (hyper
/// stops polling a body with a Content-Length once it has sent that many bytes, so an end that
/// only a final poll would show may never be seen).
struct ReadAhead {
    frames: VecDeque<Frame<Bytes>>,
    rest: Body,
}

impl hyper::body::Body for ReadAhead {
    type Data = Bytes;
    type Error = body::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, body::BoxError>>> {
        match self.frames.pop_front() {
            Some(frame) => std::task::Poll::Ready(Some(Ok(frame))),
            None => Pin::new(&mut self.rest).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let read: u64 = self
            .frames
            .iter()
            .filter_map(|f| f.data_ref().map(|d| d.len() as u64))
            .sum();
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + read);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + read);
        }
        hint
    }
}
