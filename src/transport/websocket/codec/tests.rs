//! Codec tests: the RFC 6455 §5.7 examples, every rule's close code, truncation at every byte,
//! and a byte-soup loop that must never panic.

use super::*;
use crate::xorshift::XorShift;

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A masked client frame, as a browser would send it (shortest length encoding).
fn client(fin: bool, opcode: Opcode, payload: &[u8]) -> Vec<u8> {
    let header = frame_header(opcode, fin, payload.len());
    let mut out = Vec::new();
    out.extend_from_slice(header.as_ref());
    out[1] |= 0x80;
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    out
}

/// Turns a server frame (unmasked) into the same frame masked with `MASK`.
fn masked(server_frame: &[u8]) -> Vec<u8> {
    let header_len = match server_frame[1] & 0x7f {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    let mut out = server_frame[..header_len].to_vec();
    out[1] |= 0x80;
    out.extend_from_slice(&MASK);
    out.extend(server_frame[header_len..].iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    out
}

fn decoder() -> Decoder {
    Decoder::new(1 << 20, 1 << 20)
}

/// Decodes `input` completely, frame by frame, collecting the events.
fn decode_all<R: Role>(dec: &mut Decoder<R>, mut input: &[u8]) -> Result<Vec<Event>, WsError> {
    let mut events = Vec::new();
    loop {
        let (n, event) = dec.decode(input)?;
        events.extend(event);
        if n == 0 {
            assert!(input.is_empty(), "stopped with {} bytes left", input.len());
            return Ok(events);
        }
        input = &input[n..];
    }
}

fn error_of(dec: &mut Decoder, input: &[u8]) -> WsError {
    match decode_all(dec, input) {
        Err(e) => e,
        Ok(events) => panic!("expected an error, got {events:?}"),
    }
}

// RFC 6455 §5.7 examples.

#[test]
fn rfc_single_frame_masked_text() {
    let frame = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
    assert_eq!(decoder().decode(&frame), Ok((11, Some(Event::Text("Hello".into())))));
    assert_eq!(client(true, Opcode::Text, b"Hello"), frame);
}

#[test]
fn rfc_single_frame_unmasked_text_is_what_the_server_sends_and_refused_from_a_client() {
    let frame = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    let mut out = Vec::new();
    encode_frame(&mut out, Opcode::Text, b"Hello");
    assert_eq!(out, frame);
    let err = decoder().decode(&frame).expect_err("must fail");
    assert_eq!((err, err.close_code()), (WsError::Unmasked, 1002));
}

#[test]
fn rfc_fragmented_text() {
    let first = [0x01, 0x03, 0x48, 0x65, 0x6c];
    let last = [0x80, 0x02, 0x6c, 0x6f];
    assert_eq!(frame_header(Opcode::Text, false, 3).as_ref(), &first[..2]);
    assert_eq!(frame_header(Opcode::Continuation, true, 2).as_ref(), &last[..2]);

    let mut dec = decoder();
    let first = masked(&first);
    assert_eq!(dec.decode(&first), Ok((first.len(), None)));
    assert!(dec.in_message());
    assert_eq!(dec.buffered(), 3);
    let last = masked(&last);
    assert_eq!(dec.decode(&last), Ok((last.len(), Some(Event::Text("Hello".into())))));
    assert!(!dec.in_message());
    assert_eq!(dec.buffered(), 0);
}

#[test]
fn rfc_ping_and_masked_pong() {
    let ping = [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    let mut out = Vec::new();
    encode_frame(&mut out, Opcode::Ping, b"Hello");
    assert_eq!(out, ping);
    assert_eq!(decoder().decode(&masked(&ping)), Ok((11, Some(Event::Ping(b"Hello".to_vec())))));

    let pong = [0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
    assert_eq!(decoder().decode(&pong), Ok((11, Some(Event::Pong(b"Hello".to_vec())))));
}

#[test]
fn rfc_extended_lengths() {
    assert_eq!(frame_header(Opcode::Binary, true, 256).as_ref(), [0x82, 0x7e, 0x01, 0x00]);
    assert_eq!(
        frame_header(Opcode::Binary, true, 65536).as_ref(),
        [0x82, 0x7f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00]
    );
    assert_eq!(frame_header(Opcode::Binary, true, 125).as_ref(), [0x82, 125]);
    assert_eq!(frame_header(Opcode::Binary, true, 126).as_ref(), [0x82, 126, 0, 126]);
    assert_eq!(frame_header(Opcode::Binary, true, 65535).as_ref(), [0x82, 126, 0xff, 0xff]);

    for len in [0, 1, 125, 126, 256, 65535, 65536, 70000] {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
        let frame = client(true, Opcode::Binary, &payload);
        assert_eq!(decoder().decode(&frame), Ok((frame.len(), Some(Event::Binary(payload)))), "len {len}");
    }
}

#[test]
fn non_minimal_length_encoding_is_accepted() {
    // 5 bytes announced with the 16-bit and the 64-bit form.
    let mut frame = vec![0x82, 0xfe, 0x00, 0x05];
    frame.extend_from_slice(&MASK);
    frame.extend(b"abcde".iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    assert_eq!(decoder().decode(&frame), Ok((frame.len(), Some(Event::Binary(b"abcde".to_vec())))));
    let mut frame = vec![0x82, 0xff, 0, 0, 0, 0, 0, 0, 0, 0x05];
    frame.extend_from_slice(&MASK);
    frame.extend(b"abcde".iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    assert_eq!(decoder().decode(&frame), Ok((frame.len(), Some(Event::Binary(b"abcde".to_vec())))));
}

#[test]
fn every_truncation_point_is_incomplete_and_changes_nothing() {
    let streams: Vec<Vec<u8>> = vec![
        client(true, Opcode::Text, b"Hello"),
        client(true, Opcode::Text, b""),
        client(true, Opcode::Binary, &[9u8; 300]),
        client(true, Opcode::Binary, &[1u8; 70_000]),
        client(true, Opcode::Ping, b"p"),
        client(true, Opcode::Close, &[0x03, 0xe8, b'b', b'y', b'e']),
    ];
    for frame in &streams {
        let mut dec = decoder();
        for cut in 0..frame.len() {
            assert_eq!(dec.decode(&frame[..cut]), Ok((0, None)), "cut at {cut} of {}", frame.len());
        }
        let (n, event) = dec.decode(frame).expect("complete frame decodes");
        assert_eq!(n, frame.len());
        assert!(event.is_some());
    }

    // The same inside a fragmented message: a truncated continuation leaves the assembly alone.
    let mut dec = decoder();
    let first = client(false, Opcode::Text, b"Hel");
    assert_eq!(dec.decode(&first), Ok((first.len(), None)));
    let last = client(true, Opcode::Continuation, b"lo");
    for cut in 0..last.len() {
        assert_eq!(dec.decode(&last[..cut]), Ok((0, None)));
        assert_eq!(dec.buffered(), 3);
    }
    assert_eq!(dec.decode(&last), Ok((last.len(), Some(Event::Text("Hello".into())))));
}

#[test]
fn decodes_one_frame_per_call_from_a_stream() {
    let mut stream = client(true, Opcode::Text, b"one");
    stream.extend(client(true, Opcode::Binary, b"two"));
    stream.extend(client(true, Opcode::Close, &[]));
    let mut dec = decoder();
    let (n, event) = dec.decode(&stream).expect("first");
    assert_eq!((n, event), (9, Some(Event::Text("one".into()))));
    assert_eq!(
        decode_all(&mut dec, &stream[n..]),
        Ok(vec![Event::Binary(b"two".to_vec()), Event::Close { code: None, reason: String::new() }])
    );
}

#[test]
fn control_frames_between_fragments() {
    let mut stream = client(false, Opcode::Binary, b"ab");
    stream.extend(client(true, Opcode::Ping, b"p1"));
    stream.extend(client(false, Opcode::Continuation, b""));
    stream.extend(client(true, Opcode::Pong, b""));
    stream.extend(client(false, Opcode::Continuation, b"cd"));
    stream.extend(client(true, Opcode::Ping, b"p2"));
    stream.extend(client(true, Opcode::Continuation, b"e"));
    stream.extend(client(true, Opcode::Text, b"next"));
    assert_eq!(
        decode_all(&mut decoder(), &stream),
        Ok(vec![
            Event::Ping(b"p1".to_vec()),
            Event::Pong(Vec::new()),
            Event::Ping(b"p2".to_vec()),
            Event::Binary(b"abcde".to_vec()),
            Event::Text("next".into()),
        ])
    );
}

#[test]
fn close_between_fragments_is_reported() {
    let mut stream = client(false, Opcode::Text, b"ab");
    stream.extend(client(true, Opcode::Close, &[0x03, 0xe9]));
    assert_eq!(decode_all(&mut decoder(), &stream), Ok(vec![Event::Close { code: Some(1001), reason: String::new() }]));
}

#[test]
fn utf8_split_across_fragments() {
    let text = "a\u{e9}\u{20ac}\u{1f600}z"; // 1-, 2-, 3- and 4-byte characters
    let bytes = text.as_bytes();
    for cut in 0..=bytes.len() {
        let mut stream = client(false, Opcode::Text, &bytes[..cut]);
        stream.extend(client(true, Opcode::Continuation, &bytes[cut..]));
        assert_eq!(decode_all(&mut decoder(), &stream), Ok(vec![Event::Text(text.into())]), "cut {cut}");
    }
    // One byte per fragment.
    let mut dec = decoder();
    let mut events = Vec::new();
    for (i, b) in bytes.iter().enumerate() {
        let opcode = if i == 0 { Opcode::Text } else { Opcode::Continuation };
        events.extend(decode_all(&mut dec, &client(i + 1 == bytes.len(), opcode, &[*b])).expect("valid"));
    }
    assert_eq!(events, vec![Event::Text(text.into())]);
}

#[test]
fn invalid_utf8_fails_with_1007() {
    for bad in [&[0xffu8][..], b"ab\xc3", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"] {
        let err = error_of(&mut decoder(), &client(true, Opcode::Text, bad));
        assert_eq!((err, err.close_code()), (WsError::InvalidUtf8, 1007), "{bad:?}");
    }
    // Fails fast: a fragment that can never become UTF-8 fails before the message ends.
    let err = decoder().decode(&client(false, Opcode::Text, b"ok\xff")).expect_err("must fail");
    assert_eq!(err, WsError::InvalidUtf8);
    let mut dec = decoder();
    assert!(dec.decode(&client(false, Opcode::Text, b"ok\xe2\x82")).is_ok(), "a cut character waits");
    let err = dec.decode(&client(false, Opcode::Continuation, b"x")).expect_err("must fail");
    assert_eq!(err, WsError::InvalidUtf8);
    // A message that ends in the middle of a character.
    let mut stream = client(false, Opcode::Text, b"ok");
    stream.extend(client(true, Opcode::Continuation, b"\xe2\x82"));
    assert_eq!(error_of(&mut decoder(), &stream), WsError::InvalidUtf8);
    // Binary messages are not checked.
    assert_eq!(decode_all(&mut decoder(), &client(true, Opcode::Binary, b"\xff")), Ok(vec![Event::Binary(vec![0xff])]));
}

#[test]
fn framing_errors_and_their_close_codes() {
    let mut long_len = vec![0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0];
    long_len.extend_from_slice(&MASK);
    let cases: Vec<(&str, Vec<u8>, WsError)> = vec![
        ("unmasked", vec![0x82, 0x00], WsError::Unmasked),
        ("rsv1", vec![0xc1, 0x80], WsError::ReservedBits),
        ("rsv2", vec![0xa1, 0x80], WsError::ReservedBits),
        ("rsv3", vec![0x91, 0x80], WsError::ReservedBits),
        ("fragmented ping", vec![0x09, 0x80], WsError::FragmentedControl),
        ("fragmented close", vec![0x08, 0x80], WsError::FragmentedControl),
        ("ping of 126", vec![0x89, 0xfe, 0x00, 0x7e], WsError::ControlTooLong),
        ("pong of 64-bit length", vec![0x8a, 0xff], WsError::ControlTooLong),
        ("lone continuation", vec![0x80, 0x80], WsError::UnexpectedContinuation),
        ("top length bit", long_len, WsError::LengthOverflow),
    ];
    for (name, input, want) in cases {
        assert_eq!(decoder().decode(&input), Err(want), "{name}");
        assert_eq!(want.close_code(), 1002, "{name}");
    }
    for op in (0x3..=0x7).chain(0xb..=0xf) {
        let err = decoder().decode(&[0x80 | op, 0x80]).expect_err("must fail");
        assert_eq!((err, err.close_code()), (WsError::UnknownOpcode(op), 1002));
    }
    // Errors show up from the first byte that proves them, before the rest of the frame.
    assert_eq!(decoder().decode(&[0xc1]), Err(WsError::ReservedBits));
    assert_eq!(decoder().decode(&[0x80]), Err(WsError::UnexpectedContinuation));

    let mut dec = decoder();
    dec.decode(&client(false, Opcode::Text, b"a")).expect("first fragment");
    let err = dec.decode(&client(true, Opcode::Binary, b"b")).expect_err("must fail");
    assert_eq!((err, err.close_code()), (WsError::ExpectedContinuation, 1002));
}

#[test]
fn size_limits_fail_with_1009_from_the_header() {
    let mut dec = Decoder::new(10, 16);
    // Only the header of an 11-byte frame: refused before its payload is read.
    let frame = client(true, Opcode::Binary, &[0u8; 11]);
    let err = dec.decode(&frame[..6]).expect_err("must fail");
    assert_eq!((err, err.close_code()), (WsError::FrameTooLarge, 1009));
    let err = dec.decode(&[0x82, 0xff, 0, 0, 0, 1, 0, 0, 0, 0]).expect_err("must fail");
    assert_eq!(err, WsError::FrameTooLarge);

    // Exactly at the frame limit is fine; fragments over the message limit are not.
    let mut dec = Decoder::new(10, 16);
    assert!(dec.decode(&client(true, Opcode::Binary, &[0u8; 10])).is_ok());
    assert!(dec.decode(&client(false, Opcode::Binary, &[0u8; 10])).is_ok());
    assert!(dec.decode(&client(false, Opcode::Continuation, &[0u8; 6])).is_ok());
    let next = client(true, Opcode::Continuation, &[0u8; 1]);
    let err = dec.decode(&next[..2]).expect_err("must fail");
    assert_eq!((err, err.close_code()), (WsError::MessageTooLarge, 1009));

    let mut dec = Decoder::new(100, 16);
    assert_eq!(dec.decode(&client(true, Opcode::Text, &[b'x'; 17])[..2]), Err(WsError::MessageTooLarge));

    // Control frames are bounded by the RFC, not by max_frame.
    let mut dec = Decoder::new(4, 4);
    assert_eq!(dec.decode(&client(true, Opcode::Ping, &[7u8; 125])).map(|(n, _)| n), Ok(131));
}

#[test]
fn close_frames() {
    let close = |payload: &[u8]| decoder().decode(&client(true, Opcode::Close, payload)).map(|(_, e)| e);
    assert_eq!(close(&[]), Ok(Some(Event::Close { code: None, reason: String::new() })));
    assert_eq!(close(&[0x03, 0xe8]), Ok(Some(Event::Close { code: Some(1000), reason: String::new() })));
    assert_eq!(
        close(b"\x0f\xa0bye \xc3\xa9"),
        Ok(Some(Event::Close { code: Some(4000), reason: "bye \u{e9}".into() }))
    );
    for code in [1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999] {
        assert!(matches!(close(&code.to_be_bytes()), Ok(Some(Event::Close { code: Some(c), .. })) if c == code));
    }
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535] {
        assert_eq!(close(&code.to_be_bytes()), Err(WsError::BadClose("invalid close code")), "{code}");
    }
    let err = close(&[0x03]).expect_err("must fail");
    assert_eq!((err, err.close_code()), (WsError::BadClose("close payload of one byte"), 1002));
    let err = close(b"\x03\xe8\xff").expect_err("must fail");
    assert_eq!((err, err.close_code()), (WsError::BadClose("close reason is not UTF-8"), 1002));
}

#[test]
fn encoder_round_trips_and_bounds_control_frames() {
    for (opcode, payload) in [(Opcode::Text, &b"hi"[..]), (Opcode::Binary, &[0u8; 300][..]), (Opcode::Pong, b"")] {
        let mut out = Vec::new();
        encode_frame(&mut out, opcode, payload);
        let (n, event) = decoder().decode(&masked(&out)).expect("round trip");
        assert_eq!(n, out.len() + 4);
        let got = match event {
            Some(Event::Text(s)) => s.into_bytes(),
            Some(Event::Binary(b) | Event::Pong(b)) => b,
            other => panic!("{other:?}"),
        };
        assert_eq!(got, payload);
    }
    let mut out = Vec::new();
    encode_frame(&mut out, Opcode::Ping, &[1u8; 200]);
    assert_eq!(out.len(), 2 + MAX_CONTROL_PAYLOAD);
    assert!(decoder().decode(&masked(&out)).is_ok());
}

#[test]
fn close_frame_cuts_the_reason_at_a_char_boundary() {
    let frame = close_frame(1000, "done");
    assert_eq!(frame, [0x88, 6, 0x03, 0xe8, b'd', b'o', b'n', b'e']);
    let long = "\u{e9}".repeat(100); // 200 bytes; byte 123 falls inside a character
    let frame = close_frame(1009, &long);
    assert_eq!(frame.len(), 2 + 2 + 122);
    match decoder().decode(&masked(&frame)) {
        Ok((_, Some(Event::Close { code: Some(1009), reason }))) => assert_eq!(reason, "\u{e9}".repeat(61)),
        other => panic!("{other:?}"),
    }
    let ascii = "x".repeat(500);
    assert_eq!(close_frame(1000, &ascii).len(), 2 + 2 + MAX_CLOSE_REASON);
    for e in [WsError::FrameTooLarge, WsError::ExpectedContinuation, WsError::BadClose("x")] {
        assert!(e.reason().len() <= MAX_CLOSE_REASON && !e.reason().contains('\n'));
    }
    assert_eq!(WsError::MessageTooLarge.to_string(), "message too large (1009)");
}

#[test]
fn idle_decoder_is_small() {
    assert!(std::mem::size_of::<Decoder>() <= 3 * std::mem::size_of::<usize>());
}

// The client end (RFC 6455 §5.1, §5.3): server frames in, masked frames out.

fn client_decoder() -> Decoder<ClientRole> {
    Decoder::client(1 << 20, 1 << 20)
}

/// An unfragmented server frame, as [`encode_frame`] writes it.
fn server(opcode: Opcode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(&mut out, opcode, payload);
    out
}

#[test]
fn client_decodes_unmasked_server_frames() {
    let mut stream = server(Opcode::Text, b"{\"type\":\"ack\"}");
    stream.extend(server(Opcode::Binary, &[7u8; 300]));
    stream.extend(server(Opcode::Text, &[b'a'; 70_000]));
    stream.extend(server(Opcode::Ping, b"hb"));
    stream.extend(server(Opcode::Pong, b""));
    stream.extend(close_frame(1001, "going away"));
    assert_eq!(
        decode_all(&mut client_decoder(), &stream),
        Ok(vec![
            Event::Text("{\"type\":\"ack\"}".into()),
            Event::Binary(vec![7u8; 300]),
            Event::Text("a".repeat(70_000)),
            Event::Ping(b"hb".to_vec()),
            Event::Pong(Vec::new()),
            Event::Close { code: Some(1001), reason: "going away".into() },
        ])
    );
    // RFC 6455 §5.7: the unmasked fragmented "Hello", with a Ping between the fragments.
    let mut stream = vec![0x01, 0x03, 0x48, 0x65, 0x6c];
    stream.extend(server(Opcode::Ping, b""));
    stream.extend([0x80, 0x02, 0x6c, 0x6f]);
    assert_eq!(
        decode_all(&mut client_decoder(), &stream),
        Ok(vec![Event::Ping(Vec::new()), Event::Text("Hello".into())])
    );
}

#[test]
fn client_truncation_points_are_incomplete() {
    for frame in [server(Opcode::Text, b"Hello"), server(Opcode::Binary, &[1u8; 300]), close_frame(1000, "")] {
        let mut dec = client_decoder();
        for cut in 0..frame.len() {
            assert_eq!(dec.decode(&frame[..cut]), Ok((0, None)), "cut at {cut} of {}", frame.len());
        }
        assert!(matches!(dec.decode(&frame), Ok((n, Some(_))) if n == frame.len()));
    }
}

#[test]
fn client_refuses_masked_frames_and_keeps_every_other_rule() {
    let err = client_decoder().decode(&client(true, Opcode::Text, b"Hello")).expect_err("must fail");
    assert_eq!((err, err.close_code()), (WsError::Masked, 1002));
    assert_eq!(client_decoder().decode(&[0x81, 0x80]), Err(WsError::Masked), "refused from the second byte");
    assert_eq!(client_decoder().decode(&[0xc1, 0x00]), Err(WsError::ReservedBits));
    assert_eq!(client_decoder().decode(&[0x83, 0x00]), Err(WsError::UnknownOpcode(3)));
    assert_eq!(client_decoder().decode(&[0x80, 0x00]), Err(WsError::UnexpectedContinuation));
    assert_eq!(client_decoder().decode(&server(Opcode::Text, b"\xff")), Err(WsError::InvalidUtf8));
    assert_eq!(
        client_decoder().decode(&server(Opcode::Close, &[0x03])),
        Err(WsError::BadClose("close payload of one byte"))
    );
    let mut dec = Decoder::client(10, 16);
    assert_eq!(dec.decode(&server(Opcode::Binary, &[0u8; 11])[..2]), Err(WsError::FrameTooLarge));
    let mut dec = Decoder::client(100, 16);
    assert_eq!(dec.decode(&server(Opcode::Text, &[b'x'; 17])[..2]), Err(WsError::MessageTooLarge));
}

#[test]
fn masked_encoder_matches_the_rfc_and_round_trips() {
    // RFC 6455 §5.7: a single-frame masked text message.
    let mut out = Vec::new();
    encode_masked_frame(&mut out, Opcode::Text, b"Hello", MASK);
    assert_eq!(out, [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]);
    for len in [0, 125, 126, 65535, 65536] {
        let payload: Vec<u8> = (0..len).map(|i| (i * 3) as u8).collect();
        let mut out = Vec::new();
        encode_masked_frame(&mut out, Opcode::Binary, &payload, MASK);
        assert_eq!(out, client(true, Opcode::Binary, &payload), "len {len}");
        assert_eq!(decoder().decode(&out), Ok((out.len(), Some(Event::Binary(payload)))), "len {len}");
    }
    let mut out = Vec::new();
    encode_masked_frame(&mut out, Opcode::Pong, &[9u8; 200], [1, 2, 3, 4]);
    assert_eq!(out.len(), 2 + 4 + MAX_CONTROL_PAYLOAD);
    assert_eq!(decoder().decode(&out), Ok((out.len(), Some(Event::Pong(vec![9u8; MAX_CONTROL_PAYLOAD])))));
}

#[test]
fn client_decoder_is_as_small() {
    assert_eq!(std::mem::size_of::<Decoder<ClientRole>>(), std::mem::size_of::<Decoder>());
}

/// Random bytes and mutated valid streams, fed in random pieces: never a panic, never more
/// consumed than given, never more buffered than the message limit.
#[test]
fn byte_soup_never_panics() {
    let mut seed = client(false, Opcode::Text, "h\u{e9}".as_bytes());
    seed.extend(client(true, Opcode::Ping, b"p"));
    seed.extend(client(true, Opcode::Continuation, b"llo"));
    seed.extend(client(true, Opcode::Binary, &[5u8; 130]));
    seed.extend(client(true, Opcode::Close, b"\x03\xe8ok"));
    let mut rng = XorShift::new(0x2545_F491_4F6C_DD1D);
    let mut buf = Vec::new();
    let mut events = 0;
    for round in 0..20_000 {
        buf.clear();
        if round % 2 == 0 {
            for _ in 0..rng.below(300) {
                buf.push(rng.next_u64() as u8);
            }
        } else {
            buf.extend_from_slice(&seed);
            for _ in 0..=rng.below(4) {
                let at = rng.below(buf.len());
                buf[at] = rng.next_u64() as u8;
            }
        }
        let mut dec = Decoder::new(64 + rng.below(200), 128 + rng.below(200));
        let mut unread = &buf[..];
        let mut have = 0; // bytes "read from the socket" so far
        while have <= unread.len() {
            match dec.decode(&unread[..have]) {
                Ok((0, None)) => have += 1 + rng.below(8),
                Ok((0, Some(event))) => panic!("event without consuming: {event:?}"),
                Ok((n, event)) => {
                    assert!(n <= have && n >= 6);
                    events += usize::from(event.is_some());
                    unread = &unread[n..];
                    have -= n;
                }
                Err(e) => {
                    assert!([1002, 1007, 1009].contains(&e.close_code()));
                    break;
                }
            }
            assert!(dec.buffered() <= dec.max_message);
        }
    }
    assert!(events > 10_000, "the mutated streams should mostly decode; got {events} events");
}
