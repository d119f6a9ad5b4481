//! A Pushlet session as a record and back, for cluster mode: the node that adopts a session
//! whose node died (docs/CLUSTER.md "Sessions") rebuilds it from this, with its ids, format,
//! mode, subscriptions (sids and labels included), listen state and cursor.

use serde::{Deserialize, Serialize};

use super::{Session, Subscription, MAX_SUBJECTS, UNICAST_PREFIX};
use crate::model::Selector;
use crate::protocol::pushlet::{Format, Mode};

/// One subscription: sid, label, subjects.
type Sub = (Box<str>, Option<Box<str>>, Vec<Box<str>>);

#[derive(Debug, Serialize, Deserialize)]
pub struct Snapshot {
    id: Box<str>,
    public_id: Box<str>,
    format: Box<str>,
    mode: Box<str>,
    subs: Vec<Sub>,
    listening: bool,
    cursor: u64,
    next_sid: u64,
}

impl Session {
    /// The session as a record.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            id: self.id.clone(),
            public_id: self.public_id.clone(),
            format: self.format.as_str().into(),
            mode: self.mode.as_str().into(),
            subs: self.subs.iter().map(|s| (s.sid.clone(), s.label.clone(), s.subjects.to_vec())).collect(),
            listening: self.listening,
            cursor: self.cursor,
            next_sid: self.next_sid,
        }
    }

    /// The session a record describes; `None` if the record does not hold together (the
    /// client is then told to join again).
    pub fn restore(snap: Snapshot) -> Option<Session> {
        if snap.subs.iter().map(|s| s.2.len()).sum::<usize>() > MAX_SUBJECTS {
            return None;
        }
        // The public id is one hex topic segment (the worker makes it): checked, since it names
        // the private unicast topic.
        if snap.public_id.is_empty() || !snap.public_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let unicast = Selector::Exact(format!("{UNICAST_PREFIX}{}", snap.public_id).into());
        let subs = snap
            .subs
            .into_iter()
            .map(|(sid, label, subjects)| Subscription { sid, label, subjects: subjects.into_boxed_slice() })
            .collect();
        Some(Session {
            id: snap.id,
            public_id: snap.public_id,
            format: Format::parse(&snap.format)?,
            mode: Mode::parse(&snap.mode)?,
            subs,
            listening: snap.listening,
            cursor: snap.cursor,
            next_sid: snap.next_sid,
            unicast,
        })
    }
}
