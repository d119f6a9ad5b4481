//! Publishing: a native `POST /pub` (and the WebSocket, Bayeux and Pushlet publishes, which
//! come through `send_publish`), its hand-off to the hub, the acknowledgement that comes back
//! (`201` with the message id and how many subscribers it reached), and a piggybacking
//! publish's long-poll reply. Also the worker's side of the hub channel for control messages:
//! never blocking, with a bounded backlog when the channel is full.
//!
//! Every publish reaches the hub through [`HubLink::publish`], which refuses what only the
//! server may write: a private topic (`/pushlet/to/...`, a Pushlet session's unicast inbox) and
//! JSON data with a top-level `p_from` (the sender a Pushlet subscriber is shown). The
//! Pushlet session core's own publishes, which set both, use [`HubLink::publish_stamped`].

use std::collections::VecDeque;
use std::mem;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::TrySendError;
use log::debug;

use super::conn::{Phase, Publishing, ReplyMeta};
use super::core::Core;
use super::dispatch;
use super::duplex;
use super::io;
use super::stats::WorkerStats;
use super::Shared;
use crate::http::{Reject, Request};
use crate::hub::{HubCmd, PublishRefused, PublishReq, Published, ReplyTo};
use crate::log_limit::LogLimit;
use crate::model::{is_json_content_type, is_private, MessageId, Selector, Since};
use crate::protocol::native::{self, Piggyback};
use crate::protocol::pushlet;
use crate::transport::longpoll;

/// How long to wait for the hub to acknowledge a publish before answering 504. Longer than
/// the hub's own settling of overdue acks (`hub::ACK_TIMEOUT` plus its expiry tick), so the
/// hub answers first whenever it stored the message.
const PUBLISH_ACK_TIMEOUT: Duration = Duration::from_secs(15);
/// Hub commands queued above which a publish is refused with 503 rather than queued, so
/// control messages always find room in the hub's channel.
pub(super) const HUB_PUBLISH_HIGH_WATER: usize = 48 * 1024;
/// Topics only the server publishes to (`/halley/stats`, from `feeds.rs`).
pub(super) const SERVER_TOPICS: &str = "/halley/";
/// Hub commands held locally while the hub's channel is full.
const MAX_HUB_BACKLOG: usize = 64 * 1024;

pub(super) fn publish(core: &mut Core, key: usize, meta: ReplyMeta, topic: &str, req: &Request, body: Vec<u8>) {
    if !dispatch::may_publish(&core.conns.access, req) {
        return core.conns.refuse(key, meta, Reject::forbidden("origin not allowed to publish"));
    }
    let meta = ReplyMeta { cors: dispatch::cors_for(&core.conns.access, req, true), ..meta };
    let mut publish = match native::parse_publish(topic, req, body) {
        Ok(p) => p,
        Err(bad) => return core.conns.refuse(key, meta, bad.into()),
    };
    let (policy, grant) = dispatch::grant_for(core, key, req);
    // A piggyback reads its topics in the reply: it needs the rights of a read of them too.
    let allowed = grant.and_then(|grant| {
        policy.may_publish(&grant, &publish.topic)?;
        match &publish.piggyback {
            Some(piggyback) => policy.may_subscribe(&grant, &piggyback.selectors),
            None => Ok(()),
        }
    });
    if let Err(denied) = allowed {
        return core.conns.refuse(key, meta, denied.into());
    }
    let piggyback = publish.piggyback.take().map(Box::new);
    let topic: Arc<str> = publish.topic.as_str().into();
    let idempotency_key = match idempotency_key(req) {
        Ok(k) => k,
        Err(bad) => return core.conns.refuse(key, meta, bad),
    };
    let tag = match core.hub.submit(key, publish, idempotency_key) {
        Ok(tag) => tag,
        Err(busy) => return core.conns.refuse(key, meta, busy),
    };
    if let Some(conn) = core.conns.get_mut(key) {
        conn.state.await_ack(Publishing { tag, reply: meta, topic, piggyback });
    }
    core.conns.set_timer(key, PUBLISH_ACK_TIMEOUT);
}

pub(super) fn acked(core: &mut Core, reply: ReplyTo, outcome: Result<Published, PublishRefused>) {
    let Some(conn) = core.conns.get_mut(reply.conn) else { return };
    if conn.state.phase() == Phase::Duplex {
        duplex::publish_acked(core, reply.conn, reply.tag, outcome);
        return io::pump(core, reply.conn);
    }
    // None: the publisher's connection is gone and its slot was reused.
    let Some(publishing) = conn.state.take_ack(Some(reply.tag)) else { return };
    let Publishing { reply: meta, topic, piggyback, .. } = *publishing;
    let Published { seq, time_ms, delivered } = match outcome {
        Ok(published) => published,
        Err(refused) => {
            // The hub refused it (it re-validates topics); tell the client rather than pretend.
            core.conns.refuse(reply.conn, meta, refused.into());
            return io::pump(core, reply.conn);
        }
    };
    let id = MessageId { epoch: core.shared.store.epoch(), seq };
    let ack = serde_json::json!({ "id": id.to_string(), "topic": &*topic, "time": time_ms, "delivered": delivered });
    let mut body = serde_json::to_vec(&ack).unwrap_or_default();
    match piggyback {
        None => core.conns.respond(reply.conn, meta, 201, "application/json", &[], Bytes::from(body)),
        Some(piggyback) => {
            // Same object, plus what is new on the publisher's topics: drop the closing
            // brace and append the long-poll members.
            body.pop();
            body.push(b',');
            respond_piggyback(core, reply.conn, meta, body, &piggyback);
        }
    }
    io::pump(core, reply.conn);
}

/// The rest of a piggybacking publish reply: what is new on the publisher's topics.
fn respond_piggyback(core: &mut Core, key: usize, meta: ReplyMeta, head: Vec<u8>, piggyback: &Piggyback) {
    let store = Arc::clone(&core.shared.store);
    let resume = piggyback.since.resolve(store.epoch(), store.head());
    core.delivery.msgs.clear();
    let read =
        store.read(&piggyback.selectors, resume.after, core.shared.config.longpoll.max_batch, &mut core.delivery.msgs);
    let next = read.next_cursor(resume.after, &core.delivery.msgs);
    let gap = resume.reset || (read.gap && piggyback.since != Since::All);
    if gap {
        WorkerStats::add(&core.shared.stats[core.id].gaps, 1);
    }
    let info = longpoll::ReplyInfo { epoch: store.epoch(), next, gap, oldest: read.oldest };
    let mut parts = mem::take(&mut core.delivery.parts);
    parts.clear();
    let mut len = head.len();
    parts.push(Bytes::from(head));
    len += longpoll::encode_members(&core.delivery.msgs, &info, &mut parts, |msg| msg.json(info.epoch).clone());
    core.delivery.count_read();
    core.conns.respond_parts(key, meta, 201, "application/json", &[], parts.drain(..), len);
    core.delivery.parts = parts;
}

/// The client-publish policy (`--client-publish`): which topics clients may publish to over
/// WebSocket, raw TCP, Bayeux and Pushlet. A topic is allowed when one of the configured
/// patterns matches it. `POST /pub` is the application's way in and is not limited by it.
#[derive(Debug, Clone)]
pub(super) struct ClientPublish(Arc<[Selector]>);

impl ClientPublish {
    pub(super) fn from_config(config: &crate::config::Config) -> ClientPublish {
        // Validated with the configuration, so nothing is dropped here.
        let patterns = config.access.client_publish.iter().filter_map(|p| Selector::parse(p).ok());
        ClientPublish(patterns.collect())
    }

    pub(super) fn allows(&self, topic: &str) -> bool {
        // By name: a private topic (a `p_to` unicast) is allowed where a pattern names it.
        self.0.iter().any(|pattern| pattern.names(topic))
    }
}

/// What a client is told when the hub refused its publish.
impl From<PublishRefused> for Reject {
    fn from(refused: PublishRefused) -> Reject {
        match refused {
            PublishRefused::InvalidTopic => Reject::bad_request("invalid topic"),
            PublishRefused::Unavailable(reason) => Reject::busy(reason, 1),
            PublishRefused::Conflict(reason) => Reject::new(409, reason),
        }
    }
}

/// Longest `Idempotency-Key` taken, in bytes.
const MAX_IDEMPOTENCY_KEY: usize = 128;

/// The publish's `Idempotency-Key` header: in cluster mode a publish retried with the same key
/// is stored once. 1 to 128 visible ASCII characters; anything else is refused with 400.
fn idempotency_key(req: &Request) -> Result<Option<Box<str>>, Reject> {
    let Some(value) = req.header("idempotency-key") else { return Ok(None) };
    if value.is_empty() || value.len() > MAX_IDEMPOTENCY_KEY || !value.iter().all(|b| b.is_ascii_graphic()) {
        return Err(Reject::bad_request("Idempotency-Key must be 1 to 128 visible ASCII characters"));
    }
    Ok(std::str::from_utf8(value).ok().map(Into::into))
}

/// The worker's side of the hub's channel. Publishes are refused when the channel is near full
/// (the client is told to retry); control messages (interest, delivery reports) never block
/// either: when the channel is full they wait in a bounded local queue, retried every turn in
/// order.
#[derive(Debug)]
pub(super) struct HubLink {
    worker: usize,
    /// The hub's channel is `shared.hub`; `shared` also holds this worker's counters.
    shared: Arc<Shared>,
    backlog: VecDeque<HubCmd>,
    next_tag: u64,
    /// Which topics WebSocket, raw TCP, Bayeux and Pushlet clients may publish to.
    pub(super) client_publish: ClientPublish,
}

impl HubLink {
    pub(super) fn new(worker: usize, shared: Arc<Shared>, client_publish: ClientPublish) -> HubLink {
        HubLink { worker, shared, backlog: VecDeque::new(), next_tag: 0, client_publish }
    }

    /// Hands a validated publish to the hub; the acknowledgement will come back tagged for
    /// connection `conn`. Refused (with the reason) when the hub's queue is near full.
    pub(super) fn submit(
        &mut self,
        conn: usize,
        publish: native::Publish,
        idempotency_key: Option<Box<str>>,
    ) -> Result<u64, Reject> {
        let tag = self.next_tag + 1;
        self.publish(PublishReq {
            topic: publish.topic.into(),
            event: publish.event,
            content_type: publish.content_type,
            data: publish.data,
            reply: Some(ReplyTo { worker: self.worker, conn, tag }),
            idempotency_key,
        })?;
        self.next_tag = tag;
        Ok(tag)
    }

    /// Queues a client's publish for the hub, every protocol's way in. Refused (with the
    /// reason) when it writes what only the server may (see the module doc), or when the hub's
    /// queue is near full, so control messages always find room in it.
    pub(super) fn publish(&mut self, req: PublishReq) -> Result<(), Reject> {
        if is_private(&req.topic) {
            return Err(Reject::forbidden("topics under /pushlet/to/ are private to their Pushlet session"));
        }
        if req.topic.starts_with(SERVER_TOPICS) {
            // What the server says about itself (the dashboard's stats) must not be forged.
            return Err(Reject::forbidden("topics under /halley/ are published by the server only"));
        }
        if req.content_type.as_deref().is_some_and(is_json_content_type) && pushlet::forges_sender(&req.data) {
            return Err(Reject::bad_request("p_from is set by the server: publish without it"));
        }
        self.publish_stamped(req)
    }

    /// Queues a publish the server itself vouches for (a Pushlet session's, which may carry
    /// `p_from` and go to a private topic). Refused only when the hub's queue is near full.
    pub(super) fn publish_stamped(&mut self, req: PublishReq) -> Result<(), Reject> {
        let busy = || Reject::busy("server busy: publish queue full, retry later", 1);
        if self.shared.hub.len() >= HUB_PUBLISH_HIGH_WATER {
            return Err(busy());
        }
        self.shared.hub.try_send(HubCmd::Publish(req)).map_err(|_| busy())?;
        WorkerStats::add(&self.shared.stats[self.worker].published, 1);
        Ok(())
    }

    /// Sends a control message (interest, delivery report) without blocking: if the channel is
    /// full, it waits in the bounded backlog.
    pub(super) fn tell(&mut self, cmd: HubCmd) {
        if self.backlog.is_empty() {
            match self.shared.hub.try_send(cmd) {
                Ok(()) => {}
                Err(TrySendError::Full(cmd)) => self.backlog.push_back(cmd),
                Err(TrySendError::Disconnected(_)) => debug!("worker {}: hub is gone", self.worker),
            }
        } else if self.backlog.len() < MAX_HUB_BACKLOG {
            self.backlog.push_back(cmd);
        } else {
            // Only a wedged hub gets here. A lost report is settled by the hub's ack timeout; a
            // lost interest costs wake-ups until the subscriber's timeout, not messages.
            static HUB_UNREACHABLE: LogLimit = LogLimit::new(log::Level::Error, module_path!(), "hub unreachable");
            HUB_UNREACHABLE.log(format_args!(
                "worker {}: hub unreachable, {MAX_HUB_BACKLOG} commands queued; dropping one",
                self.worker
            ));
        }
    }

    /// Retries the backlog, in order, until the channel is full again.
    pub(super) fn flush(&mut self) {
        while let Some(cmd) = self.backlog.pop_front() {
            match self.shared.hub.try_send(cmd) {
                Ok(()) => {}
                Err(TrySendError::Full(cmd)) => {
                    self.backlog.push_front(cmd);
                    return;
                }
                Err(TrySendError::Disconnected(_)) => {
                    self.backlog.clear();
                    return;
                }
            }
        }
    }

    /// Control messages are waiting for room in the hub's channel.
    pub(super) fn is_backlogged(&self) -> bool {
        !self.backlog.is_empty()
    }
}
