//! Gathers the streams' events into per-stream facts the phases ask about: when each stream first
//! synced, which ones closed and why, and what arrived since the last mark (an edit).

use crate::chain::XdsType;
use crate::stream::Event;
use std::collections::BTreeMap;
use std::time::Instant;
use tokio::sync::mpsc;

#[derive(Debug, Clone, Copy)]
pub struct RouteChange {
    pub stream: usize,
    pub received: Instant,
    pub acked: Instant,
}

pub struct Collector {
    rx: mpsc::UnboundedReceiver<Event>,
    pub synced: Vec<Option<Instant>>,
    pub closed: Vec<Option<String>>,
    /// Responses since the last [`Collector::mark`]: (stream, type, arrival).
    pub responses: Vec<(usize, XdsType, Instant)>,
    /// First route change of each stream since the last mark.
    pub changes: BTreeMap<usize, RouteChange>,
    /// Route changes beyond the first per stream since the mark.
    pub extra_changes: usize,
}

impl Collector {
    pub fn new(rx: mpsc::UnboundedReceiver<Event>, streams: usize) -> Self {
        Self {
            rx,
            synced: vec![None; streams],
            closed: vec![None; streams],
            responses: Vec::new(),
            changes: BTreeMap::new(),
            extra_changes: 0,
        }
    }

    /// Forget what arrived so far; what comes next is attributed to the step that follows.
    pub fn mark(&mut self) {
        while let Ok(e) = self.rx.try_recv() {
            self.absorb(e);
        }
        self.responses.clear();
        self.changes.clear();
        self.extra_changes = 0;
    }

    /// Absorb events until `done` holds or `deadline` passes; returns whether `done` held.
    pub async fn until(&mut self, deadline: Instant, done: impl Fn(&Self) -> bool) -> bool {
        let deadline = tokio::time::Instant::from_std(deadline);
        loop {
            if done(self) {
                return true;
            }
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(e)) => self.absorb(e),
                Ok(None) | Err(_) => return done(self),
            }
        }
    }

    fn absorb(&mut self, event: Event) {
        match event {
            Event::Response { stream, kind, at } => self.responses.push((stream, kind, at)),
            Event::Synced { stream, at } => self.synced[stream] = Some(at),
            Event::RouteChanged {
                stream,
                received,
                acked,
            } => {
                let change = RouteChange {
                    stream,
                    received,
                    acked,
                };
                match self.changes.entry(stream) {
                    std::collections::btree_map::Entry::Vacant(v) => {
                        v.insert(change);
                    }
                    std::collections::btree_map::Entry::Occupied(_) => self.extra_changes += 1,
                }
            }
            Event::Closed { stream, reason } => self.closed[stream] = Some(reason),
        }
    }

    pub fn synced_count(&self) -> usize {
        self.synced.iter().flatten().count()
    }

    pub fn closed_count(&self) -> usize {
        self.closed.iter().flatten().count()
    }

    /// Every stream has either synced or closed: nothing more to wait for.
    pub fn sync_settled(&self) -> bool {
        self.synced
            .iter()
            .zip(&self.closed)
            .all(|(s, c)| s.is_some() || c.is_some())
    }

    /// The first few distinct reasons streams closed for, with counts.
    pub fn close_reasons(&self) -> BTreeMap<String, usize> {
        let mut reasons = BTreeMap::new();
        for r in self.closed.iter().flatten() {
            *reasons.entry(r.clone()).or_insert(0) += 1;
        }
        reasons
    }
}
