//! Halley: a thread-per-core Comet (HTTP server-push) server.
//!
//! Each worker thread owns a `mio::Poll`, its own `SO_REUSEPORT` listener and a slab of
//! connections; a parked long-poll holds no thread and no read buffer. One hub thread
//! sequences every publish, keeps bounded topic history and fans messages out to the
//! workers that have subscribers. See `docs/ARCHITECTURE.md`.

pub mod auth;
pub mod config;
pub mod http;
pub mod hub;
mod log_limit;
pub mod model;
pub mod protocol;
pub mod server;
pub mod store;
pub mod transport;
pub mod web;
mod xorshift;

/// The longest prefix of `s` that fits `max` bytes and ends on a character boundary (what
/// `str::floor_char_boundary` does from Rust 1.91, newer than our rust-version). Reasons sent to
/// peers are cut with it.
pub(crate) fn prefix_within(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    #[test]
    fn prefix_within_never_splits_a_character() {
        assert_eq!(super::prefix_within("héllo", 2), "h"); // 'é' is two bytes, 1..3
        assert_eq!(super::prefix_within("héllo", 3), "hé");
        assert_eq!(super::prefix_within("abc", 10), "abc");
        assert_eq!(super::prefix_within("€", 2), "");
    }
}
