//! WebSocket encode -> decode round trip: messages a client sends (masked, possibly fragmented,
//! with control frames between the fragments) decode at the server to exactly those messages,
//! and the frames a server writes decode at a client to exactly what was sent.
//!
//! Input: structured (`arbitrary`): a list of messages, each with its kind, payload, fragment
//! cuts and masking key, plus a length class that makes some payloads cross the 126 and 65,536
//! byte boundaries of the length encoding.
#![no_main]

use halley::transport::websocket::{
    close_frame, encode_frame, encode_masked_frame, frame_header, ClientRole, Decoder, Event, Opcode, MAX_CLOSE_REASON,
    MAX_CONTROL_PAYLOAD,
};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Kind {
    Text,
    Binary,
    Ping,
    Pong,
    Close { code: u16 },
}

#[derive(Arbitrary, Debug)]
struct Msg {
    kind: Kind,
    payload: Vec<u8>,
    /// Pads the payload to a length near an encoding boundary: 0 none, 1 ~126, 2 ~65,536.
    length_class: u8,
    pad: u8,
    /// Fragment cut points (data messages only), as fractions of the payload.
    cuts: Vec<u8>,
    /// A Ping sent between the fragments.
    ping_between: bool,
    key: [u8; 4],
}

/// Decoder limits: far above any message built here (a padded payload of invalid UTF-8 triples
/// as text).
const MAX: usize = 1 << 20;

fuzz_target!(|msgs: Vec<Msg>| {
    let mut to_server = Vec::new();
    let mut to_client = Vec::new();
    let mut expected = Vec::new();
    let mut expected_at_server = Vec::new();
    for msg in msgs.iter().take(16) {
        let payload = padded(msg);
        let (opcode, event) = match &msg.kind {
            Kind::Text => {
                let text = String::from_utf8_lossy(&payload).into_owned();
                encode_data(&mut to_server, &mut expected_at_server, Opcode::Text, text.as_bytes(), msg);
                encode_frame(&mut to_client, Opcode::Text, text.as_bytes());
                expected_at_server.push(Event::Text(text.clone()));
                expected.push(Event::Text(text));
                continue;
            }
            Kind::Binary => {
                encode_data(&mut to_server, &mut expected_at_server, Opcode::Binary, &payload, msg);
                encode_frame(&mut to_client, Opcode::Binary, &payload);
                expected_at_server.push(Event::Binary(payload.clone()));
                expected.push(Event::Binary(payload));
                continue;
            }
            Kind::Ping => (Opcode::Ping, Event::Ping(payload[..payload.len().min(MAX_CONTROL_PAYLOAD)].to_vec())),
            Kind::Pong => (Opcode::Pong, Event::Pong(payload[..payload.len().min(MAX_CONTROL_PAYLOAD)].to_vec())),
            Kind::Close { code } => {
                // Codes a peer may send; the reason is cut at a character boundary to fit.
                let code = [1000, 1001, 1003, 1008, 1011, 3000, 4999][usize::from(*code) % 7];
                let reason = String::from_utf8_lossy(&payload).into_owned();
                let frame = close_frame(code, &reason);
                let Event::Close { code: got, reason: cut } =
                    decode_all(Decoder::<ClientRole>::client(MAX, MAX), &frame).pop().expect("a close frame decodes")
                else {
                    panic!("not a close")
                };
                assert_eq!(got, Some(code));
                assert!(cut.len() <= MAX_CLOSE_REASON && reason.starts_with(&cut));
                assert!(reason.len() <= MAX_CLOSE_REASON || cut.len() + 4 > MAX_CLOSE_REASON, "cut more than a char");
                continue;
            }
        };
        encode_masked_frame(&mut to_server, opcode, &payload, msg.key);
        encode_frame(&mut to_client, opcode, &payload);
        expected_at_server.push(event.clone());
        expected.push(event);
    }
    let at_server = decode_all(Decoder::new(MAX, MAX), &to_server);
    assert_eq!(at_server, expected_at_server, "client frames did not decode to what was sent");
    let at_client = decode_all(Decoder::<ClientRole>::client(MAX, MAX), &to_client);
    assert_eq!(at_client, expected, "server frames did not decode to what was sent");
});

/// The message's payload, padded with `pad` bytes to a length near a length-encoding boundary.
fn padded(msg: &Msg) -> Vec<u8> {
    let mut payload = msg.payload.clone();
    let target = match msg.length_class % 8 {
        1 => 124 + usize::from(msg.pad % 4),
        2 => 65_534 + usize::from(msg.pad % 4),
        _ => return payload,
    };
    payload.resize(target.max(payload.len()), msg.pad);
    payload
}

/// A client's data message: one masked frame, or fragments cut where `msg.cuts` says, with a
/// Ping between the first two when asked (control frames may interleave, RFC 6455 §5.4; its
/// event comes before the message's, in `events`).
fn encode_data(out: &mut Vec<u8>, events: &mut Vec<Event>, opcode: Opcode, payload: &[u8], msg: &Msg) {
    let mut cuts: Vec<usize> = msg.cuts.iter().take(8).map(|&c| payload.len() * usize::from(c) / 255).collect();
    cuts.sort_unstable();
    cuts.dedup();
    if cuts.is_empty() {
        encode_masked_frame(out, opcode, payload, msg.key);
        return;
    }
    let mut start = 0;
    let ends = cuts.into_iter().chain([payload.len()]);
    for (i, end) in ends.enumerate() {
        let fin = end == payload.len();
        let op = if i == 0 { opcode } else { Opcode::Continuation };
        let header = frame_header(op, fin, end - start);
        let header = header.as_ref();
        out.push(header[0]);
        out.push(header[1] | 0x80);
        out.extend_from_slice(&header[2..]);
        out.extend_from_slice(&msg.key);
        out.extend(payload[start..end].iter().enumerate().map(|(j, b)| b ^ msg.key[j % 4]));
        if i == 0 && msg.ping_between && !fin {
            encode_masked_frame(out, Opcode::Ping, b"between", msg.key);
            events.push(Event::Ping(b"between".to_vec()));
        }
        start = end;
        if fin {
            break;
        }
    }
}

/// Every event in `bytes`, which must decode without an error or leftover.
fn decode_all<R: halley::transport::websocket::Role>(mut decoder: Decoder<R>, mut bytes: &[u8]) -> Vec<Event> {
    let mut events = Vec::new();
    while !bytes.is_empty() {
        match decoder.decode(bytes) {
            Ok((0, _)) => panic!("{} bytes left undecoded", bytes.len()),
            Ok((n, event)) => {
                bytes = &bytes[n..];
                events.extend(event);
            }
            Err(e) => panic!("{e:?} with {} bytes left", bytes.len()),
        }
    }
    events
}
