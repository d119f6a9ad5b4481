//! A Bayeux session as a record and back, for cluster mode: the node that adopts a session
//! whose node died (docs/CLUSTER.md "Sessions") rebuilds it from this. What is kept: the
//! client id, the subscriptions with their floors, the cursor, the connection type, the
//! timing, and whether the ack extension is on. What is not: the ack extension's unacked
//! batches (the adopter starts them afresh from the cursor).

use serde::{Deserialize, Serialize};

use super::{AckState, ConnectionType, Session, Subscribed};
use crate::model::Selector;

#[derive(Debug, Serialize, Deserialize)]
pub struct Snapshot {
    id: Box<str>,
    subs: Vec<(Box<str>, Option<u64>)>,
    cursor: u64,
    ack: bool,
    #[serde(default)]
    conn: Option<Box<str>>,
    last_seen_ms: u64,
    held_until_ms: u64,
    max_interval_ms: u64,
}

impl Session {
    /// The session as a record.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            id: self.client_id.clone(),
            subs: self.subscriptions.iter().map(|s| (Box::from(s.selector.as_str()), s.floor)).collect(),
            cursor: self.cursor,
            ack: self.ack.is_some(),
            conn: self.connection_type.map(|c| Box::from(c.as_str())),
            last_seen_ms: self.last_seen_ms,
            held_until_ms: self.held_until_ms,
            max_interval_ms: self.max_interval_ms,
        }
    }

    /// The session a record describes; `None` if a subscription no longer parses (a record
    /// from another version), in which case the client is told to handshake again.
    pub fn restore(snap: Snapshot) -> Option<Session> {
        let mut subscriptions = Vec::with_capacity(snap.subs.len());
        for (text, floor) in snap.subs.into_iter().take(super::MAX_SUBSCRIPTIONS) {
            subscriptions.push(Subscribed { selector: Selector::parse(&text).ok()?, floor });
        }
        Some(Session {
            client_id: snap.id,
            subscriptions,
            cursor: snap.cursor,
            ack: snap.ack.then(AckState::new),
            connection_type: snap.conn.as_deref().and_then(ConnectionType::parse),
            last_seen_ms: snap.last_seen_ms,
            held_until_ms: snap.held_until_ms,
            max_interval_ms: snap.max_interval_ms,
        })
    }
}
