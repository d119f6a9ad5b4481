//! Halley: a thread-per-core Comet (HTTP server-push) server.
//!
//! Each worker thread owns a `mio::Poll`, its own `SO_REUSEPORT` listener and a slab of
//! connections; a parked long-poll holds no thread and no read buffer. One hub thread
//! sequences every publish, keeps bounded topic history and fans messages out to the
//! workers that have subscribers. See `docs/ARCHITECTURE.md`.

pub mod client;
pub mod config;
pub mod http;
pub mod hub;
pub mod protocol;
pub mod server;
pub mod store;
pub mod transport;
mod xorshift;
