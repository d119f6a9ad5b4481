//! The output bound, seen from a subscriber that may stop reading (a stream or a socket):
//! feeding pauses while its unsent output is at the bound, and once it has stayed there for a
//! grace (a heartbeat interval) it is told so and disconnected, so what one slow client makes
//! the server hold stays bounded.
//!
//! The notice (`overflow` with the resume cursor, and a WebSocket's 1008 close) is queued after
//! the output the client has not taken yet, past the bound (it is what the bound asks for, so
//! the bound cannot refuse it), and the connection closes once it is written, or when the client
//! has taken nothing for [`NOTICE_WAIT`]. Closing at once would drop it with the queue.

use std::time::{Duration, Instant};

/// How long a subscriber disconnected for overflow has to start taking its queued output and
/// notice before the socket is closed anyway. While it keeps taking bytes the connection's
/// usual closing periods follow; nothing more is queued, so memory stays at the bound.
pub const NOTICE_WAIT: Duration = Duration::from_secs(5);

/// The output bound, seen from a subscriber that may stop reading: since when its unsent
/// output has been at the bound. Streams and sockets share it.
#[derive(Debug, Default)]
pub struct OutputBound {
    behind_since: Option<Instant>,
}

impl OutputBound {
    /// With `queued` bytes of unsent output against `bound`: room, behind (the grace runs from
    /// the first time it was seen at the bound), or overflow once behind for `grace`.
    pub fn pace(&mut self, queued: usize, bound: usize, now: Instant, grace: Duration) -> Pace {
        if queued < bound {
            self.behind_since = None;
            return Pace::Room;
        }
        if self.behind_for(now) >= grace {
            Pace::Overflow
        } else {
            Pace::Behind
        }
    }

    pub fn is_behind(&self) -> bool {
        self.behind_since.is_some()
    }

    /// How long the subscriber has been at the bound, starting the count now if it was not.
    pub(super) fn behind_for(&mut self, now: Instant) -> Duration {
        let since = *self.behind_since.get_or_insert(now);
        now.saturating_duration_since(since)
    }
}

/// Whether more may be queued on a wake-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Below the output bound: feed from the cursor.
    Room,
    /// At the bound: the client is behind; its cursor waits in history.
    Behind,
    /// At the bound for a whole heartbeat interval: tell it so and disconnect.
    Overflow,
}
