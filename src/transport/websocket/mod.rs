//! WebSocket (RFC 6455), sans-I/O: the opening handshake and the frame codec.
//!
//! This module owns the WebSocket wire format and nothing else. It never touches a socket: the
//! worker loop owns the connection, hands the upgrade request to [`check_upgrade`], writes the
//! 101 with [`write_handshake_response`], then feeds the bytes it reads to a [`Decoder`] and
//! writes frames built with [`frame_header`] / [`encode_frame`] / [`close_frame`]. What the
//! messages *mean* (JSON commands, acks, hub messages) is `crate::protocol::commands`.
//!
//! How the worker is expected to drive it:
//! - Read into its (pooled) read buffer, then call [`Decoder::decode`] in a loop on the unread
//!   part until it returns `(0, None)`; drain the consumed bytes. A frame is only decoded once
//!   it is complete, so the read buffer must be able to hold [`MAX_CLIENT_HEADER`] + `max_frame`
//!   bytes; an over-long frame is refused from its header, before its payload is read.
//! - Answer [`Event::Ping`] with a Pong carrying the same payload (RFC 6455 §5.5.3), answer
//!   [`Event::Close`] with a Close (echoing the code, §5.5.1) and then stop reading; on a
//!   [`WsError`] send `close_frame(err.close_code(), err.reason())` and close (§7.1.7).
//! - Server frames are never masked (§5.1). A broadcast encodes each message's whole frame
//!   once ([`message`], cached as `Wire::WsFrame`) and every subscriber's connection writes the
//!   same bytes.
//!
//! The client end uses the same codec (halley-load does): [`Decoder::client`] reads the server's
//! unmasked frames and [`encode_masked_frame`] writes the masked frames a client must send.
//!
//! Extensions (`Sec-WebSocket-Extensions`, e.g. permessage-deflate) are not negotiated: the 101
//! names none, so clients send plain frames and any RSV bit is a protocol error. `Origin` is not
//! checked here; an origin policy, if any, belongs to the caller.
//!
//! # Lifecycle
//!
//! The socket family's life (`server/duplex.rs`, timed by `transport/socket.rs` `SocketLife`)
//! with this framing; JSON commands and replies are `protocol/commands.rs`:
//! - Subscribe: `GET /sub/<topics>` with `Upgrade: websocket` (`server/delivery.rs` `subscribe`)
//!   or `GET /ws` (`server/dispatch.rs`) → `server/duplex.rs` `upgrade_websocket`: `upgrade`
//!   refuses an `Origin` that CORS does not allow (403) or a bad handshake (`check_upgrade`),
//!   else queues the 101 (`write_handshake_response`); `duplex::start` opens the socket with the
//!   store head as cursor. For `/sub/...`, `duplex::subscribe` then sends the `subscribe` ack, a
//!   `gap` object if the cursor is from another epoch or past the head, and what history holds. A
//!   later `subscribe` command first sends its new topics' messages up to the shared cursor
//!   (`duplex::read_backfill`, read whole before the ack; if the store must fetch that history
//!   first, the command gets an `error` asking the client to retry).
//! - Wake: `server/subscriber.rs` `on_wake` → `duplex::feed`: while `SocketLife::pace` leaves
//!   room, one text frame per message, shared by every subscriber (`message`, `Wire::WsFrame`); a
//!   gap found in history is a `gap` object.
//! - Timeout: `subscriber::on_timeout` → `duplex::on_timer` asks `SocketLife::beat`: an empty
//!   ping every `--heartbeat-interval`; a pong (`duplex::process_input`) clears it, and a ping
//!   still unanswered at the next beat closes the socket with no close frame (`server/io.rs`
//!   `close`), unless output is still queued: then the ping never reached the peer, which is
//!   not reading, and it gets the overflow below instead. The timer also runs `duplex::feed`, so
//!   a peer that stopped reading is found.
//! - Overflow: at the output bound for a heartbeat interval (or at a missed pong with output
//!   queued), `duplex::overflow` queues `{"type":"overflow","next":...}` and a 1008 close frame
//!   after the output the client has not taken; the socket closes once they are written (or
//!   when the client takes nothing for `bound::NOTICE_WAIT`).
//! - Close: `duplex::close` queues a close frame: the client's own code echoed, `WsError`'s code
//!   on a decoding error, 1003 for a binary message. At shutdown `duplex::shutdown` sends
//!   `{"type":"end","next":...}` and closes with 1001. A FIN closes (`server/io.rs`).
//! - Resume: reconnect to `/sub/<topics>?since=<next>`, or send `subscribe` with `since`, using
//!   the `next` of `end` or `overflow`, or the `id` of the last message.
//!
//! A Bayeux WebSocket has the same socket life, but delivers through its held connect
//! (`server/sessions/bayeux.rs` `socket_round`).

mod codec;
mod handshake;

use bytes::Bytes;

use crate::model::{Epoch, Message, Wire};

pub use codec::{
    close_frame, encode_frame, encode_masked_frame, frame_header, ClientRole, Decoder, Event, FrameHeader, Opcode,
    Role, ServerRole, WsError, MAX_CLIENT_HEADER, MAX_CLOSE_REASON, MAX_CONTROL_PAYLOAD, MAX_SERVER_HEADER,
};
pub use handshake::{
    accept_key, check_upgrade, write_handshake_response, Handshake, HandshakeError, MAX_PROTOCOLS, WEBSOCKET_GUID,
};

/// A message as one text frame (its JSON), encoded once per message and shared by every
/// WebSocket subscriber.
pub fn message(msg: &Message, epoch: Epoch) -> Bytes {
    msg.encoded(Wire::WsFrame, |m| {
        let mut frame = Vec::new();
        encode_frame(&mut frame, Opcode::Text, m.json(epoch));
        Bytes::from(frame)
    })
    .clone()
}
