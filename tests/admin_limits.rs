//! The admin listener under `--max-connections`: a node full of clients still answers
//! `/metrics` there (admin connections take no client slot), and the admin listener's own
//! connections are bounded (32 at once). Also a Pushlet pull round's loss notice counted in
//! `halley_gaps_reported_total` (the `gaps` figure of `/stats`).

mod util;

use std::net::{SocketAddr, TcpStream};

use util::{Client, TestServer};

/// Admin connections open at once (`server::conns::MAX_ADMIN_CONNECTIONS`).
const MAX_ADMIN: usize = 32;

fn admin_server(max_connections: usize) -> TestServer {
    let admin: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    TestServer::with(|c| {
        c.workers = 1;
        c.network.max_connections = max_connections;
        c.network.admin_listen = Some(admin);
    })
}

/// Fills the client slots: `n` connections each served once, then one more that the kernel
/// accepts but Halley does not, seen by the worker pausing.
fn fill(server: &TestServer, n: usize) -> (Vec<Client>, TcpStream) {
    let held: Vec<Client> = (0..n)
        .map(|_| {
            let mut c = server.client();
            assert_eq!(c.get("/health").status, 200);
            c
        })
        .collect();
    let waiting = TcpStream::connect(server.addr).expect("connect");
    server.wait_for("accept_pauses", 1);
    (held, waiting)
}

#[test]
fn a_full_node_still_answers_metrics_on_the_admin_listener() {
    let server = admin_server(2);
    let (_held, _waiting) = fill(&server, 2);
    let admin = server.admin_addr.expect("admin address");
    let mut c = Client::connect(admin);
    let metrics = c.get("/metrics");
    assert_eq!(metrics.status, 200, "{}", metrics.text());
    assert!(metrics.text().contains("halley_connections"), "{}", metrics.text());
    assert_eq!(c.get("/ready").status, 200);
}

#[test]
fn admin_connections_are_bounded_and_freed_slots_are_reused() {
    let server = admin_server(4);
    let admin = server.admin_addr.expect("admin address");
    let mut held: Vec<Client> = (0..MAX_ADMIN)
        .map(|i| {
            let mut c = Client::connect(admin);
            assert_eq!(c.get("/health").status, 200, "admin connection {i}");
            c
        })
        .collect();
    // One over the bound: the kernel completes the connect, Halley waits to accept it.
    let mut extra = Client::connect(admin);
    extra.send(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n");
    server.wait_for("accept_pauses", 1);
    // The client listener is not affected by the admin bound.
    assert_eq!(server.client().get("/health").status, 200);
    // Closing one admin connection lets the waiting one in.
    drop(held.pop());
    assert_eq!(extra.response().status, 200);
}

#[test]
fn a_pushlet_pull_round_that_reports_lost_events_is_counted_as_a_gap() {
    let server = TestServer::with(|c| c.history.max_messages = 2);
    let mut c = server.client();
    let join = "/pushlet.srv?p_event=join-listen&p_format=xml-strict&p_mode=pull&p_subject=/short";
    let id = util::pushlet_session_id(c.get(join).text());
    for i in 0..5 {
        util::publish(server.addr, "/short", format!("m{i}").as_bytes());
    }
    let before = server.worker_total("gaps");
    let round = c.get(&format!("/pushlet.srv?p_event=refresh&p_id={id}"));
    assert!(round.text().contains("events were lost"), "{}", round.text());
    assert_eq!(server.worker_total("gaps"), before + 1);
    // Caught up: the next round reports nothing, and nothing more is counted.
    util::publish(server.addr, "/short", b"m5");
    let round = c.get(&format!("/pushlet.srv?p_event=refresh&p_id={id}"));
    assert!(!round.text().contains("events were lost"), "{}", round.text());
    assert_eq!(server.worker_total("gaps"), before + 1);
}
