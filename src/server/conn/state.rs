//! A connection's state machine: the phases of the request/response cycle, and the named
//! transitions between them. Pure data, no socket, so the transitions are tested here without
//! one.
//!
//! ```text
//!  Idle ─start_head─► Head ─dispatch─► Dispatching ─answered(keep-alive)─► Idle
//!                      │                  │   ├─answered(close)─► Closing ─start_draining─► Draining
//!                      └─read_body─► Body ┘   ├─park─► Parked ─unpark─► Dispatching
//!                         (take_body)         ├─await_ack─► Publishing ─take_ack─► Dispatching
//!                                             ├─open_stream─► Streaming ─end─► Closing
//!  Idle (a request handed over whole by another worker) ─dispatch─► Dispatching
//!  Idle (raw TCP, handed-over socket) ──open_duplex──► Duplex ─end─► Closing
//!  any ─close─► Closed (the slot is freed after the event batch)
//! ```

use super::{BodyPhase, Duplex, DuplexFraming, DuplexProtocol, Framer, Parked, ParkedFormat, Publishing, Streaming};
use crate::log_limit::LogLimit;
use crate::model::Selector;
use crate::server::stats::SubscriberKind;
use crate::transport::StreamKind;

/// Where a connection is in its life, for matching: a copy of the state without its data.
/// The data is reached through the typed accessors of [`ConnState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Keep-alive: waiting for the first byte of the next request.
    Idle,
    /// A request head is arriving (the header timeout runs).
    Head,
    /// Reading the body of a request.
    Body,
    /// A complete request is being handled; it leaves this phase when its answer is queued,
    /// or when it parks, streams, upgrades or waits for the hub. Never seen between events.
    Dispatching,
    /// A long-poll with nothing to answer yet: the Continuation, suspended.
    Parked,
    /// A publish handed to the hub, waiting for its acknowledgement.
    Publishing,
    /// A streaming response (SSE, ndjson, iframe, multipart, Pushlet stream).
    Streaming,
    /// A WebSocket (after the upgrade) or raw TCP connection.
    Duplex,
    /// The last response is queued; once written, the write side is shut down.
    Closing,
    /// Write side shut down; reading and discarding until the peer closes or the timer fires,
    /// so that unread request bytes don't turn our final response into a TCP reset.
    Draining,
    /// Closed by us; the slot is freed after the current event batch.
    Closed,
}

/// The state itself. Private: other modules read it through [`ConnState::phase`] and the
/// accessors, and change it only through the transitions of [`ConnState`], each of which
/// names the phases it leaves from.
#[derive(Debug)]
enum State {
    Idle,
    Head,
    Body(Box<BodyPhase>),
    Dispatching,
    Parked(Box<Parked>),
    Publishing(Box<Publishing>),
    Streaming(Box<Streaming>),
    Duplex(Box<Duplex>),
    Closing,
    Draining,
    Closed,
}

/// A connection's state machine, apart from its socket so that every transition can be tested
/// without one. Payloads (a parked request, a stream) move in and out by value: a transition
/// that takes one out (`unpark`, `take_body`, `take_ack`, `close`) leaves a phase that does not
/// hold it, so a stale copy can never be acted on twice.
#[derive(Debug)]
pub struct ConnState(State);

impl Default for ConnState {
    fn default() -> Self {
        ConnState(State::Idle)
    }
}

impl ConnState {
    /// The phase, for matching.
    pub fn phase(&self) -> Phase {
        phase_of(&self.0)
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.0, State::Closed)
    }

    /// Parked, streaming or duplex: a subscriber that a message can wake.
    pub fn is_subscriber(&self) -> bool {
        matches!(self.0, State::Parked(_) | State::Streaming(_) | State::Duplex(_))
    }

    /// What kind of subscriber it is (its transport), if it is one: for the gauges.
    pub fn subscriber_kind(&self) -> Option<SubscriberKind> {
        kind_of(&self.0)
    }

    /// The session (its key in the worker's session table) this connection listens for, if
    /// any. Every use of a session's listening connection checks it against this, so a stale key
    /// can never act on another connection.
    pub fn session(&self) -> Option<usize> {
        session_of(&self.0)
    }

    // ---- accessors: the data of the current phase --------------------------------------------

    pub fn body(&self) -> Option<&BodyPhase> {
        match &self.0 {
            State::Body(body) => Some(body),
            _ => None,
        }
    }

    pub fn body_mut(&mut self) -> Option<&mut BodyPhase> {
        match &mut self.0 {
            State::Body(body) => Some(body),
            _ => None,
        }
    }

    pub fn parked_mut(&mut self) -> Option<&mut Parked> {
        match &mut self.0 {
            State::Parked(parked) => Some(parked),
            _ => None,
        }
    }

    pub fn streaming(&self) -> Option<&Streaming> {
        match &self.0 {
            State::Streaming(stream) => Some(stream),
            _ => None,
        }
    }

    pub fn streaming_mut(&mut self) -> Option<&mut Streaming> {
        match &mut self.0 {
            State::Streaming(stream) => Some(stream),
            _ => None,
        }
    }

    pub fn duplex(&self) -> Option<&Duplex> {
        match &self.0 {
            State::Duplex(duplex) => Some(duplex),
            _ => None,
        }
    }

    pub fn duplex_mut(&mut self) -> Option<&mut Duplex> {
        match &mut self.0 {
            State::Duplex(duplex) => Some(duplex),
            _ => None,
        }
    }

    // ---- transitions -------------------------------------------------------------------------

    /// Idle -> Head: the first bytes of a request arrived (the header timeout starts).
    pub fn start_head(&mut self) {
        self.check_from(&[Phase::Idle], "start_head");
        self.0 = State::Head;
    }

    /// Head -> Dispatching: the head is complete and there is no body to read. Also Idle ->
    /// Dispatching for a request that arrived whole with a handed-over connection.
    pub fn dispatch(&mut self) {
        self.check_from(&[Phase::Head, Phase::Idle], "dispatch");
        self.0 = State::Dispatching;
    }

    /// Head -> Body: the head is complete and announced a body.
    pub fn read_body(&mut self, body: BodyPhase) {
        self.check_from(&[Phase::Head], "read_body");
        self.0 = State::Body(Box::new(body));
    }

    /// Body -> Dispatching, handing over the request and its complete body.
    pub fn take_body(&mut self) -> Option<Box<BodyPhase>> {
        match self.take_if(Phase::Body) {
            Some(State::Body(body)) => Some(body),
            _ => None,
        }
    }

    /// Dispatching -> Parked: nothing to answer yet.
    pub fn park(&mut self, parked: Box<Parked>) {
        self.check_from(&[Phase::Dispatching], "park");
        self.0 = State::Parked(parked);
    }

    /// Parked -> Dispatching: the parked request is taken out to be answered (or parked again
    /// with `park` if it still has nothing to say).
    pub fn unpark(&mut self) -> Option<Box<Parked>> {
        match self.take_if(Phase::Parked) {
            Some(State::Parked(parked)) => Some(parked),
            _ => None,
        }
    }

    /// Dispatching -> Publishing: the publish went to the hub.
    pub fn await_ack(&mut self, publishing: Publishing) {
        self.check_from(&[Phase::Dispatching], "await_ack");
        self.0 = State::Publishing(Box::new(publishing));
    }

    /// Publishing -> Dispatching, if the acknowledgement `tag` is the one this connection
    /// waits for (`None`: whatever it waits for, e.g. on a timeout). A stale tag (the slot was
    /// reused by another connection) changes nothing.
    pub fn take_ack(&mut self, tag: Option<u64>) -> Option<Box<Publishing>> {
        match &self.0 {
            State::Publishing(p) if tag.is_none_or(|tag| p.tag == tag) => {}
            _ => return None,
        }
        match self.take_if(Phase::Publishing) {
            Some(State::Publishing(publishing)) => Some(publishing),
            _ => None,
        }
    }

    /// Dispatching -> Streaming: the response head is queued and the stream is open.
    pub fn open_stream(&mut self, stream: Box<Streaming>) {
        self.check_from(&[Phase::Dispatching], "open_stream");
        self.0 = State::Streaming(stream);
    }

    /// Dispatching (an upgraded request) or Idle (a raw TCP or handed-over socket) -> Duplex.
    pub fn open_duplex(&mut self, duplex: Box<Duplex>) {
        self.check_from(&[Phase::Dispatching, Phase::Idle], "open_duplex");
        self.0 = State::Duplex(duplex);
    }

    /// Dispatching -> Idle (keep-alive) or Closing: a complete response is queued.
    pub fn answered(&mut self, keep_alive: bool) {
        self.check_from(&[Phase::Dispatching], "answered");
        self.0 = if keep_alive { State::Idle } else { State::Closing };
    }

    /// Idle, Head, Body or Dispatching -> Closing: an error reply that ends the connection is
    /// queued (the request broke the protocol), or the peer half-closed with output pending.
    pub fn close_after_write(&mut self) {
        self.check_from(&[Phase::Idle, Phase::Head, Phase::Body, Phase::Dispatching], "close_after_write");
        self.0 = State::Closing;
    }

    /// Streaming or Duplex -> Closing: the stream or socket ends after its last frame. Returns
    /// what it held, for the caller to undo its registrations.
    pub fn end(&mut self) -> Option<Vacated> {
        match self.0 {
            State::Streaming(_) | State::Duplex(_) => Some(Vacated(std::mem::replace(&mut self.0, State::Closing))),
            _ => None,
        }
    }

    /// Closing -> Draining: the final response is written and our side is shut down.
    pub fn start_draining(&mut self) {
        self.check_from(&[Phase::Closing], "start_draining");
        self.0 = State::Draining;
    }

    /// Any -> Closed. Returns what the connection held, for the caller to undo.
    pub fn close(&mut self) -> Vacated {
        Vacated(std::mem::replace(&mut self.0, State::Closed))
    }

    /// Takes the state out, leaving Dispatching, if it is in phase `from`; None otherwise.
    fn take_if(&mut self, from: Phase) -> Option<State> {
        (self.phase() == from).then(|| std::mem::replace(&mut self.0, State::Dispatching))
    }

    /// A transition from a phase it does not leave from is a bug in the caller: debug builds
    /// stop there; release builds log it and carry on (the transition's target is still the
    /// safer state: leaving a stale phase in place could answer a request twice).
    fn check_from(&self, from: &[Phase], transition: &str) {
        let phase = self.phase();
        debug_assert!(from.contains(&phase), "{transition} from {phase:?}");
        if !from.contains(&phase) {
            static BAD_TRANSITION: LogLimit =
                LogLimit::new(log::Level::Error, module_path!(), "connection state: bad transition");
            BAD_TRANSITION.log(format_args!("connection state: {transition} from {phase:?}"));
        }
    }
}

/// What a connection held when it left a phase that registers elsewhere (subscriptions, a
/// session's listening connection, gauges): the caller undoes those with it.
#[derive(Debug)]
pub struct Vacated(State);

impl Vacated {
    pub fn phase(&self) -> Phase {
        phase_of(&self.0)
    }

    pub fn session(&self) -> Option<usize> {
        session_of(&self.0)
    }

    /// What kind of subscriber it was, if it was one.
    pub fn subscriber_kind(&self) -> Option<SubscriberKind> {
        kind_of(&self.0)
    }

    /// The selectors the phase was watching.
    pub fn selectors(&self) -> &[Selector] {
        match &self.0 {
            State::Parked(parked) => &parked.selectors,
            State::Streaming(stream) => &stream.selectors,
            State::Duplex(duplex) => &duplex.selectors,
            _ => &[],
        }
    }

    pub fn into_parked(self) -> Option<Box<Parked>> {
        match self.0 {
            State::Parked(parked) => Some(parked),
            _ => None,
        }
    }

    pub fn into_streaming(self) -> Option<Box<Streaming>> {
        match self.0 {
            State::Streaming(stream) => Some(stream),
            _ => None,
        }
    }

    pub fn duplex(&self) -> Option<&Duplex> {
        match &self.0 {
            State::Duplex(duplex) => Some(duplex),
            _ => None,
        }
    }

    /// A parked request vacated by `unpark`, for undoing its registrations after its answer.
    pub fn parked(parked: Box<Parked>) -> Vacated {
        Vacated(State::Parked(parked))
    }
}

fn phase_of(state: &State) -> Phase {
    match state {
        State::Idle => Phase::Idle,
        State::Head => Phase::Head,
        State::Body(_) => Phase::Body,
        State::Dispatching => Phase::Dispatching,
        State::Parked(_) => Phase::Parked,
        State::Publishing(_) => Phase::Publishing,
        State::Streaming(_) => Phase::Streaming,
        State::Duplex(_) => Phase::Duplex,
        State::Closing => Phase::Closing,
        State::Draining => Phase::Draining,
        State::Closed => Phase::Closed,
    }
}

/// A subscriber's kind, read from what its phase holds (nothing is stored for it).
fn kind_of(state: &State) -> Option<SubscriberKind> {
    Some(match state {
        State::Parked(parked) => match parked.format {
            ParkedFormat::Json => SubscriberKind::LongPoll,
            ParkedFormat::Jsonp(_) => SubscriberKind::Jsonp,
            ParkedFormat::Pushlet(_) => SubscriberKind::PushletPull,
            ParkedFormat::Bayeux(_) => SubscriberKind::BayeuxHttp,
        },
        State::Streaming(stream) => match stream.framer {
            Framer::Native(StreamKind::Sse) => SubscriberKind::Sse,
            Framer::Native(StreamKind::Ndjson) => SubscriberKind::Ndjson,
            Framer::Native(StreamKind::Iframe { .. }) => SubscriberKind::Iframe,
            Framer::Native(StreamKind::Multipart) => SubscriberKind::Multipart,
            Framer::Pushlet { .. } => SubscriberKind::PushletStream,
        },
        State::Duplex(duplex) => match (&duplex.framing, &duplex.protocol) {
            (_, DuplexProtocol::Bayeux(_)) => SubscriberKind::BayeuxWs,
            (DuplexFraming::WebSocket(_), DuplexProtocol::Native) => SubscriberKind::WebSocket,
            (DuplexFraming::Raw(_), DuplexProtocol::Native) => SubscriberKind::Raw,
        },
        _ => return None,
    })
}

fn session_of(state: &State) -> Option<usize> {
    match state {
        State::Parked(parked) => parked.format.session(),
        State::Streaming(stream) => match stream.framer {
            Framer::Pushlet { session, .. } => Some(session),
            Framer::Native(_) => None,
        },
        State::Duplex(duplex) => match &duplex.protocol {
            DuplexProtocol::Bayeux(socket) => socket.session,
            DuplexProtocol::Native => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests;
