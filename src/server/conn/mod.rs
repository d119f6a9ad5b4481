//! One client connection: its socket, what it has read but not yet consumed, what it still has
//! to write, and which phase of the request/response cycle it is in.
//!
//! The read and write halves are kept apart. `inbuf` exists only while unconsumed bytes exist
//! (it comes from the worker's pool and goes back to it), so a parked long-poll holds a socket,
//! a phase with its subscription, and nothing else. Readiness is tracked here in user space
//! (mio is edge-triggered): a half that stopped early for a bound keeps its flag and resumes
//! without waiting for a new event.
//!
//! The state machine is in `state.rs`; this file holds the connection and the data each phase
//! carries (a parked request, a stream, a socket). Socket I/O is in `../io.rs`; plain TCP or TLS under it is
//! `socket.rs`.

mod socket;
mod state;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use serde_json::value::RawValue;

pub use self::socket::Socket;
pub use self::state::{ConnState, Phase, Vacated};
use super::io::OutQueue;
use crate::http::{BodyDecoder, Request, Version};
use crate::model::Selector;
use crate::protocol::native::Piggyback;
use crate::server::timer::TimerKey;
use crate::transport::raw::RawLines;
use crate::transport::socket::SocketLife;
use crate::transport::streaming::StreamLife;
use crate::transport::websocket::Decoder;
use crate::transport::StreamKind;

impl ParkedFormat {
    /// The session a parked request belongs to, if any.
    pub fn session(&self) -> Option<usize> {
        match self {
            ParkedFormat::Bayeux(hold) => Some(hold.session),
            ParkedFormat::Pushlet(hold) => Some(hold.session),
            ParkedFormat::Json | ParkedFormat::Jsonp(_) => None,
        }
    }
}

/// A publish handed to the hub, waiting for its acknowledgement (`tag` matches it).
#[derive(Debug)]
pub struct Publishing {
    pub tag: u64,
    pub reply: ReplyMeta,
    pub topic: Arc<str>,
    pub piggyback: Option<Box<Piggyback>>,
}

/// A request whose body is still arriving.
#[derive(Debug)]
pub struct BodyPhase {
    pub request: Request,
    pub decoder: BodyDecoder,
    pub body: Vec<u8>,
}

/// What a response needs to know about the request it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyMeta {
    pub version: Version,
    pub keep_alive: bool,
    pub head_only: bool,
    /// Which `Access-Control-Allow-Origin` value to send, if any.
    pub cors: Cors,
}

/// The CORS answer chosen for a request (an index keeps the parked state small).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cors {
    /// No `Origin` header, or origin not allowed: no CORS headers.
    None,
    /// `Access-Control-Allow-Origin: *`.
    Any,
    /// Reflect the origin with this index in `cors_origins`.
    Read(u16),
    /// Reflect the origin with this index in `cors_publish_origins`.
    Publish(u16),
}

/// How a stream frames what it sends.
#[derive(Debug)]
pub enum Framer {
    /// A native transport: each message's frame is encoded once and shared.
    Native(StreamKind),
    /// Pushlet's stream mode: data events are per session (they carry its `p_id`, `p_sid`),
    /// written by the session's own writer (which numbers them, `p_seq`).
    Pushlet { session: usize, writer: crate::protocol::pushlet::Writer },
}

/// A WebSocket or raw TCP connection.
#[derive(Debug)]
pub struct Duplex {
    pub framing: DuplexFraming,
    pub selectors: Vec<Selector>,
    /// Everything on `selectors` up to this sequence number has been queued.
    pub cursor: u64,
    /// Heartbeats (and pongs), the output bound and overflow.
    pub life: SocketLife,
    /// Publishes handed to the hub and not yet acknowledged: the tag and the client's `id`.
    pub publishes: VecDeque<(u64, Option<Box<RawValue>>)>,
    /// The origin may publish (same origin, no origin, or in the publish allowlist).
    pub may_publish: bool,
    /// What the frames or lines mean.
    pub protocol: DuplexProtocol,
    /// Selectors the client may still add before it must slow down (`subs::ChangeBudget`).
    pub changes: crate::server::subs::ChangeBudget,
    /// What its token (from the upgrade or an `auth` command) lets it read and publish.
    pub grant: crate::auth::Grant,
}

/// The protocol spoken on a duplex connection.
#[derive(Debug)]
pub enum DuplexProtocol {
    /// Halley's JSON commands (`protocol::commands`).
    Native,
    /// Bayeux over WebSocket: each frame is a batch (a JSON array).
    Bayeux(Box<BayeuxSocket>),
}

/// Bayeux state of a WebSocket: whose session it carries and its held connect, if any.
#[derive(Debug, Default)]
pub struct BayeuxSocket {
    pub session: Option<usize>,
    /// A `/meta/connect` waiting for events, answered by this deadline at the latest.
    pub held: Option<(crate::protocol::bayeux::Message, Instant)>,
}

/// How a duplex connection frames what it reads and writes.
#[derive(Debug)]
pub enum DuplexFraming {
    /// RFC 6455 frames; client frames go through the decoder.
    WebSocket(Decoder),
    /// Raw TCP (`transport::raw`): JSON commands ended by NUL or newline; messages ended by NUL.
    Raw(RawLines),
}

/// A suspended long-poll.
#[derive(Debug)]
pub struct Parked {
    pub selectors: Box<[Selector]>,
    /// Everything on `selectors` up to this sequence number has been delivered.
    pub cursor: u64,
    pub reply: ReplyMeta,
    /// What the reply looks like.
    pub format: ParkedFormat,
}

/// The reply a parked request gets: the protocol decides the body, the long-poll machinery
/// decides when.
#[derive(Debug)]
pub enum ParkedFormat {
    /// The native JSON long-poll reply.
    Json,
    /// The native reply wrapped for JSONP, with this callback.
    Jsonp(Box<str>),
    /// A held Bayeux `/meta/connect`.
    Bayeux(Box<BayeuxHold>),
    /// A Pushlet pull/poll `refresh` round.
    Pushlet(Box<PushletHold>),
}

/// A parked Pushlet refresh.
#[derive(Debug)]
pub struct PushletHold {
    pub session: usize,
    pub format: crate::protocol::pushlet::Format,
    /// The path the request came in on (`/pushlet.srv` or `/pushlet/pushlet.srv`), for `p_url`.
    pub base: &'static str,
}

/// A held Bayeux connect: whose it is and what its reply carries besides the events.
#[derive(Debug)]
pub struct BayeuxHold {
    /// The session's key in the worker's session table.
    pub session: usize,
    pub connect: crate::protocol::bayeux::Message,
    /// Replies to the batch's other messages, sent with the connect reply.
    pub replies: Vec<serde_json::Value>,
    /// `Some(jsonp)` for callback-polling.
    pub callback: Option<Box<str>>,
    /// The allowed `Origin` to reflect (Bayeux requests carry credentials).
    pub origin: Option<Box<str>>,
}

/// An open streaming response.
#[derive(Debug)]
pub struct Streaming {
    pub selectors: Box<[Selector]>,
    /// Everything on `selectors` up to this sequence number has been queued.
    pub cursor: u64,
    pub framer: Framer,
    /// Framing on the wire, heartbeats, the age and byte limits, the output bound.
    pub life: StreamLife,
    /// When the token it was opened with expires: the stream ends then (`crate::auth`).
    pub expires: Option<Instant>,
}

/// One connection in the worker's slab.
#[derive(Debug)]
pub struct Conn {
    /// Plain TCP or TLS (`socket.rs`); what is read from it and written to it is plaintext.
    pub sock: Socket,
    /// Unconsumed input; `None` when there is none (the buffer went back to the pool).
    pub inbuf: Option<Vec<u8>>,
    pub out: OutQueue,
    pub state: ConnState,
    pub timer: Option<TimerKey>,
    /// Edge-triggered readiness not yet consumed.
    pub readable: bool,
    pub writable: bool,
    /// The peer sent FIN (read returned 0).
    pub peer_closed: bool,
    /// Accepted on the admin listener (`--admin-listen`): only the admin routes answer.
    pub admin: bool,
    /// Bytes written so far, and its value when the timer was last set: a timer that fires
    /// while output is pending closes the connection only if nothing was written since.
    pub written: u64,
    pub timer_mark: u64,
    /// When a closing connection is closed whatever it still has to write (set when its first
    /// write period runs out while the client is still taking bytes): a trickle reader cannot
    /// hold it for ever.
    pub close_by: Option<Instant>,
    /// The client's address as a trusted proxy forwarded it (`X-Forwarded-For`) with the
    /// latest request; None: the socket's peer is the client.
    pub forwarded_for: Option<std::net::IpAddr>,
    /// The request the access log waits to log (`--access-log` only).
    pub access: Option<Box<crate::server::access_log::Pending>>,
}

impl Conn {
    pub fn new(sock: Socket) -> Conn {
        Conn {
            sock,
            inbuf: None,
            out: OutQueue::default(),
            state: ConnState::default(),
            timer: None,
            // Registration reports data that arrived before it; writing is worth a try at once.
            readable: false,
            writable: true,
            peer_closed: false,
            admin: false,
            written: 0,
            timer_mark: 0,
            close_by: None,
            forwarded_for: None,
            access: None,
        }
    }

    /// Bytes waiting in `inbuf`.
    pub fn buffered(&self) -> usize {
        self.inbuf.as_ref().map_or(0, Vec::len)
    }

    /// Output is waiting: in the queue, or encrypted and held by TLS (a response is written
    /// only when both are empty).
    pub fn has_output(&self) -> bool {
        !self.out.is_empty() || self.sock.wants_write()
    }
}
