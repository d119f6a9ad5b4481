//! Delivery to parked long-polls: subscribing (park, or answer at once), the local
//! subscription index (`watch`/`unwatch`, telling the hub about selectors new to this worker),
//! resuming a parked request when the hub forwards a message or its timer fires, and the
//! reply cache that lets every subscriber woken by one broadcast share one history read and
//! one encoding.

use std::mem;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustc_hash::FxHashMap;

use super::conn::{Parked, ParkedFormat, ReplyMeta, Vacated};
use super::conns::Conns;
use super::core::Core;
use super::dispatch;
use super::duplex;
use super::publish::HubLink;
use super::sessions::bayeux as bayeux_session;
use super::sessions::pushlet as pushlet_session;
use super::stats::WorkerStats;
use super::stream;
use super::subs::{InterestChange, LocalSubs};
use super::subscriber;
use super::Shared;
use crate::http::Request;
use crate::hub::HubCmd;
use crate::model::{Message, Selector, Since};
use crate::protocol::native;
use crate::transport::{jsonp, longpoll, Transport};
use crate::xorshift::XorShift;

pub(super) fn subscribe(core: &mut Core, key: usize, meta: ReplyMeta, topics: &str, req: &Request) {
    let config = &core.shared.config;
    let sub = match native::parse_subscribe(topics, req, config.longpoll.max_timeout) {
        Ok(sub) => sub,
        Err(bad) => return core.conns.refuse(key, meta, bad.into()),
    };
    let grant = match dispatch::may_read(core, key, req, &sub.selectors) {
        Ok(grant) => grant,
        Err(denied) => return core.conns.refuse(key, meta, denied),
    };
    let transport = match native::select_transport(req) {
        Ok(native::Delivery::Http(transport)) => transport,
        Ok(native::Delivery::WebSocket) => {
            return duplex::upgrade_websocket(core, key, meta, req, sub.selectors, sub.since, grant);
        }
        Err(bad) => return core.conns.refuse(key, meta, bad.into()),
    };
    let store = &core.shared.store;
    let resume = sub.since.resolve(store.epoch(), store.head());
    // A client asking for everything gets everything there is; no gap to report.
    let history_gaps = if sub.since == Since::All { Gaps::Hide } else { Gaps::Report };
    let default_timeout = config.longpoll.timeout;
    let (format, poll) = match transport {
        // HEAD gets the headers of a poll; a stream has no length to describe.
        // A reset cursor is told once, in the stream's first frames (`stream::start`); the
        // feed then reports only gaps it finds in history.
        Transport::Stream(kind) if !meta.head_only => {
            stream::start(core, key, meta, kind, sub.selectors, resume, history_gaps);
            if let Some(expires_ms) = grant.expires_ms() {
                stream::expire_at(&mut core.conns, key, expires_ms);
            }
            return;
        }
        Transport::Stream(_) | Transport::Poll => (ParkedFormat::Json, true),
        Transport::LongPoll => (ParkedFormat::Json, false),
        Transport::Jsonp { callback } => (ParkedFormat::Jsonp(callback), false),
    };
    let timeout = match sub.timeout {
        Some(timeout) => timeout,
        None => jittered(core, default_timeout),
    };
    let parked = Parked { selectors: sub.selectors.into_boxed_slice(), cursor: resume.after, reply: meta, format };
    let when = if poll || timeout.is_zero() || meta.head_only { When::Now } else { When::IfAny };
    // The cursor names another epoch (a restart): what it missed is unknown.
    let gaps = if resume.reset { Gaps::Reset } else { history_gaps };
    park(core, key, parked, when, gaps, timeout);
}

/// Answers `parked` at once if history already has something for it (or `When::Now`, or
/// shutting down); otherwise suspends the request: registered on its selectors, counted,
/// recorded as its session's listening connection (if it has one), with its timer.
pub(super) fn park(core: &mut Core, key: usize, parked: Parked, when: When, gaps: Gaps, timeout: Duration) {
    let when = if core.conns.is_shutting_down() { When::Now } else { when };
    let seen_head = match answer(core, key, &parked, when, gaps) {
        Answer::Sent => return,
        Answer::Nothing { head } => head,
    };
    core.delivery.watch(&mut core.hub, key, &parked.selectors, seen_head);
    if let Some(skey) = parked.format.session() {
        core.sessions.listen(skey, key);
    }
    if let Some(conn) = core.conns.get_mut(key) {
        conn.state.park(Box::new(parked));
    }
    subscriber::enlist(core, key);
    core.conns.set_timer(key, timeout);
}

/// Reads history after the subscription's cursor and answers if there is anything to say
/// (messages, or a gap), or unconditionally with `When::Now` (timeout, poll, shutdown).
pub(super) fn answer(core: &mut Core, key: usize, parked: &Parked, when: When, gaps: Gaps) -> Answer {
    let jsonp = match &parked.format {
        ParkedFormat::Json => None,
        ParkedFormat::Jsonp(callback) => Some(callback),
        ParkedFormat::Bayeux(hold) => return bayeux_session::answer(core, key, parked, hold, when),
        ParkedFormat::Pushlet(hold) => return pushlet_session::answer(core, key, parked, hold, when),
    };
    // Subscribers woken together by a broadcast usually share selectors and cursor: the
    // first one's reply (head included) is reused by the rest of this turn.
    if core.delivery.answer_from_cache(&mut core.conns, key, parked, when, gaps) {
        return Answer::Sent;
    }
    let delivery = &mut core.delivery;
    delivery.msgs.clear();
    let store = &core.shared.store;
    let read = store.read(&parked.selectors, parked.cursor, core.shared.config.longpoll.max_batch, &mut delivery.msgs);
    let gap = gaps.reported(read.gap);
    if gap {
        WorkerStats::add(&core.shared.stats[core.id].gaps, 1);
    }
    // A truncated read stopped at the store's work bound, maybe before finding anything: the
    // reply carries the cursor it reached, and the client polls on from there.
    if delivery.msgs.is_empty() && !gap && !read.truncated && when == When::IfAny {
        return Answer::Nothing { head: read.head };
    }
    let next = read.next_cursor(parked.cursor, &delivery.msgs);
    let info = longpoll::ReplyInfo { epoch: store.epoch(), next, gap, oldest: read.oldest };
    let mut parts = mem::take(&mut delivery.parts);
    parts.clear();
    let head = match jsonp {
        None => {
            let len = longpoll::encode(&delivery.msgs, &info, &mut parts);
            let headers = [("Cache-Control", "no-store")];
            core.conns.response_head(parked.reply, 200, "application/json", &headers, len)
        }
        Some(callback) => {
            let len = jsonp::encode(callback, &delivery.msgs, &info, &mut parts);
            let headers = [("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff")];
            core.conns.response_head(parked.reply, 200, jsonp::CONTENT_TYPE, &headers, len)
        }
    };
    delivery.count_read();
    delivery.remember(parked, when, gaps, &head, &parts);
    core.conns.queue_response(key, parked.reply, head, parts.drain(..));
    core.delivery.parts = parts;
    Answer::Sent
}

/// Resumes a parked request: answered if it has something to say (or `When::Now`), parked
/// again otherwise.
pub(super) fn resume(core: &mut Core, key: usize, when: When) {
    let Some(conn) = core.conns.get_mut(key) else { return };
    let Some(parked) = conn.state.unpark() else { return };
    match answer(core, key, &parked, when, Gaps::Report) {
        Answer::Sent => subscriber::retire(core, key, &Vacated::parked(parked)),
        Answer::Nothing { .. } => {
            if let Some(conn) = core.conns.get_mut(key) {
                conn.state.park(parked);
            }
        }
    }
}

/// A long-poll hold with ±10% jitter, so subscribers that connected together don't all
/// come back in the same millisecond.
fn jittered(core: &mut Core, base: Duration) -> Duration {
    base.mul_f64(0.9 + 0.2 * core.delivery.rng.unit())
}

/// Messages whose fan-out latency one hub turn records at most (a turn delivers few fresh
/// messages: those of the batches it drained); past it the rest go unrecorded.
const MAX_FRESH_PER_TURN: usize = 4096;

/// A long-poll reply shared by the subscribers of one hub turn; see `answer`.
pub(super) struct CachedReply {
    selectors: Box<[Selector]>,
    cursor: u64,
    jsonp: Option<Box<str>>,
    meta: ReplyMeta,
    /// The response head, then the body slices.
    parts: Vec<Bytes>,
    msgs: Vec<Arc<Message>>,
}

impl CachedReply {
    fn fits(&self, parked: &Parked) -> bool {
        self.cursor == parked.cursor
            && self.meta == parked.reply
            && match (&self.jsonp, &parked.format) {
                (None, ParkedFormat::Json) => true,
                (Some(a), ParkedFormat::Jsonp(b)) => a == b,
                _ => false,
            }
            && self.selectors == parked.selectors
    }
}

/// The result of trying to answer a subscription.
pub(super) enum Answer {
    Sent,
    /// Nothing to say yet; `head` is the store head the read saw.
    Nothing {
        head: u64,
    },
}

/// When a subscription is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum When {
    /// Only if history has something to say (messages, or a gap); otherwise it waits.
    IfAny,
    /// Now, even with nothing to say: a poll, a timeout, shutdown, a listen released by a
    /// newer one.
    Now,
}

/// Which gaps in history a reply reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Gaps {
    /// Messages after the cursor that history no longer holds (the usual case).
    Report,
    /// None: the client asked for everything there is (`since=all`).
    Hide,
    /// The cursor is from another epoch (the server restarted): a gap whatever history holds.
    Reset,
}

impl Gaps {
    /// Whether a reply reports a gap, given whether the history read found one.
    pub(super) fn reported(self, read_gap: bool) -> bool {
        match self {
            Gaps::Report => read_gap,
            Gaps::Hide => false,
            Gaps::Reset => true,
        }
    }
}

/// What the worker knows about its subscribers beyond their connections: which connection
/// waits on which selector (the local index, whose changes the hub hears about), the
/// deliveries to count for publishers waiting on an acknowledgement, the reply shared by the
/// subscribers one broadcast woke, and the buffers every history read reuses.
pub(super) struct Delivery {
    pub(super) subs: LocalSubs,
    /// The reply of this hub turn's first subscriber, for the others with the same
    /// subscription and cursor (the broadcast case): one history read and one encoding.
    cache: Option<CachedReply>,
    /// True while resuming the subscribers of one hub turn (the only time the cache is used).
    caching: bool,
    /// Deliveries to count for publishers waiting on an acknowledgement, by message seq.
    reports: FxHashMap<u64, usize>,
    /// What the last history read returned (reused by every read).
    pub(super) msgs: Vec<Arc<Message>>,
    /// The slices of a reply being built (reused by every reply).
    pub(super) parts: Vec<Bytes>,
    /// Jitter for long-poll holds and Pushlet refresh advice.
    pub(super) rng: XorShift,
    /// The highest seq delivered here in a hub turn: each message's fan-out latency is
    /// recorded once per worker, in the turn that first delivered it (`record_latency`).
    latency_mark: u64,
    /// The lowest seq the hub forwarded for this turn (`u64::MAX`: none): older messages a
    /// subscriber reads in the turn are catch-up, not fan-out.
    forwarded_from: u64,
    /// The hub timestamps (`time_ms`) of the messages this turn delivered first here.
    fresh: Vec<u64>,
    worker: usize,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery").field("reports", &self.reports.len()).field("caching", &self.caching).finish()
    }
}

impl Delivery {
    pub(super) fn new(worker: usize, shared: Arc<Shared>, rng: XorShift) -> Delivery {
        Delivery {
            subs: LocalSubs::default(),
            cache: None,
            caching: false,
            reports: FxHashMap::default(),
            msgs: Vec::new(),
            parts: Vec::new(),
            rng,
            latency_mark: 0,
            forwarded_from: u64::MAX,
            fresh: Vec::new(),
            worker,
            shared,
        }
    }

    /// Registers `key` on its selectors, telling the hub about selectors new to this worker.
    pub(super) fn watch(&mut self, hub: &mut HubLink, key: usize, selectors: &[Selector], seen_head: u64) {
        for selector in selectors {
            if let Some(InterestChange::On(selector)) = self.subs.add(selector, key) {
                hub.tell(HubCmd::Interest { worker: self.worker, selector, on: true, seen_head });
            }
        }
    }

    /// Takes `key` off its selectors (a selector with no subscriber left lingers; see `subs`),
    /// telling the hub about lingers dropped to keep the lingering bounded.
    pub(super) fn unwatch(&mut self, hub: &mut HubLink, key: usize, selectors: &[Selector]) {
        let now = Instant::now();
        let mut dropped = Vec::new();
        for selector in selectors {
            self.subs.remove(selector, key, now, &mut dropped);
        }
        for change in dropped {
            if let InterestChange::Off(selector) = change {
                hub.tell(HubCmd::Interest { worker: self.worker, selector, on: false, seen_head: 0 });
            }
        }
    }

    /// A publisher waits for the count of subscribers message `seq` reaches on this worker.
    pub(super) fn expect_report(&mut self, seq: u64) {
        self.reports.insert(seq, 0);
    }

    /// Counts the messages of the last history read (`msgs`) as delivered to one subscriber.
    pub(super) fn count_read(&mut self) {
        let msgs = mem::take(&mut self.msgs);
        self.count(&msgs);
        self.msgs = msgs;
    }

    /// Counts `msgs` as delivered to one subscriber: stats, the per-message counts for
    /// publishers waiting on an acknowledgement, and in a hub turn their fan-out latency.
    /// Every transport calls this right after queueing `msgs` to the subscriber's socket.
    pub(super) fn count(&mut self, msgs: &[Arc<Message>]) {
        if !self.reports.is_empty() {
            for msg in msgs {
                if let Some(count) = self.reports.get_mut(&msg.seq) {
                    *count += 1;
                }
            }
        }
        WorkerStats::add(&self.shared.stats[self.worker].delivered, msgs.len() as u64);
        if self.caching {
            self.note_fresh(msgs);
        }
    }

    /// The hub forwarded message `seq` for the coming turn.
    pub(super) fn forwarded(&mut self, seq: u64) {
        self.forwarded_from = self.forwarded_from.min(seq);
    }

    /// Notes the messages of `msgs` that the hub forwarded for this turn and that no
    /// subscriber here had in an earlier delivery, for their fan-out latency (recorded at the
    /// end of the turn, `end_turn`).
    fn note_fresh(&mut self, msgs: &[Arc<Message>]) {
        for msg in msgs {
            if msg.seq >= self.forwarded_from && msg.seq > self.latency_mark && self.fresh.len() < MAX_FRESH_PER_TURN {
                self.latency_mark = msg.seq;
                self.fresh.push(msg.time_ms);
            }
        }
    }

    /// The subscribers of one hub turn are being resumed: replies may be shared among them.
    pub(super) fn begin_turn(&mut self) {
        self.caching = true;
    }

    /// The turn is over: the cached reply described history as it was in this turn (the next
    /// turn reads anew), each publisher's deliveries here are reported to the hub, and the
    /// fan-out latency of the messages it delivered is recorded.
    pub(super) fn end_turn(&mut self, hub: &mut HubLink) {
        self.caching = false;
        self.cache = None;
        for (seq, count) in self.reports.drain() {
            hub.tell(HubCmd::Delivered { worker: self.worker, seq, count });
        }
        self.record_latency();
        self.forwarded_from = u64::MAX;
    }

    /// Records, for each message this turn delivered first here, how long after the hub
    /// sequenced it (`time_ms`) the turn had it queued to every subscriber it woke: the
    /// fan-out latency in `/stats`. It is queue time, not wire time.
    ///
    /// Once per message per worker, at the end of the turn: every subscriber of the turn had
    /// it queued by then, so the figure bounds each subscriber's latency here and includes
    /// the turn's own length (the spread of a broadcast to many subscribers). A record per
    /// delivery would cost a clock read per subscriber on the broadcast path; this costs a
    /// comparison per subscriber, and one clock read and one uncontended lock per turn. Only
    /// messages the hub forwarded for the turn count, so a catch-up read of older history (a
    /// re-poll, `since=all`, a wake after a dropped batch) is not taken for fan-out.
    fn record_latency(&mut self) {
        if self.fresh.is_empty() {
            return;
        }
        let now_us = super::stats::unix_micros();
        let stats = &self.shared.stats[self.worker];
        let mut window = stats.latency.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for time_ms in self.fresh.drain(..) {
            window.record(now_us, now_us.saturating_sub(time_ms.saturating_mul(1000)));
        }
    }

    /// Whether a reply may come from, or go into, the cache.
    fn may_cache(&self, when: When, gaps: Gaps) -> bool {
        self.caching && when == When::IfAny && gaps == Gaps::Report
    }

    /// Answers `key` with this turn's cached reply if it fits `parked` (same selectors, cursor,
    /// format and reply metadata); true when it did.
    fn answer_from_cache(&mut self, conns: &mut Conns, key: usize, parked: &Parked, when: When, gaps: Gaps) -> bool {
        if !self.may_cache(when, gaps) {
            return false;
        }
        let Some(cached) = self.cache.take() else { return false };
        let hit = cached.fits(parked);
        if hit {
            self.count(&cached.msgs);
            conns.queue_response(key, parked.reply, cached.parts[0].clone(), cached.parts[1..].iter().cloned());
        }
        self.cache = Some(cached);
        hit
    }

    /// Keeps the reply just built for `parked` (its head, its body slices, and the messages of
    /// the last read) for the rest of this turn, when it may be shared.
    fn remember(&mut self, parked: &Parked, when: When, gaps: Gaps, head: &Bytes, parts: &[Bytes]) {
        if !self.may_cache(when, gaps) {
            return;
        }
        let jsonp = match &parked.format {
            ParkedFormat::Jsonp(callback) => Some(callback.clone()),
            _ => None,
        };
        let mut all = Vec::with_capacity(parts.len() + 1);
        all.push(head.clone());
        all.extend(parts.iter().cloned());
        self.cache = Some(CachedReply {
            selectors: parked.selectors.clone(),
            cursor: parked.cursor,
            jsonp,
            meta: parked.reply,
            parts: all,
            msgs: self.msgs.clone(),
        });
    }
}
