//! A hashed timing wheel: the per-worker store of connection deadlines (header, keep-alive and
//! long-poll timeouts).
//!
//! The wheel is sans-I/O: it never reads a clock, the caller passes `now`. Time is cut into
//! ticks of a fixed length counted from the instant the wheel was created, and a deadline is
//! rounded *up* to the next tick boundary, so an entry never fires early and fires at most one
//! tick late (plus however late the caller calls [`TimerWheel::expire`]).
//!
//! Layout: a single level of `slots` (a power of two) lists. An entry due at tick `d` lives in
//! slot `d % slots`; entries more than one rotation away share that slot with nearer ones and
//! simply stay behind when the slot is visited early (the classic "rounds", stored as the
//! absolute due tick, so nothing needs decrementing). Entries sit in a [`Slab`] and are linked
//! into their slot by intrusive doubly-linked lists, which makes insert and cancel O(1). A bitmap
//! of non-empty slots lets `expire` and `next_deadline` skip empty slots a word at a time, so
//! the poll loop can sleep until the next real deadline instead of waking on every tick.

use std::fmt;
use std::time::{Duration, Instant};

use slab::Slab;

/// Tick length the server uses: fine enough for HTTP timeouts measured in seconds.
pub const DEFAULT_TICK: Duration = Duration::from_millis(10);

/// Slot count the server uses: 4096 slots x 10 ms = one rotation every 40.96 s, longer than the
/// default long-poll hold, so most entries are due within the rotation they were inserted in.
pub const DEFAULT_SLOTS: usize = 4096;

/// Largest slot count accepted by [`TimerWheel::new`] (larger requests are clamped): 2^20 slots
/// already cost 16 MiB of list heads.
pub const MAX_SLOTS: usize = 1 << 20;

/// Shortest tick accepted by [`TimerWheel::new`] (shorter ones, including zero, are raised).
pub const MIN_TICK: Duration = Duration::from_micros(1);

/// Deadlines further than this from the wheel's creation are treated as due at this horizon
/// (about 100 years), which keeps every tick-to-`Instant` conversion far from overflow.
const MAX_HORIZON: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Deadlines rounded UP to the tick (never fire early). Single level with rounds, slots with
/// O(1) insert and O(1) cancel (entries in a slab with intrusive doubly-linked per-slot lists),
/// a bitmap of non-empty slots so `next_deadline` is cheap and the poll loop sleeps until the
/// next real deadline instead of ticking every slot.
pub struct TimerWheel<T> {
    /// Length of one tick (at least [`MIN_TICK`]).
    tick: Duration,
    /// `tick` in nanoseconds, for the rounding arithmetic.
    tick_nanos: u128,
    /// Tick 0 starts here.
    origin: Instant,
    /// `slots - 1`; `slots` is a power of two.
    mask: u64,
    /// Every tick `<= elapsed` has been processed by `expire`; every entry in a slot list is
    /// due at a tick `> elapsed`.
    elapsed: u64,
    /// Largest due tick stored (see [`MAX_HORIZON`]).
    max_tick: u64,
    /// List heads: one per slot, then one extra list for entries that were already due when
    /// inserted (they fire on the next `expire`, whatever `now` is).
    heads: Vec<Option<usize>>,
    /// Bit `s` set iff slot `s` is non-empty. The overdue list is not in the bitmap.
    occupied: Vec<u64>,
    entries: Slab<Entry<T>>,
    /// Source of key generations; each insert takes a fresh one, so a key whose entry fired or
    /// was cancelled can never match the entry that later reuses its slab index.
    next_generation: u64,
}

/// Names one inserted entry, for [`TimerWheel::cancel`]. Stale keys are harmless.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerKey {
    index: usize,
    generation: u64,
}

impl<T> TimerWheel<T> {
    /// Creates an empty wheel whose tick 0 starts at `now`.
    ///
    /// `slots` is rounded up to a power of two and clamped to `1..=MAX_SLOTS`; `tick` is raised
    /// to at least [`MIN_TICK`]. Typical use: `TimerWheel::new(DEFAULT_TICK, DEFAULT_SLOTS, now)`.
    pub fn new(tick: Duration, slots: usize, now: Instant) -> Self {
        let tick = tick.max(MIN_TICK);
        let slots = slots.clamp(1, MAX_SLOTS).next_power_of_two();
        let tick_nanos = tick.as_nanos();
        let max_tick = u64::try_from(MAX_HORIZON.as_nanos() / tick_nanos).unwrap_or(u64::MAX);
        TimerWheel {
            tick,
            tick_nanos,
            origin: now,
            mask: slots as u64 - 1,
            elapsed: 0,
            max_tick,
            heads: vec![None; slots + 1],
            occupied: vec![0; slots.div_ceil(64)],
            entries: Slab::new(),
            next_generation: 0,
        }
    }

    /// Schedules `value` to be returned by the first `expire(now)` with `now >= deadline`
    /// (rounded up to the tick). A deadline at or before the last `expire` fires on the next one.
    pub fn insert(&mut self, deadline: Instant, value: T) -> TimerKey {
        let due = self.ceil_tick(deadline);
        let list = if due <= self.elapsed { self.overdue_list() } else { self.slot_of(due) };
        let generation = self.next_generation;
        self.next_generation += 1;
        let next = self.heads[list];
        let index = self.entries.insert(Entry { value, due, list, prev: None, next, generation });
        if let Some(old_head) = next {
            if let Some(entry) = self.entries.get_mut(old_head) {
                entry.prev = Some(index);
            }
        }
        self.heads[list] = Some(index);
        if list < self.overdue_list() {
            self.occupied[list / 64] |= 1 << (list % 64);
        }
        TimerKey { index, generation }
    }

    /// Removes the entry named by `key` and returns its value. A key whose entry already fired
    /// or was cancelled returns `None` and leaves every other entry alone.
    pub fn cancel(&mut self, key: TimerKey) -> Option<T> {
        match self.entries.get(key.index) {
            Some(entry) if entry.generation == key.generation => Some(self.remove(key.index)),
            _ => None,
        }
    }

    /// Moves every entry whose deadline, rounded up to the tick, is `<= now` into `out` (order:
    /// by slot, any order within a slot), plus every entry that was already due when inserted.
    ///
    /// Cost: one bitmap word per 64 slots passed over, plus one step per entry in a visited
    /// slot; a jump longer than a rotation visits each non-empty slot once.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<T>) {
        let overdue = self.overdue_list();
        self.drain_list(overdue, u64::MAX, out);
        let target = self.floor_tick(now);
        if target <= self.elapsed {
            return;
        }
        let slots = self.slot_count();
        let span = usize::try_from(target - self.elapsed).map_or(slots, |span| span.min(slots));
        let start = self.slot_of(self.elapsed + 1);
        // The visited slots form one circular range; split it into at most two linear ones.
        let first_end = (start + span).min(slots);
        let ranges = [(start, first_end), (0, start + span - first_end)];
        for (mut lo, hi) in ranges {
            while let Some(slot) = self.first_occupied(lo, hi) {
                self.drain_list(slot, target, out);
                lo = slot + 1;
            }
        }
        self.elapsed = target;
    }

    /// Earliest instant at which `expire` could return something; `None` if the wheel is empty.
    ///
    /// It is never late. It is the start of the nearest non-empty slot's next tick, found
    /// through the bitmap without walking any list, so it is exact unless every entry in that
    /// slot still has rounds left (is one or more rotations of `tick * slots` away). Then the
    /// answer is early: `expire` at that instant returns nothing but moves past the slot, and
    /// the next answer is later. An entry `n` rotations away thus causes at most `n` early
    /// wake-ups, one per rotation (40.96 s with the defaults), never a busy loop.
    ///
    /// When entries were inserted already due, the answer is the end of the last processed
    /// tick, which is not after any `now` passed to `expire` so far: sleep zero, then expire.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.heads[self.overdue_list()].is_some() {
            return Some(self.instant_of(self.elapsed));
        }
        let slots = self.slot_count();
        let start = self.slot_of(self.elapsed + 1);
        let slot = self.first_occupied(start, slots).or_else(|| self.first_occupied(0, start))?;
        let distance = (slot + slots - start) & (slots - 1);
        Some(self.instant_of(self.elapsed + 1 + distance as u64))
    }

    /// Number of pending entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no entry is pending.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Length of one tick.
    #[cfg(test)]
    pub fn tick(&self) -> Duration {
        self.tick
    }

    fn slot_count(&self) -> usize {
        self.heads.len() - 1
    }

    fn overdue_list(&self) -> usize {
        self.heads.len() - 1
    }

    fn slot_of(&self, tick: u64) -> usize {
        // Lossless: the mask is below MAX_SLOTS.
        (tick & self.mask) as usize
    }

    /// Index of the tick containing `deadline`'s boundary, rounding up: the first tick whose
    /// start is not before `deadline`.
    fn ceil_tick(&self, deadline: Instant) -> u64 {
        let nanos = deadline.saturating_duration_since(self.origin).as_nanos();
        let ticks = nanos.div_ceil(self.tick_nanos);
        u64::try_from(ticks).map_or(self.max_tick, |t| t.min(self.max_tick))
    }

    /// The last tick whose start is not after `now`.
    fn floor_tick(&self, now: Instant) -> u64 {
        let nanos = now.saturating_duration_since(self.origin).as_nanos();
        let ticks = nanos / self.tick_nanos;
        u64::try_from(ticks).map_or(self.max_tick, |t| t.min(self.max_tick))
    }

    /// Start of tick `tick`. Ticks never exceed `max_tick`, so the sum stays within
    /// [`MAX_HORIZON`] of `origin`; should a platform still not represent it, the origin is
    /// returned (a too-early deadline only costs a spurious wake-up).
    fn instant_of(&self, tick: u64) -> Instant {
        let nanos = self.tick_nanos.saturating_mul(u128::from(tick));
        let secs = u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX);
        // Below 10^9, so the cast is lossless.
        let subsec = (nanos % 1_000_000_000) as u32;
        self.origin.checked_add(Duration::new(secs, subsec)).unwrap_or(self.origin)
    }

    /// First slot in `lo..hi` whose bit is set.
    fn first_occupied(&self, lo: usize, hi: usize) -> Option<usize> {
        let mut pos = lo;
        while pos < hi {
            let word = self.occupied[pos / 64] >> (pos % 64);
            if word != 0 {
                let found = pos + word.trailing_zeros() as usize;
                return (found < hi).then_some(found);
            }
            pos = (pos / 64 + 1) * 64;
        }
        None
    }

    /// Removes every entry of list `list` due at or before tick `target` into `out`.
    fn drain_list(&mut self, list: usize, target: u64, out: &mut Vec<T>) {
        let mut cursor = self.heads[list];
        while let Some(index) = cursor {
            let Some(entry) = self.entries.get(index) else {
                break;
            };
            cursor = entry.next;
            if entry.due <= target {
                out.push(self.remove(index));
            }
        }
    }

    /// Unlinks entry `index` (which must exist) from its list and frees it.
    fn remove(&mut self, index: usize) -> T {
        let entry = self.entries.remove(index);
        match entry.prev {
            Some(prev) => {
                if let Some(p) = self.entries.get_mut(prev) {
                    p.next = entry.next;
                }
            }
            None => self.heads[entry.list] = entry.next,
        }
        if let Some(next) = entry.next {
            if let Some(n) = self.entries.get_mut(next) {
                n.prev = entry.prev;
            }
        }
        if self.heads[entry.list].is_none() && entry.list < self.overdue_list() {
            self.occupied[entry.list / 64] &= !(1 << (entry.list % 64));
        }
        entry.value
    }
}

impl<T> fmt::Debug for TimerWheel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimerWheel")
            .field("tick", &self.tick)
            .field("slots", &self.slot_count())
            .field("elapsed_ticks", &self.elapsed)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

/// One pending deadline, linked into the list of its slot (or the overdue list).
struct Entry<T> {
    value: T,
    /// Absolute tick at which the entry is due.
    due: u64,
    /// Index into `heads`.
    list: usize,
    prev: Option<usize>,
    next: Option<usize>,
    generation: u64,
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use super::*;
    use crate::xorshift::XorShift as Rng;

    const MS: Duration = Duration::from_millis(1);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn expire_sorted<T: Ord>(wheel: &mut TimerWheel<T>, now: Instant) -> Vec<T> {
        let mut out = Vec::new();
        wheel.expire(now, &mut out);
        out.sort();
        out
    }

    #[test]
    fn fires_at_deadline_not_before() {
        let t0 = Instant::now();
        let mut wheel = TimerWheel::new(ms(10), 64, t0);
        wheel.insert(t0 + ms(25), "a");
        wheel.insert(t0 + ms(30), "b");
        wheel.insert(t0 + ms(100), "c");
        assert_eq!(wheel.len(), 3);
        // (now, fired at that step): 25 ms rounds up to 30 ms, so "a" and "b" fire together.
        let table: [(u64, &[&str]); 6] = [(0, &[]), (24, &[]), (29, &[]), (30, &["a", "b"]), (99, &[]), (100, &["c"])];
        for (at, expected) in table {
            assert_eq!(expire_sorted(&mut wheel, t0 + ms(at)), expected, "at {at} ms");
        }
        assert!(wheel.is_empty());
        assert_eq!(wheel.next_deadline(), None);
    }

    #[test]
    fn cancel_removes_only_its_entry() {
        let t0 = Instant::now();
        let mut wheel = TimerWheel::new(ms(10), 64, t0);
        // Same slot, so the cancel exercises head, middle and tail unlinking.
        let keys: Vec<TimerKey> = (0..5).map(|i| wheel.insert(t0 + ms(50), i)).collect();
        assert_eq!(wheel.cancel(keys[2]), Some(2)); // middle
        assert_eq!(wheel.cancel(keys[4]), Some(4)); // head (inserted last)
        assert_eq!(wheel.cancel(keys[0]), Some(0)); // tail
        assert_eq!(wheel.cancel(keys[0]), None, "second cancel");
        assert_eq!(wheel.len(), 2);
        assert_eq!(expire_sorted(&mut wheel, t0 + ms(50)), vec![1, 3]);
        assert_eq!(wheel.next_deadline(), None);
    }

    #[test]
    fn past_deadline_fires_on_next_expire() {
        let t0 = Instant::now();
        let mut wheel = TimerWheel::new(ms(10), 64, t0);
        assert!(expire_sorted(&mut wheel, t0 + ms(1000)).is_empty());
        wheel.insert(t0 + ms(5), "past");
        wheel.insert(t0 + ms(1000), "now");
        wheel.insert(t0, "origin");
        let next = wheel.next_deadline().expect("pending");
        assert!(next <= t0 + ms(1000), "must not sleep past an overdue entry");
        // Even a `now` that did not advance fires them.
        assert_eq!(expire_sorted(&mut wheel, t0 + ms(1000)), vec!["now", "origin", "past"]);
        assert!(wheel.is_empty());
    }

    #[test]
    fn long_deadlines_wait_their_rounds() {
        let t0 = Instant::now();
        // 8 slots x 1 ms: a rotation is 8 ms.
        let mut wheel = TimerWheel::new(MS, 8, t0);
        wheel.insert(t0 + ms(3), 3);
        wheel.insert(t0 + ms(11), 11); // same slot as 3, one round later
        wheel.insert(t0 + ms(83), 83); // same slot, ten rounds later
        let mut fired = Vec::new();
        for at in 1..=100 {
            let got = expire_sorted(&mut wheel, t0 + ms(at));
            for v in &got {
                assert_eq!(*v, at, "entry {v} fired at {at} ms");
            }
            fired.extend(got);
        }
        assert_eq!(fired, vec![3, 11, 83]);
    }

    #[test]
    fn jump_over_many_rotations_fires_everything_due() {
        let t0 = Instant::now();
        let mut wheel = TimerWheel::new(MS, 8, t0);
        for d in [1, 7, 8, 9, 40, 63, 64, 65] {
            wheel.insert(t0 + ms(d), d);
        }
        assert_eq!(expire_sorted(&mut wheel, t0 + ms(64)), vec![1, 7, 8, 9, 40, 63, 64]);
        assert_eq!(wheel.len(), 1);
        assert_eq!(expire_sorted(&mut wheel, t0 + ms(65)), vec![65]);
    }

    #[test]
    fn cancel_after_expire_and_key_reuse_are_safe() {
        let t0 = Instant::now();
        let mut wheel = TimerWheel::new(ms(10), 64, t0);
        let old = wheel.insert(t0 + ms(10), "old");
        assert_eq!(expire_sorted(&mut wheel, t0 + ms(10)), vec!["old"]);
        assert_eq!(wheel.cancel(old), None);
        // The slab reuses the freed index; the stale key must not reach the new entry.
        let new = wheel.insert(t0 + ms(50), "new");
        assert_eq!(wheel.cancel(old), None);
        assert_eq!(wheel.len(), 1);
        assert_eq!(wheel.cancel(new), Some("new"));
        let again = wheel.insert(t0 + ms(50), "again");
        assert_eq!(wheel.cancel(new), None);
        assert_eq!(wheel.cancel(again), Some("again"));
    }

    #[test]
    fn next_deadline_tracks_the_nearest_slot() {
        let t0 = Instant::now();
        let mut wheel = TimerWheel::new(ms(10), 64, t0);
        assert_eq!(wheel.next_deadline(), None);
        let far = wheel.insert(t0 + ms(300), "far");
        assert_eq!(wheel.next_deadline(), Some(t0 + ms(300)));
        wheel.insert(t0 + ms(41), "near"); // rounds up to 50 ms
        assert_eq!(wheel.next_deadline(), Some(t0 + ms(50)));
        assert_eq!(expire_sorted(&mut wheel, t0 + ms(50)), vec!["near"]);
        assert_eq!(wheel.next_deadline(), Some(t0 + ms(300)));
        assert_eq!(wheel.cancel(far), Some("far"));
        assert_eq!(wheel.next_deadline(), None);
    }

    #[test]
    fn next_deadline_for_far_entries_wakes_once_per_rotation() {
        let t0 = Instant::now();
        // 8 slots x 10 ms: rotation 80 ms. Due at 250 ms = tick 25 = 3 rotations + slot 1.
        let mut wheel = TimerWheel::new(ms(10), 8, t0);
        wheel.insert(t0 + ms(250), ());
        let mut wake_ups = Vec::new();
        while let Some(at) = wheel.next_deadline() {
            assert!(at <= t0 + ms(250), "never late");
            assert!(wake_ups.len() < 10, "no busy loop");
            wake_ups.push(at - t0);
            let mut out = Vec::new();
            wheel.expire(at, &mut out);
            if !out.is_empty() {
                break;
            }
        }
        assert_eq!(wake_ups, vec![ms(10), ms(90), ms(170), ms(250)]);
        assert!(wheel.is_empty());
    }

    #[test]
    fn odd_parameters_are_normalised() {
        let t0 = Instant::now();
        let mut wheel = TimerWheel::new(Duration::ZERO, 0, t0);
        assert_eq!(wheel.tick(), MIN_TICK);
        wheel.insert(t0 + MS, 1);
        assert_eq!(expire_sorted(&mut wheel, t0 + MS), vec![1]);
        let wheel: TimerWheel<()> = TimerWheel::new(MS, 100, t0);
        assert!(format!("{wheel:?}").contains("slots: 128"));
    }

    #[test]
    fn far_future_deadline_does_not_overflow() {
        let t0 = Instant::now();
        let mut wheel = TimerWheel::new(MS, 64, t0);
        let far = t0 + Duration::from_secs(500 * 365 * 24 * 3600);
        let key = wheel.insert(far, "far");
        assert!(wheel.next_deadline().expect("pending") <= far);
        let hour = t0 + Duration::from_secs(3600);
        assert!(expire_sorted(&mut wheel, hour).is_empty());
        let next = wheel.next_deadline().expect("still pending");
        assert!(next > hour && next <= far);
        assert_eq!(wheel.cancel(key), Some("far"));
    }

    /// Random inserts, cancels (live and stale keys) and expiries, checked step by step
    /// against a `BTreeMap` ordered by rounded deadline.
    #[test]
    fn matches_a_sorted_map_model() {
        let tick = ms(1);
        let slots = 16; // a 16 ms rotation, so deadlines below span many rounds
        for seed in 1..=20u64 {
            let mut rng = Rng::new(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let t0 = Instant::now();
            let mut wheel = TimerWheel::new(tick, slots, t0);
            let mut model: BTreeMap<(Instant, u64), Instant> = BTreeMap::new();
            let mut keys: HashMap<u64, TimerKey> = HashMap::new();
            let mut stale: Vec<TimerKey> = Vec::new();
            let mut now = t0;
            let mut last = t0; // the `now` of the previous expire
            let mut next_id = 0u64;
            let round_up = |d: Instant| {
                let nanos = d.saturating_duration_since(t0).as_nanos();
                let ticks = nanos.div_ceil(tick.as_nanos());
                t0 + tick * u32::try_from(ticks).expect("small")
            };
            for _ in 0..3000 {
                match rng.below(10) {
                    0..=4 => {
                        // Deadlines from 5 ms in the past to ~12 rotations ahead, sub-tick precise.
                        let offset = Duration::from_micros(rng.below(200_000) as u64);
                        let deadline = (now + offset).checked_sub(ms(5)).filter(|d| *d >= t0).unwrap_or(t0);
                        let id = next_id;
                        next_id += 1;
                        keys.insert(id, wheel.insert(deadline, id));
                        model.insert((round_up(deadline), id), deadline);
                    }
                    5 | 6 => {
                        if let Some(&id) = keys.keys().nth(rng.below(keys.len() + 1)) {
                            let key = keys.remove(&id).expect("listed");
                            assert_eq!(wheel.cancel(key), Some(id));
                            model.retain(|&(_, m), _| m != id);
                            stale.push(key);
                        } else if let Some(&key) = stale.last() {
                            assert_eq!(wheel.cancel(key), None);
                        }
                    }
                    _ => {
                        // Mostly small steps, sometimes a jump over several rotations.
                        let max_step = if rng.below(20) == 0 { 100_000 } else { 3_000 };
                        now += Duration::from_micros(rng.below(max_step) as u64);
                        if let (Some(at), Some((&(first, _), _))) = (wheel.next_deadline(), model.first_key_value()) {
                            // Overdue entries report the last processed tick, before `last`.
                            assert!(at <= first.max(last), "next_deadline late (seed {seed})");
                        }
                        last = now;
                        let mut out = Vec::new();
                        wheel.expire(now, &mut out);
                        out.sort();
                        let mut expected = Vec::new();
                        while let Some(entry) = model.first_entry() {
                            if entry.key().0 > now {
                                break;
                            }
                            let ((_, id), deadline) = entry.remove_entry();
                            assert!(deadline <= now, "fired early");
                            expected.push(id);
                        }
                        expected.sort();
                        assert_eq!(out, expected, "seed {seed}");
                        for id in &out {
                            if let Some(key) = keys.remove(id) {
                                stale.push(key);
                            }
                        }
                    }
                }
                assert_eq!(wheel.len(), model.len());
                assert_eq!(wheel.next_deadline().is_none(), model.is_empty());
            }
        }
    }
}
