//! The sessions this worker owns (Pushlet, Bayeux): their protocol state, the connection
//! currently listening for each (a parked refresh/connect or an open stream), and each
//! session's expiry timer. Nothing here is shared with other workers: a request for a session
//! owned elsewhere is handed to its owner (`handoff.rs`).

use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use slab::Slab;

use super::{Timer, Worker};
use crate::server::timer::TimerKey;

/// One owned session.
#[derive(Debug)]
pub(super) struct SessionEntry {
    pub id: Box<str>,
    pub state: SessionState,
    /// The connection listening for this session right now, if any.
    pub listener: Option<usize>,
    pub timer: Option<TimerKey>,
    /// How long the session lives without a request (renewed by each one, and while a
    /// connection listens).
    pub lease: Duration,
}

/// The protocol state of a session.
#[derive(Debug)]
pub(super) enum SessionState {}

/// Sessions by slab key and by id.
#[derive(Debug, Default)]
pub(super) struct Sessions {
    pub slab: Slab<SessionEntry>,
    by_id: FxHashMap<Box<str>, usize>,
}

impl Sessions {
    pub fn insert(&mut self, entry: SessionEntry) -> usize {
        let id = entry.id.clone();
        let key = self.slab.insert(entry);
        self.by_id.insert(id, key);
        key
    }

    pub fn key_of(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    pub fn remove(&mut self, key: usize) -> Option<SessionEntry> {
        let entry = self.slab.try_remove(key)?;
        self.by_id.remove(&entry.id);
        Some(entry)
    }

    pub fn len(&self) -> usize {
        self.slab.len()
    }
}

impl Worker {
    /// (Re)arms a session's expiry `lease` from now.
    pub(super) fn renew_session(&mut self, key: usize) {
        let Some(entry) = self.sessions.slab.get_mut(key) else { return };
        if let Some(timer) = entry.timer.take() {
            self.timers.cancel(timer);
        }
        entry.timer = Some(self.timers.insert(Instant::now() + entry.lease, Timer::Session(key)));
    }

    /// A session's lease ran out: while a connection listens the lease runs on, otherwise the
    /// session and everything it holds go.
    pub(super) fn session_timer(&mut self, key: usize) {
        let Some(entry) = self.sessions.slab.get_mut(key) else { return };
        entry.timer = None;
        if entry.listener.is_some() {
            return self.renew_session(key);
        }
        self.remove_session(key);
    }

    /// Removes a session; the caller has already released its listener.
    pub(super) fn remove_session(&mut self, key: usize) {
        if let Some(mut entry) = self.sessions.remove(key) {
            if let Some(timer) = entry.timer.take() {
                self.timers.cancel(timer);
            }
        }
    }
}
