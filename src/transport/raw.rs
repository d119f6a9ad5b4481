//! Raw TCP: the oldest Comet-like transport, a plain socket without HTTP (Flash `XMLSocket`
//! and its successors). The client sends JSON commands, each ended by a NUL byte or a newline;
//! the server sends messages, acknowledgements and heartbeats as JSON objects each ended by a
//! NUL byte, as `XMLSocket` expects. A Flash client first asks for a socket policy
//! (`<policy-file-request/>`), and gets a permissive one: Halley's data is governed by its own
//! publish rules, not by the policy file.
//!
//! Sans-I/O: `RawLines` finds commands in the bytes read so far; the encoders return bytes.

use bytes::Bytes;

use crate::model::{Epoch, Message, Wire};

/// The bytes that end a command line.
pub const TERMINATORS: &[u8] = b"\0\n";
/// The Flash socket policy request (sent without a terminator by some players).
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
    pub fn next(&mut self, input: &[u8], max_line: usize) -> Option<(Line, usize)> {
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
        for end in 0..13 {
            assert_eq!(lines.next(&input[..end], 1024), None, "at {end}");
        }
        let (line, used) = lines.next(&input[..14], 1024).expect("a line");
        assert_eq!(line, Line::Command(b"{\"op\":\"ping\"}".to_vec()));
        assert_eq!(used, 14);
        let (line, used) = lines.next(&input[14..], 1024).expect("a line");
        assert_eq!(line, Line::Command(b"{\"op\":\"x\"}".to_vec()));
        assert_eq!(used, input.len() - 14);
    }

    #[test]
    fn a_line_over_the_limit_without_a_terminator_is_too_long() {
        let mut lines = RawLines::default();
        assert_eq!(lines.next(b"abcd", 4), None);
        assert_eq!(lines.next(b"abcde", 4), Some((Line::TooLong, 0)));
    }

    #[test]
    fn the_policy_request_is_answered_with_or_without_a_terminator() {
        let mut lines = RawLines::default();
        assert_eq!(lines.next(POLICY_REQUEST, 1024), Some((Line::Policy, POLICY_REQUEST.len())));
        let mut ended = POLICY_REQUEST.to_vec();
        ended.push(0);
        assert_eq!(lines.next(&ended, 1024), Some((Line::Policy, ended.len())));
        assert!(POLICY.ends_with(b"\0") && HEARTBEAT.ends_with(b"\0"));
    }

    #[test]
    fn replies_end_with_a_nul() {
        assert_eq!(&reply("{}".to_owned())[..], b"{}\0");
    }
}
