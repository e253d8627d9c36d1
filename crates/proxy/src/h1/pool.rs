//! Idle upstream HTTP/1 connections, per worker thread and per endpoint address: no lock, no
//! URI or authority hashing; a connection is taken for one request and given back when its
//! response has been read to the end and the upstream allows reuse.
//!
//! An idle connection the upstream closed is only discovered when used; the caller then tries
//! another (a request that received no byte of response was not processed).
//!
//! A connection carries its place in the upstream connection gauge: it is counted closed when
//! it is dropped, wherever that happens (after a failed exchange, when the pool is full or
//! expires it, when the thread ends).

use crate::metrics::upstream::{ConnectionMetrics, OpenConnection};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Idle connections kept per endpoint and worker thread.
const MAX_IDLE: usize = 64;
/// Connections idle longer are closed rather than reused (upstreams often close after 60 s).
const IDLE_FOR: Duration = Duration::from_secs(50);

/// An upstream HTTP/1 connection, counted open while it lives.
pub struct Connection {
    pub stream: TcpStream,
    _open: OpenConnection,
}

struct Idle {
    conn: Connection,
    since: Instant,
}

#[derive(Default)]
struct Pool {
    idle: foldhash::HashMap<SocketAddr, Vec<Idle>>,
    returns: u32,
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::default();
}

pub fn checkout(addr: SocketAddr) -> Option<Connection> {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        let list = p.idle.get_mut(&addr)?;
        while let Some(idle) = list.pop() {
            if idle.since.elapsed() < IDLE_FOR {
                return Some(idle.conn);
            }
        }
        None
    })
}

pub fn checkin(addr: SocketAddr, conn: Connection) {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        p.returns = p.returns.wrapping_add(1);
        if p.returns % 4096 == 0 {
            // Now and then, close what has idled too long (endpoints that went away included).
            p.idle.retain(|_, list| {
                list.retain(|i| i.since.elapsed() < IDLE_FOR);
                !list.is_empty()
            });
        }
        let list = p.idle.entry(addr).or_default();
        if list.len() < MAX_IDLE {
            list.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    });
}

/// A new connection to `addr`, counted in `metrics` (a failure too).
pub async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    metrics: &ConnectionMetrics,
) -> Result<Connection, String> {
    match dial(addr, timeout).await {
        Ok(stream) => Ok(Connection {
            stream,
            _open: metrics.opened(),
        }),
        Err(e) => {
            metrics.failed();
            Err(e)
        }
    }
}

/// A TCP connection to `addr` (no delay, bounded by the cluster's connect timeout), not yet
/// counted.
pub async fn dial(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, String> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(e)) => Err(format!("{addr}: {e}")),
        Err(_) => Err(format!("{addr}: connect timeout")),
    }
}
