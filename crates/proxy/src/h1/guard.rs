//! The fast path's framing rules kept on a connection it handed to hyper. hyper reads a request
//! with both Content-Length and Transfer-Encoding as chunked and drops the Content-Length, so its
//! service never sees the conflict; the fast path refuses such a request with 400. `Guarded`
//! sits between the connection and hyper and follows the requests' framing as the bytes go by
//! (heads parsed by [`head::parse_request`], bodies counted or chunk-scanned as they pass): a
//! head is passed to hyper only once it is whole and valid. A head the fast path would refuse
//! is never passed on: the read side stops there, `refused` fires (the server shuts the
//! connection down gracefully, so responses to earlier requests still go out), and the refusal
//! is written just before the connection is shut down.
//!
//! After a request to upgrade the connection, what follows is a tunnel's bytes, not HTTP: they
//! pass unread, as they do after a body whose chunking does not scan (hyper answers that one).

use super::chunked::ChunkedScanner;
use super::encode::LocalReply;
use super::head::{self, Framing, RequestHead};
use crate::listeners::MAX_HEADER_BYTES;
use bytes::{Buf, BytesMut};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

enum Framed {
    /// Reading a request head: held back until whole.
    Head,
    /// This many body bytes still to pass.
    Length(u64),
    Chunked(ChunkedScanner),
    /// Bytes pass unread (a tunnel after an upgrade, or a body that did not scan).
    Through,
    /// A head was refused: nothing more is passed; this answer is written at shutdown.
    Refused(Vec<u8>),
}

pub struct Guarded<S> {
    inner: S,
    state: Framed,
    /// Read, not yet passed to hyper (a partial head, or bytes not yet looked at).
    unread: BytesMut,
    /// Looked at and allowed: hyper reads these next.
    ready: BytesMut,
    head: RequestHead,
    refused: Arc<Notify>,
    /// Of the refusal, the bytes already written.
    written: usize,
}

impl<S> Guarded<S> {
    /// The guarded stream and what fires when it refuses a request.
    pub fn new(inner: S) -> (Self, Arc<Notify>) {
        let refused = Arc::new(Notify::new());
        let guarded = Self {
            inner,
            state: Framed::Head,
            unread: BytesMut::new(),
            ready: BytesMut::new(),
            head: RequestHead::default(),
            refused: refused.clone(),
            written: 0,
        };
        (guarded, refused)
    }

    /// Move what can be decided of `unread` to `ready`. Returns false when more bytes are needed
    /// (or nothing more will pass).
    fn advance(&mut self) -> bool {
        if self.unread.is_empty() {
            return false;
        }
        match &mut self.state {
            Framed::Head => match head::parse_request(&self.unread, &mut self.head) {
                Ok(true) => {
                    let connect = self.unread.get(self.head.method.clone()) == Some(b"CONNECT");
                    pass(&mut self.unread, &mut self.ready, self.head.len);
                    self.state = if self.head.upgrade || connect {
                        Framed::Through
                    } else {
                        match self.head.framing {
                            Framing::Length(n) if n > 0 => Framed::Length(n),
                            Framing::Chunked => Framed::Chunked(ChunkedScanner::default()),
                            _ => Framed::Head,
                        }
                    };
                    true
                }
                Ok(false) if self.unread.len() > MAX_HEADER_BYTES => {
                    self.refuse(431, "request header too large");
                    false
                }
                Ok(false) => false,
                Err(refusal) => {
                    self.refuse(refusal.status, refusal.reason);
                    false
                }
            },
            Framed::Length(left) => {
                let n = usize::try_from(*left)
                    .unwrap_or(usize::MAX)
                    .min(self.unread.len());
                pass(&mut self.unread, &mut self.ready, n);
                *left -= n as u64;
                if *left == 0 {
                    self.state = Framed::Head;
                }
                true
            }
            Framed::Chunked(scanner) => {
                match scanner.feed(&self.unread) {
                    Ok(Some(end)) => {
                        pass(&mut self.unread, &mut self.ready, end);
                        self.state = Framed::Head;
                    }
                    Ok(None) => pass_all(&mut self.unread, &mut self.ready),
                    Err(_) => {
                        pass_all(&mut self.unread, &mut self.ready);
                        self.state = Framed::Through;
                    }
                }
                true
            }
            Framed::Through => {
                pass_all(&mut self.unread, &mut self.ready);
                true
            }
            Framed::Refused(_) => false,
        }
    }

    fn refuse(&mut self, status: u16, reason: &'static str) {
        let mut answer = Vec::new();
        LocalReply::new(status, reason, "DPE").write(&mut answer, true);
        self.state = Framed::Refused(answer);
        self.unread.clear();
        self.refused.notify_one();
    }
}

/// Moves the first `n` bytes of `from` to the end of `to`: without a copy when `to` is empty
/// (it always is here: hyper has read what was ready before more is looked at).
fn pass(from: &mut BytesMut, to: &mut BytesMut, n: usize) {
    to.unsplit(from.split_to(n));
}

fn pass_all(from: &mut BytesMut, to: &mut BytesMut) {
    to.unsplit(from.split());
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready[..n]);
                this.ready.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.advance() {
                continue;
            }
            if matches!(this.state, Framed::Refused(_)) {
                // Nothing more for hyper: the server is told to shut the connection down.
                return Poll::Pending;
            }
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if read.filled().is_empty() => {
                    // The client closed: whatever partial head is left goes to hyper, which
                    // sees it end early.
                    this.ready = this.unread.split();
                    if this.ready.is_empty() {
                        return Poll::Ready(Ok(()));
                    }
                }
                Poll::Ready(Ok(())) => this.unread.extend_from_slice(read.filled()),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    /// The refusal, if any, goes out last: after every answer hyper wrote.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Framed::Refused(answer) = &this.state {
            while this.written < answer.len() {
                let rest = &answer[this.written..];
                match Pin::new(&mut this.inner).poll_write(cx, rest) {
                    Poll::Ready(Ok(0)) => break,
                    Poll::Ready(Ok(n)) => this.written += n,
                    Poll::Ready(Err(_)) => break,
                    Poll::Pending => return Poll::Pending,
                }
            }
            if Pin::new(&mut this.inner).poll_flush(cx).is_pending() {
                return Poll::Pending;
            }
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;

    /// What hyper would read of `input`, given in pieces of `step` bytes; and whether it was
    /// refused.
    async fn through(input: &[u8], step: usize) -> (Vec<u8>, bool) {
        let (mut guarded, _refused) = Guarded::new(Pieces(input.chunks(step).collect(), 0));
        let mut out = Vec::new();
        let mut buf = [0u8; 100];
        loop {
            let read = tokio::time::timeout(Duration::from_millis(50), guarded.read(&mut buf));
            match read.await {
                Ok(Ok(0)) => return (out, false),
                Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
                Ok(Err(e)) => panic!("{e}"),
                // The read side stops for good at a refusal.
                Err(_) => return (out, matches!(guarded.state, Framed::Refused(_))),
            }
        }
    }

    /// A reader handing out its pieces one per read.
    struct Pieces<'a>(Vec<&'a [u8]>, usize);

    impl AsyncRead for Pieces<'_> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let i = self.1;
            if let Some(piece) = self.0.get(i) {
                buf.put_slice(piece);
                self.1 += 1;
            }
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn valid_requests_pass_whole_in_any_pieces() {
        let inside = "GET /inside HTTP/1.1\r\nX: y\r\n\r\n";
        let input = format!(
            "POST /a HTTP/1.1\r\nHost: r\r\nContent-Length: {}\r\n\r\n{inside}\
POST /b HTTP/1.1\r\nHost: r\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n\
GET /c HTTP/1.1\r\nHost: r\r\n\r\n",
            inside.len()
        );
        let input = input.as_bytes();
        for step in [1, 7, 64, 4096] {
            assert_eq!(
                through(input, step).await,
                (input.to_vec(), false),
                "step {step}"
            );
        }
    }

    #[tokio::test]
    async fn a_conflicting_head_stops_the_stream_before_it() {
        let good = b"GET /a HTTP/1.1\r\nHost: r\r\n\r\n".to_vec();
        // A body that looks like a head with a conflict is a body, not a head.
        let fake = "GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let body_like = format!(
            "POST /b HTTP/1.1\r\nHost: r\r\nContent-Length: {}\r\n\r\n{fake}",
            fake.len()
        )
        .into_bytes();
        let bad =
            b"POST /c HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                .to_vec();
        let chunked = b"POST /d HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\n";
        let allowed = [good, body_like, chunked.to_vec()].concat();
        let input = [allowed.clone(), bad].concat();
        for step in [1, 13, 4096] {
            let (out, refused) = through(&input, step).await;
            assert!(refused, "step {step}");
            assert_eq!(out, allowed, "step {step}");
        }
    }

    #[tokio::test]
    async fn after_an_upgrade_bytes_pass_unread() {
        let input = b"GET /ws HTTP/1.1\r\nHost: r\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nnot http\r\n\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(through(input, 5).await, (input.to_vec(), false));
    }
}
