//! Message ids and cursors: the server's epoch, an id `<epoch>-<seq>`, where a reader starts
//! (`Since`) and how that resolves against the running store (`Resume`).
//!
//! Sequence numbers are global across topics and assigned by the hub thread, starting at 1. The
//! epoch is a random 40-bit value fixed at server start, so an id from before a restart can never
//! be mistaken for one of the new sequence. A cursor is the same pair: "I have seen everything on
//! my topics up to `seq` of `epoch`".

use std::fmt;
use std::io;
use std::str::FromStr;

/// Bits of randomness in an epoch; 2^40 needs at most 8 base36 digits.
pub const EPOCH_BITS: u32 = 40;
/// Longest epoch text in base36 digits.
const MAX_EPOCH_DIGITS: usize = 8;
/// Longest decimal sequence number (u64::MAX has 20 digits).
const MAX_SEQ_DIGITS: usize = 20;
/// Longest id text accepted by the parsers, in bytes: epoch, '-', seq.
pub const MAX_ID_LEN: usize = MAX_EPOCH_DIGITS + 1 + MAX_SEQ_DIGITS;

/// The server's epoch: a random 40-bit value, written in lowercase base36.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Epoch(u64);

impl Epoch {
    /// A fresh random epoch from the OS generator.
    pub fn random() -> io::Result<Epoch> {
        let mut buf = [0u8; 8];
        getrandom::getrandom(&mut buf).map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Epoch(u64::from_le_bytes(buf) & epoch_mask()))
    }

    /// An epoch from its numeric value; `None` if it does not fit in 40 bits.
    pub fn from_raw(value: u64) -> Option<Epoch> {
        (value <= epoch_mask()).then_some(Epoch(value))
    }

    /// The low 40 bits of `value` as an epoch.
    pub(crate) fn truncated(value: u64) -> Epoch {
        Epoch(value & epoch_mask())
    }

    /// The numeric value.
    pub fn raw(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
        let mut buf = [0u8; 13]; // u64::MAX in base36 has 13 digits
        let mut at = buf.len();
        let mut v = self.0;
        loop {
            at -= 1;
            buf[at] = DIGITS[(v % 36) as usize];
            v /= 36;
            if v == 0 {
                break;
            }
        }
        // The digits are ASCII, so this cannot fail.
        f.write_str(std::str::from_utf8(&buf[at..]).map_err(|_| fmt::Error)?)
    }
}

impl FromStr for Epoch {
    type Err = CursorError;

    /// Lowercase base36, 1 to 8 digits, no leading zero, at most 40 bits: one spelling per epoch.
    fn from_str(s: &str) -> Result<Epoch, CursorError> {
        if s.is_empty() || s.len() > MAX_EPOCH_DIGITS {
            return Err(CursorError::new("id epoch has the wrong length"));
        }
        if s.len() > 1 && s.starts_with('0') {
            return Err(CursorError::new("id epoch has a leading zero"));
        }
        let mut value: u64 = 0;
        for b in s.bytes() {
            let digit = match b {
                b'0'..=b'9' => b - b'0',
                b'a'..=b'z' => b - b'a' + 10,
                _ => return Err(CursorError::new("id epoch is not lowercase base36")),
            };
            // 8 digits of base36 fit easily in a u64, so this cannot overflow.
            value = value * 36 + u64::from(digit);
        }
        Epoch::from_raw(value).ok_or(CursorError::new("id epoch is out of range"))
    }
}

/// A message id, also used as a cursor: `<epoch>-<seq>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageId {
    pub epoch: Epoch,
    pub seq: u64,
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.epoch, self.seq)
    }
}

impl FromStr for MessageId {
    type Err = CursorError;

    /// `<epoch>-<seq>` with seq in plain decimal (no sign, no leading zero).
    fn from_str(s: &str) -> Result<MessageId, CursorError> {
        if s.len() > MAX_ID_LEN {
            return Err(CursorError::new("id is too long"));
        }
        let Some((epoch, seq)) = s.split_once('-') else {
            return Err(CursorError::new("id is not <epoch>-<seq>"));
        };
        let epoch = epoch.parse()?;
        if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CursorError::new("id sequence is not a decimal number"));
        }
        if seq.len() > 1 && seq.starts_with('0') {
            return Err(CursorError::new("id sequence has a leading zero"));
        }
        let seq = seq.parse().map_err(|_| CursorError::new("id sequence is out of range"))?;
        Ok(MessageId { epoch, seq })
    }
}

/// Where a reader starts reading history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Since {
    /// Everything still retained.
    All,
    /// Everything after this id.
    After(MessageId),
    /// Only messages published from now on.
    Now,
}

impl Since {
    /// Parses `all`, `now` or a message id.
    pub fn parse(s: &str) -> Result<Since, CursorError> {
        match s {
            "all" => Ok(Since::All),
            "now" => Ok(Since::Now),
            _ => s.parse().map(Since::After),
        }
    }

    /// Resolves this starting point against the running store's `epoch` and `head`, giving the
    /// seq to read after. An id of another epoch (from before a restart) reads everything
    /// retained; an id beyond the head (not issued by this server) reads from the head. Both set
    /// `reset`: continuity cannot be promised, the client should be told it may have missed
    /// messages.
    pub fn resolve(&self, epoch: Epoch, head: u64) -> Resume {
        match *self {
            Since::All => Resume { after: 0, reset: false },
            Since::Now => Resume { after: head, reset: false },
            Since::After(id) if id.epoch != epoch => Resume { after: 0, reset: true },
            Since::After(id) if id.seq > head => Resume { after: head, reset: true },
            Since::After(id) => Resume { after: id.seq, reset: false },
        }
    }
}

/// A resolved starting point: read messages with `seq > after`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resume {
    pub after: u64,
    /// The client's cursor could not be honoured as given (see `Since::resolve`).
    pub reset: bool,
}

/// Why an id or cursor was rejected; displays as one line for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorError {
    reason: &'static str,
}

impl CursorError {
    fn new(reason: &'static str) -> CursorError {
        CursorError { reason }
    }

    /// The one-line reason.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for CursorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason)
    }
}

impl std::error::Error for CursorError {}

fn epoch_mask() -> u64 {
    (1u64 << EPOCH_BITS) - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch() -> Epoch {
        Epoch::from_raw(1_234_567_890).expect("fits in 40 bits")
    }

    #[test]
    fn epoch_base36_round_trip() {
        for raw in [0, 1, 35, 36, 1_234_567_890, (1 << 40) - 1] {
            let e = Epoch::from_raw(raw).expect("fits");
            let text = e.to_string();
            assert!(text.len() <= MAX_EPOCH_DIGITS);
            assert!(text.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()));
            assert_eq!(text.parse::<Epoch>(), Ok(e), "{text}");
        }
        assert_eq!(Epoch::from_raw(35).map(|e| e.to_string()), Some("z".into()));
        assert_eq!(Epoch::from_raw(36).map(|e| e.to_string()), Some("10".into()));
        assert_eq!(Epoch::from_raw(1 << 40), None);
        let random = Epoch::random().expect("OS randomness");
        assert!(random.raw() < 1 << 40);
    }

    #[test]
    fn id_round_trip() {
        for seq in [0, 1, 42, u64::MAX] {
            let id = MessageId { epoch: epoch(), seq };
            let text = id.to_string();
            assert!(text.len() <= MAX_ID_LEN);
            assert_eq!(text.parse::<MessageId>(), Ok(id));
        }
        assert_eq!(MessageId { epoch: epoch(), seq: 7 }.to_string(), "kf12oi-7");
    }

    #[test]
    fn id_garbage_is_rejected() {
        let too_long = "1".repeat(MAX_ID_LEN + 1);
        for bad in [
            "",
            "-",
            "abc",
            "abc-",
            "-12",
            "ABC-1",
            "abc-+1",
            "abc--1",
            "abc-1-2",
            "abc-01",
            "0abc-1",
            "abc- 1",
            "abc-1 ",
            "abc-0x10",
            "abc-18446744073709551616", // u64::MAX + 1
            "zzzzzzzzz-1",              // 9 digits
            "zzzzzzzz-1",               // 8 digits but over 40 bits
            "ab\u{e9}-1",
            too_long.as_str(),
        ] {
            assert!(bad.parse::<MessageId>().is_err(), "{bad:?} should be rejected");
        }
        // The largest 40-bit epoch is accepted.
        let max = Epoch::from_raw((1 << 40) - 1).expect("fits");
        assert!(format!("{max}-1").parse::<MessageId>().is_ok());
    }

    #[test]
    fn since_parse_and_resolve() {
        let e = epoch();
        let other = Epoch::from_raw(7).expect("fits");
        assert_eq!(Since::parse("all"), Ok(Since::All));
        assert_eq!(Since::parse("now"), Ok(Since::Now));
        let id = MessageId { epoch: e, seq: 5 };
        assert_eq!(Since::parse(&id.to_string()), Ok(Since::After(id)));
        let err = Since::parse("ALL").expect_err("case matters");
        assert_eq!(err.to_string(), "id is not <epoch>-<seq>");
        let err = Since::parse("ALL-1").expect_err("case matters");
        assert_eq!(err.to_string(), "id epoch is not lowercase base36");
        assert!(Since::parse("").is_err());

        assert_eq!(Since::All.resolve(e, 9), Resume { after: 0, reset: false });
        assert_eq!(Since::Now.resolve(e, 9), Resume { after: 9, reset: false });
        assert_eq!(Since::After(id).resolve(e, 9), Resume { after: 5, reset: false });
        assert_eq!(Since::After(id).resolve(e, 5), Resume { after: 5, reset: false });
        assert_eq!(Since::After(id).resolve(e, 3), Resume { after: 3, reset: true });
        let old = MessageId { epoch: other, seq: 5 };
        assert_eq!(Since::After(old).resolve(e, 9), Resume { after: 0, reset: true });
    }
}
