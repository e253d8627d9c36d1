//! A minimal HTTP/1.1 keep-alive client for the load: one connection, one request at a time,
//! `Content-Length` framing only (what the fake app sends through the proxy).
//!
//! Written out instead of a pooled client so that nothing is retried or hidden: every request
//! that does not come back as a 2xx on the connection it was written to is a failure, counted by
//! the caller. It never reconnects on its own; the caller drops it after a failure.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Which version answered (the fake app's `x-version` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
    Other,
}

/// A 2xx answer, or why the request failed.
pub type Answer = Result<Version, String>;

/// Largest response head or body accepted; the fake app's echo is well under it.
const MAX_RESPONSE: usize = 64 * 1024;

pub struct Connection {
    stream: TcpStream,
    request: Vec<u8>,
    buf: Vec<u8>,
    /// The server said `Connection: close`: this connection carries no further request.
    closed: bool,
}

impl Connection {
    pub async fn open(addr: SocketAddr, timeout: Duration) -> Result<Connection, String> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| format!("connect {addr}: timed out after {timeout:?}"))?
            .map_err(|e| format!("connect {addr}: {e}"))?;
        stream
            .set_nodelay(true)
            .map_err(|e| format!("nodelay: {e}"))?;
        let request = format!("GET /reviews/1 HTTP/1.1\r\nHost: {addr}\r\n\r\n").into_bytes();
        Ok(Connection {
            stream,
            request,
            buf: Vec::with_capacity(4096),
            closed: false,
        })
    }

    pub fn is_reusable(&self) -> bool {
        !self.closed
    }

    /// One request, bounded by `timeout`.
    pub async fn get(&mut self, timeout: Duration) -> Answer {
        match tokio::time::timeout(timeout, self.exchange()).await {
            Ok(answer) => answer,
            Err(_) => Err(format!("no answer within {timeout:?}")),
        }
    }

    async fn exchange(&mut self) -> Answer {
        self.stream
            .write_all(&self.request)
            .await
            .map_err(|e| format!("write: {e}"))?;
        self.buf.clear();
        let head_len = loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                break end + 4;
            }
            self.read_more().await?;
        };
        let head = Head::parse(&self.buf[..head_len])?;
        self.closed = head.close;
        let total = head_len + head.content_length;
        while self.buf.len() < total {
            self.read_more().await?;
        }
        if self.buf.len() > total {
            return Err("bytes after the response (unexpected framing)".to_string());
        }
        if !(200..300).contains(&head.status) {
            return Err(format!("status {}", head.status));
        }
        Ok(head.version)
    }

    async fn read_more(&mut self) -> Result<(), String> {
        if self.buf.len() >= MAX_RESPONSE {
            return Err("response too large".to_string());
        }
        let mut chunk = [0u8; 4096];
        let n = self
            .stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err(if self.buf.is_empty() {
                "connection closed before the response".to_string()
            } else {
                "connection closed mid-response".to_string()
            });
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

struct Head {
    status: u16,
    content_length: usize,
    version: Version,
    close: bool,
}

impl Head {
    fn parse(head: &[u8]) -> Result<Head, String> {
        let text = std::str::from_utf8(head).map_err(|_| "response head not UTF-8".to_string())?;
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| format!("bad status line {status_line:?}"))?;
        let mut parsed = Head {
            status,
            content_length: 0,
            version: Version::Other,
            close: false,
        };
        for line in lines.filter(|l| !l.is_empty()) {
            let Some((name, value)) = line.split_once(':') else {
                return Err(format!("bad header line {line:?}"));
            };
            let value = value.trim();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => {
                    parsed.content_length = value
                        .parse()
                        .map_err(|_| format!("bad content-length {value:?}"))?;
                }
                "transfer-encoding" => return Err(format!("unsupported framing: {value}")),
                "x-version" => {
                    parsed.version = match value {
                        "v1" => Version::V1,
                        "v2" => Version::V2,
                        _ => Version::Other,
                    }
                }
                "connection" => parsed.close = value.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
        if parsed.content_length > MAX_RESPONSE {
            return Err("response too large".to_string());
        }
        Ok(parsed)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
