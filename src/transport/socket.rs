//! The life of a socket subscriber (WebSocket, raw TCP), whatever its framing: heartbeats that
//! also find dead peers (a WebSocket ping whose pong must come back before the next one; a
//! heartbeat line on raw TCP, where only a failed write finds a dead peer), and the output
//! bound: feeding pauses while the peer's unsent output is at the bound, and a peer that stays
//! there for a heartbeat interval is told so and disconnected.
//!
//! Sans-I/O: the server owns the socket and the timer, and asks this type what is due.

use std::time::{Duration, Instant};

use super::bound::{OutputBound, Pace};

/// A socket's heartbeat schedule and output bound.
#[derive(Debug)]
pub struct SocketLife {
    next_heartbeat: Instant,
    interval: Duration,
    /// A WebSocket ping is unanswered (the peer is presumed dead at the next heartbeat).
    awaiting_pong: bool,
    bound: OutputBound,
}

/// What a heartbeat tick asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    /// Not due yet.
    Nothing,
    /// Send a ping (WebSocket) and expect its pong before the next beat.
    Ping,
    /// Send a heartbeat line (raw TCP).
    Line,
    /// The last ping was never answered: the peer is gone.
    Dead,
}

impl SocketLife {
    pub fn new(now: Instant, interval: Duration) -> SocketLife {
        SocketLife { next_heartbeat: now + interval, interval, awaiting_pong: false, bound: OutputBound::default() }
    }

    /// The timer fired (it also fires for other deadlines, such as a held Bayeux connect's):
    /// what the heartbeat needs now. `pings` is true for a WebSocket, false for raw TCP.
    pub fn beat(&mut self, now: Instant, pings: bool) -> Beat {
        if now < self.next_heartbeat {
            return Beat::Nothing;
        }
        self.next_heartbeat = now + self.interval;
        match (pings, self.awaiting_pong) {
            (true, true) => Beat::Dead,
            (true, false) => {
                self.awaiting_pong = true;
                Beat::Ping
            }
            (false, _) => Beat::Line,
        }
    }

    /// The peer answered the ping.
    pub fn pong(&mut self) {
        self.awaiting_pong = false;
    }

    /// When the next heartbeat is due.
    pub fn next_heartbeat(&self) -> Instant {
        self.next_heartbeat
    }

    /// On a wake-up, with `queued` bytes of unsent output against `bound`: may more be queued?
    /// The grace over the bound is one heartbeat interval.
    pub fn pace(&mut self, queued: usize, bound: usize, now: Instant) -> Pace {
        self.bound.pace(queued, bound, now, self.interval)
    }

    /// The peer has output waiting at the bound (feeding resumes once it drains).
    pub fn is_behind(&self) -> bool {
        self.bound.is_behind()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEAT: Duration = Duration::from_secs(10);

    #[test]
    fn a_websocket_peer_that_never_answers_a_ping_is_dead_at_the_next_beat() {
        let t0 = Instant::now();
        let mut life = SocketLife::new(t0, BEAT);
        assert_eq!(life.beat(t0 + BEAT / 2, true), Beat::Nothing);
        assert_eq!(life.beat(t0 + BEAT, true), Beat::Ping);
        assert_eq!(life.next_heartbeat(), t0 + BEAT * 2);
        assert_eq!(life.beat(t0 + BEAT * 2, true), Beat::Dead);
    }

    #[test]
    fn a_pong_keeps_the_peer_alive() {
        let t0 = Instant::now();
        let mut life = SocketLife::new(t0, BEAT);
        assert_eq!(life.beat(t0 + BEAT, true), Beat::Ping);
        life.pong();
        assert_eq!(life.beat(t0 + BEAT * 2, true), Beat::Ping);
    }

    #[test]
    fn raw_tcp_beats_with_a_line_and_never_waits_for_an_answer() {
        let t0 = Instant::now();
        let mut life = SocketLife::new(t0, BEAT);
        assert_eq!(life.beat(t0 + BEAT, false), Beat::Line);
        assert_eq!(life.beat(t0 + BEAT * 2, false), Beat::Line);
    }

    #[test]
    fn a_peer_behind_the_bound_for_a_beat_overflows() {
        let t0 = Instant::now();
        let mut life = SocketLife::new(t0, BEAT);
        assert_eq!(life.pace(100, 100, t0), Pace::Behind);
        assert!(life.is_behind());
        assert_eq!(life.pace(100, 100, t0 + BEAT), Pace::Overflow);
        assert_eq!(life.pace(0, 100, t0 + BEAT), Pace::Room);
        assert!(!life.is_behind());
    }
}
