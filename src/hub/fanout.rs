//! The hub thread's state and loop: sequencing, interest routing, batching to workers, publish
//! acknowledgements and the periodic history expiry.
//!
//! Everything here runs on the one hub thread, so nothing is locked; the only shared state is the
//! store (which the hub alone writes) and the stats atomics.

use std::collections::BTreeMap;
use std::mem;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_channel::{Receiver, RecvTimeoutError, SendTimeoutError, TryRecvError, TrySendError};

use super::{
    HubCmd, HubOptions, HubStats, PublishRefused, PublishReq, Published, ReplyTo, WorkerLink, WorkerMsg, DRAIN_MAX,
};

use crate::log_limit::LogLimit;
use crate::model::{validate_internal_topic, Message, Selector, SelectorIndex};
use crate::store::Store;

mod cluster;

/// Most flush passes per round. Only a failed send creates more work for a pass (acks settled
/// early), and acks never create more, so three passes always suffice; one more is slack.
const MAX_FLUSH_PASSES: usize = 4;

/// The hub thread's state.
pub(super) struct Hub {
    store: Arc<dyn Store>,
    links: Vec<WorkerLink>,
    options: HubOptions,
    stats: Arc<HubStats>,
    /// The seq the next publish gets.
    next_seq: u64,
    /// Timestamp of the last publish; timestamps never go back, so time order is seq order.
    last_time_ms: u64,
    /// Workers interested in each selector (exact topics and patterns, indexed so routing
    /// a topic never scans the patterns that cannot match); no empty sets are kept. Each
    /// worker bounds the selectors it keeps registered without a subscriber
    /// (`server::subs::MAX_LINGERING`), so this holds at most the live selectors plus that
    /// many per worker.
    interest: SelectorIndex<WorkerSet>,
    /// One batch per worker, filled while processing a round of commands.
    batches: Vec<Vec<WorkerMsg>>,
    /// Acks waiting for `Delivered` reports, by seq (so also by age).
    pending: BTreeMap<u64, PendingAck>,
    /// Workers whose channel stayed full: sends to them no longer wait, until one succeeds.
    wedged: WorkerSet,
    /// Workers whose channel is closed: never sent to again.
    dead: WorkerSet,
    /// Scratch set for routing one publish.
    targets: WorkerSet,
    /// Cluster mode: publishes the shared log has stored, waiting for the tail to bring them
    /// (by seq) so the ack can count deliveries; bounded by the log writer's queue and settled
    /// at the ack timeout like `pending`.
    awaiting_tail: BTreeMap<u64, PendingAck>,
}

/// A publish acknowledgement waiting for workers to report.
#[derive(Debug)]
struct PendingAck {
    reply: ReplyTo,
    time_ms: u64,
    /// Workers sent a `Deliver { report: true }` that have not answered.
    waiting: WorkerSet,
    delivered: usize,
    /// Clock time after which the ack is sent with what has been counted.
    deadline_ms: u64,
}

impl Hub {
    pub(super) fn new(store: Arc<dyn Store>, links: Vec<WorkerLink>, options: HubOptions, stats: Arc<HubStats>) -> Hub {
        let next_seq = store.head() + 1;
        let batches = links.iter().map(|_| Vec::new()).collect();
        Hub {
            store,
            links,
            options,
            stats,
            next_seq,
            last_time_ms: 0,
            interest: SelectorIndex::default(),
            batches,
            pending: BTreeMap::new(),
            wedged: WorkerSet::default(),
            dead: WorkerSet::default(),
            targets: WorkerSet::default(),
            awaiting_tail: BTreeMap::new(),
        }
    }

    /// The loop: wait for a command (or the expiry tick), expire if due, process up to
    /// `DRAIN_MAX` more commands, flush the batches. Ends on `Shutdown` or when every sender
    /// is gone.
    pub(super) fn run(mut self, rx: Receiver<HubCmd>) {
        let interval_ms = millis(self.options.expire_interval);
        let mut next_expire_ms = self.now().saturating_add(interval_ms);
        loop {
            let first = match rx.recv_timeout(self.options.expire_interval) {
                Ok(cmd) => Some(cmd),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let now = self.now();
            if now >= next_expire_ms {
                self.store.expire(now);
                self.settle_overdue_acks(now);
                self.settle_overdue_tail(now);
                next_expire_ms = now.saturating_add(interval_ms);
            }
            let mut stop = false;
            if let Some(cmd) = first {
                stop = self.handle(cmd, now);
                for _ in 0..DRAIN_MAX {
                    if stop {
                        break;
                    }
                    match rx.try_recv() {
                        Ok(cmd) => stop = self.handle(cmd, now),
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => stop = true,
                    }
                }
            }
            self.flush();
            if stop {
                break;
            }
        }
        log::debug!("hub: stopped after seq {}", self.next_seq - 1);
    }

    fn now(&self) -> u64 {
        (self.options.clock)()
    }

    /// Processes one command; true to stop.
    fn handle(&mut self, cmd: HubCmd, now: u64) -> bool {
        match cmd {
            HubCmd::Publish(req) => self.publish(req, now),
            HubCmd::Interest { worker, selector, on, seen_head } => {
                self.interest(worker, selector, on, seen_head);
            }
            HubCmd::Delivered { worker, seq, count } => self.delivered(worker, seq, count),
            HubCmd::Loaded(selectors) => self.loaded(selectors),
            HubCmd::Logged { reply, result } => self.logged(reply, result, now),
            HubCmd::Tail(msgs) => self.tail(msgs, now),
            HubCmd::Rotate { epoch, floor } => self.rotate(epoch, floor),
            HubCmd::Shutdown => return true,
        }
        false
    }

    fn publish(&mut self, req: PublishReq, now: u64) {
        if let Err(err) = validate_internal_topic(&req.topic) {
            // Workers validate first (private topics only for the server's own Pushlet
            // unicasts); this only guards the store against a bug.
            static INVALID_TOPIC: LogLimit = LogLimit::new(log::Level::Warn, module_path!(), "hub: invalid topic");
            INVALID_TOPIC.log(format_args!("hub: refusing publish to invalid topic {:?}: {err}", req.topic));
            self.stats.rejected.fetch_add(1, Ordering::Relaxed);
            if let Some(reply) = req.reply {
                let ack = WorkerMsg::PublishAck { reply, outcome: Err(PublishRefused::InvalidTopic) };
                self.queue(reply.worker, ack);
            }
            return;
        }
        if let Some(log) = &self.options.log {
            // Cluster mode: the shared log sequences; the tail brings the message back.
            let reply = req.reply;
            if let Err(reason) = log.submit(req) {
                if let Some(reply) = reply {
                    self.queue(
                        reply.worker,
                        WorkerMsg::PublishAck { reply, outcome: Err(PublishRefused::Unavailable(reason)) },
                    );
                }
            }
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.last_time_ms = self.last_time_ms.max(now);
        let time_ms = self.last_time_ms;
        let msg =
            Message::new(seq, req.topic, time_ms, req.data).with_event(req.event).with_content_type(req.content_type);
        let deadline_ms = now.saturating_add(millis(self.options.ack_timeout));
        let ack = req.reply.map(|reply| PendingAck {
            reply,
            time_ms,
            waiting: WorkerSet::default(),
            delivered: 0,
            deadline_ms,
        });
        self.append_and_forward(Arc::new(msg), time_ms, ack);
    }

    /// Appends `msg` to history (`append_ms` is the time its age bound is applied at) and
    /// forwards it to the interested workers. `ack`, the publisher's if it waits for one, is
    /// sent at once when no worker is interested, else waits in `pending` for their reports.
    /// The one path of a message into history, a local publish or one the log's tail brought.
    fn append_and_forward(&mut self, msg: Arc<Message>, append_ms: u64, ack: Option<PendingAck>) {
        self.store.append(msg.clone(), append_ms);
        self.stats.published.fetch_add(1, Ordering::Relaxed);

        self.route(&msg.topic);
        let report = ack.is_some();
        let targets = mem::take(&mut self.targets);
        let mut forwarded = 0;
        for worker in targets.iter() {
            self.queue(worker, WorkerMsg::Deliver { msg: msg.clone(), report });
            forwarded += 1;
        }
        self.stats.forwarded.fetch_add(forwarded, Ordering::Relaxed);
        if let Some(mut ack) = ack {
            if targets.is_empty() {
                self.send_ack(msg.seq, ack);
            } else {
                ack.waiting = targets.clone();
                self.pending.insert(msg.seq, ack);
            }
        }
        self.targets = targets;
    }

    /// Fills `self.targets` with the live workers interested in `topic`: O(segments), however
    /// many patterns are registered.
    fn route(&mut self, topic: &str) {
        let targets = &mut self.targets;
        targets.clear();
        self.interest.for_each_match(topic, |set| targets.union_with(set));
        targets.difference_with(&self.dead);
    }

    fn interest(&mut self, worker: usize, selector: Selector, on: bool, seen_head: u64) {
        if worker >= self.links.len() {
            log::error!("hub: interest from unknown worker {worker}");
            return;
        }
        if on {
            self.interest.get_or_insert_with(&selector, WorkerSet::default).0.insert(worker);
        } else if let Some(set) = self.interest.get_mut(&selector) {
            set.remove(worker);
            if set.is_empty() {
                self.interest.remove(&selector);
            }
        }
        self.stats.interest.store(self.interest.len() as u64, Ordering::Relaxed);
        self.stats.interest_patterns.store(self.interest.patterns() as u64, Ordering::Relaxed);
        // Anything appended after the worker's read was not forwarded to it: have it re-read.
        if on && self.next_seq - 1 > seen_head {
            self.queue(worker, WorkerMsg::Wake(selector));
        }
    }

    /// A store fetch for `selectors` landed: the workers subscribed to them read again.
    fn loaded(&mut self, selectors: Vec<Selector>) {
        for selector in selectors {
            let Some(set) = self.interest.get(&selector) else { continue };
            self.targets.clear();
            self.targets.union_with(set);
            self.targets.difference_with(&self.dead);
            let targets = mem::take(&mut self.targets);
            for worker in targets.iter() {
                self.queue(worker, WorkerMsg::Wake(selector.clone()));
            }
            self.targets = targets;
        }
    }

    fn delivered(&mut self, worker: usize, seq: u64, count: usize) {
        let Some(ack) = self.pending.get_mut(&seq) else {
            return; // already settled (timed out, or a worker went away)
        };
        if !ack.waiting.contains(worker) {
            return;
        }
        ack.waiting.remove(worker);
        ack.delivered = ack.delivered.saturating_add(count);
        if ack.waiting.is_empty() {
            self.settle(seq);
        }
    }

    /// Sends the ack for `seq` with the deliveries counted so far.
    fn settle(&mut self, seq: u64) {
        if let Some(ack) = self.pending.remove(&seq) {
            self.send_ack(seq, ack);
        }
    }

    /// Sends the publisher its ack for `seq`: stored, with the deliveries `ack` counted.
    fn send_ack(&mut self, seq: u64, ack: PendingAck) {
        let published = Published { seq, time_ms: ack.time_ms, delivered: ack.delivered };
        self.queue(ack.reply.worker, WorkerMsg::PublishAck { reply: ack.reply, outcome: Ok(published) });
    }

    /// Settles acks whose workers did not all answer in time, so `pending` cannot grow without
    /// bound if a worker loses a report.
    fn settle_overdue_acks(&mut self, now: u64) {
        while let Some((&seq, ack)) = self.pending.first_key_value() {
            if ack.deadline_ms > now {
                break;
            }
            static UNREPORTED_ACK: LogLimit =
                LogLimit::new(log::Level::Warn, module_path!(), "hub: publishes acknowledged without reports");
            UNREPORTED_ACK.log(format_args!("hub: publish {seq} acknowledged without reports from some workers"));
            self.settle(seq);
        }
    }

    /// Stops waiting for `worker`'s reports on the messages in `batch` (dropped, not delivered).
    fn forget_reports(&mut self, worker: usize, batch: &[WorkerMsg]) {
        for msg in batch {
            if let WorkerMsg::Deliver { msg, report: true } = msg {
                self.delivered(worker, msg.seq, 0);
            }
        }
    }

    fn queue(&mut self, worker: usize, msg: WorkerMsg) {
        if self.dead.contains(worker) {
            return;
        }
        match self.batches.get_mut(worker) {
            Some(batch) => batch.push(msg),
            None => log::error!("hub: no link for worker {worker}"),
        }
    }

    /// Sends every non-empty batch and wakes its worker. A send that fails settles the acks
    /// waiting on it, which may queue acks for workers already flushed: hence the passes.
    fn flush(&mut self) {
        for _ in 0..MAX_FLUSH_PASSES {
            let mut sent_any = false;
            for worker in 0..self.batches.len() {
                let Some(batch) = self.batches.get_mut(worker).map(mem::take) else {
                    continue;
                };
                if batch.is_empty() {
                    continue;
                }
                sent_any = true;
                self.send(worker, batch);
            }
            if !sent_any {
                return;
            }
        }
    }

    fn send(&mut self, worker: usize, mut batch: Vec<WorkerMsg>) {
        let Some(link) = self.links.get(worker) else {
            return;
        };
        let result = if self.wedged.contains(worker) {
            // Batches were dropped for this worker, and with them wake-ups: the first batch
            // that gets through tells it to re-read history for every subscriber it holds.
            batch.insert(0, WorkerMsg::WakeAll);
            link.tx.try_send(batch).map_err(|err| match err {
                TrySendError::Full(batch) => (batch, false),
                TrySendError::Disconnected(batch) => (batch, true),
            })
        } else {
            link.tx.send_timeout(batch, self.options.send_timeout).map_err(|err| match err {
                SendTimeoutError::Timeout(batch) => (batch, false),
                SendTimeoutError::Disconnected(batch) => (batch, true),
            })
        };
        match result {
            Ok(()) => {
                if self.wedged.contains(worker) {
                    log::warn!("hub: worker {worker} is taking batches again");
                    self.wedged.remove(worker);
                }
                if let Err(err) = link.waker.wake() {
                    log::error!("hub: cannot wake worker {worker}: {err}");
                }
            }
            Err((batch, false)) => {
                if !self.wedged.contains(worker) {
                    log::error!(
                        "hub: worker {worker} took no batch for {:?}; dropping its batches until it does",
                        self.options.send_timeout
                    );
                    self.wedged.insert(worker);
                }
                self.stats.dropped_batches.fetch_add(1, Ordering::Relaxed);
                self.forget_reports(worker, &batch);
            }
            Err((batch, true)) => {
                log::error!("hub: worker {worker} is gone; no longer sending to it");
                self.stats.dropped_batches.fetch_add(1, Ordering::Relaxed);
                self.dead.insert(worker);
                self.forget_reports(worker, &batch);
                // Reports it owed for batches it took but never answered will not come either.
                let owed: Vec<u64> =
                    self.pending.iter().filter(|(_, ack)| ack.waiting.contains(worker)).map(|(&seq, _)| seq).collect();
                for seq in owed {
                    self.delivered(worker, seq, 0);
                }
            }
        }
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A set of worker indexes as a bitset; any number of workers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct WorkerSet {
    words: Vec<u64>,
}

impl WorkerSet {
    fn insert(&mut self, worker: usize) {
        let (word, bit) = (worker / 64, worker % 64);
        if self.words.len() <= word {
            self.words.resize(word + 1, 0);
        }
        if let Some(w) = self.words.get_mut(word) {
            *w |= 1 << bit;
        }
    }

    fn remove(&mut self, worker: usize) {
        if let Some(w) = self.words.get_mut(worker / 64) {
            *w &= !(1 << (worker % 64));
        }
    }

    fn contains(&self, worker: usize) -> bool {
        self.words.get(worker / 64).is_some_and(|w| w & (1 << (worker % 64)) != 0)
    }

    fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }

    fn clear(&mut self) {
        self.words.iter_mut().for_each(|w| *w = 0);
    }

    fn union_with(&mut self, other: &WorkerSet) {
        if self.words.len() < other.words.len() {
            self.words.resize(other.words.len(), 0);
        }
        for (w, o) in self.words.iter_mut().zip(&other.words) {
            *w |= o;
        }
    }

    fn difference_with(&mut self, other: &WorkerSet) {
        for (w, o) in self.words.iter_mut().zip(&other.words) {
            *w &= !o;
        }
    }

    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words
            .iter()
            .enumerate()
            .flat_map(|(i, &word)| (0..64).filter(move |bit| word & (1 << bit) != 0).map(move |bit| i * 64 + bit))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;
    use std::time::Duration;

    use bytes::Bytes;
    use crossbeam_channel::Sender;
    use mio::{Events, Poll, Token, Waker};

    use super::super::{spawn_with, HubHandle, WorkerLink, ACK_TIMEOUT};
    use super::*;
    use crate::store::{HistoryLimits, MemoryStore, StoreStats};

    /// How long a test waits for a batch before failing (a bound, not a synchronisation).
    const PATIENCE: Duration = Duration::from_secs(10);

    /// A worker's side of a link: its poller, woken by the hub, and its batch channel.
    struct FakeWorker {
        poll: Poll,
        events: Events,
        rx: Receiver<Vec<WorkerMsg>>,
        /// Messages received but not yet consumed by the test.
        inbox: Vec<WorkerMsg>,
    }

    impl FakeWorker {
        /// Waits for the next message from the hub, blocking on the waker.
        fn next(&mut self) -> WorkerMsg {
            loop {
                if !self.inbox.is_empty() {
                    return self.inbox.remove(0);
                }
                if let Ok(batch) = self.rx.try_recv() {
                    assert!(!batch.is_empty(), "the hub sends no empty batches");
                    self.inbox = batch;
                    continue;
                }
                self.poll.poll(&mut self.events, Some(PATIENCE)).expect("poll");
                assert!(!self.events.is_empty(), "no batch from the hub within {PATIENCE:?}");
            }
        }

        /// Everything up to and including the ack for `tag` (see `sync`).
        fn until_ack(&mut self, tag: u64) -> Vec<WorkerMsg> {
            let mut seen = Vec::new();
            loop {
                let msg = self.next();
                let done = matches!(&msg, WorkerMsg::PublishAck { reply, .. } if reply.tag == tag);
                seen.push(msg);
                if done {
                    return seen;
                }
            }
        }
    }

    struct Rig {
        hub: HubHandle,
        store: Arc<MemoryStore>,
        workers: Vec<FakeWorker>,
        /// Extra senders into the workers' channels, to fill them in tests.
        senders: Vec<Sender<Vec<WorkerMsg>>>,
        clock: Arc<AtomicU64>,
        next_tag: u64,
    }

    fn rig(capacities: &[usize], limits: HistoryLimits) -> Rig {
        let mut links = Vec::new();
        let mut workers = Vec::new();
        let mut senders = Vec::new();
        for &cap in capacities {
            let poll = Poll::new().expect("poll");
            let waker = Arc::new(Waker::new(poll.registry(), Token(0)).expect("waker"));
            let (tx, rx) = crossbeam_channel::bounded(cap);
            senders.push(tx.clone());
            links.push(WorkerLink { tx, waker });
            workers.push(FakeWorker { poll, events: Events::with_capacity(8), rx, inbox: Vec::new() });
        }
        let store = Arc::new(MemoryStore::with_epoch(limits, crate::model::Epoch::truncated(5)));
        let clock = Arc::new(AtomicU64::new(1_000_000));
        let options = HubOptions {
            cmd_capacity: 64,
            send_timeout: Duration::from_millis(50),
            clock: {
                let clock = clock.clone();
                Arc::new(move || clock.load(Ordering::SeqCst))
            },
            ..HubOptions::default()
        };
        let hub = spawn_with(store.clone(), links, options).expect("spawn");
        Rig { hub, store, workers, senders, clock, next_tag: 1 }
    }

    impl Rig {
        fn send(&self, cmd: HubCmd) {
            self.hub.tx.send(cmd).expect("hub is running");
        }

        fn interest(&self, worker: usize, selector: &str, on: bool, seen_head: u64) {
            let selector = Selector::parse(selector).expect("selector");
            self.send(HubCmd::Interest { worker, selector, on, seen_head });
        }

        /// Publishes to `topic`; with `reply_to`, returns the tag of the ack to expect there.
        fn publish(&mut self, topic: &str, reply_to: Option<usize>) -> u64 {
            let tag = self.next_tag;
            self.next_tag += 1;
            let reply = reply_to.map(|worker| ReplyTo { worker, conn: 100 + worker, tag });
            self.send(HubCmd::Publish(PublishReq {
                topic: Arc::from(topic),
                event: None,
                content_type: None,
                data: Bytes::from_static(b"hello"),
                reply,
                idempotency_key: None,
            }));
            tag
        }

        /// A publish nobody wants, acked to `worker`: everything the hub sent `worker` before
        /// it is returned, in order (all earlier commands have been processed by then).
        fn sync(&mut self, worker: usize) -> Vec<WorkerMsg> {
            let tag = self.publish("/sync", Some(worker));
            let mut seen = self.workers[worker].until_ack(tag);
            seen.pop();
            seen
        }
    }

    fn delivered_seqs(msgs: &[WorkerMsg]) -> Vec<(u64, bool)> {
        msgs.iter()
            .filter_map(|m| match m {
                WorkerMsg::Deliver { msg, report } => Some((msg.seq, *report)),
                _ => None,
            })
            .collect()
    }

    /// (seq, delivered, token, tag) of an ack; a refused publish shows as seq 0.
    fn ack_of(msg: &WorkerMsg) -> (u64, usize, usize, u64) {
        match msg {
            WorkerMsg::PublishAck { reply, outcome: Ok(done) } => (done.seq, done.delivered, reply.conn, reply.tag),
            WorkerMsg::PublishAck { reply, outcome: Err(_) } => (0, 0, reply.conn, reply.tag),
            other => panic!("expected an ack, got {other:?}"),
        }
    }

    #[test]
    fn routes_exact_and_pattern_interest_once_per_worker() {
        let mut r = rig(&[16, 16], HistoryLimits::default());
        r.interest(0, "/a/b", true, 0);
        r.interest(0, "/a/**", true, 0);
        r.interest(1, "/a/*", true, 0);
        r.publish("/a/b", None); // 1: both (worker 0 twice over, once delivered)
        r.publish("/a/c", None); // 2: both
        r.publish("/a/b/c", None); // 3: worker 0 only
        r.publish("/x", None); // 4: nobody
        assert_eq!(delivered_seqs(&r.sync(0)), [(1, false), (2, false), (3, false)]);
        assert_eq!(delivered_seqs(&r.sync(1)), [(1, false), (2, false)]);

        r.interest(0, "/a/**", false, 0);
        r.interest(1, "/a/*", false, 0);
        r.publish("/a/b", None); // 7: worker 0 (exact) only
        r.publish("/a/c", None); // 8: nobody
        assert_eq!(delivered_seqs(&r.sync(0)), [(7, false)]);
        assert!(r.sync(1).is_empty());
        let stats = &r.hub.stats;
        assert_eq!(stats.published.load(Ordering::Relaxed), 10);
        assert_eq!(stats.forwarded.load(Ordering::Relaxed), 6);
        r.hub.shutdown().expect("clean exit");
    }

    #[test]
    fn loaded_history_wakes_the_workers_subscribed_to_it() {
        let mut r = rig(&[16, 16], HistoryLimits::default());
        r.interest(0, "/cold", true, 0);
        r.interest(1, "/cold/*", true, 0);
        r.interest(1, "/warm", true, 0);
        r.send(HubCmd::Loaded(vec![Selector::parse("/cold").expect("selector")]));
        let seen = r.sync(0);
        assert!(matches!(seen.as_slice(), [WorkerMsg::Wake(s)] if s.as_str() == "/cold"), "{seen:?}");
        assert!(r.sync(1).is_empty(), "a worker on other selectors is not woken");
        r.send(HubCmd::Loaded(vec![Selector::parse("/cold/*").expect("selector")]));
        let seen = r.sync(1);
        assert!(matches!(seen.as_slice(), [WorkerMsg::Wake(s)] if s.as_str() == "/cold/*"), "{seen:?}");
        assert!(r.sync(0).is_empty());
    }

    #[test]
    fn late_interest_gets_a_wake() {
        let mut r = rig(&[16, 16], HistoryLimits::default());
        r.publish("/late", None); // head 1, nobody interested yet
        r.interest(0, "/late", true, 0); // read history at head 0: missed seq 1
        r.interest(1, "/late", true, 1); // read at head 1: nothing missed
        let seen = r.sync(0);
        assert!(matches!(seen.as_slice(), [WorkerMsg::Wake(Selector::Exact(t))] if &**t == "/late"), "{seen:?}");
        assert!(r.sync(1).is_empty());
        // Pattern interest takes the same path.
        r.interest(1, "/late/*", true, 0);
        let seen = r.sync(1);
        assert!(matches!(seen.as_slice(), [WorkerMsg::Wake(s)] if s.as_str() == "/late/*"), "{seen:?}");
    }

    #[test]
    fn ack_counts_reported_deliveries() {
        let mut r = rig(&[16, 16], HistoryLimits::default());
        // Nobody interested: acked at once with 0.
        let tag = r.publish("/quiet", Some(1));
        let seen = r.workers[1].until_ack(tag);
        assert_eq!(seen.len(), 1);
        assert_eq!(ack_of(&seen[0]), (1, 0, 101, tag));

        r.interest(0, "/t", true, 1);
        r.interest(1, "/t/*", true, 1);
        r.interest(1, "/t", true, 1);
        let tag = r.publish("/t", Some(0));
        for (worker, count) in [(0, 3), (1, 4)] {
            match r.workers[worker].next() {
                WorkerMsg::Deliver { msg, report: true } => {
                    assert_eq!(msg.seq, 2);
                    r.send(HubCmd::Delivered { worker, seq: msg.seq, count });
                }
                other => panic!("expected a reported delivery, got {other:?}"),
            }
        }
        let seen = r.workers[0].until_ack(tag);
        assert_eq!(ack_of(seen.last().expect("ack")), (2, 7, 100, tag));
        // A duplicate or unknown report changes nothing.
        r.send(HubCmd::Delivered { worker: 1, seq: 2, count: 50 });
        r.send(HubCmd::Delivered { worker: 1, seq: 999, count: 50 });
        assert!(r.sync(0).is_empty());
    }

    #[test]
    fn an_unanswered_ack_is_settled_after_the_timeout() {
        let mut r = rig(&[16, 16], HistoryLimits::default());
        r.interest(0, "/t", true, 0);
        let tag = r.publish("/t", Some(1));
        assert!(matches!(r.workers[0].next(), WorkerMsg::Deliver { report: true, .. }));
        // Worker 0 never reports. Nothing is acked before the deadline...
        assert!(r.sync(1).is_empty());
        // ...and at the first expiry tick after it, the ack goes out with what was counted.
        r.clock.fetch_add(millis(ACK_TIMEOUT) + 1, Ordering::SeqCst);
        r.publish("/sync", None); // a command, so the hub runs a round now
        let seen = r.workers[1].until_ack(tag);
        assert_eq!(ack_of(seen.last().expect("ack")), (1, 0, 101, tag));
    }

    #[test]
    fn a_gone_worker_does_not_hold_up_acks() {
        let mut r = rig(&[16, 16], HistoryLimits::default());
        r.interest(0, "/d", true, 0);
        r.interest(1, "/d", true, 0);
        drop(r.workers.pop()); // worker 1's receiver is gone
        r.senders.pop();
        let tag = r.publish("/d", Some(0));
        match r.workers[0].next() {
            WorkerMsg::Deliver { msg, report: true } => {
                r.send(HubCmd::Delivered { worker: 0, seq: msg.seq, count: 2 });
            }
            other => panic!("expected a reported delivery, got {other:?}"),
        }
        let seen = r.workers[0].until_ack(tag);
        assert_eq!(ack_of(seen.last().expect("ack")), (1, 2, 100, tag));
        assert_eq!(r.hub.stats.dropped_batches.load(Ordering::Relaxed), 1);
        // Later publishes skip it without dropping anything more.
        r.publish("/d", None);
        assert_eq!(delivered_seqs(&r.sync(0)), [(2, false)]);
        assert_eq!(r.hub.stats.dropped_batches.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_wedged_worker_loses_batches_not_history() {
        let mut r = rig(&[16, 1], HistoryLimits::default());
        r.interest(0, "/w", true, 0);
        r.interest(1, "/w", true, 0);
        r.senders[1].send(Vec::new()).expect("fill worker 1's channel");
        let tag = r.publish("/w", Some(0));
        match r.workers[0].next() {
            WorkerMsg::Deliver { msg, report: true } => {
                r.send(HubCmd::Delivered { worker: 0, seq: msg.seq, count: 1 });
            }
            other => panic!("expected a reported delivery, got {other:?}"),
        }
        // Worker 1's report is not awaited: its batch was dropped.
        let seen = r.workers[0].until_ack(tag);
        assert_eq!(ack_of(seen.last().expect("ack")), (1, 1, 100, tag));
        assert!(r.hub.stats.dropped_batches.load(Ordering::Relaxed) >= 1);
        // The message is still in history for worker 1 to read.
        let mut out = Vec::new();
        let sel = [Selector::parse("/w").expect("selector")];
        r.store.read(&sel, 0, 10, &mut out);
        assert_eq!(out.len(), 1);
        // Once worker 1 drains its channel it gets batches again.
        assert_eq!(r.workers[1].rx.try_recv().map(|b| b.len()), Ok(0));
        r.publish("/w", None);
        assert_eq!(delivered_seqs(&r.sync(1)), [(2, false)]);
    }

    #[test]
    fn expiry_removes_idle_topics_and_timestamps_never_go_back() {
        let limits = HistoryLimits { max_age: Duration::from_secs(60), ..HistoryLimits::default() };
        let mut r = rig(&[16], limits);
        r.publish("/idle", None); // 1 at t0
        r.publish("/idle", None); // 2 at t0
        r.sync(0); // 3 at t0
        assert_eq!(r.store.last_seq("/idle"), 2);
        assert_eq!(r.store.stats().topics, 2);

        r.clock.fetch_add(61_000, Ordering::SeqCst);
        r.publish("/fresh", None); // the round that carries it expires first
        r.sync(0);
        let StoreStats { topics, messages, expired, .. } = r.store.stats();
        assert_eq!((topics, messages, expired), (2, 2, 3), "only /fresh and /sync remain");
        assert_eq!(r.store.last_seq("/idle"), 0);

        // A clock that steps back does not make timestamps go back.
        r.clock.fetch_sub(30_000, Ordering::SeqCst);
        r.publish("/fresh", None); // 6
        r.sync(0);
        let mut out = Vec::new();
        r.store.read(&[Selector::parse("/fresh").expect("selector")], 0, 10, &mut out);
        let times: Vec<(u64, u64)> = out.iter().map(|m| (m.seq, m.time_ms)).collect();
        assert_eq!(times, [(4, 1_061_000), (6, 1_061_000)]);
    }

    #[test]
    fn invalid_topic_is_refused() {
        let mut r = rig(&[16], HistoryLimits::default());
        let tag = r.publish("not/a/topic", Some(0));
        let seen = r.workers[0].until_ack(tag);
        assert_eq!(ack_of(&seen[0]), (0, 0, 100, tag));
        assert_eq!(r.store.head(), 0);
        assert_eq!(r.hub.stats.rejected.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn stops_when_every_sender_is_gone() {
        let r = rig(&[16], HistoryLimits::default());
        let Rig { hub, .. } = r;
        let HubHandle { tx, join, .. } = hub;
        drop(tx);
        join.join().expect("clean exit");
    }

    #[test]
    fn worker_set_operations() {
        let mut a = WorkerSet::default();
        assert!(a.is_empty());
        for w in [0, 5, 63, 64, 200] {
            a.insert(w);
            assert!(a.contains(w));
        }
        assert_eq!(a.iter().collect::<Vec<_>>(), [0, 5, 63, 64, 200]);
        let mut b = WorkerSet::default();
        b.insert(5);
        b.insert(300);
        a.union_with(&b);
        assert_eq!(a.iter().collect::<Vec<_>>(), [0, 5, 63, 64, 200, 300]);
        a.difference_with(&b);
        assert_eq!(a.iter().collect::<Vec<_>>(), [0, 63, 64, 200]);
        for w in [0, 63, 64, 200] {
            a.remove(w);
        }
        assert!(a.is_empty() && !a.contains(64));
        a.remove(10_000);
        b.clear();
        assert!(b.is_empty());
    }
}
