//! Transports: how a subscriber's messages travel once the protocol has decided what they are.
//!
//! One file per transport, like nchan's `src/subscribers/`. So far: long-poll (and plain poll,
//! a long-poll that never parks). SSE, streaming, forever-iframe, JSONP, multipart and
//! WebSocket join this enum with their own files, reusing the same cursors and history.

pub mod longpoll;
pub mod websocket;

/// The transport a subscription uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Hold the request until a message arrives or the timeout passes (JSON reply).
    LongPoll,
    /// Answer at once with whatever is newer than the cursor (JSON reply).
    Poll,
}
