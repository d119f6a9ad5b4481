//! Session ids that say which worker owns the session.
//!
//! A session (Pushlet, Bayeux) lives on one worker; a request for it may arrive on any worker,
//! which must know where to hand the connection. The id is the owner's index as three hex
//! digits followed by 128 bits from the OS CSPRNG, also in hex: 35 lowercase alphanumerics,
//! which both Pushlet clients (they only echo it) and Bayeux (`clientId`) accept.

use std::fmt::Write as _;
use std::io;

/// Length of an id: 3 hex digits of owner, 32 of randomness.
pub const ID_LEN: usize = 35;
/// Most workers an id can name.
pub const MAX_OWNERS: usize = 0x1000;

/// A fresh id owned by `worker`.
pub fn new_id(worker: usize) -> io::Result<Box<str>> {
    if worker >= MAX_OWNERS {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "worker index too large for a session id"));
    }
    let mut random = [0u8; 16];
    getrandom::getrandom(&mut random).map_err(|e| io::Error::other(e.to_string()))?;
    let mut id = String::with_capacity(ID_LEN);
    let _ = write!(id, "{worker:03x}");
    for b in random {
        let _ = write!(id, "{b:02x}");
    }
    Ok(id.into())
}

/// The worker that owns `id`, if `id` is well formed and names one of `workers` workers.
pub fn owner(id: &str, workers: usize) -> Option<usize> {
    if id.len() != ID_LEN || !id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    let owner = usize::from_str_radix(id.get(..3)?, 16).ok()?;
    (owner < workers).then_some(owner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_their_owner_and_are_unique() {
        let a = new_id(5).expect("id");
        let b = new_id(5).expect("id");
        assert_ne!(a, b);
        assert_eq!(a.len(), ID_LEN);
        assert_eq!(owner(&a, 8), Some(5));
        assert_eq!(owner(&a, 5), None, "an owner beyond the worker count");
    }

    #[test]
    fn malformed_ids_have_no_owner() {
        for bad in [
            "",
            "00",
            "zzz0123456789abcdef0123456789abcdef",
            "000",
            &"0".repeat(ID_LEN + 1),
            "000ABCDEF0123456789abcdef0123456789",
        ] {
            assert_eq!(owner(bad, 8), None, "{bad}");
        }
    }
}
