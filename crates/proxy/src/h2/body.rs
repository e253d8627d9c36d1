//! Bodies between the `h2` crate's streams and the proxy's `Body`: a received stream read as a
//! body (flow-control capacity given back as its data is taken), and a body sent into a stream
//! (waiting for the peer's window, trailers last).

use crate::http::body::{Body, BoxError};
use bytes::Bytes;
use futures::future::poll_fn;
use h2::{RecvStream, SendStream};
use http_body_util::BodyExt;
use hyper::body::Body as _;
use hyper::body::{Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

/// A received HTTP/2 stream as a body. Capacity is released when its data is taken, so the peer
/// can send more only as fast as the proxy passes it on.
pub struct RecvBody {
    stream: RecvStream,
    data_done: bool,
}

/// `stream` as the proxy's body type.
pub fn recv(stream: RecvStream) -> Body {
    RecvBody {
        stream,
        data_done: false,
    }
    .boxed_unsync()
}

impl hyper::body::Body for RecvBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if !this.data_done {
            match this.stream.poll_data(cx) {
                Poll::Ready(Some(Ok(data))) => {
                    let _ = this.stream.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(Box::new(e)))),
                Poll::Ready(None) => this.data_done = true,
                Poll::Pending => return Poll::Pending,
            }
        }
        match this.stream.poll_trailers(cx) {
            Poll::Ready(Ok(Some(trailers))) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Poll::Ready(Ok(None)) => Poll::Ready(None),
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.stream.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// Why sending a body into a stream stopped early.
#[derive(Debug)]
pub enum SendError {
    /// The body being relayed failed: the stream is reset.
    Body(BoxError),
    /// The stream was reset or the connection went away.
    Stream(h2::Error),
}

/// Sends `body` into `tx` to its end (data, then trailers if any), within the peer's flow-control
/// window. On a body error the stream is reset, so the peer never takes a truncated body for a
/// whole one.
pub async fn send(mut tx: SendStream<Bytes>, mut body: Body) -> Result<(), SendError> {
    loop {
        // Wait for some window before pulling more of the body, so a slow peer holds the sender
        // back instead of having its data buffered here.
        tx.reserve_capacity(1);
        if tx.capacity() == 0 {
            loop {
                match poll_fn(|cx| tx.poll_capacity(cx)).await {
                    Some(Ok(0)) => continue,
                    Some(Ok(_)) => break,
                    Some(Err(e)) => return Err(SendError::Stream(e)),
                    None => return Err(SendError::Stream(h2::Error::from(h2::Reason::CANCEL))),
                }
            }
        }
        let frame = tokio::select! {
            biased;
            frame = body.frame() => frame,
            reason = poll_fn(|cx| tx.poll_reset(cx)) => {
                return Err(SendError::Stream(match reason {
                    Ok(r) => h2::Error::from(r),
                    Err(e) => e,
                }));
            }
        };
        match frame {
            None => return tx.send_data(Bytes::new(), true).map_err(SendError::Stream),
            Some(Err(e)) => {
                tx.send_reset(h2::Reason::INTERNAL_ERROR);
                return Err(SendError::Body(e));
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    let end = body.is_end_stream();
                    tx.send_data(data, end).map_err(SendError::Stream)?;
                    if end {
                        return Ok(());
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        return tx.send_trailers(trailers).map_err(SendError::Stream);
                    }
                }
            },
        }
    }
}
