//! The ack extension (CometD's `AckExtension`, reliable delivery; spec item 10): numbering the
//! event batches that go out with connect replies, and re-sending the ones a client did not
//! acknowledge.
//!
//! The client handshakes with `ext:{"ack":true}` and the server answers the same. From then on
//! every connect reply carries `ext.ack = n`, the number of the batch of events delivered with
//! that reply, and every connect carries `ext.ack = m`, the last batch number the client
//! received (`-1` before the first). Batches up to `m` are done; later batches that were already
//! sent when the connect arrived never reached the client (a lost response) and are re-sent,
//! ahead of any new events, in the next reply's batch. A batch closed after the connect arrived
//! (a parallel connect released meanwhile) may still be in flight and is not re-sent yet.
//!
//! Messages are kept as `Arc`s of the hub's messages, so a kept batch costs a pointer per
//! event. What is kept is bounded by [`MAX_UNACKED_MESSAGES`]; beyond it the oldest are dropped
//! (still delivered once, but no longer re-sendable), counted and logged.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::log_limit::LogLimit;
use crate::model::Message;

/// Most messages kept for re-sending per session: unacknowledged batches plus the open one.
pub const MAX_UNACKED_MESSAGES: usize = 1024;
/// Payload bytes one session may keep for re-sending. The kept messages can outlive their
/// eviction from history, so they need a bound of their own besides the count.
pub const MAX_UNACKED_BYTES: usize = 1 << 20;

/// A session's ack-extension state.
#[derive(Debug)]
pub struct AckState {
    /// The number the next connect reply carries.
    next_batch: u64,
    /// Events delivered since the last connect reply; they form batch `next_batch`.
    open: Vec<Arc<Message>>,
    /// Closed batches the client has not acknowledged, oldest first.
    unacked: VecDeque<Batch>,
    /// Events of batches found lost when the latest connect arrived, to go out first.
    resend: Vec<Arc<Message>>,
    /// Messages dropped from the re-send store because of the bound.
    dropped: u64,
    /// The bound was hit and logged once for this session (a client must not flood the log).
    warned: bool,
}

#[derive(Debug)]
struct Batch {
    number: u64,
    msgs: Vec<Arc<Message>>,
}

impl AckState {
    /// The state after a handshake that enabled the extension.
    pub fn new() -> AckState {
        AckState {
            next_batch: 1,
            open: Vec::new(),
            unacked: VecDeque::new(),
            resend: Vec::new(),
            dropped: 0,
            warned: false,
        }
    }

    /// A connect arrived carrying `ext.ack` (`None`: the client sent no number, nothing is
    /// known). Forgets the batches up to `acked` and queues every later closed batch for
    /// re-sending. Returns whether anything is queued, i.e. the connect should be answered
    /// at once.
    pub fn on_connect(&mut self, acked: Option<i64>) -> bool {
        if let Some(acked) = acked {
            while self.unacked.front().is_some_and(|b| i64::try_from(b.number).is_ok_and(|n| n <= acked)) {
                self.unacked.pop_front();
            }
            for batch in self.unacked.drain(..) {
                self.resend.extend(batch.msgs);
            }
        }
        !self.resend.is_empty()
    }

    /// The events to deliver now: the re-sends first, then `fresh`. All of them join the open
    /// batch.
    pub fn deliver(&mut self, fresh: Vec<Arc<Message>>) -> Vec<Arc<Message>> {
        let mut out = std::mem::take(&mut self.resend);
        out.extend(fresh);
        self.open.extend(out.iter().cloned());
        self.enforce_bound();
        out
    }

    /// A connect reply is going out: closes the open batch and returns its number for
    /// `ext.ack`.
    pub fn close_batch(&mut self) -> u64 {
        let number = self.next_batch;
        self.next_batch += 1;
        let msgs = std::mem::take(&mut self.open);
        if !msgs.is_empty() {
            self.unacked.push_back(Batch { number, msgs });
        }
        number
    }

    /// Messages kept for re-sending right now.
    pub fn kept(&self) -> usize {
        self.open.len() + self.resend.len() + self.unacked.iter().map(|b| b.msgs.len()).sum::<usize>()
    }

    /// Messages dropped from the re-send store because of [`MAX_UNACKED_MESSAGES`].
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Drops the oldest kept messages beyond the bound: closed batches first, then the front
    /// of the open batch (the re-send queue is empty after `deliver`).
    fn enforce_bound(&mut self) {
        let mut excess = self.kept().saturating_sub(MAX_UNACKED_MESSAGES);
        // Then by bytes: count how many of the oldest must go for the rest to fit.
        let kept = self.unacked.iter().flat_map(|b| b.msgs.iter()).chain(self.open.iter());
        let mut bytes: usize = kept.clone().skip(excess).map(|m| m.data.len()).sum();
        for msg in kept.skip(excess) {
            if bytes <= MAX_UNACKED_BYTES {
                break;
            }
            bytes -= msg.data.len();
            excess += 1;
        }
        if excess == 0 {
            return;
        }
        if !self.warned {
            self.warned = true;
            // Once per session, and a client can open many sessions.
            static OVER_BOUND: LogLimit =
                LogLimit::new(log::Level::Warn, module_path!(), "bayeux ack extension: over the bound");
            OVER_BOUND.log(format_args!(
                "bayeux ack extension: a session keeps more unacknowledged messages than the bound; dropping the oldest"
            ));
        }
        self.dropped += excess as u64;
        while excess > 0 {
            let Some(front) = self.unacked.front_mut() else { break };
            let n = excess.min(front.msgs.len());
            front.msgs.drain(..n);
            excess -= n;
            if front.msgs.is_empty() {
                self.unacked.pop_front();
            }
        }
        let n = excess.min(self.open.len());
        self.open.drain(..n);
    }
}

impl Default for AckState {
    fn default() -> AckState {
        AckState::new()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn msgs(seqs: std::ops::RangeInclusive<u64>) -> Vec<Arc<Message>> {
        seqs.map(|seq| Arc::new(Message::new(seq, Arc::from("/a"), 0, Bytes::new()))).collect()
    }

    fn seqs(list: &[Arc<Message>]) -> Vec<u64> {
        list.iter().map(|m| m.seq).collect()
    }

    #[test]
    fn kept_bytes_are_bounded_too() {
        // Ten 256 KiB messages never acknowledged: only what fits 1 MiB is kept for re-sending.
        let big = |seq| Arc::new(Message::new(seq, Arc::from("/a"), 0, Bytes::from(vec![0u8; 256 * 1024])));
        let mut ack = AckState::new();
        ack.deliver((1..=10).map(big).collect());
        ack.close_batch();
        assert_eq!(ack.kept(), 4, "4 x 256 KiB = the 1 MiB bound");
        assert_eq!(ack.dropped(), 6);
        assert!(ack.on_connect(Some(0)));
        assert_eq!(seqs(&ack.deliver(Vec::new())), vec![7, 8, 9, 10], "the newest are kept");
    }

    #[test]
    fn rounds_with_a_lost_reply() {
        let mut ack = AckState::new();
        // First connect: the client knows no batch yet.
        assert!(!ack.on_connect(Some(-1)));
        assert_eq!(seqs(&ack.deliver(msgs(1..=2))), [1, 2]);
        assert_eq!(ack.close_batch(), 1);
        // The client got batch 1.
        assert!(!ack.on_connect(Some(1)));
        assert_eq!(ack.kept(), 0);
        assert_eq!(seqs(&ack.deliver(msgs(3..=3))), [3]);
        assert_eq!(ack.close_batch(), 2);
        // Batch 2's reply was lost: the client still says 1, so 3 is re-sent before 4.
        assert!(ack.on_connect(Some(1)));
        assert_eq!(seqs(&ack.deliver(msgs(4..=4))), [3, 4]);
        assert_eq!(ack.close_batch(), 3);
        assert!(!ack.on_connect(Some(3)));
        assert_eq!(ack.kept(), 0);
        // An empty round still takes a number.
        assert_eq!(seqs(&ack.deliver(Vec::new())), Vec::<u64>::new());
        assert_eq!(ack.close_batch(), 4);
    }

    #[test]
    fn batches_closed_after_the_connect_are_not_resent() {
        let mut ack = AckState::new();
        ack.deliver(msgs(1..=1));
        assert_eq!(ack.close_batch(), 1);
        // A second connect (still acking 0) releases the held one, which closes batch 2.
        assert!(ack.on_connect(Some(0)), "batch 1 was sent before this connect arrived");
        assert_eq!(seqs(&ack.deliver(msgs(2..=2))), [1, 2]);
        assert_eq!(ack.close_batch(), 2);
        // The held connect is answered later: batch 2 may be in flight, nothing is re-sent.
        assert_eq!(seqs(&ack.deliver(Vec::new())), Vec::<u64>::new());
        assert_eq!(ack.close_batch(), 3);
        // No number known: nothing is forgotten or re-sent.
        assert!(!ack.on_connect(None));
        assert_eq!(ack.kept(), 2);
        assert!(!ack.on_connect(Some(3)));
        assert_eq!(ack.kept(), 0);
    }

    #[test]
    fn bound_drops_oldest() {
        let mut ack = AckState::new();
        let n = MAX_UNACKED_MESSAGES as u64;
        ack.deliver(msgs(1..=n - 10));
        ack.close_batch();
        ack.deliver(msgs(n - 9..=n + 5));
        assert_eq!(ack.kept(), MAX_UNACKED_MESSAGES);
        assert_eq!(ack.dropped(), 5);
        ack.close_batch();
        assert!(ack.on_connect(Some(0)));
        let again = ack.deliver(Vec::new());
        assert_eq!(again.len(), MAX_UNACKED_MESSAGES);
        assert_eq!(again.first().map(|m| m.seq), Some(6), "the five oldest are gone");
        assert_eq!(again.last().map(|m| m.seq), Some(n + 5));
    }
}
