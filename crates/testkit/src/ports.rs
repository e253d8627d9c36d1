//! Loopback ports for a test's own servers, chosen so that nothing else takes them between the
//! choice and the bind.
//!
//! Binding `127.0.0.1:0` and closing the listener hands back a port from the kernel's ephemeral
//! range, which every outgoing connection on the machine also draws from: under load, a client
//! socket of another test can take it before the process meant to listen there starts, which then
//! fails to bind. These ports come from below the ephemeral range (20000–32767), in a sequence
//! that starts at an offset derived from the process id, each checked free by binding it.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};

const FIRST: u32 = 20_000;
const COUNT: u32 = 12_768;

static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);

/// A free TCP port on 127.0.0.1 outside the ephemeral range (panics after trying them all).
pub fn free_port() -> u16 {
    match try_free_port() {
        Ok(port) => port,
        Err(e) => panic!("{e}"),
    }
}

/// [`free_port`], with an error instead of a panic when every port of the range is taken.
pub fn try_free_port() -> std::io::Result<u16> {
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(2_654_435_761) % COUNT,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..COUNT {
        let port = FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % COUNT;
        let port = u16::try_from(port).unwrap_or(u16::MAX);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrNotAvailable,
        format!("no free loopback port in {FIRST}..{}", FIRST + COUNT),
    ))
}

/// [`free_port`] as a socket address on 127.0.0.1.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        let mut sorted = ports.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ports.len(), "{ports:?}");
        for p in ports {
            assert!((20_000..32_768).contains(&p), "{p}");
            assert!(TcpListener::bind(("127.0.0.1", p)).is_ok(), "{p}");
        }
    }
}
