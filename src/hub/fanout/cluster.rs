//! The hub in cluster mode: it sequences nothing. Publishes go to the shared log
//! (`SharedLog::submit`, in `Hub::publish`); what the log's tail brings back, in the one global
//! order every node sees, is appended to the local cache and forwarded like a local publish
//! would be; the log writer's answer (`Logged`) becomes the publisher's ack once the tail has
//! brought its message here, so a `201` also means "readable on this node".

use std::mem;
use std::sync::Arc;

use super::{millis, Hub, PendingAck};
use crate::hub::{PublishRefused, Published, ReplyTo, WorkerMsg};
use crate::log_limit::LogLimit;
use crate::model::{Epoch, Message};

impl Hub {
    /// The log stored (or could not store) the publish `reply` waits for.
    pub(super) fn logged(&mut self, reply: ReplyTo, result: Result<(u64, u64), PublishRefused>, now: u64) {
        let (seq, time_ms) = match result {
            Ok(stored) => stored,
            Err(refused) => {
                let ack = WorkerMsg::PublishAck { reply, outcome: Err(refused) };
                return self.queue(reply.worker, ack);
            }
        };
        if seq < self.next_seq {
            // The tail brought it already (or it is an idempotent retry of an older publish):
            // its deliveries were not counted for this ack, so it says 0.
            let ack = WorkerMsg::PublishAck { reply, outcome: Ok(Published { seq, time_ms, delivered: 0 }) };
            return self.queue(reply.worker, ack);
        }
        let deadline_ms = now.saturating_add(millis(self.options.ack_timeout));
        let ack = PendingAck { reply, time_ms, waiting: Default::default(), delivered: 0, deadline_ms };
        self.awaiting_tail.insert(seq, ack);
    }

    /// Messages from the log's tail, in global order: append, forward, and turn the acks that
    /// waited for them into ordinary pending acks.
    pub(super) fn tail(&mut self, msgs: Vec<Arc<Message>>, now: u64) {
        for msg in msgs {
            if msg.seq < self.next_seq {
                continue; // a re-read after a reconnect: already here
            }
            self.next_seq = msg.seq + 1;
            let ack = self.awaiting_tail.remove(&msg.seq);
            self.append_and_forward(msg, now, ack);
        }
        // Acks for seqs the tail has passed without bringing them (trimmed before it read
        // them, which only a very short log allows): stored all the same.
        while let Some(entry) = self.awaiting_tail.first_entry() {
            if *entry.key() >= self.next_seq {
                break;
            }
            let (seq, ack) = entry.remove_entry();
            self.send_ack(seq, ack);
        }
    }

    /// The log lost history: drop the cache, go on under `epoch`, and have every worker
    /// re-read, so subscribers behind `floor` get the gap reply now rather than at their next
    /// message. Acks still waiting for the tail name messages the log no longer has: refused.
    pub(super) fn rotate(&mut self, epoch: Epoch, floor: u64) {
        log::warn!("hub: the shared log lost history; epoch {epoch} from seq {floor}");
        self.store.reset(epoch, floor);
        self.next_seq = floor + 1;
        let lost = mem::take(&mut self.awaiting_tail);
        for (_, ack) in lost {
            let outcome = Err(PublishRefused::Unavailable("the shared log lost its data before this node read it"));
            self.queue(ack.reply.worker, WorkerMsg::PublishAck { reply: ack.reply, outcome });
        }
        for worker in 0..self.links.len() {
            self.queue(worker, WorkerMsg::WakeAll);
        }
    }

    /// Acks whose message the tail has not brought within the ack timeout: the log stored
    /// them, so they are acknowledged (with no deliveries counted).
    pub(super) fn settle_overdue_tail(&mut self, now: u64) {
        while let Some(entry) = self.awaiting_tail.first_entry() {
            if entry.get().deadline_ms > now {
                break;
            }
            let (seq, ack) = entry.remove_entry();
            static SLOW_TAIL: LogLimit = LogLimit::new(log::Level::Warn, module_path!(), "hub: tail behind");
            SLOW_TAIL.log(format_args!("hub: publish {seq} acknowledged before the log's tail brought it"));
            self.send_ack(seq, ack);
        }
    }
}
