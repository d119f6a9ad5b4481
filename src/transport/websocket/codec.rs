//! The WebSocket frame codec (RFC 6455 §5): a [`Decoder`] that enforces every framing rule of the
//! receiving end, and the encoders for the frames each end sends.
//!
//! The two ends differ only in masking (§5.1, §5.3): a client masks every frame it sends and a
//! server masks none, and each end fails the connection on a frame masked the wrong way. The
//! server decodes with a [`Decoder`] (its [`ServerRole`]) and writes with [`frame_header`] /
//! [`encode_frame`] / [`close_frame`]; a client (halley-load) decodes with a
//! `Decoder<ClientRole>` from [`Decoder::client`] and writes with [`encode_masked_frame`].
//!
//! The decoder is small on purpose: an idle WebSocket costs its two limits and one pointer (the
//! role is a type parameter, not a field). The assembly buffer of a fragmented message exists
//! only while such a message is in progress, and a frame's payload is copied (and unmasked)
//! only once the whole frame has arrived.

use std::fmt;
use std::marker::PhantomData;

/// Longest client frame header, in bytes: 2 fixed, 8 extended length, 4 masking key (§5.2).
pub const MAX_CLIENT_HEADER: usize = 14;
/// Longest server frame header, in bytes: servers never mask (§5.1), so 2 + 8.
pub const MAX_SERVER_HEADER: usize = 10;
/// Largest control frame payload, in bytes (§5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;
/// Largest close reason, in bytes: a control payload less the 2-byte status code (§5.5.1).
pub const MAX_CLOSE_REASON: usize = MAX_CONTROL_PAYLOAD - 2;

/// Frame opcodes (§5.2). The reserved values 3-7 and 0xB-0xF are refused by the decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Opcode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl Opcode {
    /// Close, Ping and Pong: never fragmented, at most [`MAX_CONTROL_PAYLOAD`] bytes (§5.5).
    pub fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }

    /// The 4-bit wire value.
    pub fn bits(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }

    fn from_bits(bits: u8) -> Option<Opcode> {
        match bits {
            0x0 => Some(Opcode::Continuation),
            0x1 => Some(Opcode::Text),
            0x2 => Some(Opcode::Binary),
            0x8 => Some(Opcode::Close),
            0x9 => Some(Opcode::Ping),
            0xA => Some(Opcode::Pong),
            _ => None,
        }
    }
}

/// What a client said, one complete message or control frame at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete text message, reassembled and checked to be UTF-8.
    Text(String),
    /// A complete binary message, reassembled.
    Binary(Vec<u8>),
    /// Answer with a Pong carrying the same payload (§5.5.2).
    Ping(Vec<u8>),
    /// An unsolicited or answering Pong (§5.5.3); nothing to do but note the peer is alive.
    Pong(Vec<u8>),
    /// The client starts or answers the closing handshake (§5.5.1). `code` is `None` when the
    /// frame had no body; a present code has been checked against §7.4.
    Close { code: Option<u16>, reason: String },
}

/// Why the connection must be failed (§7.1.7): each maps to the close code to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsError {
    /// A client frame without the mask bit, at a server (§5.1): 1002.
    Unmasked,
    /// A server frame with the mask bit, at a client (§5.1): 1002.
    Masked,
    /// An RSV bit set with no extension negotiated (§5.2): 1002.
    ReservedBits,
    /// An opcode RFC 6455 reserves (§5.2): 1002.
    UnknownOpcode(u8),
    /// A Close, Ping or Pong without FIN (§5.5): 1002.
    FragmentedControl,
    /// A control frame payload over 125 bytes (§5.5): 1002.
    ControlTooLong,
    /// A continuation frame with no fragmented message in progress (§5.4): 1002.
    UnexpectedContinuation,
    /// A new Text or Binary frame while a fragmented message is in progress (§5.4): 1002.
    ExpectedContinuation,
    /// A 64-bit payload length with its most significant bit set (§5.2): 1002.
    LengthOverflow,
    /// A Close payload that is one byte long, has a code §7.4 does not allow on the wire, or a
    /// reason that is not UTF-8 (§5.5.1): 1002.
    BadClose(&'static str),
    /// Text that is not UTF-8 (§8.1): 1007.
    InvalidUtf8,
    /// A frame payload over the decoder's `max_frame`: 1009.
    FrameTooLarge,
    /// A message whose fragments add up to more than the decoder's `max_message`: 1009.
    MessageTooLarge,
}

impl WsError {
    /// The status code to put in the Close frame (§7.4.1).
    pub fn close_code(&self) -> u16 {
        match self {
            WsError::InvalidUtf8 => 1007,
            WsError::FrameTooLarge | WsError::MessageTooLarge => 1009,
            _ => 1002,
        }
    }

    /// One line for the Close reason and the log; short enough for a Close frame.
    pub fn reason(&self) -> &'static str {
        match self {
            WsError::Unmasked => "client frames must be masked",
            WsError::Masked => "server frames must not be masked",
            WsError::ReservedBits => "reserved bits set without a negotiated extension",
            WsError::UnknownOpcode(_) => "unknown opcode",
            WsError::FragmentedControl => "control frames must not be fragmented",
            WsError::ControlTooLong => "control frame payload over 125 bytes",
            WsError::UnexpectedContinuation => "continuation frame without a message in progress",
            WsError::ExpectedContinuation => "new data frame while a fragmented message is in progress",
            WsError::LengthOverflow => "payload length has its most significant bit set",
            WsError::BadClose(why) => why,
            WsError::InvalidUtf8 => "text message is not valid UTF-8",
            WsError::FrameTooLarge => "frame too large",
            WsError::MessageTooLarge => "message too large",
        }
    }
}

impl fmt::Display for WsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.reason(), self.close_code())
    }
}

impl std::error::Error for WsError {}

/// Which end of a connection a [`Decoder`] works for; only [`ServerRole`] and [`ClientRole`]
/// implement it.
pub trait Role: fmt::Debug + sealed::Sealed {
    /// Whether the frames arriving at this end are masked (those a client sends, §5.3).
    const RECEIVES_MASKED: bool;
}

/// The server end: decodes masked client frames, refuses unmasked ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerRole {}

/// The client end: decodes unmasked server frames, refuses masked ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientRole {}

impl Role for ServerRole {
    const RECEIVES_MASKED: bool = true;
}

impl Role for ClientRole {
    const RECEIVES_MASKED: bool = false;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::ServerRole {}
    impl Sealed for super::ClientRole {}
}

/// Decodes the peer's frames into [`Event`]s, one frame per call: a server's client frames by
/// default, a client's server frames as `Decoder<ClientRole>`.
#[derive(Debug)]
pub struct Decoder<R: Role = ServerRole> {
    /// Largest data frame payload accepted, in bytes.
    max_frame: usize,
    /// Largest (reassembled) message accepted, in bytes.
    max_message: usize,
    /// The fragmented message in progress; boxed so an idle decoder stays one pointer wide.
    message: Option<Box<Assembly>>,
    role: PhantomData<R>,
}

impl Decoder {
    /// A server's decoder that refuses data frames over `max_frame` bytes and messages over
    /// `max_message` bytes (both with 1009). Control frames are bounded by §5.5 (125 bytes).
    pub fn new(max_frame: usize, max_message: usize) -> Decoder {
        Decoder { max_frame, max_message, message: None, role: PhantomData }
    }
}

impl Decoder<ClientRole> {
    /// A client's decoder, for the server's unmasked frames, with the same limits as
    /// [`Decoder::new`].
    pub fn client(max_frame: usize, max_message: usize) -> Decoder<ClientRole> {
        Decoder { max_frame, max_message, message: None, role: PhantomData }
    }
}

impl<R: Role> Decoder<R> {
    /// Consumes at most one frame from the start of `input`.
    ///
    /// Returns the bytes consumed and the event the frame completed. `(0, None)`: the frame is
    /// incomplete, call again with more input. `(n, None)`: a non-final fragment was buffered.
    /// Every error is detected as early as the bytes allow: a bad header fails before its
    /// payload has arrived. After an error or a Close, the caller stops decoding.
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, Option<Event>), WsError> {
        let Some(head) = self.parse_head(input)? else {
            return Ok((0, None));
        };
        let end = head.header_len.checked_add(head.payload_len).ok_or(WsError::FrameTooLarge)?;
        let Some(payload) = input.get(head.header_len..end) else {
            return Ok((0, None));
        };
        let event = self.on_frame(&head, payload)?;
        Ok((end, event))
    }

    /// Whether a fragmented message is being reassembled.
    #[cfg(test)]
    pub fn in_message(&self) -> bool {
        self.message.is_some()
    }

    /// Bytes held for the fragmented message in progress (0 when none is).
    pub fn buffered(&self) -> usize {
        self.message.as_ref().map_or(0, |m| m.data.len())
    }

    /// Reads and checks a frame header. `None` until the whole header (with its masking key, if
    /// the role expects one) is there; an error as soon as the bytes seen so far break a rule.
    fn parse_head(&self, input: &[u8]) -> Result<Option<FrameHead>, WsError> {
        let Some(&b0) = input.first() else {
            return Ok(None);
        };
        if b0 & 0x70 != 0 {
            return Err(WsError::ReservedBits);
        }
        let opcode = Opcode::from_bits(b0 & 0x0F).ok_or(WsError::UnknownOpcode(b0 & 0x0F))?;
        let fin = b0 & 0x80 != 0;
        // §5.4: fragments of one message are contiguous; only control frames may come between.
        match opcode {
            _ if opcode.is_control() && !fin => return Err(WsError::FragmentedControl),
            Opcode::Continuation if self.message.is_none() => return Err(WsError::UnexpectedContinuation),
            Opcode::Text | Opcode::Binary if self.message.is_some() => return Err(WsError::ExpectedContinuation),
            _ => {}
        }

        let Some(&b1) = input.get(1) else {
            return Ok(None);
        };
        let masked = b1 & 0x80 != 0;
        if masked != R::RECEIVES_MASKED {
            return Err(if masked { WsError::Masked } else { WsError::Unmasked });
        }
        let (len, mask_at) = match b1 & 0x7F {
            126 | 127 if opcode.is_control() => return Err(WsError::ControlTooLong),
            126 => match input.get(2..4) {
                Some(&[hi, lo]) => (u64::from(u16::from_be_bytes([hi, lo])), 4),
                _ => return Ok(None),
            },
            127 => match input.get(2..10).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
                Some(bytes) => (u64::from_be_bytes(bytes), 10),
                None => return Ok(None),
            },
            short => (u64::from(short), 2),
        };
        // Non-minimal length encodings (§5.2 "the minimal number of bytes MUST be used") are
        // accepted: they are unambiguous, and refusing them protects nothing.
        if len >> 63 != 0 {
            return Err(WsError::LengthOverflow);
        }
        let payload_len = usize::try_from(len).map_err(|_| WsError::FrameTooLarge)?;
        if !opcode.is_control() {
            if payload_len > self.max_frame {
                return Err(WsError::FrameTooLarge);
            }
            if self.buffered().saturating_add(payload_len) > self.max_message {
                return Err(WsError::MessageTooLarge);
            }
        }
        if !R::RECEIVES_MASKED {
            return Ok(Some(FrameHead { fin, opcode, mask: None, header_len: mask_at, payload_len }));
        }
        let Some(mask) = input.get(mask_at..mask_at + 4).and_then(|b| <[u8; 4]>::try_from(b).ok()) else {
            return Ok(None);
        };
        Ok(Some(FrameHead { fin, opcode, mask: Some(mask), header_len: mask_at + 4, payload_len }))
    }

    /// Acts on one complete, checked frame.
    fn on_frame(&mut self, head: &FrameHead, payload: &[u8]) -> Result<Option<Event>, WsError> {
        match head.opcode {
            Opcode::Ping => Ok(Some(Event::Ping(unmasked(payload, head.mask)))),
            Opcode::Pong => Ok(Some(Event::Pong(unmasked(payload, head.mask)))),
            Opcode::Close => parse_close(unmasked(payload, head.mask)).map(Some),
            Opcode::Text | Opcode::Binary => {
                let text = head.opcode == Opcode::Text;
                let data = unmasked(payload, head.mask);
                if head.fin {
                    return finish(text, data).map(Some);
                }
                let mut message = Box::new(Assembly { text, data, valid: 0 });
                message.check_utf8()?;
                self.message = Some(message);
                Ok(None)
            }
            Opcode::Continuation => {
                let Some(message) = self.message.as_mut() else {
                    return Err(WsError::UnexpectedContinuation);
                };
                apply_mask(&mut message.data, payload, head.mask);
                message.check_utf8()?;
                if !head.fin {
                    return Ok(None);
                }
                match self.message.take() {
                    Some(message) => finish(message.text, message.data).map(Some),
                    None => Err(WsError::UnexpectedContinuation),
                }
            }
        }
    }
}

/// Frame header for a server frame (never masked, §5.1): 2 to [`MAX_SERVER_HEADER`] bytes on
/// the stack, so the worker can `writev` it in front of a shared payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    bytes: [u8; MAX_SERVER_HEADER],
    len: u8,
}

impl AsRef<[u8]> for FrameHeader {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// The header of a server frame with `len` payload bytes, using the shortest length encoding
/// (§5.2). The caller keeps control frames to [`MAX_CONTROL_PAYLOAD`] and non-final frames to
/// data opcodes; [`encode_frame`] does that itself.
pub fn frame_header(opcode: Opcode, fin: bool, len: usize) -> FrameHeader {
    let mut bytes = [0u8; MAX_SERVER_HEADER];
    bytes[0] = if fin { 0x80 } else { 0 } | opcode.bits();
    let header_len = if len < 126 {
        bytes[1] = len as u8; // < 126, fits the 7-bit field
        2
    } else if let Ok(short) = u16::try_from(len) {
        bytes[1] = 126;
        bytes[2..4].copy_from_slice(&short.to_be_bytes());
        4
    } else {
        bytes[1] = 127;
        bytes[2..10].copy_from_slice(&(len as u64).to_be_bytes()); // usize is at most 64 bits
        10
    };
    FrameHeader { bytes, len: header_len }
}

/// Appends one unfragmented server frame. A control frame's payload is cut to
/// [`MAX_CONTROL_PAYLOAD`] bytes so the frame is always valid; a Pong echoing a decoded Ping
/// never needs cutting.
pub fn encode_frame(out: &mut Vec<u8>, opcode: Opcode, payload: &[u8]) {
    let payload = within_control_limit(opcode, payload);
    let header = frame_header(opcode, true, payload.len());
    out.reserve(header.as_ref().len() + payload.len());
    out.extend_from_slice(header.as_ref());
    out.extend_from_slice(payload);
}

/// Appends one unfragmented client frame masked with `key` (§5.3: a client masks every frame,
/// with a fresh key the server cannot predict; the caller picks it). Control payloads are cut
/// as by [`encode_frame`].
pub fn encode_masked_frame(out: &mut Vec<u8>, opcode: Opcode, payload: &[u8], key: [u8; 4]) {
    let payload = within_control_limit(opcode, payload);
    let header = frame_header(opcode, true, payload.len());
    let header = header.as_ref();
    out.reserve(header.len() + key.len() + payload.len());
    out.push(header[0]);
    out.push(header[1] | 0x80); // the MASK bit (§5.2)
    out.extend_from_slice(&header[2..]);
    out.extend_from_slice(&key);
    apply_mask(out, payload, Some(key));
}

/// `payload`, cut to [`MAX_CONTROL_PAYLOAD`] bytes for a control frame (§5.5).
fn within_control_limit(opcode: Opcode, payload: &[u8]) -> &[u8] {
    if opcode.is_control() {
        &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)]
    } else {
        payload
    }
}

/// A complete Close frame with `code` and `reason` (§5.5.1), the reason cut at a character
/// boundary to fit [`MAX_CLOSE_REASON`] bytes. `code` should be one §7.4 allows on the wire
/// (not 1005, 1006 or 1015).
pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let reason = crate::prefix_within(reason, MAX_CLOSE_REASON);
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason.as_bytes());
    let mut out = Vec::with_capacity(2 + payload.len());
    encode_frame(&mut out, Opcode::Close, &payload);
    out
}

/// A checked frame header.
#[derive(Debug)]
struct FrameHead {
    fin: bool,
    opcode: Opcode,
    /// The masking key; only client frames have one (§5.3).
    mask: Option<[u8; 4]>,
    /// Bytes before the payload, masking key included.
    header_len: usize,
    payload_len: usize,
}

/// A fragmented message being reassembled.
#[derive(Debug)]
struct Assembly {
    text: bool,
    data: Vec<u8>,
    /// Text only: `data[..valid]` is known to be UTF-8. Anything after it is at most the first
    /// 3 bytes of a character split across fragments.
    valid: usize,
}

impl Assembly {
    /// Fails fast on text that can no longer become UTF-8, whatever the next fragment holds
    /// (§8.1); a character cut at the end of a fragment waits for the next one.
    fn check_utf8(&mut self) -> Result<(), WsError> {
        if !self.text {
            return Ok(());
        }
        let tail = self.data.get(self.valid..).unwrap_or(&[]);
        match std::str::from_utf8(tail) {
            Ok(_) => self.valid = self.data.len(),
            Err(e) if e.error_len().is_some() => return Err(WsError::InvalidUtf8),
            Err(e) => self.valid += e.valid_up_to(),
        }
        Ok(())
    }
}

/// Turns a complete message into its event.
fn finish(text: bool, data: Vec<u8>) -> Result<Event, WsError> {
    if text {
        String::from_utf8(data).map(Event::Text).map_err(|_| WsError::InvalidUtf8)
    } else {
        Ok(Event::Binary(data))
    }
}

/// Checks a Close payload (§5.5.1): empty, or a status code §7.4 allows on the wire followed
/// by a UTF-8 reason.
fn parse_close(payload: Vec<u8>) -> Result<Event, WsError> {
    let (code, reason) = match payload.as_slice() {
        [] => return Ok(Event::Close { code: None, reason: String::new() }),
        [_] => return Err(WsError::BadClose("close payload of one byte")),
        [hi, lo, reason @ ..] => (u16::from_be_bytes([*hi, *lo]), reason),
    };
    if !close_code_allowed(code) {
        return Err(WsError::BadClose("invalid close code"));
    }
    let reason = std::str::from_utf8(reason).map_err(|_| WsError::BadClose("close reason is not UTF-8"))?;
    Ok(Event::Close { code: Some(code), reason: reason.to_owned() })
}

/// Status codes a peer may send (§7.4.1, §7.4.2 and the IANA registry of §11.7): the defined
/// 1000-1003 and 1007-1014, and 3000-4999 for libraries and applications. 1004 is reserved;
/// 1005, 1006 and 1015 must never appear in a Close frame; the rest of 0-2999 is unassigned.
fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// The payload with the client's mask, if any, removed (§5.3).
fn unmasked(payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len());
    apply_mask(&mut out, payload, mask);
    out
}

/// Appends `payload` XORed with `mask` (octet i with `mask[i % 4]`, §5.3), which masks and
/// unmasks alike; without a mask, appends it as is.
fn apply_mask(out: &mut Vec<u8>, payload: &[u8], mask: Option<[u8; 4]>) {
    let Some(mask) = mask else {
        out.extend_from_slice(payload);
        return;
    };
    out.reserve(payload.len());
    let mut chunks = payload.chunks_exact(4);
    let word = u32::from_ne_bytes(mask);
    for chunk in &mut chunks {
        let mut four = [0u8; 4];
        four.copy_from_slice(chunk);
        out.extend_from_slice(&(u32::from_ne_bytes(four) ^ word).to_ne_bytes());
    }
    out.extend(chunks.remainder().iter().zip(mask).map(|(b, m)| b ^ m));
}

#[cfg(test)]
mod tests;
