//! Unit tests of the memory store: bounds, eviction, gaps, and reads by every plan.

use std::thread;
use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::model::{MESSAGE_OVERHEAD_BYTES, PAYLOAD_COPIES};

fn store(limits: HistoryLimits) -> MemoryStore {
    MemoryStore::with_epoch(limits, Epoch::from_raw(99).expect("fits"))
}

fn roomy() -> HistoryLimits {
    HistoryLimits { max_messages: 1000, max_bytes: 1 << 30, ..HistoryLimits::default() }
}

fn message(seq: u64, topic: &str, time_ms: u64, data: &'static [u8]) -> Arc<Message> {
    Arc::new(Message::new(seq, Arc::from(topic), time_ms, Bytes::from_static(data)))
}

/// Appends one message per topic name, seqs from head+1, all at time `at`.
fn publish(s: &MemoryStore, topics: &[&str], at: u64) {
    for topic in topics {
        let seq = s.head() + 1;
        s.append(message(seq, topic, at, b"x"), at);
    }
}

fn sel(list: &[&str]) -> Vec<Selector> {
    list.iter().map(|s| Selector::parse(s).expect(s)).collect()
}

fn read(s: &MemoryStore, selectors: &[&str], after: u64, limit: usize) -> (Vec<u64>, ReadResult) {
    let mut out = Vec::new();
    let r = s.read(&sel(selectors), after, limit, &mut out);
    (out.iter().map(|m| m.seq).collect(), r)
}

/// Checks the accounting and the indexes against a full recount.
pub(super) fn check_invariants(s: &MemoryStore) {
    let inner = s.read_lock();
    let mut messages = 0;
    let mut bytes = 0;
    let mut lost = 0;
    for (name, topic) in &inner.topics {
        assert!(!topic.ring.is_empty(), "{name} is empty but kept");
        let sum: usize = topic.ring.iter().map(|m| m.byte_cost()).sum();
        assert_eq!(topic.bytes, sum, "{name} bytes");
        assert!(topic.ring.iter().zip(topic.ring.iter().skip(1)).all(|(a, b)| a.seq < b.seq));
        for msg in &topic.ring {
            assert!(Arc::ptr_eq(inner.log.get(&msg.seq).expect("message in the log"), msg));
        }
        if topic.evicted_through > 0 {
            assert_eq!(inner.evicted.get(&topic.evicted_through).map(|n| &**n), Some(&**name), "{name} loss");
            lost += 1;
        }
        messages += topic.ring.len();
        bytes += sum;
    }
    assert_eq!(inner.log.len(), messages, "the log holds exactly the retained messages");
    assert_eq!(inner.evicted.len(), lost, "one loss entry per retained topic that lost messages");
    assert_eq!(inner.messages, messages);
    assert_eq!(inner.bytes, bytes);
}

#[test]
fn per_topic_count_bound_keeps_the_newest() {
    let s = store(HistoryLimits { max_messages: 3, ..roomy() });
    publish(&s, &["/a", "/a", "/b", "/a", "/a", "/a"], 0);
    let (seqs, r) = read(&s, &["/a"], 0, 100);
    assert_eq!(seqs, [4, 5, 6]);
    assert!(r.gap, "1 and 2 were evicted");
    assert_eq!(r.oldest, Some(4));
    assert_eq!(r.head, 6);
    let stats = s.stats();
    assert_eq!((stats.topics, stats.messages, stats.evicted_topic), (2, 4, 2));
    assert_eq!(stats.bytes, 4 * (PAYLOAD_COPIES + 2 + MESSAGE_OVERHEAD_BYTES));
    assert_eq!(s.last_seq("/a"), 6);
    assert_eq!(s.last_seq("/b"), 3);
    assert_eq!(s.last_seq("/c"), 0);
    check_invariants(&s);
}

#[test]
fn per_topic_byte_bound_and_oversized_message() {
    let cost = 4 * PAYLOAD_COPIES + 2 + MESSAGE_OVERHEAD_BYTES;
    let s = store(HistoryLimits { max_bytes: 2 * cost + cost / 2, ..roomy() });
    for seq in 1..=4 {
        s.append(message(seq, "/a", 0, b"abcd"), 0);
    }
    assert_eq!(read(&s, &["/a"], 0, 100).0, [3, 4]);
    assert_eq!(s.stats().bytes, 2 * cost);
    // A message bigger than the whole per-topic budget is still kept, alone.
    let big: &'static [u8] = Box::leak(vec![b'z'; 3 * cost].into_boxed_slice());
    s.append(message(5, "/a", 0, big), 0);
    assert_eq!(read(&s, &["/a"], 0, 100).0, [5]);
    assert_eq!(s.stats().evicted_topic, 4);
    check_invariants(&s);
}

#[test]
fn global_count_bound_evicts_oldest_and_removes_empty_topics() {
    let s = store(HistoryLimits { total_messages: 3, ..roomy() });
    publish(&s, &["/a", "/b", "/c", "/b", "/c"], 0);
    let stats = s.stats();
    assert_eq!((stats.topics, stats.messages, stats.evicted_global), (2, 3, 2));
    assert_eq!(read(&s, &["/a", "/b", "/c"], 0, 100).0, [3, 4, 5]);
    assert_eq!(s.last_seq("/a"), 0, "/a was removed");
    check_invariants(&s);
}

#[test]
fn global_byte_bound() {
    let cost = PAYLOAD_COPIES + 2 + MESSAGE_OVERHEAD_BYTES;
    let s = store(HistoryLimits { total_bytes: 3 * cost, ..roomy() });
    publish(&s, &["/a", "/b", "/a", "/b", "/a"], 0);
    let stats = s.stats();
    assert_eq!((stats.messages, stats.bytes, stats.evicted_global), (3, 3 * cost, 2));
    assert_eq!(read(&s, &["/*"], 0, 100).0, [3, 4, 5]);
    check_invariants(&s);
}

#[test]
fn age_expiry_removes_old_messages_and_idle_topics() {
    let s = store(HistoryLimits { max_age: Duration::from_millis(1000), ..roomy() });
    publish(&s, &["/a", "/b"], 0);
    publish(&s, &["/a"], 500);
    s.expire(1000);
    assert_eq!(s.stats().messages, 3, "exactly max_age old is kept");
    s.expire(1001);
    assert_eq!(read(&s, &["/a", "/b"], 0, 100).0, [3]);
    assert_eq!(s.stats().topics, 1);
    s.expire(1501);
    let stats = s.stats();
    assert_eq!((stats.topics, stats.messages, stats.bytes, stats.expired), (0, 0, 0, 3));
    assert_eq!(s.head(), 3, "the sequence does not go back");
    check_invariants(&s);
}

#[test]
fn one_off_topics_do_not_leak() {
    let s = store(HistoryLimits { max_age: Duration::from_secs(1), ..roomy() });
    for i in 0..10_000u64 {
        let topic = format!("/once/{i}");
        s.append(message(i + 1, &topic, i / 10, b"x"), i / 10);
    }
    assert_eq!(s.stats().topics, 10_000);
    s.expire(10_000);
    assert_eq!(s.stats(), StoreStats { expired: 10_000, ..StoreStats::default() });
    check_invariants(&s);
}

#[test]
fn append_also_applies_the_age_limit() {
    let s = store(HistoryLimits { max_age: Duration::from_millis(10), ..roomy() });
    publish(&s, &["/a"], 0);
    publish(&s, &["/b"], 100);
    assert_eq!(read(&s, &["/a", "/b"], 0, 10).0, [2]);
    check_invariants(&s);
}

#[test]
fn out_of_order_append_is_ignored() {
    let s = store(roomy());
    s.append(message(5, "/a", 0, b"x"), 0);
    s.append(message(5, "/a", 0, b"y"), 0);
    s.append(message(3, "/a", 0, b"y"), 0);
    assert_eq!(s.head(), 5);
    assert_eq!(s.stats().messages, 1);
}

#[test]
fn gap_on_evicted_messages() {
    let s = store(HistoryLimits { max_messages: 2, ..roomy() });
    publish(&s, &["/a", "/b", "/a", "/a"], 0); // /a keeps 3, 4; 1 evicted
    assert!(read(&s, &["/a"], 0, 10).1.gap);
    let (seqs, r) = read(&s, &["/a"], 1, 10);
    assert_eq!(seqs, [3, 4]);
    assert!(!r.gap, "nothing after 1 was lost");
    assert!(!read(&s, &["/b"], 0, 10).1.gap);
    assert!(read(&s, &["/*"], 0, 10).1.gap);
}

#[test]
fn gap_on_removed_and_recreated_topic() {
    let s = store(HistoryLimits { max_age: Duration::from_millis(10), ..roomy() });
    publish(&s, &["/a", "/a", "/b"], 0);
    s.expire(100); // /a (1, 2) and /b (3) forgotten
    assert_eq!(s.stats().topics, 0);
    publish(&s, &["/a"], 100); // /a recreated at 4
    let (seqs, r) = read(&s, &["/a"], 1, 10);
    assert_eq!(seqs, [4]);
    assert!(r.gap, "2 was lost with the old /a");
    assert!(!read(&s, &["/a"], 3, 10).1.gap);
    // A topic that does not exist now, and patterns, only know the store-wide mark.
    assert!(read(&s, &["/zz"], 2, 10).1.gap);
    assert!(!read(&s, &["/zz"], 3, 10).1.gap);
    assert!(read(&s, &["/q/*"], 2, 10).1.gap);
    assert!(!read(&s, &["/*"], 3, 10).1.gap);
    // A topic older than the removal does not inherit it.
    let s = store(HistoryLimits { max_age: Duration::from_millis(10), ..roomy() });
    publish(&s, &["/old", "/gone"], 0);
    publish(&s, &["/old"], 50);
    s.expire(55); // /old's 1 and /gone's 2 are expired, /old keeps 3
    let (seqs, r) = read(&s, &["/old"], 2, 10);
    assert_eq!(seqs, [3]);
    assert!(!r.gap, "/old lost only 1, which the reader had");
    assert!(read(&s, &["/old"], 0, 10).1.gap);
}

#[test]
fn limit_returns_the_oldest_and_says_truncated() {
    let s = store(roomy());
    publish(&s, &["/a", "/b", "/c", "/a", "/b", "/c", "/a", "/b", "/c", "/a"], 0);
    let (seqs, r) = read(&s, &["/a", "/b", "/c"], 0, 4);
    assert_eq!(seqs, [1, 2, 3, 4]);
    assert!(r.truncated);
    let (seqs, r) = read(&s, &["/a", "/b", "/c"], 4, 6);
    assert_eq!(seqs, [5, 6, 7, 8, 9, 10]);
    assert!(!r.truncated);
    let (seqs, r) = read(&s, &["/a"], 0, 2);
    assert_eq!(seqs, [1, 4]);
    assert!(r.truncated);
    let (seqs, r) = read(&s, &["/a"], 0, 0);
    assert!(seqs.is_empty() && r.truncated);
    let (seqs, r) = read(&s, &["/a"], 10, 5);
    assert!(seqs.is_empty() && !r.truncated && r.oldest.is_none());
}

#[test]
fn overlapping_selectors_return_each_message_once() {
    let s = store(roomy());
    publish(&s, &["/a", "/a/b", "/a", "/c"], 0);
    let (seqs, r) = read(&s, &["/a", "/*", "/a", "/a/**", "/*/b"], 0, 100);
    assert_eq!(seqs, [1, 2, 3, 4]);
    assert!(!r.truncated && !r.gap);
    assert_eq!(r.oldest, Some(1));
}

#[test]
fn pattern_reads() {
    let s = store(roomy());
    publish(&s, &["/chat/a", "/chat/a/b", "/chatx/a", "/chat", "/chat/b", "/zz/chat/a"], 0);
    assert_eq!(read(&s, &["/chat/*"], 0, 100).0, [1, 5]);
    assert_eq!(read(&s, &["/chat/**"], 0, 100).0, [1, 2, 5]);
    assert_eq!(read(&s, &["/*/a"], 0, 100).0, [1, 3]);
    assert_eq!(read(&s, &["/**"], 0, 100).0, [1, 2, 3, 4, 5, 6]);
    assert_eq!(read(&s, &["/*/chat/*"], 0, 100).0, [6]);
    assert!(read(&s, &["/none/*"], 0, 100).0.is_empty());
    let (seqs, r) = read(&s, &["/chat/*"], 1, 100);
    assert_eq!(seqs, [5]);
    assert_eq!(r.oldest, Some(5));
}

#[test]
fn oldest_is_the_front_of_topics_with_news() {
    let s = store(HistoryLimits { max_messages: 2, ..roomy() });
    publish(&s, &["/a", "/b", "/a", "/a", "/b"], 0); // /a: 3, 4  /b: 2, 5
    let (seqs, r) = read(&s, &["/a", "/b"], 3, 10);
    assert_eq!(seqs, [4, 5]);
    assert_eq!(r.oldest, Some(2));
    let (_, r) = read(&s, &["/a", "/b"], 4, 10);
    assert_eq!(r.oldest, Some(2), "/a has nothing new, /b starts at 2");
}

#[test]
fn messages_above_head_are_not_returned() {
    let s = store(roomy());
    publish(&s, &["/a"], 0);
    // Put seq 2 and 3 in the rings as an append does, without raising the head yet.
    {
        let mut inner = s.write_lock();
        inner.push(message(2, "/b", 0, b"x"), &s.limits);
        inner.push(message(3, "/a", 0, b"x"), &s.limits);
    }
    let (seqs, r) = read(&s, &["/a", "/b"], 0, 10);
    assert_eq!(seqs, [1]);
    assert_eq!(r.head, 1);
    assert!(!r.truncated);
    s.head.store(3, Ordering::Release);
    assert_eq!(read(&s, &["/a", "/b"], 0, 10).0, [1, 2, 3]);
}

#[test]
fn concurrent_readers_never_skip() {
    const N: u64 = 2000;
    // Room for everything, so any skip would be the store's fault, not eviction.
    let s = Arc::new(store(HistoryLimits { max_messages: N as usize, ..roomy() }));
    let writer = {
        let s = s.clone();
        thread::spawn(move || {
            for seq in 1..=N {
                let topic = if seq % 3 == 0 { "/b" } else { "/a" };
                s.append(message(seq, topic, 0, b"x"), 0);
            }
        })
    };
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let s = s.clone();
            thread::spawn(move || {
                let selectors = sel(&["/a", "/b"]);
                let mut after = 0;
                let mut out = Vec::new();
                while after < N {
                    out.clear();
                    let r = s.read(&selectors, after, 7, &mut out);
                    assert!(!r.gap);
                    for m in &out {
                        assert_eq!(m.seq, after + 1, "a reader skipped or repeated");
                        after = m.seq;
                    }
                    if !r.truncated {
                        // Every seq is on /a or /b: all of them up to head came back.
                        assert_eq!(after, r.head, "a message at or below head was missing");
                    }
                    thread::yield_now();
                }
            })
        })
        .collect();
    writer.join().expect("writer");
    for r in readers {
        r.join().expect("reader");
    }
}

/// Reads with `budget` from `after` until a read is not truncated, as a reader following
/// `next_cursor` does: (every seq returned, whether any read reported a gap, reads made).
fn read_all(
    s: &MemoryStore,
    selectors: &[Selector],
    after: u64,
    limit: usize,
    budget: read::Budget,
) -> (Vec<u64>, bool, usize) {
    let (mut seqs, mut gap, mut reads, mut cursor) = (Vec::new(), false, 0, after);
    loop {
        let head = s.head();
        let mut out = Vec::new();
        let r = if cursor >= head {
            ReadResult { head, gap: false, oldest: None, truncated: false, pending: false }
        } else {
            read::read(&s.read_lock(), selectors, cursor, head, limit, &mut out, budget)
        };
        reads += 1;
        assert!(out.len() <= limit, "{} messages over the limit {limit}", out.len());
        seqs.extend(out.iter().map(|m| m.seq));
        gap |= r.gap;
        let next = r.next_cursor(cursor, &out);
        assert!(next > cursor || !r.truncated, "a truncated read made no progress from {cursor}");
        cursor = next;
        if !r.truncated {
            return (seqs, gap, reads);
        }
        assert!(reads < 100_000, "the reads never finished");
    }
}

const TINY: read::Budget = read::Budget { walk: 2, topics: 1 };
const SMALL: read::Budget = read::Budget { walk: 7, topics: 3 };

/// Every plan (by topic, log walk, budget-cut log walk) agrees with a recount of what is
/// retained, through random appends, per-topic and global evictions and expiry: resuming from
/// `next_cursor` returns exactly the matching retained messages after the cursor, in order,
/// once each, and any matching message lost after the cursor is reported as a gap.
#[test]
fn every_read_plan_agrees_with_a_recount() {
    let topics = ["/a", "/b", "/a/x", "/b/x", "/a/x/y", "/c/d/e", "/c/q/e", "/z"];
    let selector_sets: [&[&str]; 9] = [
        &["/a"],
        &["/a", "/z"],
        &["/*"],
        &["/a/*"],
        &["/**"],
        &["/*/x"],
        &["/c/*/e", "/b"],
        &["/a/**", "/*/x", "/z"],
        &["/none/*"],
    ];
    let mut rng = crate::xorshift::XorShift::new(0x00C0_FFEE);
    for round in 0..30u64 {
        let limits = HistoryLimits {
            max_messages: 1 + rng.below(4),
            total_messages: 5 + rng.below(30),
            max_age: Duration::from_millis(50),
            ..roomy()
        };
        let s = store(limits);
        let mut appended: Vec<(u64, &str)> = Vec::new();
        let mut now = 0;
        for seq in 1..=(20 + rng.below(200) as u64) {
            now += rng.below(3) as u64;
            let topic = topics[rng.below(topics.len())];
            s.append(message(seq, topic, now, b"x"), now);
            appended.push((seq, topic));
            if rng.below(40) == 0 {
                now += 40;
                s.expire(now);
            }
        }
        check_invariants(&s);
        let retained: Vec<u64> = s.read_lock().log.keys().copied().collect();
        let head = s.head();
        for list in selector_sets {
            let selectors = sel(list);
            let matching = |seq: &&(u64, &str)| selectors.iter().any(|x| x.matches(seq.1));
            for _ in 0..4 {
                let after = rng.below(head as usize + 1) as u64;
                let want: Vec<u64> = appended
                    .iter()
                    .filter(matching)
                    .map(|(seq, _)| *seq)
                    .filter(|seq| *seq > after && retained.binary_search(seq).is_ok())
                    .collect();
                let lost = appended
                    .iter()
                    .filter(matching)
                    .any(|(seq, _)| *seq > after && retained.binary_search(seq).is_err());
                for budget in [read::BUDGET, SMALL, TINY] {
                    for limit in [1, 3, 100] {
                        let (got, gap, _) = read_all(&s, &selectors, after, limit, budget);
                        let what = format!("round {round}, {list:?} after {after}, limit {limit}, {budget:?}");
                        assert_eq!(got, want, "{what}");
                        assert!(gap || !lost, "a lost message went unreported: {what}");
                    }
                }
            }
        }
    }
}

/// With nothing ever lost, no plan reports a gap.
#[test]
fn no_gap_when_nothing_was_lost() {
    let s = store(roomy());
    for seq in 1..=300u64 {
        s.append(message(seq, &format!("/t/{}", seq % 37), 0, b"x"), 0);
    }
    for budget in [read::BUDGET, SMALL, TINY] {
        for list in [&["/t/*"][..], &["/**"], &["/*/5", "/t/6"], &["/t/9"]] {
            let (_, gap, _) = read_all(&s, &sel(list), 0, 10, budget);
            assert!(!gap, "{list:?} {budget:?}");
        }
    }
}

/// A wide pattern over many topics costs what it returns: `/**` from the start walks the
/// log for its batch; a pattern that matches nothing stops at the work budget, says
/// `truncated` with its cursor moved on, and the reader gets through in budget-sized steps.
#[test]
fn wide_pattern_reads_are_bounded_and_resumable() {
    const TOPICS: u64 = 20_000;
    let s = store(roomy());
    for seq in 1..=TOPICS {
        s.append(message(seq, &format!("/room/{seq}"), 0, b"x"), 0);
    }
    let (seqs, r) = read(&s, &["/**"], 0, 100);
    assert_eq!(seqs, (1..=100).collect::<Vec<_>>());
    assert!(r.truncated && r.head == 100, "{r:?}");
    assert_eq!(r.oldest, Some(1));

    let (seqs, r) = read(&s, &["/*/none"], 0, 100);
    assert!(seqs.is_empty());
    assert!(r.truncated, "stopped at the budget");
    assert_eq!(r.head, read::BUDGET.walk as u64, "looked at exactly one budget of messages");
    let (seqs, _, reads) = read_all(&s, &sel(&["/*/none"]), 0, 100, read::BUDGET);
    assert!(seqs.is_empty());
    assert_eq!(reads as u64, TOPICS.div_ceil(read::BUDGET.walk as u64));

    // A narrow prefix is read topic by topic, whatever the cursor.
    let (seqs, r) = read(&s, &["/room/77/*", "/room/77", "/room/78"], 0, 100);
    assert_eq!(seqs, [77, 78]);
    assert!(!r.truncated && r.head == TOPICS);
    // A sparse match deep in the log comes back once the walk reaches it.
    let (seqs, _, reads) = read_all(&s, &sel(&["/*/19999"]), 0, 100, read::BUDGET);
    assert_eq!(seqs, [19999]);
    assert_eq!(reads as u64, 19999u64.div_ceil(read::BUDGET.walk as u64));
}
