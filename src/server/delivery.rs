//! Delivery to parked long-polls: subscribing (park, or answer at once), the local
//! subscription index (`watch`/`unwatch`, telling the hub about selectors new to this worker),
//! resuming a parked request when the hub forwards a message or its timer fires, and the
//! reply cache that lets every subscriber woken by one broadcast share one history read and
//! one encoding.

use std::mem;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::conn::{Parked, ParkedFormat, Phase, ReplyMeta, Vacated};
use super::event_loop::Worker;
use super::stats::WorkerStats;
use super::subs::InterestChange;
use crate::http::Request;
use crate::hub::HubCmd;
use crate::model::{Message, Selector, Since};
use crate::protocol::native::{self, Delivery};
use crate::transport::{jsonp, longpoll, Control, Transport};

impl Worker {
    pub(super) fn subscribe(&mut self, key: usize, meta: ReplyMeta, topics: &str, req: &Request) {
        let config = &self.shared.config;
        let sub = match native::parse_subscribe(topics, req, config.longpoll.max_timeout) {
            Ok(sub) => sub,
            Err(bad) => return self.conns.refuse(key, meta, bad.into()),
        };
        let transport = match native::select_transport(req) {
            Ok(Delivery::Http(transport)) => transport,
            Ok(Delivery::WebSocket) => {
                return self.upgrade_websocket(key, meta, req, sub.selectors, sub.since);
            }
            Err(bad) => return self.conns.refuse(key, meta, bad.into()),
        };
        let store = &self.shared.store;
        let resume = sub.since.resolve(store.epoch(), store.head());
        let gaps = match (resume.reset, sub.since) {
            // The cursor names another epoch (a restart): what it missed is unknown.
            (true, _) => Gaps::Reset,
            // A client asking for everything gets everything there is; no gap to report.
            (false, Since::All) => Gaps::Hide,
            (false, _) => Gaps::Report,
        };
        let default_timeout = config.longpoll.timeout;
        let (format, poll) = match transport {
            // HEAD gets the headers of a poll; a stream has no length to describe.
            Transport::Stream(kind) if !meta.head_only => {
                return self.start_stream(key, meta, kind, sub.selectors, resume, gaps);
            }
            Transport::Stream(_) | Transport::Poll => (ParkedFormat::Json, true),
            Transport::LongPoll => (ParkedFormat::Json, false),
            Transport::Jsonp { callback } => (ParkedFormat::Jsonp(callback), false),
        };
        let timeout = match sub.timeout {
            Some(timeout) => timeout,
            None => self.jittered(default_timeout),
        };
        let parked = Parked { selectors: sub.selectors.into_boxed_slice(), cursor: resume.after, reply: meta, format };
        let when = if poll || timeout.is_zero() || meta.head_only { When::Now } else { When::IfAny };
        self.park(key, parked, when, gaps, timeout);
    }

    /// Answers `parked` at once if history already has something for it (or `When::Now`, or
    /// shutting down); otherwise suspends the request: registered on its selectors, counted,
    /// recorded as its session's listening connection (if it has one), with its timer.
    pub(super) fn park(&mut self, key: usize, parked: Parked, when: When, gaps: Gaps, timeout: Duration) {
        let when = if self.shutdown_deadline.is_some() { When::Now } else { when };
        let seen_head = match self.answer(key, &parked, when, gaps) {
            Answer::Sent => return,
            Answer::Nothing { head } => head,
        };
        self.watch(key, &parked.selectors, seen_head);
        WorkerStats::add(&self.stats().parked, 1);
        if let Some(skey) = parked.format.session() {
            if let Some(entry) = self.sessions.slab.get_mut(skey) {
                entry.listening = Some(key);
            }
        }
        if let Some(conn) = self.conns.get_mut(key) {
            conn.state.park(Box::new(parked));
        }
        self.conns.set_timer(key, timeout);
    }

    /// Registers `key` on its selectors, telling the hub about selectors new to this worker.
    pub(super) fn watch(&mut self, key: usize, selectors: &[Selector], seen_head: u64) {
        for selector in selectors {
            if let Some(InterestChange::On(selector)) = self.subs.add(selector, key) {
                self.hub.tell(HubCmd::Interest { worker: self.id, selector, on: true, seen_head });
            }
        }
    }

    pub(super) fn unwatch(&mut self, key: usize, selectors: &[Selector]) {
        let now = Instant::now();
        for selector in selectors {
            self.subs.remove(selector, key, now);
        }
    }

    /// Reads history after the subscription's cursor and answers if there is anything to say
    /// (messages, or a gap), or unconditionally with `When::Now` (timeout, poll, shutdown).
    pub(super) fn answer(&mut self, key: usize, parked: &Parked, when: When, gaps: Gaps) -> Answer {
        let jsonp = match &parked.format {
            ParkedFormat::Json => None,
            ParkedFormat::Jsonp(callback) => Some(callback),
            ParkedFormat::Bayeux(hold) => return self.answer_bayeux(key, parked, hold, when),
            ParkedFormat::Pushlet(hold) => return self.answer_pushlet(key, parked, hold, when),
        };
        // Subscribers woken together by a broadcast usually share selectors and cursor: the
        // first one's reply (head included) is reused by the rest of this turn.
        let cacheable = self.caching && when == When::IfAny && gaps == Gaps::Report;
        if cacheable {
            if let Some(cached) = self.reply_cache.take() {
                let hit = cached.fits(parked);
                if hit {
                    self.count_messages(&cached.msgs);
                    self.conns.queue_response(
                        key,
                        parked.reply,
                        cached.parts[0].clone(),
                        cached.parts[1..].iter().cloned(),
                    );
                }
                self.reply_cache = Some(cached);
                if hit {
                    return Answer::Sent;
                }
            }
        }
        self.scratch_msgs.clear();
        let store = &self.shared.store;
        let read =
            store.read(&parked.selectors, parked.cursor, self.shared.config.longpoll.max_batch, &mut self.scratch_msgs);
        let gap = gaps.reported(read.gap);
        if self.scratch_msgs.is_empty() && !gap && when == When::IfAny {
            return Answer::Nothing { head: read.head };
        }
        let next = read.next_cursor(parked.cursor, &self.scratch_msgs);
        let info = longpoll::ReplyInfo { epoch: store.epoch(), next, gap, oldest: read.oldest };
        let mut parts = mem::take(&mut self.scratch_parts);
        parts.clear();
        let head = match jsonp {
            None => {
                let len = longpoll::encode(&self.scratch_msgs, &info, &mut parts);
                let headers = [("Cache-Control", "no-store")];
                self.conns.response_head(parked.reply, 200, "application/json", &headers, len)
            }
            Some(callback) => {
                let len = jsonp::encode(callback, &self.scratch_msgs, &info, &mut parts);
                let headers = [("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff")];
                self.conns.response_head(parked.reply, 200, jsonp::CONTENT_TYPE, &headers, len)
            }
        };
        let msgs = mem::take(&mut self.scratch_msgs);
        self.count_messages(&msgs);
        if cacheable {
            let mut all = Vec::with_capacity(parts.len() + 1);
            all.push(head.clone());
            all.extend(parts.iter().cloned());
            self.reply_cache = Some(CachedReply {
                selectors: parked.selectors.clone(),
                cursor: parked.cursor,
                jsonp: jsonp.cloned(),
                meta: parked.reply,
                parts: all,
                msgs: msgs.clone(),
            });
        }
        self.scratch_msgs = msgs;
        self.conns.queue_response(key, parked.reply, head, parts.drain(..));
        self.scratch_parts = parts;
        Answer::Sent
    }

    /// Counts the messages in `scratch_msgs` as delivered.
    pub(super) fn count_deliveries(&mut self) {
        let msgs = mem::take(&mut self.scratch_msgs);
        self.count_messages(&msgs);
        self.scratch_msgs = msgs;
    }

    /// Counts `msgs` as delivered to one subscriber: stats, and the per-message counts for
    /// publishers waiting on an acknowledgement.
    pub(super) fn count_messages(&mut self, msgs: &[Arc<Message>]) {
        if !self.reports.is_empty() {
            for msg in msgs {
                if let Some(count) = self.reports.get_mut(&msg.seq) {
                    *count += 1;
                }
            }
        }
        WorkerStats::add(&self.stats().delivered, msgs.len() as u64);
    }

    /// Answers a subscriber now instead of when a message comes (shutdown, or its session's
    /// listen released by a newer request): a parked request gets its reply with the cursor,
    /// a stream ends with its resume cursor. Sockets end their own way (the callers know how).
    pub(super) fn answer_now(&mut self, key: usize) {
        let Some(conn) = self.conns.get(key) else { return };
        match conn.state.phase() {
            Phase::Parked => self.resume(key, When::Now),
            Phase::Streaming => {
                let next = conn.state.streaming().map_or(0, |stream| stream.cursor);
                self.end_stream(key, Control::End { next });
            }
            _ => return,
        }
        self.pump(key);
    }

    /// Resumes a parked long-poll if it has something to answer (or `force`).
    pub(super) fn resume(&mut self, key: usize, when: When) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        match conn.state.phase() {
            Phase::Streaming => return self.feed_stream(key, Gaps::Report),
            Phase::Duplex => return self.feed_duplex(key),
            _ => {}
        }
        let Some(parked) = conn.state.unpark() else { return };
        match self.answer(key, &parked, when, Gaps::Report) {
            Answer::Sent => self.retire_phase(key, &Vacated::parked(parked)),
            Answer::Nothing { .. } => {
                if let Some(conn) = self.conns.get_mut(key) {
                    conn.state.park(parked);
                }
            }
        }
    }

    /// A long-poll hold with ±10% jitter, so subscribers that connected together don't all
    /// come back in the same millisecond.
    fn jittered(&mut self, base: Duration) -> Duration {
        base.mul_f64(0.9 + 0.2 * self.rng.unit())
    }
}

/// A long-poll reply shared by the subscribers of one hub turn; see `Worker::answer`.
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
