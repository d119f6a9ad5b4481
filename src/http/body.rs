//! Incremental message-body decoding (RFC 9112 §6, §7.1): `Content-Length` and chunked bodies,
//! fed whatever bytes have arrived, never reading past the end of the body.
//!
//! The one chunked decoder of the workspace: the server decodes request bodies with it, the
//! `halley pub`/`sub` client and halley-load decode response bodies with it (each with its own
//! [`ChunkLimits`]; a close-delimited response body needs no decoder).

use super::{BodyKind, HttpError};

/// Longest chunk-size line (size, extensions, not the CRLF), in bytes. Extensions are ignored,
/// so there is no reason to buffer or scan more than this.
pub const MAX_CHUNK_LINE: usize = 1024;

/// Largest trailer section after the last chunk, in bytes (including its final CRLF).
pub const MAX_TRAILERS: usize = 8 * 1024;

/// Bounds on the framing of a chunked body, which is scanned but never buffered. The body
/// itself is bounded by the `max_body` given to each [`BodyDecoder::decode`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLimits {
    /// Longest chunk-size line (size and extensions, not the CRLF), in bytes.
    pub max_line: usize,
    /// Largest trailer section (including its final CRLF), in bytes.
    pub max_trailers: usize,
}

impl Default for ChunkLimits {
    /// The server's request limits: [`MAX_CHUNK_LINE`] and [`MAX_TRAILERS`].
    fn default() -> Self {
        ChunkLimits { max_line: MAX_CHUNK_LINE, max_trailers: MAX_TRAILERS }
    }
}

/// Incremental body decoder (RFC 9112 §6, §7.1). Sans-I/O.
///
/// A struct around a private state enum rather than a public enum, so that the parser's
/// intermediate states cannot be built or matched by callers; [`BodyDecoder::is_done`] tells
/// whether the body is complete. After an error the decoder must not be used again.
#[derive(Debug, Clone)]
pub struct BodyDecoder {
    state: State,
    /// Body bytes produced so far, checked against `max_body`.
    decoded: u64,
    limits: ChunkLimits,
}

impl BodyDecoder {
    /// A decoder for a body framed as `kind` (from [`super::Request::body_kind`]), with the
    /// server's [`ChunkLimits`].
    pub fn new(kind: BodyKind) -> BodyDecoder {
        BodyDecoder::with_limits(kind, ChunkLimits::default())
    }

    /// A decoder for a body framed as `kind` whose chunked framing is bounded by `limits`.
    pub fn with_limits(kind: BodyKind, limits: ChunkLimits) -> BodyDecoder {
        let state = match kind {
            BodyKind::None | BodyKind::Length(0) => State::Done,
            BodyKind::Length(remaining) => State::Length { remaining },
            BodyKind::Chunked => State::Chunked(Chunk::Size { size: 0, digits: 0, line: 0 }),
        };
        BodyDecoder { state, decoded: 0, limits }
    }

    /// Consumes bytes from `input`, appends body bytes to `out`. Returns how many input bytes were
    /// consumed and whether the body is complete. Never consumes bytes past the end of the body
    /// (they belong to the next pipelined message). Errors: body over `max_body` -> BodyTooLarge,
    /// bad chunk syntax -> Malformed. Chunk extensions ignored; trailers parsed and discarded,
    /// bounded (trailer section over `max_trailers` -> HeadTooLarge). Chunk-size line over
    /// `max_line` -> Malformed. `max_body` counts every byte since the start of the body; a
    /// caller streaming an endless body passes `usize::MAX` and bounds what it keeps itself.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>, max_body: usize) -> Result<(usize, bool), HttpError> {
        let max_body = u64::try_from(max_body).unwrap_or(u64::MAX);
        match self.state {
            State::Done => Ok((0, true)),
            State::Length { remaining } => {
                if self.decoded.saturating_add(remaining) > max_body {
                    return Err(HttpError::BodyTooLarge);
                }
                let taken = take(remaining, input, out);
                self.decoded += taken as u64;
                let remaining = remaining - taken as u64;
                self.state = if remaining == 0 { State::Done } else { State::Length { remaining } };
                Ok((taken, remaining == 0))
            }
            State::Chunked(_) => self.decode_chunked(input, out, max_body),
        }
    }

    /// Whether the whole body has been decoded (always true for a body-less request).
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Body bytes produced so far.
    #[cfg(test)]
    pub fn decoded(&self) -> u64 {
        self.decoded
    }

    fn decode_chunked(&mut self, input: &[u8], out: &mut Vec<u8>, max_body: u64) -> Result<(usize, bool), HttpError> {
        let mut pos = 0;
        while let State::Chunked(chunk) = self.state {
            let rest = input.get(pos..).unwrap_or(&[]);
            if let Chunk::Data { remaining } = chunk {
                // Chunk data is copied in bulk; only the framing is walked byte by byte.
                let taken = take(remaining, rest, out);
                pos += taken;
                self.decoded += taken as u64;
                let remaining = remaining - taken as u64;
                self.state = State::Chunked(if remaining == 0 { Chunk::DataCr } else { Chunk::Data { remaining } });
                if remaining != 0 {
                    break; // input exhausted
                }
                continue;
            }
            let Some(&byte) = rest.first() else { break };
            pos += 1;
            self.state = chunk.step(byte, self.decoded, max_body, &self.limits)?;
        }
        Ok((pos, self.is_done()))
    }
}

#[derive(Debug, Clone, Copy)]
enum State {
    Length { remaining: u64 },
    Chunked(Chunk),
    Done,
}

/// Where a chunked decoder is within `chunked-body` (RFC 9112 §7.1):
/// `*chunk last-chunk trailer-section CRLF`, `chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF`.
#[derive(Debug, Clone, Copy)]
enum Chunk {
    /// Reading the hex digits of a chunk-size; `line` counts the size line's bytes so far.
    Size {
        size: u64,
        digits: u32,
        line: usize,
    },
    /// After the digits: whitespace (`in_ext` false) or a chunk extension (`in_ext` true),
    /// skipped up to the CR.
    Extension {
        size: u64,
        line: usize,
        in_ext: bool,
    },
    /// Saw the CR ending a size line; the LF must follow.
    SizeLf {
        size: u64,
    },
    /// Inside chunk data.
    Data {
        remaining: u64,
    },
    /// After chunk data; its CRLF must follow.
    DataCr,
    DataLf,
    /// At the start of a trailer line (or of the final CRLF); `total` counts trailer bytes.
    TrailerStart {
        total: usize,
    },
    TrailerName {
        total: usize,
    },
    TrailerValue {
        total: usize,
    },
    TrailerLf {
        total: usize,
    },
    /// Saw the CR of the final empty line; the LF ends the body.
    EndLf,
}

impl Chunk {
    /// Advances the framing by one byte; `Data` is handled in bulk by the caller.
    fn step(self, b: u8, decoded: u64, max_body: u64, limits: &ChunkLimits) -> Result<State, HttpError> {
        let grow = |line| grow_line(line, limits.max_line);
        let trailer = |total| grow_trailer(total, limits.max_trailers);
        const BAD_SIZE: HttpError = HttpError::Malformed("invalid chunk size line");
        const BAD_TRAILER: HttpError = HttpError::Malformed("invalid chunk trailer");
        let next = match self {
            Chunk::Size { size, digits, line } => {
                match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        let digit = u64::from(hex_value(b));
                        // An overflowing size is certainly over any body limit.
                        let size =
                            size.checked_mul(16).and_then(|s| s.checked_add(digit)).ok_or(HttpError::BodyTooLarge)?;
                        if decoded.saturating_add(size) > max_body {
                            return Err(HttpError::BodyTooLarge);
                        }
                        Chunk::Size { size, digits: digits + 1, line: grow(line)? }
                    }
                    _ if digits == 0 => return Err(BAD_SIZE),
                    b' ' | b'\t' => Chunk::Extension { size, line: grow(line)?, in_ext: false },
                    b';' => Chunk::Extension { size, line: grow(line)?, in_ext: true },
                    b'\r' => Chunk::SizeLf { size },
                    _ => return Err(BAD_SIZE),
                }
            }
            Chunk::Extension { size, line, in_ext } => {
                match b {
                    b'\r' => Chunk::SizeLf { size },
                    // BWS before the `;` (RFC 9112 §7.1.1); extensions themselves are ignored.
                    b' ' | b'\t' => Chunk::Extension { size, line: grow(line)?, in_ext },
                    b';' => Chunk::Extension { size, line: grow(line)?, in_ext: true },
                    _ if in_ext && is_field_byte(b) => Chunk::Extension { size, line: grow(line)?, in_ext },
                    _ => return Err(BAD_SIZE),
                }
            }
            Chunk::SizeLf { size } => match (b, size) {
                (b'\n', 0) => Chunk::TrailerStart { total: 0 },
                (b'\n', remaining) => Chunk::Data { remaining },
                _ => return Err(BAD_SIZE),
            },
            Chunk::Data { .. } => self,
            Chunk::DataCr => match b {
                b'\r' => Chunk::DataLf,
                _ => return Err(HttpError::Malformed("missing CRLF after chunk data")),
            },
            Chunk::DataLf => match b {
                b'\n' => Chunk::Size { size: 0, digits: 0, line: 0 },
                _ => return Err(HttpError::Malformed("missing CRLF after chunk data")),
            },
            Chunk::TrailerStart { total } => match b {
                b'\r' => Chunk::EndLf,
                _ if is_tchar(b) => Chunk::TrailerName { total: trailer(total)? },
                _ => return Err(BAD_TRAILER),
            },
            Chunk::TrailerName { total } => match b {
                b':' => Chunk::TrailerValue { total: trailer(total)? },
                _ if is_tchar(b) => Chunk::TrailerName { total: trailer(total)? },
                _ => return Err(BAD_TRAILER),
            },
            Chunk::TrailerValue { total } => match b {
                b'\r' => Chunk::TrailerLf { total: trailer(total)? },
                _ if is_field_byte(b) => Chunk::TrailerValue { total: trailer(total)? },
                _ => return Err(BAD_TRAILER),
            },
            Chunk::TrailerLf { total } => match b {
                b'\n' => Chunk::TrailerStart { total: trailer(total)? },
                _ => return Err(BAD_TRAILER),
            },
            Chunk::EndLf => match b {
                b'\n' => return Ok(State::Done),
                _ => return Err(BAD_TRAILER),
            },
        };
        Ok(State::Chunked(next))
    }
}

/// Moves up to `remaining` bytes of `input` to `out`, returning how many.
fn take(remaining: u64, input: &[u8], out: &mut Vec<u8>) -> usize {
    let n = usize::try_from(remaining).map_or(input.len(), |r| r.min(input.len()));
    out.extend_from_slice(&input[..n]);
    n
}

/// Counts one more byte of a chunk-size line of at most `max_line` bytes.
fn grow_line(line: usize, max_line: usize) -> Result<usize, HttpError> {
    if line >= max_line {
        Err(HttpError::Malformed("chunk size line too long"))
    } else {
        Ok(line + 1)
    }
}

/// Counts one more trailer byte. The final CRLF (2 bytes) is budgeted up front so the whole
/// section stays within `max_trailers`.
fn grow_trailer(total: usize, max_trailers: usize) -> Result<usize, HttpError> {
    if total.saturating_add(1 + 2) > max_trailers {
        Err(HttpError::HeadTooLarge)
    } else {
        Ok(total + 1)
    }
}

fn hex_value(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b.wrapping_sub(b'A').wrapping_add(10),
    }
}

/// `tchar` (RFC 9110 §5.6.2): the bytes of a token such as a field name or a method.
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Bytes allowed inside a field value or chunk extension: VCHAR, SP, HTAB and obs-text
/// (RFC 9110 §5.5); no other control bytes.
fn is_field_byte(b: u8) -> bool {
    b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes (the rest is kept, as a read buffer would be),
    /// returning the body, the bytes consumed in total and whether the body completed.
    fn feed(kind: BodyKind, input: &[u8], step: usize, max_body: usize) -> Result<(Vec<u8>, usize, bool), HttpError> {
        let mut decoder = BodyDecoder::new(kind);
        let mut out = Vec::new();
        let mut buffered: Vec<u8> = Vec::new();
        let mut consumed = 0;
        for piece in input.chunks(step.max(1)) {
            buffered.extend_from_slice(piece);
            let (used, done) = decoder.decode(&buffered, &mut out, max_body)?;
            assert!(used <= buffered.len());
            buffered.drain(..used);
            consumed += used;
            if done {
                assert!(decoder.is_done());
                return Ok((out, consumed, true));
            }
        }
        Ok((out, consumed, false))
    }

    const NEXT: &[u8] = b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n";

    #[test]
    fn chunked_bodies_any_split() {
        let table: &[(&[u8], &[u8])] = &[
            (b"5\r\nhello\r\n0\r\n\r\n", b"hello"),
            (b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"hello world"),
            (b"A\r\n0123456789\r\na\r\nabcdefghij\r\n0\r\n\r\n", b"0123456789abcdefghij"),
            (b"000\r\n\r\n", b""),
            (b"3;name=value;flag\r\nabc\r\n0;last=\"q;\\\" \"\r\n\r\n", b"abc"),
            (b"3 ; ext\r\nabc\r\n0\r\n\r\n", b"abc"),
            (b"3\t\r\nabc\r\n0\r\n\r\n", b"abc"),
            (b"2\r\nhi\r\n0\r\nExpires: never\r\nX-Checksum: abc def\r\n\r\n", b"hi"),
            (b"2\r\n\r\n\r\n0\r\nX:\r\n\r\n", b"\r\n"),
        ];
        for (body, expected) in table {
            let mut input = body.to_vec();
            input.extend_from_slice(NEXT);
            for step in [1, 2, 3, 7, input.len()] {
                let got = feed(BodyKind::Chunked, &input, step, 1024);
                assert_eq!(
                    got,
                    Ok((expected.to_vec(), body.len(), true)),
                    "{:?} in steps of {step}",
                    String::from_utf8_lossy(body)
                );
            }
        }
    }

    #[test]
    fn chunked_errors() {
        let long_line = format!("1;{}\r\nx\r\n0\r\n\r\n", "e".repeat(MAX_CHUNK_LINE));
        let long_trailer = format!("0\r\nX: {}\r\n\r\n", "v".repeat(MAX_TRAILERS));
        let table: &[(&[u8], HttpError)] = &[
            (b"\r\n", HttpError::Malformed("invalid chunk size line")),
            (b"x\r\n", HttpError::Malformed("invalid chunk size line")),
            (b"-1\r\n", HttpError::Malformed("invalid chunk size line")),
            (b"5 5\r\n", HttpError::Malformed("invalid chunk size line")),
            (b"5\nhello", HttpError::Malformed("invalid chunk size line")),
            (b"5\r\r", HttpError::Malformed("invalid chunk size line")),
            (b"5;a\x00\r\n", HttpError::Malformed("invalid chunk size line")),
            (b"5\r\nhelloX", HttpError::Malformed("missing CRLF after chunk data")),
            (b"5\r\nhello\n0\r\n\r\n", HttpError::Malformed("missing CRLF after chunk data")),
            (b"5\r\nhello\rX", HttpError::Malformed("missing CRLF after chunk data")),
            (b"0\r\nbad header\r\n\r\n", HttpError::Malformed("invalid chunk trailer")),
            (b"0\r\n: v\r\n\r\n", HttpError::Malformed("invalid chunk trailer")),
            (b"0\r\nX: a\nb\r\n\r\n", HttpError::Malformed("invalid chunk trailer")),
            (b"0\r\n\rX", HttpError::Malformed("invalid chunk trailer")),
            (long_line.as_bytes(), HttpError::Malformed("chunk size line too long")),
            (long_trailer.as_bytes(), HttpError::HeadTooLarge),
            (b"401\r\n", HttpError::BodyTooLarge),
            (b"1000\r\n", HttpError::BodyTooLarge),
            (b"ffffffffffffffffff\r\n", HttpError::BodyTooLarge),
        ];
        for (input, expected) in table {
            for step in [1, input.len()] {
                assert_eq!(
                    feed(BodyKind::Chunked, input, step, 1024).map(|_| ()),
                    Err(*expected),
                    "{:?} in steps of {step}",
                    String::from_utf8_lossy(input)
                );
            }
        }
    }

    #[test]
    fn chunked_limit_counts_all_chunks() {
        let body = b"200\r\n".iter().chain(&[b'a'; 0x200]).chain(b"\r\n201\r\n").copied().collect::<Vec<u8>>();
        assert_eq!(feed(BodyKind::Chunked, &body, 5, 1024), Err(HttpError::BodyTooLarge));
        let body = b"200\r\n".iter().chain(&[b'a'; 0x200]).chain(b"\r\n200\r\n").copied().collect::<Vec<u8>>();
        assert_eq!(feed(BodyKind::Chunked, &body, 5, 1024).map(|(out, _, done)| (out.len(), done)), Ok((512, false)));
    }

    #[test]
    fn trailer_section_limit_is_exact() {
        // "X: " + value + CRLF + final CRLF == MAX_TRAILERS exactly: accepted.
        let value = "v".repeat(MAX_TRAILERS - 3 - 2 - 2);
        let input = format!("0\r\nX: {value}\r\n\r\n");
        assert_eq!(feed(BodyKind::Chunked, input.as_bytes(), 64, 16), Ok((Vec::new(), input.len(), true)));
        // One byte more: refused.
        let input = format!("0\r\nX: {value}v\r\n\r\n");
        assert_eq!(feed(BodyKind::Chunked, input.as_bytes(), 64, 16), Err(HttpError::HeadTooLarge));
        // Many small trailer lines count together.
        let input = format!("0\r\n{}\r\n", "T: v\r\n".repeat(MAX_TRAILERS / 6 + 1));
        assert_eq!(feed(BodyKind::Chunked, input.as_bytes(), 64, 16), Err(HttpError::HeadTooLarge));
    }

    #[test]
    fn chunk_limits_are_the_callers() {
        let limits = ChunkLimits { max_line: 4, max_trailers: 12 };
        let decode = |input: &[u8]| {
            let mut out = Vec::new();
            BodyDecoder::with_limits(BodyKind::Chunked, limits).decode(input, &mut out, usize::MAX).map(|r| (r, out))
        };
        assert_eq!(decode(b"1;ab\r\nx\r\n0\r\nX: 12345\r\n\r\n"), Ok(((24, true), b"x".to_vec())));
        assert_eq!(decode(b"1;abc\r\n"), Err(HttpError::Malformed("chunk size line too long")));
        assert_eq!(decode(b"0\r\nX: 123456\r\n\r\n"), Err(HttpError::HeadTooLarge));
        assert_eq!(ChunkLimits::default(), ChunkLimits { max_line: MAX_CHUNK_LINE, max_trailers: MAX_TRAILERS });
    }

    #[test]
    fn length_bodies() {
        let mut input = b"hello".to_vec();
        input.extend_from_slice(NEXT);
        for step in [1, 2, 4, input.len()] {
            assert_eq!(feed(BodyKind::Length(5), &input, step, 5), Ok((b"hello".to_vec(), 5, true)));
        }
        assert_eq!(feed(BodyKind::Length(6), b"hello", 1, 10), Ok((b"hello".to_vec(), 5, false)));
        assert_eq!(feed(BodyKind::Length(6), b"hello!", 1, 5), Err(HttpError::BodyTooLarge));
        assert_eq!(feed(BodyKind::Length(u64::MAX), b"x", 1, usize::MAX), Ok((b"x".to_vec(), 1, false)));
    }

    #[test]
    fn no_body_consumes_nothing() {
        for kind in [BodyKind::None, BodyKind::Length(0)] {
            let mut decoder = BodyDecoder::new(kind);
            assert!(decoder.is_done());
            let mut out = Vec::new();
            assert_eq!(decoder.decode(NEXT, &mut out, 0), Ok((0, true)));
            assert!(out.is_empty());
        }
        let mut decoder = BodyDecoder::new(BodyKind::Chunked);
        let mut out = Vec::new();
        assert_eq!(decoder.decode(b"0\r\n\r\n", &mut out, 0), Ok((5, true)));
        assert_eq!(decoder.decode(NEXT, &mut out, 0), Ok((0, true)));
        assert_eq!(decoder.decoded(), 0);
    }

    #[test]
    fn empty_input_is_not_progress() {
        let mut decoder = BodyDecoder::new(BodyKind::Chunked);
        let mut out = Vec::new();
        assert_eq!(decoder.decode(b"", &mut out, 10), Ok((0, false)));
        assert_eq!(decoder.decode(b"3\r\nab", &mut out, 10), Ok((5, false)));
        assert_eq!(decoder.decode(b"", &mut out, 10), Ok((0, false)));
        assert_eq!(decoder.decode(b"c\r\n0\r\n\r\nrest", &mut out, 10), Ok((8, true)));
        assert_eq!((out.as_slice(), decoder.decoded()), (&b"abc"[..], 3));
    }
}
