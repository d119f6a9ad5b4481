//! The life of a streaming subscriber (SSE, ndjson, forever iframe, multipart, and Pushlet's
//! stream mode), whatever its framing: how each piece of the body is framed on the wire (one
//! HTTP/1.1 chunk, or raw bytes for HTTP/1.0, whose stream ends at close), when a heartbeat is
//! due, when the stream ends cleanly (`--stream-max-age`, `--stream-max-bytes`), and what a
//! client that stops reading gets: feeding pauses while its unsent output is at the bound, and
//! it is disconnected with an overflow notice once it has stayed there for a heartbeat interval.
//!
//! Sans-I/O: the server reads history, owns the socket and asks this type what to do; the
//! frames themselves come from `StreamKind` (and, for Pushlet, from its protocol writer).

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::bound::{OutputBound, Pace};
use crate::http;

/// Where the bytes of a stream go (the connection's output queue).
pub trait Sink {
    fn push(&mut self, bytes: Bytes);
}

/// A stream's timing and bounds.
#[derive(Debug)]
pub struct StreamLife {
    /// HTTP/1.1 chunked framing; false for HTTP/1.0, whose stream ends at close.
    chunked: bool,
    /// When the stream ends cleanly (`--stream-max-age`).
    ends_at: Instant,
    next_heartbeat: Instant,
    /// The heartbeat period, and the grace a client gets over the output bound.
    heartbeat: Duration,
    /// Message bytes queued so far (`--stream-max-bytes`).
    sent: usize,
    bound: OutputBound,
}

/// What the stream's timer found due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// The stream has lived `--stream-max-age`: end it cleanly with the resume cursor.
    End,
    /// The client stayed behind for a heartbeat interval.
    Overflow,
    /// Send a heartbeat frame.
    Heartbeat,
    /// Nothing yet (re-arm at `deadline`).
    Nothing,
}

impl StreamLife {
    pub fn new(chunked: bool, now: Instant, heartbeat: Duration, max_age: Duration) -> StreamLife {
        StreamLife {
            chunked,
            ends_at: now + max_age,
            next_heartbeat: now + heartbeat,
            heartbeat,
            sent: 0,
            bound: OutputBound::default(),
        }
    }

    pub fn chunked(&self) -> bool {
        self.chunked
    }

    /// The client has output waiting at the bound (feeding resumes once it drains).
    pub fn is_behind(&self) -> bool {
        self.bound.is_behind()
    }

    /// On a wake-up, with `queued` bytes of unsent output against `bound`: may more be queued?
    /// The grace over the bound is one heartbeat interval.
    pub fn pace(&mut self, queued: usize, bound: usize, now: Instant) -> Pace {
        self.bound.pace(queued, bound, now, self.heartbeat)
    }

    /// When the stream's timer fires (at `deadline`).
    pub fn due(&mut self, now: Instant, queued: usize, bound: usize) -> Due {
        if now >= self.ends_at {
            return Due::End;
        }
        if now < self.next_heartbeat {
            return Due::Nothing;
        }
        self.next_heartbeat = now + self.heartbeat;
        if queued < bound {
            return Due::Heartbeat;
        }
        // No heartbeat on top of output the client is not reading.
        if self.bound.behind_for(now) >= self.heartbeat {
            Due::Overflow
        } else {
            Due::Nothing
        }
    }

    /// When the timer must fire next: the earlier of the next heartbeat and the end.
    pub fn deadline(&self) -> Instant {
        self.ends_at.min(self.next_heartbeat)
    }

    /// Counts `bytes` of message data queued.
    pub fn add_sent(&mut self, bytes: usize) {
        self.sent += bytes;
    }

    /// The stream has carried `max` bytes of messages (`--stream-max-bytes`).
    pub fn sent_at_least(&self, max: usize) -> bool {
        self.sent >= max
    }

    /// Queues `parts` (drained) as one piece of the body: one HTTP chunk when chunked (the
    /// chunk header is the only per-connection allocation), raw otherwise. Nothing for nothing.
    pub fn push(&self, out: &mut impl Sink, parts: &mut Vec<Bytes>) {
        let len: usize = parts.iter().map(Bytes::len).sum();
        if len == 0 {
            parts.clear();
            return;
        }
        if self.chunked {
            out.push(Bytes::copy_from_slice(http::chunk_header(len).as_ref()));
        }
        for part in parts.drain(..) {
            out.push(part);
        }
        if self.chunked {
            out.push(Bytes::from_static(http::CHUNK_END));
        }
    }

    /// The end of the body: `last` (the closing control frame and epilogue), then the last
    /// chunk when chunked.
    pub fn finish(&self, out: &mut impl Sink, last: &mut Vec<Bytes>) {
        self.push(out, last);
        if self.chunked {
            out.push(Bytes::from_static(http::LAST_CHUNK));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Sink for Vec<u8> {
        fn push(&mut self, bytes: Bytes) {
            self.extend_from_slice(&bytes);
        }
    }

    const BEAT: Duration = Duration::from_secs(10);
    const AGE: Duration = Duration::from_secs(60);

    #[test]
    fn a_chunked_stream_frames_each_piece_as_one_chunk_and_ends_with_the_last_chunk() {
        let life = StreamLife::new(true, Instant::now(), BEAT, AGE);
        let mut out = Vec::new();
        life.push(&mut out, &mut vec![Bytes::from_static(b"ab"), Bytes::from_static(b"cde")]);
        life.push(&mut out, &mut Vec::new());
        life.finish(&mut out, &mut vec![Bytes::from_static(b"end")]);
        assert_eq!(out, b"5\r\nabcde\r\n3\r\nend\r\n0\r\n\r\n");
    }

    #[test]
    fn an_http_1_0_stream_is_raw_and_ends_at_close() {
        let life = StreamLife::new(false, Instant::now(), BEAT, AGE);
        let mut out = Vec::new();
        life.push(&mut out, &mut vec![Bytes::from_static(b"ab")]);
        life.finish(&mut out, &mut vec![Bytes::from_static(b"end")]);
        assert_eq!(out, b"abend");
    }

    #[test]
    fn a_client_behind_the_bound_waits_then_overflows_after_a_heartbeat_interval() {
        let t0 = Instant::now();
        let mut life = StreamLife::new(true, t0, BEAT, AGE);
        assert_eq!(life.pace(10, 100, t0), Pace::Room);
        assert_eq!(life.pace(100, 100, t0), Pace::Behind);
        assert!(life.is_behind());
        assert_eq!(life.pace(150, 100, t0 + BEAT / 2), Pace::Behind);
        // It caught up in between: the grace starts again.
        assert_eq!(life.pace(50, 100, t0 + BEAT / 2), Pace::Room);
        assert!(!life.is_behind());
        assert_eq!(life.pace(100, 100, t0 + BEAT), Pace::Behind);
        assert_eq!(life.pace(100, 100, t0 + BEAT * 2), Pace::Overflow);
    }

    #[test]
    fn the_timer_beats_then_ends_the_stream_at_its_age() {
        let t0 = Instant::now();
        let mut life = StreamLife::new(true, t0, BEAT, AGE);
        assert_eq!(life.deadline(), t0 + BEAT);
        assert_eq!(life.due(t0 + BEAT / 2, 0, 100), Due::Nothing);
        assert_eq!(life.due(t0 + BEAT, 0, 100), Due::Heartbeat);
        assert_eq!(life.deadline(), t0 + BEAT * 2);
        assert_eq!(life.due(t0 + BEAT * 2, 0, 100), Due::Heartbeat);
        assert_eq!(life.due(t0 + AGE, 0, 100), Due::End);
    }

    #[test]
    fn no_heartbeat_goes_on_top_of_unread_output_and_a_client_that_stays_behind_overflows() {
        let t0 = Instant::now();
        let mut life = StreamLife::new(true, t0, BEAT, AGE);
        assert_eq!(life.due(t0 + BEAT, 100, 100), Due::Nothing);
        assert_eq!(life.due(t0 + BEAT * 2, 100, 100), Due::Overflow);
    }

    #[test]
    fn the_feed_and_the_timer_share_one_grace() {
        let t0 = Instant::now();
        let mut life = StreamLife::new(true, t0, BEAT, AGE);
        // Behind since a wake-up at t0: the timer one interval later finds the grace over.
        assert_eq!(life.pace(100, 100, t0), Pace::Behind);
        assert_eq!(life.due(t0 + BEAT, 100, 100), Due::Overflow);
    }

    #[test]
    fn the_timer_moves_the_next_beat_on_while_the_client_is_behind_and_never_clears_the_grace() {
        let t0 = Instant::now();
        let mut life = StreamLife::new(true, t0, BEAT, AGE);
        assert_eq!(life.due(t0 + BEAT, 100, 100), Due::Nothing);
        assert_eq!(life.deadline(), t0 + BEAT * 2);
        assert!(life.is_behind());
        // Below the bound at the next beat: a heartbeat, and only a wake-up clears the grace.
        assert_eq!(life.due(t0 + BEAT * 2, 0, 100), Due::Heartbeat);
        assert!(life.is_behind());
        assert_eq!(life.pace(0, 100, t0 + BEAT * 2), Pace::Room);
        assert!(!life.is_behind());
    }

    #[test]
    fn the_byte_limit_counts_message_bytes() {
        let mut life = StreamLife::new(true, Instant::now(), BEAT, AGE);
        life.add_sent(60);
        assert!(!life.sent_at_least(100));
        life.add_sent(40);
        assert!(life.sent_at_least(100));
    }
}
