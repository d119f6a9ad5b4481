//! The session pool under a join flood (issue 14, item 4): a session that never listens lives
//! only `--session-join-timeout`, creation is rate-limited per client address, and a full pool
//! lets go of the oldest never-used session rather than refuse everyone, never a listening one.
//! Pushlet and Bayeux share the pool; both are driven here over real sockets.

mod util;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use util::{pushlet_session_id, Client, TestServer};

const JOIN: &str = "/pushlet.srv?p_event=join&p_format=xml-strict";
const JOIN_LISTEN: &str = "/pushlet.srv?p_event=join-listen&p_mode=pull&p_format=xml-strict&p_subject=/pool";

/// Joins (optionally listening); the new session's id.
fn join(c: &mut Client, listen: bool) -> String {
    let r = c.get(if listen { JOIN_LISTEN } else { JOIN });
    assert_eq!(r.status, 200, "{}", r.text());
    pushlet_session_id(r.text())
}

/// Parks a pull-mode `refresh` for session `id` on a connection of its own (returned, so it
/// stays open): the session now has a connection waiting for it, which is what makes it used.
fn wait_for_events(server: &TestServer, id: &str, parked_before: u64) -> Client {
    let mut c = server.client();
    let refresh = format!("GET /pushlet.srv?p_event=refresh&p_id={id}&p_format=xml-strict HTTP/1.1\r\nHost: t\r\n\r\n");
    c.send(refresh.as_bytes());
    server.wait_for("parked", parked_before + 1);
    c
}

/// Whether the server still knows Pushlet session `id` (a `hb` on it is answered, not refused).
fn known(c: &mut Client, id: &str) -> bool {
    let r = c.get(&format!("/pushlet.srv?p_event=hb&p_id={id}&p_format=xml-strict"));
    match r.status {
        200 => true,
        400 => false,
        other => panic!("hb answered {other}: {}", r.text()),
    }
}

#[test]
fn a_session_that_never_listens_expires_after_the_join_timeout_and_a_listening_one_stays() {
    let server = TestServer::with(|c| {
        c.workers = 1;
        c.sessions.join_timeout = Duration::from_millis(300);
    });
    let mut c = server.client();
    let listening = join(&mut c, true);
    let _refresh = wait_for_events(&server, &listening, 0);
    // Answered at once, a poll-mode listen waits for nothing: it does not make a session used.
    let idle = join(&mut c, false);
    let r = c.get(&format!("/pushlet.srv?p_event=listen&p_id={idle}&p_mode=poll&p_subject=/pool&p_format=xml-strict"));
    assert_eq!(r.status, 200, "{}", r.text());
    server.wait_for("sessions", 2);
    // Only the join timeout can take the idle one away (the lease is 300 s).
    server.wait_for("sessions", 1);
    assert!(!known(&mut c, &idle), "the session that never listened is gone");
    assert!(known(&mut c, &listening), "the listening session keeps its lease");
}

#[test]
fn a_full_pool_lets_go_of_the_oldest_unused_session_and_never_of_a_listening_one() {
    let server = TestServer::with(|c| {
        c.workers = 1;
        c.sessions.max_sessions = 3;
    });
    let mut c = server.client();
    let listening = join(&mut c, true);
    let mut waiting = vec![wait_for_events(&server, &listening, 0)];
    let oldest_unused = join(&mut c, false);
    let newer_unused = join(&mut c, false);
    // The pool is full; a newcomer takes the place of the oldest session nobody listened on.
    let newcomer = join(&mut c, false);
    assert_eq!(server.worker_total("sessions_evicted"), 1);
    assert!(!known(&mut c, &oldest_unused));
    for id in [&listening, &newer_unused, &newcomer] {
        assert!(known(&mut c, id), "{id} is kept");
    }
    // Once every session has a connection waiting for it there is nothing to let go: the pool
    // refuses, with 503.
    for (i, id) in [&newer_unused, &newcomer].into_iter().enumerate() {
        let r =
            c.get(&format!("/pushlet.srv?p_event=listen&p_id={id}&p_mode=pull&p_subject=/pool&p_format=xml-strict"));
        assert_eq!(r.status, 200, "{}", r.text());
        waiting.push(wait_for_events(&server, id, 1 + i as u64));
    }
    let r = c.get(JOIN);
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("5"));
    assert_eq!(server.worker_total("sessions_evicted"), 1);
    assert!(known(&mut c, &listening));
}

/// A keep-alive connection that worker `worker` serves (the kernel spreads connections over
/// the workers; a session's id names the worker that created it). The sessions joined to find
/// out are left again.
fn client_on(server: &TestServer, worker: usize) -> Client {
    for _ in 0..64 {
        let mut c = server.client();
        let id = join(&mut c, false);
        let r = c.get(&format!("/pushlet.srv?p_event=leave&p_id={id}&p_format=xml-strict"));
        assert_eq!(r.status, 200, "{}", r.text());
        if halley::server::session_id::owner(&id, 2) == Some(worker) {
            return c;
        }
    }
    panic!("64 connections and none on worker {worker}");
}

#[test]
fn a_full_pool_lets_go_of_another_workers_oldest_unused_session() {
    let server = TestServer::with(|c| {
        c.workers = 2;
        c.sessions.max_sessions = 8;
    });
    let (mut a, mut b) = (client_on(&server, 0), client_on(&server, 1));
    server.wait_for("sessions", 0);
    // Worker 1 holds one listening session; worker 0 fills the rest of the pool with sessions
    // nobody listens on.
    let listening = join(&mut b, true);
    let _waiting = wait_for_events(&server, &listening, 0);
    let unused: Vec<String> = (0..7).map(|_| join(&mut a, false)).collect();
    server.wait_for("sessions", 8);
    // Worker 1 has nothing of its own to let go; worker 0's oldest unused session goes.
    let newcomer = join(&mut b, false);
    assert_eq!(halley::server::session_id::owner(&newcomer, 2), Some(1));
    server.wait_for("sessions_evicted", 1);
    server.wait_for("sessions", 8);
    assert!(!known(&mut b, &unused[0]), "the oldest unused session was let go");
    for id in unused[1..].iter().chain([&listening, &newcomer]) {
        assert!(known(&mut b, id), "{id} is kept");
    }
    // Worker 0 creates again: its own oldest goes now (it is older than worker 1's newcomer).
    join(&mut a, false);
    server.wait_for("sessions_evicted", 2);
    assert!(!known(&mut a, &unused[1]));
    assert!(known(&mut a, &newcomer));
    server.wait_for("sessions", 8);
}

#[test]
fn one_address_creating_sessions_too_fast_gets_429_and_other_addresses_do_not() {
    let server = TestServer::with(|c| {
        c.workers = 1;
        c.sessions.create_rate = 2; // a burst of 4, then 2 per second
    });
    let here = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
    let mut c = Client::connect_from(server.addr, here);
    for _ in 0..4 {
        join(&mut c, false);
    }
    let r = c.get(JOIN);
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(r.text().contains("too many new sessions from this address"), "{}", r.text());
    // A Bayeux handshake from the same address is refused the same way, in Bayeux terms.
    let handshake = r#"[{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling"]}]"#;
    let mut h = Client::connect_from(server.addr, here);
    h.send(
        format!(
            "POST /cometd HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{handshake}",
            handshake.len()
        )
        .as_bytes(),
    );
    let reply = h.response().json();
    assert_eq!(reply[0]["successful"], false, "{reply}");
    assert!(reply[0]["error"].as_str().is_some_and(|e| e.starts_with("429:")), "{reply}");
    // Another client address has its own allowance.
    let mut other = Client::connect_from(server.addr, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
    join(&mut other, false);
}

#[test]
fn a_bayeux_client_that_never_connects_is_let_go_at_the_join_timeout_whatever_its_max_interval() {
    let server = TestServer::with(|c| {
        c.workers = 1;
        c.sessions.join_timeout = Duration::from_millis(300);
        c.sessions.bayeux_max_interval = Duration::from_secs(60);
    });
    let post = |batch: String| {
        let mut c = server.client();
        c.send_post("/cometd", batch.as_bytes(), "Content-Type: application/json\r\n");
        c.response().json()
    };
    let handshake = r#"[{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling"]}]"#;
    let idle = post(handshake.to_owned())[0]["clientId"].as_str().expect("clientId").to_owned();
    let connected = post(handshake.to_owned())[0]["clientId"].as_str().expect("clientId").to_owned();
    // A held connect (20 s by default) is a connection waiting for the session.
    let mut held = server.client();
    let connect =
        format!(r#"[{{"channel":"/meta/connect","clientId":"{connected}","connectionType":"long-polling"}}]"#);
    held.send_post("/cometd", connect.as_bytes(), "Content-Type: application/json\r\n");
    server.wait_for("parked", 1);
    server.wait_for("sessions", 2);
    // maxInterval (60 s) would keep it; the join timeout does not.
    server.wait_for("sessions", 1);
    let connect_now = format!(
        r#"[{{"channel":"/meta/connect","clientId":"{connected}","connectionType":"long-polling","advice":{{"timeout":0}}}}]"#
    );
    let reply = post(connect_now);
    assert_eq!(reply[0]["successful"], true, "the connected client is kept: {reply}");
    let gone = post(format!(
        r#"[{{"channel":"/meta/connect","clientId":"{idle}","connectionType":"long-polling","advice":{{"timeout":0}}}}]"#
    ));
    assert_eq!(gone[0]["successful"], false, "{gone}");
}

#[test]
fn churning_session_subscriptions_is_rate_limited_like_a_socket() {
    let server = TestServer::with(|c| c.workers = 1);
    // Bayeux: a subscribe naming more channels than the budget holds (128 at once) is refused
    // with 429 and changes nothing; the session keeps working.
    let mut c = server.client();
    let handshake = r#"[{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling"]}]"#;
    c.send_post("/cometd", handshake.as_bytes(), "Content-Type: application/json\r\n");
    let client = c.response().json()[0]["clientId"].as_str().expect("clientId").to_owned();
    let subscribe = |c: &mut Client, channels: Vec<String>| {
        let batch = serde_json::json!([{"channel": "/meta/subscribe", "clientId": client, "subscription": channels}]);
        c.send_post("/cometd", batch.to_string().as_bytes(), "Content-Type: application/json\r\n");
        c.response().json()
    };
    let many: Vec<String> = (0..100).map(|i| format!("/churn/a{i}")).collect();
    assert_eq!(subscribe(&mut c, many)[0]["successful"], true, "within the burst");
    let more: Vec<String> = (0..100).map(|i| format!("/churn/b{i}")).collect();
    let refused = subscribe(&mut c, more);
    assert_eq!(refused[0]["successful"], false, "{refused}");
    assert!(refused[0]["error"].as_str().is_some_and(|e| e.starts_with("429:")), "{refused}");
    // Pushlet: the same budget per session (a session holds at most 32 subjects, so churn is
    // subscribe, unsubscribe, subscribe...); over it, a nack.
    let id = join(&mut c, false);
    let mut refused_at = None;
    for round in 0..10 {
        let subjects: Vec<String> = (0..30).map(|i| format!("/churn/r{round}s{i}")).collect();
        let path =
            format!("/pushlet.srv?p_event=subscribe&p_id={id}&p_subject={}&p_format=xml-strict", subjects.join(","));
        let text = c.get(&path).text().to_owned();
        if text.contains("too many subscription changes") {
            refused_at = Some(round);
            break;
        }
        assert!(text.contains("subscribe-ack"), "{text}");
        let r = c.get(&format!("/pushlet.srv?p_event=unsubscribe&p_id={id}&p_format=xml-strict"));
        assert!(r.text().contains("unsubscribe-ack"), "{}", r.text());
    }
    // 128 subjects at once, then 32 a second: the fifth round of 30 is over the budget unless
    // the rounds took seconds.
    assert!(refused_at.is_some(), "ten rounds of 30 fresh subjects were all accepted");
}

/// A Pushlet join whose request says `X-Forwarded-For: forwarded`; its status.
fn join_forwarded(c: &mut Client, forwarded: &str) -> u16 {
    let request = format!("GET {JOIN} HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: {forwarded}\r\n\r\n");
    c.send(request.as_bytes());
    c.response().status
}

#[test]
fn behind_a_trusted_proxy_the_create_rate_counts_each_forwarded_client() {
    let server = TestServer::with(|c| {
        c.workers = 1;
        c.sessions.create_rate = 2; // a burst of 4, then 2 per second
        c.access.trusted_proxies = vec!["127.0.0.0/8".parse().expect("cidr")];
    });
    let mut proxy = server.client();
    for _ in 0..4 {
        assert_eq!(join_forwarded(&mut proxy, "203.0.113.1"), 200);
    }
    assert_eq!(join_forwarded(&mut proxy, "203.0.113.1"), 429, "one client behind the proxy is limited");
    // What the client wrote in front of the proxy's own entry changes nothing.
    assert_eq!(join_forwarded(&mut proxy, "198.51.100.7, 203.0.113.1"), 429);
    // Another client behind the same proxy has its own allowance.
    assert_eq!(join_forwarded(&mut proxy, "203.0.113.2"), 200);
}

#[test]
fn an_untrusted_peer_cannot_pick_its_address_and_rate_zero_is_unlimited() {
    let server = TestServer::with(|c| {
        c.workers = 1;
        c.sessions.create_rate = 2;
        c.access.trusted_proxies = vec!["10.0.0.0/8".parse().expect("cidr")];
    });
    let mut c = server.client();
    let statuses: Vec<u16> = (0..5).map(|n| join_forwarded(&mut c, &format!("203.0.113.{n}"))).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 429], "X-Forwarded-For from an untrusted peer is ignored");

    let unlimited = TestServer::with(|c| {
        c.workers = 1;
        c.sessions.create_rate = 0;
    });
    let mut c = unlimited.client();
    for _ in 0..50 {
        join(&mut c, false);
    }
}
