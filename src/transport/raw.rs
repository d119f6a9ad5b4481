//! Raw TCP: the oldest Comet-like transport, a plain socket without HTTP (Flash `XMLSocket`
//! and its successors). The client sends JSON commands, each ended by a NUL byte or a newline;
//! the server sends messages, acknowledgements and heartbeats as JSON objects each ended by a
//! NUL byte, as `XMLSocket` expects. A Flash client first asks for a socket policy
//! (`<policy-file-request/>`), and gets a permissive one: Halley's data is governed by its own
//! publish rules, not by the policy file.
//!
//! Sans-I/O: `RawLines` finds commands in the bytes read so far; the encoders return bytes.
//!
//! # Lifecycle
//!
//! The socket family's life (`server/duplex.rs`, timed by `transport/socket.rs` `SocketLife`)
//! with this framing; JSON commands and replies are `protocol/commands.rs`:
//! - Subscribe: a connection accepted on `--raw-listen` (`server/event_loop.rs` `add_conn`) →
//!   `server/duplex.rs` `start_raw`: nothing is sent and nothing subscribed until the client's
//!   `subscribe` command (`duplex::process_input` → `RawLines::next_line` → `duplex::command` →
//!   `duplex::subscribe`): an ack line, a `gap` line if the cursor is from another epoch or past
//!   the head, then what history holds. `<policy-file-request/>` gets `POLICY`.
//! - Wake: `server/subscriber.rs` `on_wake` → `duplex::feed`: while `SocketLife::pace` leaves
//!   room, one line per message, shared by every subscriber (`message`, `Wire::RawTcp`); a gap
//!   found in history is a `gap` line.
//! - Timeout: `subscriber::on_timeout` → `duplex::on_timer`: `SocketLife::beat` says
//!   `Beat::Line`, and `HEARTBEAT` goes out every `--heartbeat-interval`. Nothing answers it;
//!   only a failed write finds a dead peer.
//! - Overflow: at the output bound for a heartbeat interval, `duplex::overflow` queues an `overflow`
//!   line after the output the client has not taken, and closes once it is written (or when the
//!   client takes nothing for `bound::NOTICE_WAIT`).
//! - Close: there is no close frame. A line over `--ws-max-message` (`Line::TooLong`) gets an
//!   error line and is closed; at shutdown `duplex::shutdown` sends an `end` line and closes; a
//!   FIN closes (`server/io.rs`).
//! - Resume: reconnect and send `subscribe` with `since` set to the `next` of `end` or
//!   `overflow`, or to the `id` of the last message.

use bytes::Bytes;

use crate::model::{Epoch, Message, Wire};

/// The bytes that end a command line.
pub const TERMINATORS: &[u8] = b"\0\n";
/// The Flash socket policy request (answered whether or not a terminator follows it).
pub const POLICY_REQUEST: &[u8] = b"<policy-file-request/>";
/// The answer to it.
pub const POLICY: &[u8] =
    b"<?xml version=\"1.0\"?><cross-domain-policy><allow-access-from domain=\"*\" to-ports=\"*\"/></cross-domain-policy>\0";
/// The heartbeat line.
pub const HEARTBEAT: &[u8] = b"{\"type\":\"heartbeat\"}\0";

/// One thing found in the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A command line, without its terminator.
    Command(Vec<u8>),
    /// The Flash policy request.
    Policy,
    /// No terminator within the longest allowed line: the client is told and disconnected.
    TooLong,
}

/// Finds command lines in the input, remembering how far it already looked, so a long line
/// arriving in small pieces is scanned once, not once per piece.
#[derive(Debug, Default)]
pub struct RawLines {
    /// How much of the unconsumed input is known to hold no terminator.
    scanned: usize,
}

impl RawLines {
    /// The next line in `input` (the unconsumed bytes) and how many bytes it used, or `None`
    /// when no complete line is there yet.
    pub fn next_line(&mut self, input: &[u8], max_line: usize) -> Option<(Line, usize)> {
        let from = self.scanned.min(input.len());
        match input[from..].iter().position(|b| TERMINATORS.contains(b)) {
            Some(at) => {
                let end = from + at;
                self.scanned = 0;
                let line = &input[..end];
                let found = if line == POLICY_REQUEST { Line::Policy } else { Line::Command(line.to_vec()) };
                Some((found, end + 1))
            }
            None if input.len() > max_line => Some((Line::TooLong, 0)),
            None if input == POLICY_REQUEST => {
                self.scanned = 0;
                Some((Line::Policy, input.len()))
            }
            None => {
                self.scanned = input.len();
                None
            }
        }
    }
}

/// A message as a raw TCP line: its JSON and a NUL, encoded once per message and shared.
pub fn message(msg: &Message, epoch: Epoch) -> Bytes {
    msg.encoded(Wire::RawTcp, |m| {
        let mut out = m.json(epoch).to_vec();
        out.push(0);
        Bytes::from(out)
    })
    .clone()
}

/// A reply (acknowledgement, error, control object) as a raw TCP line.
pub fn reply(json: String) -> Bytes {
    let mut line = json.into_bytes();
    line.push(0);
    Bytes::from(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_end_at_nul_or_newline_and_may_arrive_in_pieces() {
        let input = b"{\"op\":\"ping\"}\n{\"op\":\"x\"}\0";
        let mut lines = RawLines::default();
        // Fed one byte more at a time, the first line appears exactly when its terminator does.
        for end in 0..=13 {
            assert_eq!(lines.next_line(&input[..end], 1024), None, "at {end}");
        }
        let (line, used) = lines.next_line(&input[..14], 1024).expect("a line");
        assert_eq!(line, Line::Command(b"{\"op\":\"ping\"}".to_vec()));
        assert_eq!(used, 14);
        let (line, used) = lines.next_line(&input[14..], 1024).expect("a line");
        assert_eq!(line, Line::Command(b"{\"op\":\"x\"}".to_vec()));
        assert_eq!(used, input.len() - 14);
    }

    #[test]
    fn a_line_over_the_limit_without_a_terminator_is_too_long() {
        let mut lines = RawLines::default();
        assert_eq!(lines.next_line(b"abcd", 4), None);
        assert_eq!(lines.next_line(b"abcde", 4), Some((Line::TooLong, 0)));
    }

    #[test]
    fn the_policy_request_is_answered_with_or_without_a_terminator() {
        let mut lines = RawLines::default();
        assert_eq!(lines.next_line(POLICY_REQUEST, 1024), Some((Line::Policy, POLICY_REQUEST.len())));
        let mut ended = POLICY_REQUEST.to_vec();
        ended.push(0);
        assert_eq!(lines.next_line(&ended, 1024), Some((Line::Policy, ended.len())));
        assert!(POLICY.ends_with(b"\0") && HEARTBEAT.ends_with(b"\0"));
    }

    #[test]
    fn a_long_line_scanned_in_pieces_is_too_long_once_over_the_limit() {
        let mut lines = RawLines::default();
        let long = vec![b'x'; 10];
        assert_eq!(lines.next_line(&long[..6], 8), None);
        assert_eq!(lines.next_line(&long[..8], 8), None);
        assert_eq!(lines.next_line(&long, 8), Some((Line::TooLong, 0)));
    }

    #[test]
    fn several_lines_and_a_policy_request_in_one_read_come_out_in_order() {
        let mut input = b"a\0\n".to_vec();
        input.extend_from_slice(POLICY_REQUEST);
        input.extend_from_slice(b"\0b\n");
        let mut lines = RawLines::default();
        let mut at = 0;
        let mut found = Vec::new();
        while let Some((line, used)) = lines.next_line(&input[at..], 1024) {
            found.push(line);
            at += used;
        }
        assert_eq!(at, input.len());
        let command = |c: &[u8]| Line::Command(c.to_vec());
        assert_eq!(found, vec![command(b"a"), command(b""), Line::Policy, command(b"b")]);
    }

    #[test]
    fn replies_end_with_a_nul() {
        assert_eq!(&reply("{}".to_owned())[..], b"{}\0");
    }
}
