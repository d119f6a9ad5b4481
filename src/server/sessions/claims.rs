//! Making room in a full session pool across workers, without locks.
//!
//! Each worker owns its sessions and is the only one that may remove them. When the pool
//! (`--max-sessions`, counted across workers in `Shared::sessions`) is full, the worker creating
//! a session lets go of the oldest never-used session of *any* worker: its own at once, another
//! worker's by a claim on that worker. Each worker publishes, in its [`Slot`]:
//!
//! - `oldest_ms`: when its oldest never-used session was created (`u64::MAX`: it has none), so a
//!   creator can pick the worker holding the oldest;
//! - `avail`: how many of its never-used sessions are not claimed yet.
//!
//! A creator claims one by decrementing `avail` (compare-and-swap, never below 0), adds one to
//! that worker's `owed`, takes its own place in the pool over the bound, and wakes the owner.
//! The owner settles at the start of its next turn (`Sessions::settle_claims`): it removes its
//! oldest never-used sessions, as many as it owes, which brings the pool back to the bound. So the
//! legitimate client that needed the place is answered at once, and the pool is over
//! `--max-sessions` only between a claim and the owner's next turn, by at most the claims in
//! flight, and those are bounded: a worker that owes [`MAX_OWED`] is not claimed on until it
//! settled (a creator then lets go of its own, or the pool is full for now).
//!
//! One race is left, and it only keeps the pool over its bound for longer, never under it: a
//! claimed session may start listening before its owner settles (a listening session is never
//! let go). The owner then removes what never-used sessions it still has and forgives the rest;
//! the pool stays over the bound by that many until sessions end on their own, and no session
//! can be created meanwhile (the pool is full).
//!
//! The invariant each owner keeps: `avail` + outstanding claims = its never-used sessions
//! (except after that race, where claims are forgiven). A never-used session that goes on its
//! own (expired, left) while every one of them is claimed settles one claim.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::Instant;

/// Claims a worker may owe at once. A creator does not claim on a worker that owes this many
/// (it lets go of its own, or the pool is full for now): the pool's overshoot of
/// `--max-sessions` while owners are slow to take their turn (a busy box) stays at most this
/// many per other worker, plus one per worker racing past the check at the same moment.
pub(super) const MAX_OWED: usize = 16;

/// What one worker publishes about its never-used sessions.
#[derive(Debug)]
struct Slot {
    avail: AtomicUsize,
    owed: AtomicUsize,
    oldest_ms: AtomicU64,
}

/// Every worker's [`Slot`], in `Shared`.
#[derive(Debug)]
pub(in crate::server) struct Claims {
    slots: Box<[Slot]>,
    /// The origin of the `oldest_ms` clock.
    start: Instant,
}

impl Claims {
    pub fn new(workers: usize) -> Claims {
        let slot =
            || Slot { avail: AtomicUsize::new(0), owed: AtomicUsize::new(0), oldest_ms: AtomicU64::new(u64::MAX) };
        Claims { slots: (0..workers).map(|_| slot()).collect(), start: Instant::now() }
    }

    /// Milliseconds since the server started: a session's creation time, for `oldest_ms`.
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Worker `worker` created a never-used session.
    pub(super) fn added(&self, worker: usize) {
        self.slots[worker].avail.fetch_add(1, Relaxed);
    }

    /// One of worker `worker`'s never-used sessions stopped being one on its own (it listened,
    /// expired or left). Returns whether it had been claimed (none was left unclaimed).
    pub(super) fn left(&self, worker: usize) -> bool {
        self.slots[worker].avail.fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1)).is_err()
    }

    /// A never-used session of `worker`, all of which were claimed, went on its own: that settles
    /// one claim (its place in the pool is free).
    pub(super) fn settled_by_expiry(&self, worker: usize) {
        let _ = self.slots[worker].owed.fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
    }

    /// Publishes when worker `worker`'s oldest never-used session was created (None: it has none).
    pub(super) fn set_oldest(&self, worker: usize, created_ms: Option<u64>) {
        self.slots[worker].oldest_ms.store(created_ms.unwrap_or(u64::MAX), Relaxed);
    }

    /// Claims the oldest never-used session among the workers other than `me` that is older than
    /// `mine` (when my own oldest was created; u64::MAX: I have none). Returns the owner to
    /// wake; None if no other worker has an older unclaimed one (then `me` lets go of its own,
    /// if it has one).
    pub(super) fn claim_oldest(&self, me: usize, mine: u64) -> Option<usize> {
        let mut order: Vec<(u64, usize)> = (self.slots.iter().enumerate())
            .filter(|&(w, slot)| w != me && slot.avail.load(Relaxed) > 0 && slot.owed.load(Relaxed) < MAX_OWED)
            .map(|(w, slot)| (slot.oldest_ms.load(Relaxed), w))
            .filter(|&(at, _)| at < mine || mine == u64::MAX)
            .collect();
        order.sort_unstable();
        order.into_iter().map(|(_, w)| w).find(|&w| {
            let slot = &self.slots[w];
            let claimed = slot.avail.fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1)).is_ok();
            if claimed {
                slot.owed.fetch_add(1, Relaxed);
            }
            claimed
        })
    }

    /// Claims one of worker `me`'s own never-used sessions, to let it go at once for a session
    /// `me` creates; false when all of them are claimed by others already.
    pub(super) fn claim_own(&self, me: usize) -> bool {
        self.slots[me].avail.fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1)).is_ok()
    }

    /// The claims on worker `worker` to settle now (taken: the caller settles them all).
    pub(super) fn take_owed(&self, worker: usize) -> usize {
        let slot = &self.slots[worker];
        if slot.owed.load(Relaxed) == 0 {
            return 0;
        }
        slot.owed.swap(0, Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_takes_the_oldest_unclaimed_session_of_another_worker() {
        let claims = Claims::new(3);
        claims.added(1);
        claims.set_oldest(1, Some(50));
        claims.added(2);
        claims.added(2);
        claims.set_oldest(2, Some(10));
        assert_eq!(claims.claim_oldest(0, u64::MAX), Some(2), "worker 2 holds the oldest");
        assert_eq!(claims.claim_oldest(0, u64::MAX), Some(2), "and a second unclaimed one");
        assert_eq!(claims.claim_oldest(0, u64::MAX), Some(1), "then worker 1's");
        assert_eq!(claims.claim_oldest(0, u64::MAX), None, "everything is claimed");
        assert_eq!(claims.take_owed(2), 2);
        assert_eq!(claims.take_owed(2), 0);
    }

    #[test]
    fn my_own_older_session_goes_first_and_sessions_that_leave_settle_or_give_up_claims() {
        let claims = Claims::new(2);
        claims.added(1);
        claims.set_oldest(1, Some(100));
        assert_eq!(claims.claim_oldest(0, 20), None, "my own (20) is older than worker 1's");
        assert_eq!(claims.claim_oldest(0, 200), Some(1));
        // Its only never-used session is claimed: when it goes on its own, the claim is settled.
        assert!(claims.left(1));
        claims.settled_by_expiry(1);
        assert_eq!(claims.take_owed(1), 0);
        // An unclaimed one leaving just lowers what may be claimed.
        claims.added(1);
        assert!(!claims.left(1));
        assert_eq!(claims.claim_oldest(0, u64::MAX), None);
    }

    #[test]
    fn a_worker_that_owes_max_owed_is_not_claimed_on_until_it_settles() {
        let claims = Claims::new(2);
        for _ in 0..MAX_OWED + 5 {
            claims.added(1);
        }
        claims.set_oldest(1, Some(1));
        for _ in 0..MAX_OWED {
            assert_eq!(claims.claim_oldest(0, u64::MAX), Some(1));
        }
        assert_eq!(claims.claim_oldest(0, u64::MAX), None, "the overshoot is bounded");
        assert_eq!(claims.take_owed(1), MAX_OWED);
        assert_eq!(claims.claim_oldest(0, u64::MAX), Some(1), "settled: claims go on");
    }
}
