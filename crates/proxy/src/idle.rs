//! A downstream connection's idle timeout (HTTP/1 keep-alive between requests, HTTP/2 with no
//! stream open), kept cheap enough for the hot path: one timer for the connection's life.

use std::time::Duration;
use tokio::time::Instant;

/// A connection's idle timeout, on one timer for the connection's life: setting a timer for
/// every wait between requests would cost a timer-wheel insert and removal per request, so the
/// timer may fire early (set for an earlier idle spell) and is then pushed to the real deadline.
pub struct IdleTimer {
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
    limit: Duration,
}

impl IdleTimer {
    pub fn new(limit: Duration) -> Self {
        Self {
            timer: Box::pin(tokio::time::sleep(limit)),
            limit,
        }
    }

    /// Called when the timer fired: whether the connection, idle since `idle_since`, has been
    /// idle for the whole limit; if not, the timer is set again for when it will have been.
    pub fn expired(&mut self, idle_since: Instant) -> bool {
        let due = idle_since + self.limit;
        if Instant::now() >= due {
            return true;
        }
        self.timer.as_mut().reset(due);
        false
    }

    /// Fires (repeatedly, once due) when the timer's deadline passes.
    pub async fn fired(&mut self) {
        self.timer.as_mut().await
    }
}
