//! A grant as a record and back: in cluster mode a session's grant (its token's subject,
//! expiry and rights) travels with the session's record in Redis, so that the node adopting
//! the session gives its client exactly the rights it had (docs/CLUSTER.md "Sessions").
//! Redis is inside the deployment's trust boundary, like the nodes themselves.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Grant, TokenGrant};
use crate::model::Selector;

/// A grant, serializable.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum GrantRecord {
    Open { loopback: bool },
    Anonymous,
    Token { sub: Option<Box<str>>, expires_ms: u64, publish: Vec<Box<str>>, subscribe: Vec<Box<str>> },
}

impl Grant {
    /// The grant as a record.
    pub fn record(&self) -> GrantRecord {
        match self {
            Grant::Open { loopback } => GrantRecord::Open { loopback: *loopback },
            Grant::Anonymous => GrantRecord::Anonymous,
            Grant::Token(token) => GrantRecord::Token {
                sub: token.sub.clone(),
                expires_ms: token.expires_ms,
                publish: token.publish.iter().map(|s| s.as_str().into()).collect(),
                subscribe: token.subscribe.iter().map(|s| s.as_str().into()).collect(),
            },
        }
    }

    /// The grant a record describes; `None` if a selector no longer parses.
    pub fn from_record(record: GrantRecord) -> Option<Grant> {
        Some(match record {
            GrantRecord::Open { loopback } => Grant::Open { loopback },
            GrantRecord::Anonymous => Grant::Anonymous,
            GrantRecord::Token { sub, expires_ms, publish, subscribe } => {
                let parse =
                    |list: Vec<Box<str>>| list.iter().map(|s| Selector::parse(s).ok()).collect::<Option<Vec<_>>>();
                Grant::Token(Arc::new(TokenGrant {
                    sub,
                    expires_ms,
                    publish: parse(publish)?,
                    subscribe: parse(subscribe)?,
                }))
            }
        })
    }
}
