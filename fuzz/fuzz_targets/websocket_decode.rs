//! The WebSocket frame decoder on arbitrary bytes: a server decoding what a client sends (the
//! attack surface), and a client decoding what a server sends (halley-load's side).
//!
//! Input: `[limits knob] [split knob] [bytes]`. Limits knob bits 0-1 pick `max_frame`, 2-3
//! `max_message`, bit 4 the client role. The split knob picks piece sizes (0: one piece).
//!
//! Beyond "no panic": a call consumes no more than it was given, and `(0, event)` never happens;
//! the bytes held for a fragmented message and every message stay within `max_message`; control
//! payloads stay within 125 bytes and close codes are ones a peer may send; every error maps to
//! 1002, 1007 or 1009 with a reason that fits a Close frame; the events and the final error do
//! not depend on how the bytes were split.
#![no_main]

use halley::transport::websocket::{ClientRole, Decoder, Event, Role, WsError, MAX_CLOSE_REASON, MAX_CONTROL_PAYLOAD};
use libfuzzer_sys::fuzz_target;

/// What a connection made of the bytes: its events, and how it ended.
#[derive(Debug, PartialEq)]
struct Run {
    events: Vec<Event>,
    /// The error that failed the connection, if one did.
    error: Option<WsError>,
    /// Bytes decoded into frames (the rest is an incomplete frame).
    used: usize,
}

fuzz_target!(|data: &[u8]| {
    let ([knob, split], input) = halley_fuzz::knobs::<2>(data);
    let max_frame = [16, 125, 1024, 1 << 20][usize::from(knob & 3)];
    let max_message = [max_frame, 2 * max_frame + 1, 4096, 1 << 20][usize::from((knob >> 2) & 3)];
    let pieces = halley_fuzz::pieces(split, input.len());
    if knob & 0x10 == 0 {
        let whole = run(Decoder::new(max_frame, max_message), max_message, input, &[input.len()]);
        let split = run(Decoder::new(max_frame, max_message), max_message, input, &pieces);
        assert_eq!(whole, split, "the result depends on how the input was split");
    } else {
        let whole = run(Decoder::<ClientRole>::client(max_frame, max_message), max_message, input, &[input.len()]);
        let split = run(Decoder::<ClientRole>::client(max_frame, max_message), max_message, input, &pieces);
        assert_eq!(whole, split, "the result depends on how the input was split");
    }
});

/// Feeds `input` in pieces as the worker does: append the read, decode frames until one is
/// incomplete, keep the rest. Stops at an error or a Close (the worker stops decoding there).
fn run<R: Role>(mut decoder: Decoder<R>, max_message: usize, input: &[u8], pieces: &[usize]) -> Run {
    let mut buffered = Vec::new();
    let mut events = Vec::new();
    let mut used = 0;
    let mut at = 0;
    for &size in pieces {
        buffered.extend_from_slice(&input[at..at + size]);
        at += size;
        loop {
            match decoder.decode(&buffered) {
                Ok((0, event)) => {
                    assert_eq!(event, None, "an event from no bytes");
                    break;
                }
                Ok((n, event)) => {
                    assert!(n <= buffered.len());
                    assert!(decoder.buffered() <= max_message);
                    buffered.drain(..n);
                    used += n;
                    let Some(event) = event else { continue };
                    check(&event, max_message);
                    let closed = matches!(event, Event::Close { .. });
                    events.push(event);
                    if closed {
                        return Run { events, error: None, used };
                    }
                }
                Err(e) => {
                    assert!([1002, 1007, 1009].contains(&e.close_code()), "{e:?}");
                    assert!(!e.reason().is_empty() && e.reason().len() <= MAX_CLOSE_REASON);
                    return Run { events, error: Some(e), used };
                }
            }
        }
    }
    Run { events, error: None, used }
}

fn check(event: &Event, max_message: usize) {
    match event {
        Event::Text(text) => assert!(text.len() <= max_message),
        Event::Binary(data) => assert!(data.len() <= max_message),
        Event::Ping(payload) | Event::Pong(payload) => assert!(payload.len() <= MAX_CONTROL_PAYLOAD),
        Event::Close { code, reason } => {
            assert!(reason.len() <= MAX_CLOSE_REASON);
            assert!(code.is_some() || reason.is_empty());
            if let Some(code) = code {
                assert!(matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999), "close code {code}");
            }
        }
    }
}
