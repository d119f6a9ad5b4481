//! Micro-benchmarks of Halley's user-space hot paths, through the public API only: request-head
//! parsing, encoding one message for each wire format, a broadcast's per-subscriber work for
//! 100,000 in-process subscribers, the timer wheel, topic pattern matching, and routing one
//! publish through the selector index against 10 to 100,000 distinct patterns, and one history
//! read of a wildcard pattern over 100,000 topics.
//!
//! None of these touch a socket: they measure what Halley adds on top of the kernel's cost
//! (see bench/RESULTS.md for the end-to-end figures). Run with `cargo bench --bench core`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use halley::http::{parse_head, Limits};
use halley::model::{Message, Selector, SelectorIndex};
use halley::server::timer::{TimerWheel, DEFAULT_SLOTS, DEFAULT_TICK};
use halley::store::{HistoryLimits, MemoryStore, Store};
use halley::transport::websocket::{encode_frame, Opcode};
use halley::transport::{iframe, multipart, sse, StreamCtx};

/// Subscribers in the fan-out benchmarks.
const FANOUT_SUBSCRIBERS: usize = 100_000;
/// A typical small JSON payload (~100 bytes), like halley-load's stamps.
const PAYLOAD: &[u8] =
    br#"{"src":0,"seq":12345,"ts":1795325654123456789,"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#;

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = http_parse, encode, fanout, timer_wheel, selectors, routing, history_read
}
criterion_main!(benches);

fn http_parse(c: &mut Criterion) {
    let limits = Limits::default();
    let mut g = c.benchmark_group("http_parse");
    let longpoll = b"GET /sub/news?since=k3x9q2m1-42&timeout=30 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n";
    let browser = b"GET /sub/news?transport=sse HTTP/1.1\r\nHost: example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\nAccept: text/event-stream\r\nAccept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\nLast-Event-ID: k3x9q2m1-41\r\nCache-Control: no-cache\r\nConnection: keep-alive\r\nCookie: session=0123456789abcdef0123456789abcdef\r\n\r\n";
    let publish = b"POST /pub/news HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n";
    for (name, req) in [("longpoll_minimal", &longpoll[..]), ("sse_browser", &browser[..]), ("publish", &publish[..])] {
        g.throughput(Throughput::Bytes(req.len() as u64));
        g.bench_function(name, |b| b.iter(|| parse_head(black_box(req), &limits).is_ok()));
    }
    g.finish();
}

fn message() -> Message {
    Message::new(12345, Arc::from("/news"), 1_795_325_654_123, Bytes::from_static(PAYLOAD))
        .with_content_type(Some("application/json".into()))
}

/// Each encoder runs on a fresh `Message` (built outside the timing), because a message caches
/// its encodings: the first call is the one a broadcast pays, once per wire format.
fn encode(c: &mut Criterion) {
    let epoch = MemoryStore::new(HistoryLimits::default()).epoch();
    let ctx = StreamCtx { epoch, boundary: "halley-bench-boundary".into(), retry_ms: 2000 };
    let mut g = c.benchmark_group("encode");
    g.bench_function("message_json", |b| b.iter_batched(message, |m| m.json(epoch).len(), BatchSize::SmallInput));
    g.bench_function("sse_event", |b| {
        b.iter_batched(message, |m| sse::message(&m, epoch).len(), BatchSize::SmallInput)
    });
    g.bench_function("multipart_part", |b| {
        b.iter_batched(message, |m| multipart::part(&m, &ctx).len(), BatchSize::SmallInput)
    });
    g.bench_function("iframe_script_json", |b| {
        b.iter_batched(message, |m| iframe::script_json(&m, epoch).len(), BatchSize::SmallInput)
    });
    let json = message().json(epoch).clone();
    let mut out = Vec::with_capacity(json.len() + 16);
    g.bench_function("websocket_text_frame", |b| {
        b.iter(|| {
            out.clear();
            encode_frame(&mut out, Opcode::Text, black_box(&json));
            out.len()
        })
    });
    g.finish();
}

/// One broadcast to 100,000 in-process subscribers, in the two shapes the workers use:
///
/// - `longpoll_read_per_subscriber`: every parked long-poll subscriber resumes from its own
///   cursor: one `Store::read` (head load, topic lookup, selector match, `Arc` clone) plus a
///   clone of the shared encoded reply, per subscriber. The upper bound of the per-subscriber
///   user-space cost when no two subscribers share a cursor.
/// - `stream_shared_bytes`: streaming subscribers (SSE, ndjson, WebSocket) all at the head get
///   the message's bytes, encoded once, queued by reference: one `Bytes` clone and one push per
///   subscriber.
///
/// Neither includes the `write()` syscall, which the end-to-end runs measure (~9-11 µs each).
fn fanout(c: &mut Criterion) {
    let store = MemoryStore::new(HistoryLimits::default());
    let epoch = store.epoch();
    let selectors = match Selector::parse("/news") {
        Ok(s) => vec![s],
        Err(_) => return,
    };
    let mut seq = 0u64;
    let mut g = c.benchmark_group("fanout_100k");
    g.throughput(Throughput::Elements(FANOUT_SUBSCRIBERS as u64));
    g.sample_size(10);
    let mut out = Vec::with_capacity(4);
    let mut queued: Vec<Bytes> = Vec::with_capacity(FANOUT_SUBSCRIBERS);
    g.bench_function("longpoll_read_per_subscriber", |b| {
        b.iter(|| {
            seq += 1;
            let msg = Arc::new(Message::new(seq, Arc::from("/news"), seq, Bytes::from_static(PAYLOAD)));
            store.append(msg, seq);
            queued.clear();
            for _ in 0..FANOUT_SUBSCRIBERS {
                out.clear();
                let r = store.read(&selectors, seq - 1, 100, &mut out);
                if let Some(m) = out.first() {
                    queued.push(m.json(epoch).clone());
                }
                black_box(r.head);
            }
            queued.len()
        })
    });
    g.bench_function("stream_shared_bytes", |b| {
        b.iter(|| {
            seq += 1;
            let msg = Arc::new(Message::new(seq, Arc::from("/news"), seq, Bytes::from_static(PAYLOAD)));
            store.append(msg.clone(), seq);
            let bytes = sse::message(&msg, epoch).clone();
            queued.clear();
            for _ in 0..FANOUT_SUBSCRIBERS {
                queued.push(bytes.clone());
            }
            queued.len()
        })
    });
    g.finish();
}

/// Long-poll timeouts: insert 10,000 deadlines spread over 30 s, then expire them all.
fn timer_wheel(c: &mut Criterion) {
    const TIMERS: usize = 10_000;
    let mut g = c.benchmark_group("timer_wheel");
    g.throughput(Throughput::Elements(TIMERS as u64));
    g.bench_function("insert_10k", |b| {
        b.iter_batched(
            || TimerWheel::new(DEFAULT_TICK, DEFAULT_SLOTS, Instant::now()),
            |mut wheel| {
                let now = Instant::now();
                for i in 0..TIMERS {
                    wheel.insert(now + Duration::from_millis(27_000 + (i as u64 * 7) % 6_000), i);
                }
                wheel
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("insert_and_expire_10k", |b| {
        let mut fired = Vec::with_capacity(TIMERS);
        b.iter_batched(
            || TimerWheel::new(DEFAULT_TICK, DEFAULT_SLOTS, Instant::now()),
            |mut wheel| {
                let now = Instant::now();
                for i in 0..TIMERS {
                    wheel.insert(now + Duration::from_millis(27_000 + (i as u64 * 7) % 6_000), i);
                }
                fired.clear();
                wheel.expire(now + Duration::from_secs(34), &mut fired);
                fired.len()
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn selectors(c: &mut Criterion) {
    let mut g = c.benchmark_group("selector_match");
    let cases = [
        ("exact", "/chat/room42", "/chat/room42"),
        ("one_segment_star", "/chat/*/typing", "/chat/room42/typing"),
        ("deep_glob", "/devices/**", "/devices/eu/west/rack7/sensor12"),
        ("star_miss", "/chat/*/typing", "/chat/room42/presence"),
    ];
    for (name, pattern, topic) in cases {
        let Ok(sel) = Selector::parse(pattern) else { continue };
        g.bench_function(name, |b| b.iter(|| black_box(&sel).matches(black_box(topic))));
    }
    g.finish();
}

/// The routing step of one publish, as the hub (and each worker) runs it: every selector that
/// matches the topic, from a `SelectorIndex` holding `n` distinct patterns of three shapes
/// (`/user/<id>/**`, `/room/<id>/*`, `/*/<id>/typing`) beside `n` exact topics; the value is
/// a worker bitmask, OR-ed like the hub's worker sets. `index` is what Halley does;
/// `scan` is the scan of every pattern it replaced, for comparison (skipped at 100,000).
fn routing(c: &mut Criterion) {
    let mut g = c.benchmark_group("route_publish");
    for n in [10usize, 1_000, 100_000] {
        let mut index: SelectorIndex<u64> = SelectorIndex::default();
        let mut patterns = Vec::with_capacity(n);
        for i in 0..n {
            let text = match i % 3 {
                0 => format!("/user/{i}/**"),
                1 => format!("/room/{i}/*"),
                _ => format!("/*/{i}/typing"),
            };
            let Ok(pattern) = Selector::parse(&text) else { return };
            index.get_or_insert_with(&pattern, || 1 << (i % 2));
            patterns.push(pattern);
            let Ok(exact) = Selector::parse(&format!("/topic/{i}")) else { return };
            index.get_or_insert_with(&exact, || 1);
        }
        // A topic one pattern matches, in the middle of the set.
        let topic = format!("/user/{}/inbox", (n / 2) / 3 * 3);
        g.bench_function(format!("index_{n}_patterns"), |b| {
            b.iter(|| {
                let mut workers = 0u64;
                index.for_each_match(black_box(&topic), |set| workers |= set);
                workers
            })
        });
        if n <= 1_000 {
            g.bench_function(format!("scan_{n}_patterns"), |b| {
                b.iter(|| patterns.iter().filter(|p| p.matches(black_box(&topic))).count())
            });
        }
    }
    g.finish();
}

/// Topics in the history-read benchmarks.
const HISTORY_TOPICS: u64 = 100_000;

/// One `Store::read` of at most `--max-batch` (100) messages from a store holding one message
/// on each of 100,000 topics (`/room/<i>`), as a worker runs it for a subscriber:
///
/// - `all_since_all`: `/**` from the start (`?since=all`), the flood of issue 14 item 3;
/// - `sparse_since_all`: `/*/none` from the start, a pattern that matches no topic at all;
/// - `all_live`: `/**` from 10 messages behind the head (a subscriber keeping up);
/// - `exact_since_all`: one exact topic from the start, for scale.
fn history_read(c: &mut Criterion) {
    let store = MemoryStore::new(HistoryLimits::default());
    for seq in 1..=HISTORY_TOPICS {
        let topic: Arc<str> = Arc::from(format!("/room/{seq}"));
        store.append(Arc::new(Message::new(seq, topic, seq, Bytes::from_static(PAYLOAD))), seq);
    }
    let mut g = c.benchmark_group("history_read_100k_topics");
    let cases = [
        ("all_since_all", "/**", 0),
        ("sparse_since_all", "/*/none", 0),
        ("all_live", "/**", HISTORY_TOPICS - 10),
        ("exact_since_all", "/room/50000", 0),
    ];
    let mut out = Vec::with_capacity(100);
    for (name, selector, after) in cases {
        let Ok(selector) = Selector::parse(selector) else { continue };
        let selectors = [selector];
        g.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                let read = store.read(black_box(&selectors), after, 100, &mut out);
                (out.len(), read.head)
            })
        });
    }
    g.finish();
}
