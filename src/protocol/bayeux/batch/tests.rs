//! The batch rules against a session table kept in a `Vec` (a stand-in for the worker's slab:
//! a handshake takes the first free key), with a log of what the batch asked of the host.

use serde_json::json;

use super::*;
use crate::protocol::bayeux::{parse_batch, Session, Settings};

const NOW: u64 = 1_000;
/// A channel the stand-in host treats as "the session expired while this was handled".
const EXPIRE: &str = "/service/expire";

#[derive(Default)]
struct Table {
    settings: Settings,
    sessions: Vec<Option<Session>>,
    handshakes: usize,
    busy: bool,
    log: Vec<String>,
}

impl Host for Table {
    fn handshake(&mut self, msg: &Message) -> Value {
        self.handshakes += 1;
        let id = format!("client{:018}", self.handshakes);
        match Session::new(id.into(), msg, &self.settings, NOW) {
            Ok((session, reply)) => {
                let key = match self.sessions.iter().position(Option::is_none) {
                    Some(free) => free,
                    None => {
                        self.sessions.push(None);
                        self.sessions.len() - 1
                    }
                };
                self.sessions[key] = Some(session);
                self.log.push(format!("handshake {key}"));
                reply
            }
            Err(reply) => reply,
        }
    }

    fn find(&self, client_id: &str) -> Option<usize> {
        self.sessions.iter().position(|s| s.as_ref().is_some_and(|s| s.client_id() == client_id))
    }

    fn handle(&mut self, key: usize, msg: &Message) -> Option<Outcome> {
        let session = self.sessions.get_mut(key)?.as_mut()?;
        session.touch(NOW);
        let outcome = session.handle(msg, &self.settings);
        if &*msg.channel == EXPIRE {
            self.log.push(format!("expire {key}"));
            self.sessions[key] = None;
        }
        Some(outcome)
    }

    fn publish(&mut self, topic: Box<str>, _data: Bytes) -> Result<(), Refusal> {
        self.log.push(format!("publish {topic}"));
        if self.busy {
            Err(Refusal::Busy)
        } else {
            Ok(())
        }
    }

    fn resubscribed(&mut self, key: usize) {
        self.log.push(format!("resubscribed {key}"));
    }

    fn disconnect(&mut self, key: usize) {
        self.log.push(format!("disconnect {key}"));
        self.sessions[key] = None;
    }

    fn connect_reply(&mut self, key: usize, connect: &Message) -> Option<Value> {
        let session = self.sessions.get_mut(key)?.as_mut()?;
        self.log.push(format!("connect reply {key}"));
        Some(session.connect_reply(connect, &self.settings))
    }
}

/// A table with one handshaken client, `client000000000000000001` at key 0.
fn one_client() -> Table {
    let mut table = Table::default();
    let batch = run_batch(
        &mut table,
        &parse(r#"[{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling"]}]"#),
    );
    assert_eq!(batch.replies[0]["successful"], true);
    table.log.clear();
    table
}

fn parse(json: &str) -> Vec<Message> {
    let json = json.replace("\"A\"", "\"client000000000000000001\"").replace("\"B\"", "\"client000000000000000002\"");
    parse_batch(json.as_bytes()).expect(&json)
}

/// `(channel, id, successful)` of each reply.
fn summary(replies: &[Value]) -> Vec<(String, String, bool)> {
    replies
        .iter()
        .map(|r| {
            let channel = r["channel"].as_str().unwrap_or("").to_owned();
            (channel, r["id"].as_str().unwrap_or("").to_owned(), r["successful"] == true)
        })
        .collect()
}

fn row(channel: &str, id: &str, ok: bool) -> (String, String, bool) {
    (channel.to_owned(), id.to_owned(), ok)
}

const CONNECT: &str = r#"{"id":"ID","channel":"/meta/connect","clientId":"A","connectionType":"long-polling"}"#;

fn connect(id: &str, client: &str) -> String {
    CONNECT.replace("ID", id).replace("\"A\"", &format!("\"{client}\""))
}

#[test]
fn a_handshake_makes_a_session_the_rest_of_the_batch_can_use() {
    let mut table = Table::default();
    let batch = run_batch(
        &mut table,
        &parse(
            r#"[{"id":"1","channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling"]},
                {"id":"2","channel":"/meta/subscribe","clientId":"A","subscription":"/news"}]"#,
        ),
    );
    assert_eq!(summary(&batch.replies), [row("/meta/handshake", "1", true), row("/meta/subscribe", "2", true)]);
    assert_eq!(table.log, ["handshake 0", "resubscribed 0"]);
    assert!(batch.held.is_none());
}

#[test]
fn an_unknown_client_gets_402_and_the_batch_goes_on() {
    let mut table = one_client();
    let json = format!(
        r#"[{{"id":"1","channel":"/meta/subscribe","clientId":"B","subscription":"/x"}},{}]"#,
        connect("2", "A")
    );
    let batch = run_batch(&mut table, &parse(&json));
    assert_eq!(summary(&batch.replies), [row("/meta/subscribe", "1", false)]);
    assert_eq!(batch.replies[0]["error"], "402::Unknown client");
    assert_eq!(batch.replies[0]["advice"], json!({"reconnect": "handshake", "interval": 0}));
    let held = batch.held.expect("A's connect is held");
    assert_eq!((held.session, held.connect.id_value()), (0, Some(json!("2"))));
    assert_eq!(held.hold_ms, table.settings.timeout_ms);

    // No client id at all is unknown too.
    let batch = run_batch(&mut table, &parse(r#"[{"id":"3","channel":"/meta/connect"}]"#));
    assert_eq!(summary(&batch.replies), [row("/meta/connect", "3", false)]);
}

#[test]
fn a_disconnect_after_a_connect_answers_the_connect_first() {
    let mut table = one_client();
    let json = format!(r#"[{},{{"id":"2","channel":"/meta/disconnect","clientId":"A"}}]"#, connect("1", "A"));
    let batch = run_batch(&mut table, &parse(&json));
    assert_eq!(summary(&batch.replies), [row("/meta/connect", "1", true), row("/meta/disconnect", "2", true)]);
    assert!(batch.replies[0]["advice"].is_object(), "a real connect reply, made while the session existed");
    assert_eq!(table.log, ["connect reply 0", "disconnect 0"]);
    assert!(batch.held.is_none());
    assert_eq!(table.find("client000000000000000001"), None);
}

#[test]
fn a_newer_connect_in_the_batch_answers_the_older_at_once() {
    let mut table = one_client();
    let json = format!("[{},{}]", connect("1", "A"), connect("2", "A"));
    let batch = run_batch(&mut table, &parse(&json));
    assert_eq!(summary(&batch.replies), [row("/meta/connect", "1", true)]);
    assert_eq!(table.log, ["connect reply 0"]);
    let held = batch.held.expect("the newer connect is held");
    assert_eq!(held.connect.id_value(), Some(json!("2")));
}

#[test]
fn connects_of_two_clients_in_one_batch_lose_no_reply() {
    let mut table = one_client();
    let hs = r#"[{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling"]}]"#;
    run_batch(&mut table, &parse(hs));
    table.log.clear();
    let json = format!(
        r#"[{},{},{{"id":"3","channel":"/meta/disconnect","clientId":"A"}}]"#,
        connect("1", "A"),
        connect("2", "B")
    );
    let batch = run_batch(&mut table, &parse(&json));
    assert_eq!(summary(&batch.replies), [row("/meta/connect", "1", true), row("/meta/disconnect", "3", true)]);
    assert_eq!(table.log, ["connect reply 0", "disconnect 0"], "A's disconnect does not touch B's connect");
    assert_eq!(batch.held.map(|h| h.session), Some(1));
}

#[test]
fn a_held_connect_whose_session_went_away_gets_402_at_the_end() {
    let mut table = one_client();
    // The session goes while the batch runs, and a handshake takes its key: the held connect
    // must not be held for the newcomer.
    let json = format!(
        r#"[{},{{"id":"2","channel":"{EXPIRE}","clientId":"A"}},
            {{"id":"3","channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling"]}}]"#,
        connect("1", "A")
    );
    let batch = run_batch(&mut table, &parse(&json));
    assert_eq!(table.log, ["expire 0", "handshake 0"]);
    let rows = summary(&batch.replies);
    // (No such service: its own reply is a 404, which does not matter here.)
    assert_eq!(rows, [row(EXPIRE, "2", false), row("/meta/handshake", "3", true), row("/meta/connect", "1", false)]);
    assert_eq!(batch.replies[2]["error"], "402::Unknown client");
    assert!(batch.held.is_none());
}

#[test]
fn a_publish_the_hub_refuses_is_a_503_failure() {
    let mut table = one_client();
    let json = r#"[{"id":"1","channel":"/chat","clientId":"A","data":{"t":1}}]"#;
    let batch = run_batch(&mut table, &parse(json));
    assert_eq!(summary(&batch.replies), [row("/chat", "1", true)]);
    table.busy = true;
    let batch = run_batch(&mut table, &parse(json));
    assert_eq!(summary(&batch.replies), [row("/chat", "1", false)]);
    assert_eq!(batch.replies[0]["error"], "503::Server busy, retry later");
    assert_eq!(table.log, ["publish /chat", "publish /chat"]);
}
