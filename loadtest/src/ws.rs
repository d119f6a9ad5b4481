//! The client side of the WebSocket framing (RFC 6455 §5) as halley-load needs it, without I/O:
//! reading the server's unmasked frames (text, ping, close; fragments reassembled) and building
//! the masked pong and close frames a client must send back.

use std::fmt;

/// Largest message (all fragments together) a subscriber accepts, in bytes.
pub const MAX_WS_MESSAGE_BYTES: usize = 1024 * 1024;

/// What one complete frame (or reassembled message) said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsEvent {
    /// A text (or binary) message, fragments joined (§5.4).
    Message(Vec<u8>),
    /// A ping: answer with a pong carrying the same payload (§5.5.2).
    Ping(Vec<u8>),
    /// The server closes, with its status code if it gave one (§5.5.1).
    Close(Option<u16>),
    /// A pong or anything else a subscriber ignores.
    Other,
}

/// Why the server's bytes are not a frame sequence we accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsError {
    /// A server frame with the mask bit set (§5.1 forbids it).
    Masked,
    /// A message longer than [`MAX_WS_MESSAGE_BYTES`].
    TooLarge,
    /// A continuation without a start, or a new message inside a fragmented one (§5.4).
    Fragmentation,
}

impl fmt::Display for WsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WsError::Masked => "masked frame from the server",
            WsError::TooLarge => "WebSocket message too large",
            WsError::Fragmentation => "bad fragmentation",
        })
    }
}

impl std::error::Error for WsError {}

/// Reassembles the server's frames into events; holds the fragments of one message.
#[derive(Debug, Default)]
pub struct WsReader {
    partial: Option<Vec<u8>>,
}

impl WsReader {
    /// Read the next event from the front of `buf`: `Ok(None)` when more bytes are needed,
    /// else the event and how many bytes it used (a non-final fragment yields `Other`).
    pub fn next(&mut self, buf: &[u8]) -> Result<Option<(WsEvent, usize)>, WsError> {
        let Some(frame) = parse_frame(buf)? else {
            return Ok(None);
        };
        let payload = &buf[frame.start..frame.start + frame.len];
        let used = frame.start + frame.len;
        let event = match frame.opcode {
            // Continuation.
            0x0 => {
                let Some(mut partial) = self.partial.take() else {
                    return Err(WsError::Fragmentation);
                };
                if partial.len() + payload.len() > MAX_WS_MESSAGE_BYTES {
                    return Err(WsError::TooLarge);
                }
                partial.extend_from_slice(payload);
                if frame.fin {
                    WsEvent::Message(partial)
                } else {
                    self.partial = Some(partial);
                    WsEvent::Other
                }
            }
            // Text and binary.
            0x1 | 0x2 => {
                if self.partial.is_some() {
                    return Err(WsError::Fragmentation);
                }
                if frame.fin {
                    WsEvent::Message(payload.to_vec())
                } else {
                    self.partial = Some(payload.to_vec());
                    WsEvent::Other
                }
            }
            0x8 => WsEvent::Close((payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))),
            0x9 => WsEvent::Ping(payload.to_vec()),
            _ => WsEvent::Other,
        };
        Ok(Some((event, used)))
    }
}

/// A masked client frame (§5.3: every client frame is masked) with `opcode` and `payload`
/// (at most 125 bytes: only control frames are built here).
pub fn client_frame(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let payload = &payload[..payload.len().min(125)];
    let mut out = Vec::with_capacity(6 + payload.len());
    out.push(0x80 | (opcode & 0x0f));
    out.push(0x80 | payload.len() as u8);
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Opcode of a pong (§5.5.3).
pub const PONG: u8 = 0xA;

struct FrameHead {
    fin: bool,
    opcode: u8,
    start: usize,
    len: usize,
}

/// The head of the frame at the start of `buf`, once the whole frame is there.
fn parse_frame(buf: &[u8]) -> Result<Option<FrameHead>, WsError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    if buf[1] & 0x80 != 0 {
        return Err(WsError::Masked);
    }
    let (len, start) = match buf[1] & 0x7f {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b), 10)
        }
        n => (u64::from(n), 2),
    };
    if len > MAX_WS_MESSAGE_BYTES as u64 {
        return Err(WsError::TooLarge);
    }
    let len = len as usize;
    if buf.len() < start + len {
        return Ok(None);
    }
    Ok(Some(FrameHead { fin: buf[0] & 0x80 != 0, opcode: buf[0] & 0x0f, start, len }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![first];
        match payload.len() {
            n if n < 126 => f.push(n as u8),
            n if n < 65536 => {
                f.push(126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(payload);
        f
    }

    fn events(bytes: &[u8]) -> Result<Vec<WsEvent>, WsError> {
        let mut r = WsReader::default();
        let mut out = Vec::new();
        let mut at = 0;
        while let Some((ev, used)) = r.next(&bytes[at..])? {
            at += used;
            out.push(ev);
        }
        assert_eq!(at, bytes.len(), "everything consumed");
        Ok(out)
    }

    #[test]
    fn frames_of_every_length_form_and_truncations() {
        let long = vec![b'a'; 300];
        let huge = vec![b'b'; 70_000];
        let mut stream = server_frame(0x81, b"{\"type\":\"ack\"}");
        stream.extend(server_frame(0x81, &long));
        stream.extend(server_frame(0x82, &huge));
        stream.extend(server_frame(0x89, b"hb"));
        stream.extend(server_frame(0x88, &[0x03, 0xe8]));
        let got = events(&stream).expect("valid");
        assert_eq!(
            got,
            vec![
                WsEvent::Message(b"{\"type\":\"ack\"}".to_vec()),
                WsEvent::Message(long.clone()),
                WsEvent::Message(huge),
                WsEvent::Ping(b"hb".to_vec()),
                WsEvent::Close(Some(1000)),
            ]
        );
        // A frame cut anywhere is incomplete, never an error.
        let one = server_frame(0x81, &long);
        for cut in 0..one.len() {
            assert_eq!(WsReader::default().next(&one[..cut]), Ok(None), "cut {cut}");
        }
    }

    #[test]
    fn fragments_are_joined_and_misuse_refused() {
        let mut s = server_frame(0x01, b"{\"a\":");
        s.extend(server_frame(0x89, b""));
        s.extend(server_frame(0x80, b"1}"));
        assert_eq!(
            events(&s).expect("valid"),
            vec![WsEvent::Other, WsEvent::Ping(Vec::new()), WsEvent::Message(b"{\"a\":1}".to_vec())]
        );
        assert_eq!(events(&server_frame(0x80, b"x")), Err(WsError::Fragmentation));
        let mut twice = server_frame(0x01, b"x");
        twice.extend(server_frame(0x81, b"y"));
        assert_eq!(events(&twice), Err(WsError::Fragmentation));
        assert_eq!(WsReader::default().next(&[0x81, 0x81, 0, 0, 0, 0, b'x']), Err(WsError::Masked));
        let mut too_big = vec![0x81, 127];
        too_big.extend_from_slice(&(MAX_WS_MESSAGE_BYTES as u64 + 1).to_be_bytes());
        assert_eq!(WsReader::default().next(&too_big), Err(WsError::TooLarge));
    }

    #[test]
    fn client_frames_are_masked() {
        let f = client_frame(PONG, b"hb", [1, 2, 3, 4]);
        assert_eq!(f, vec![0x8A, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'b' ^ 2]);
    }
}
