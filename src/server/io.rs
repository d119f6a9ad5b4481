//! Driving one connection: `pump` makes all the progress it can (write, read, parse,
//! dispatch), reading through `Conns::read_input` up to the bound of the connection's phase,
//! and closing (drain, then close) when the exchange is over; `close` undoes what the
//! connection's phase registered elsewhere (`subscriber::retire`). Also the output queue and
//! its `writev` (on TLS: rustls's writer, then its records until the socket would block).
//!
//! mio is edge-triggered: readiness is a hint that is consumed by reading or writing until
//! `WouldBlock`, and a half that stopped early for a bound keeps its flag and resumes without
//! waiting for a new event (STYLE 7, 10).

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

use bytes::{Buf, Bytes};
use log::debug;

use super::conn::{BodyPhase, Conn, Phase, Socket};
use super::core::Core;
use super::dispatch;
use super::duplex;
use super::stats::WorkerStats;
use super::subscriber;
use crate::http::{self, BodyDecoder, BodyKind, Request, Status, Version};

/// Rounds of write, read, parse and dispatch one `pump` call makes at most. A client that
/// keeps sending (and reading) as fast as the loop serves it would otherwise keep one call going
/// for ever, and every other connection of the worker, its hub inbox, its timers and its
/// shutdown would wait: past this many rounds the connection is set aside and continued later
/// in the same loop turn, after everything else (`Conns::defer`), as each turn's events are.
const MAX_PUMP_ROUNDS: usize = 32;

/// Makes the progress a connection can make now: write, read, parse, dispatch, for at most
/// `MAX_PUMP_ROUNDS` rounds.
pub(super) fn pump(core: &mut Core, key: usize) {
    let shutting_down = core.conns.is_shutting_down();
    for _ in 0..MAX_PUMP_ROUNDS {
        let Some(conn) = core.conns.get_mut(key) else { return };
        if conn.state.is_closed() {
            return;
        }
        let before = conn.written;
        let flushed = conn.flush();
        WorkerStats::add(&core.shared.stats[core.id].bytes_written, conn.written - before);
        if let Err(e) = flushed {
            debug!("worker {}: write: {e}", core.id);
            close(core, key);
            return;
        }
        if !conn.has_output() {
            match conn.state.phase() {
                Phase::Closing => return start_draining(core, key),
                // Shutting down: a keep-alive connection whose last reply is now written
                // has nothing more coming. (The admin listener still accepts while draining,
                // and its replies then close: a fresh admin connection waits for its request.)
                Phase::Idle if shutting_down && conn.buffered() == 0 && !conn.admin => {
                    return close(core, key);
                }
                _ => {}
            }
        }
        if conn.out.len() < core.shared.config.network.out_low_water() {
            subscriber::on_drained(core, key);
        }
        let read = match core.conns.read_input(key) {
            Ok(n) => n,
            Err(e) => {
                debug!("worker {}: read: {e}", core.id);
                if core.conns.get(key).is_some_and(|c| c.sock.is_handshaking()) {
                    WorkerStats::add(&core.stats().tls_handshake_errors, 1);
                }
                close(core, key);
                return;
            }
        };
        if core.conns.get_mut(key).is_some_and(|c| c.sock.take_handshake_done()) {
            WorkerStats::add(&core.stats().tls_handshakes, 1);
        }
        let processed = process_input(core, key);
        if core.conns.get(key).is_none_or(|c| c.state.is_closed()) {
            return;
        }
        if handle_peer_close(core, key) {
            return;
        }
        let Some(conn) = core.conns.get(key) else { return };
        let can_write = conn.writable && conn.has_output();
        if read == 0 && !processed && !can_write {
            return;
        }
    }
    // Still making progress: its turn is over; its readiness flags keep what it was doing.
    core.conns.defer(key);
}

/// Parses and dispatches buffered requests, one at a time and in order (pipelining).
/// Returns true if anything was consumed.
fn process_input(core: &mut Core, key: usize) -> bool {
    let high_water = core.shared.config.network.out_high_water();
    let mut progressed = false;
    loop {
        let Some(conn) = core.conns.get_mut(key) else { return progressed };
        if conn.out.len() >= high_water || conn.buffered() == 0 {
            break;
        }
        match conn.state.phase() {
            Phase::Idle | Phase::Head => {
                if conn.state.phase() == Phase::Idle {
                    conn.state.start_head();
                    core.conns.set_timer(key, core.shared.config.timeouts.header);
                }
                let Some(conn) = core.conns.get_mut(key) else { return progressed };
                let Some(buf) = conn.inbuf.as_mut() else { break };
                match http::parse_head(buf, &core.shared.config.http) {
                    Ok(Status::Partial) => break,
                    Ok(Status::Complete((request, used))) => {
                        buf.drain(..used);
                        progressed = true;
                        WorkerStats::add(&core.stats().requests, 1);
                        begin_request(core, key, request);
                    }
                    Err(e) => {
                        let version = Version::Http11;
                        core.conns.fail(key, e.into(), version);
                        return true;
                    }
                }
            }
            Phase::Body => {
                let (Some(body), Some(buf)) = (conn.state.body_mut(), conn.inbuf.as_mut()) else { break };
                match body.decoder.decode(buf, &mut body.body, core.shared.config.http.max_body) {
                    Ok((used, done)) => {
                        buf.drain(..used);
                        progressed |= used > 0;
                        if !done {
                            if used == 0 {
                                break;
                            }
                            continue;
                        }
                        // The body is complete: the request goes on with it.
                        let Some(body) = conn.state.take_body() else { break };
                        let BodyPhase { request, body, .. } = *body;
                        dispatch::dispatch(core, key, request, body);
                    }
                    Err(e) => {
                        let version = body.request.version();
                        core.conns.fail(key, e.into(), version);
                        return true;
                    }
                }
            }
            Phase::Duplex => {
                progressed |= duplex::process_input(core, key);
                break;
            }
            Phase::Dispatching
            | Phase::Parked
            | Phase::Publishing
            | Phase::Streaming
            | Phase::Closing
            | Phase::Draining
            | Phase::Closed => break,
        }
    }
    core.conns.release_input(key);
    progressed
}

/// The peer sent FIN. Returns true if the connection was closed (or is closing).
fn handle_peer_close(core: &mut Core, key: usize) -> bool {
    let high_water = core.shared.config.network.out_high_water();
    let Some(conn) = core.conns.get_mut(key) else { return true };
    if !conn.peer_closed {
        return false;
    }
    match conn.state.phase() {
        // Still answering a complete request (e.g. a publish sent with a half-close).
        Phase::Publishing | Phase::Closing => false,
        Phase::Idle | Phase::Head if conn.buffered() > 0 && conn.out.len() >= high_water => false,
        Phase::Idle | Phase::Head if conn.has_output() => {
            conn.state.close_after_write();
            false
        }
        // Idle, half a request, a parked long-poll whose client left, or draining: done.
        _ => {
            close(core, key);
            true
        }
    }
}

fn begin_request(core: &mut Core, key: usize, request: Request) {
    core.conns.access_begin(key, &request);
    match request.body_kind() {
        // An empty body (`Content-Length: 0`) is complete already: no Body phase, no 100.
        BodyKind::None | BodyKind::Length(0) => dispatch::dispatch(core, key, request, Vec::new()),
        kind => {
            let Some(conn) = core.conns.get_mut(key) else { return };
            if request.expects_continue() && conn.buffered() == 0 {
                // RFC 9110 §10.1.1: tell the client to go ahead and send the body.
                conn.out.push_static(http::CONTINUE_100);
            }
            let body = BodyPhase { request, decoder: BodyDecoder::new(kind), body: Vec::new() };
            conn.state.read_body(body);
            core.conns.set_timer(key, core.shared.config.timeouts.header);
        }
    }
}

/// The final response is written: our side shuts down and input is discarded until the
/// peer closes (`Conns::start_draining`), or the connection closes now.
pub(super) fn start_draining(core: &mut Core, key: usize) {
    if !core.conns.start_draining(key) {
        return close(core, key);
    }
    // Input may already be waiting.
    if core.conns.get(key).is_some_and(|c| c.readable) {
        pump(core, key);
    }
}

/// Closes now (`Conns::close`) and undoes what the connection's phase registered here.
pub(super) fn close(core: &mut Core, key: usize) {
    let Some(vacated) = core.conns.close(key) else { return };
    // A stream's session is a Pushlet stream listen's.
    let pushlet_stream = if vacated.phase() == Phase::Streaming { vacated.session() } else { None };
    subscriber::retire(core, key, &vacated);
    if let Some(session) = pushlet_stream {
        // A Pushlet stream whose client went away ends its session, as in the original
        // (a failed write ended the session).
        core.sessions.remove(session, &mut core.conns.timers);
    }
}

impl crate::transport::streaming::Sink for OutQueue {
    fn push(&mut self, bytes: Bytes) {
        OutQueue::push(self, bytes);
    }
}

/// Most slices handed to one `writev` call (well under Linux's IOV_MAX of 1024).
const MAX_IOV: usize = 64;

impl Conn {
    /// Writes as much queued output as the socket takes. `Ok(())` also when it would block.
    pub fn flush(&mut self) -> io::Result<()> {
        match &mut self.sock {
            Socket::Plain(tcp) => {
                while self.writable && !self.out.is_empty() {
                    let mut slices = [IoSlice::new(&[]); MAX_IOV];
                    let n = self.out.fill_slices(&mut slices);
                    match tcp.write_vectored(&slices[..n]) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(written) => {
                            self.out.advance(written);
                            self.written += written as u64;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable = false,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
            Socket::Tls(t) => loop {
                // Encrypt what rustls takes (up to its buffer limit) straight from the queued
                // slices, then write records until the socket would block. `written` counts
                // bytes on the wire, so a timer sees a client that takes nothing as idle.
                while !self.out.is_empty() {
                    let mut slices = [IoSlice::new(&[]); MAX_IOV];
                    let n = self.out.fill_slices(&mut slices);
                    let took = t.tls.writer().write_vectored(&slices[..n])?;
                    if took == 0 {
                        break;
                    }
                    self.out.advance(took);
                }
                if !self.writable || !t.tls.wants_write() {
                    return Ok(());
                }
                match t.tls.write_tls(&mut t.tcp) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(written) => self.written += written as u64,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            },
        }
    }
}

/// Output waiting to be written: a queue of byte strings, shared (`Bytes` from a message's
/// one-time encoding) or owned (a response head). Written with `writev`, so the per-connection
/// head and the shared body go out in one system call without being copied together.
#[derive(Debug, Default)]
pub struct OutQueue {
    chunks: VecDeque<Bytes>,
    len: usize,
}

impl OutQueue {
    pub fn push(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.len += bytes.len();
            self.chunks.push_back(bytes);
        }
    }

    pub fn push_static(&mut self, bytes: &'static [u8]) {
        self.push(Bytes::from_static(bytes));
    }

    /// Total unwritten bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn fill_slices<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, chunk) in slices.iter_mut().zip(self.chunks.iter()) {
            *slot = IoSlice::new(chunk);
            n += 1;
        }
        n
    }

    fn advance(&mut self, mut written: usize) {
        self.len -= written;
        while written > 0 {
            let Some(front) = self.chunks.front_mut() else { break };
            if written >= front.len() {
                written -= front.len();
                self.chunks.pop_front();
            } else {
                front.advance(written);
                written = 0;
            }
        }
        if self.chunks.is_empty() && self.chunks.capacity() > 16 {
            // A large reply grew the ring; don't let an idle connection keep it.
            self.chunks = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_queue_advances_across_chunks() {
        let mut q = OutQueue::default();
        q.push(Bytes::from_static(b"abc"));
        q.push(Bytes::new());
        q.push(Bytes::from_static(b"defg"));
        assert_eq!(q.len(), 7);
        q.advance(4);
        assert_eq!(q.len(), 3);
        let mut slices = [IoSlice::new(&[]); 4];
        let n = q.fill_slices(&mut slices);
        assert_eq!(n, 1);
        assert_eq!(&*slices[0], b"efg");
        q.advance(3);
        assert!(q.is_empty());
    }
}
