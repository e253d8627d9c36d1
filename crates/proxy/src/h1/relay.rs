//! Relaying an upstream HTTP/1.1 response to the client on the fast path: the head as edited,
//! then the body by its framing, within the route timeout; the upstream connection goes back to
//! the pool only when its response was read exactly to the end.

use super::chunked::ChunkedScanner;
use super::encode::{self, Edits};
use super::head::Framing;
use super::{pool, Buffers};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Where a response body stands.
enum BodyLeft {
    Length(u64),
    Chunked(ChunkedScanner),
    UntilClose,
}

impl BodyLeft {
    /// Of `bytes`, how many belong to the body, and whether the body ends with them.
    fn feed(&mut self, bytes: &[u8]) -> Result<(usize, bool), &'static str> {
        match self {
            BodyLeft::Length(left) => {
                let take = (*left).min(bytes.len() as u64);
                *left -= take;
                Ok((take as usize, *left == 0))
            }
            BodyLeft::Chunked(scanner) => Ok(match scanner.feed(bytes)? {
                Some(end) => (end, true),
                None => (bytes.len(), false),
            }),
            BodyLeft::UntilClose => Ok((bytes.len(), false)),
        }
    }
}

/// Relays the upstream's response (head parsed in `bufs`) to the client. Returns whether the
/// downstream connection stays open; the upstream connection goes back to the pool when its
/// response was read to the end and it may be reused.
pub(super) async fn relay(
    stream: &mut TcpStream,
    mut conn: pool::Connection,
    addr: SocketAddr,
    bufs: &mut Buffers,
    edits: &Edits<'_>,
    close: bool,
    deadline: Option<Instant>,
) -> bool {
    let head = &bufs.up_head;
    let close = close || head.framing == Framing::UntilClose;
    encode::response_head(&mut bufs.out, &bufs.up, head, edits, close);
    let mut left = match head.framing {
        Framing::Empty => BodyLeft::Length(0),
        Framing::Length(n) => BodyLeft::Length(n),
        Framing::Chunked => BodyLeft::Chunked(ChunkedScanner::default()),
        Framing::UntilClose => BodyLeft::UntilClose,
    };
    let mut reusable = head.reusable;
    let received = &bufs.up[head.len..];
    let Ok((take, mut done)) = left.feed(received) else {
        return false;
    };
    reusable &= take == received.len();
    bufs.out.extend_from_slice(&received[..take]);
    if stream.write_all(&bufs.out).await.is_err() {
        return false;
    }
    while !done {
        bufs.up.clear();
        bufs.up.reserve(16 * 1024);
        let read = match deadline {
            // Past the route timeout the response is cut: the client sees the connection close.
            Some(d) => match tokio::time::timeout_at(d, conn.stream.read_buf(&mut bufs.up)).await {
                Ok(read) => read,
                Err(_) => return false,
            },
            None => conn.stream.read_buf(&mut bufs.up).await,
        };
        let n = match read {
            Ok(0) if matches!(left, BodyLeft::UntilClose) => break,
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        let Ok((take, ended)) = left.feed(&bufs.up) else {
            return false;
        };
        reusable &= take == n;
        if stream.write_all(&bufs.up[..take]).await.is_err() {
            return false;
        }
        done = ended;
    }
    if reusable && done {
        pool::checkin(addr, conn);
    }
    !close
}
