//! `http::BodyDecoder` with `ChunkLimits`, fed arbitrary bytes in arbitrary pieces the way the
//! worker does (it keeps what was not consumed and appends the next read).
//!
//! Input: `[limits knob] [split knob] [body bytes]`. Limits knob bits 0-1 pick `max_line`, 2-3
//! `max_trailers`, 4-5 `max_body`, bit 6 a `Content-Length` body (its length from bits 0-5)
//! instead of a chunked one. The split knob picks the piece sizes (0: one piece).
//!
//! Beyond "no panic": each call consumes no more than it was given and emits no more than it
//! consumed; the output never exceeds `max_body`; the result (body, bytes consumed, done, or the
//! error) does not depend on how the input was split; a finished chunked body is exactly what a
//! plain reading of RFC 9112 §7.1 makes of the same bytes, so the decoder can never frame a
//! request differently from its peer (the smuggling class); after the end it consumes nothing.
#![no_main]

use halley::http::{BodyDecoder, BodyKind, ChunkLimits, HttpError};
use libfuzzer_sys::fuzz_target;

type Outcome = Result<(Vec<u8>, usize, bool), HttpError>;

fuzz_target!(|data: &[u8]| {
    let ([knob, split], input) = halley_fuzz::knobs::<2>(data);
    let pick = |shift: u32, table: [usize; 4]| table[usize::from(knob >> shift) & 3];
    let limits = ChunkLimits { max_line: pick(0, [1024, 16, 3, 1]), max_trailers: pick(2, [8192, 64, 8, 2]) };
    let max_body = pick(4, [1 << 20, 64, 5, 0]);
    let kind = if knob & 0x40 != 0 { BodyKind::Length(u64::from(knob & 0x3F)) } else { BodyKind::Chunked };

    let whole = feed(kind, limits, max_body, input, &[input.len()]);
    let split = feed(kind, limits, max_body, input, &halley_fuzz::pieces(split, input.len()));
    assert_eq!(whole, split, "the result depends on how the input was split");

    if let (BodyKind::Chunked, Ok((body, used, true))) = (kind, &whole) {
        assert_eq!(plain_reading(&input[..*used]).as_ref(), Some(body), "decoded {:?}", &input[..*used]);
    }
    if let (BodyKind::Length(n), Ok((body, used, done))) = (kind, &whole) {
        let n = n as usize;
        assert_eq!(&input[..*used], &body[..]);
        assert_eq!(*done, input.len() >= n);
        assert_eq!(*used, n.min(input.len()));
    }
});

/// Feeds `input` in pieces of the given sizes, keeping unconsumed bytes like a read buffer.
/// Stops at the end of the body or the first error.
fn feed(kind: BodyKind, limits: ChunkLimits, max_body: usize, input: &[u8], pieces: &[usize]) -> Outcome {
    let mut decoder = BodyDecoder::with_limits(kind, limits);
    let mut out = Vec::new();
    let mut buffered = Vec::new();
    let mut consumed = 0;
    let mut at = 0;
    for &size in pieces {
        buffered.extend_from_slice(&input[at..at + size]);
        at += size;
        let before = out.len();
        let (used, done) = decoder.decode(&buffered, &mut out, max_body)?;
        assert!(used <= buffered.len(), "consumed {used} of {}", buffered.len());
        assert!(out.len() - before <= used, "emitted {} bytes from {used}", out.len() - before);
        assert!(out.len() <= max_body);
        assert_eq!(done, decoder.is_done());
        buffered.drain(..used);
        consumed += used;
        if done {
            assert_eq!(decoder.decode(b"GET / HTTP/1.1\r\n", &mut out, max_body), Ok((0, true)));
            return Ok((out, consumed, true));
        }
        assert!(buffered.is_empty() || kind != BodyKind::Chunked, "a chunked decoder left bytes before the end");
    }
    Ok((out, consumed, false))
}

/// A chunked body read the plain way: each size line up to its CRLF starts with hex digits
/// (anything after them is an extension), then that many data bytes and a CRLF; after the
/// zero-size chunk, trailer lines up to an empty line. Lenient where the decoder is strict, so
/// it only answers "what body, and where does it end" for bodies the decoder accepted.
fn plain_reading(mut input: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = input.windows(2).position(|w| w == b"\r\n")?;
        let digits = input[..line_end].iter().take_while(|b| b.is_ascii_hexdigit()).count();
        let size = usize::from_str_radix(std::str::from_utf8(&input[..digits]).ok()?, 16).ok()?;
        input = &input[line_end + 2..];
        if size == 0 {
            break;
        }
        body.extend_from_slice(input.get(..size)?);
        input = input.get(size..)?.strip_prefix(b"\r\n")?;
    }
    loop {
        let line_end = input.windows(2).position(|w| w == b"\r\n")?;
        input = &input[line_end + 2..];
        if line_end == 0 {
            return input.is_empty().then_some(body);
        }
    }
}
