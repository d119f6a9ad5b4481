//! Who may publish and read: the token policy every surface applies.
//!
//! Tokens are JWTs (`jwt.rs`): HS256 with the shared `auth.secret`, or RS256/ES256 with the
//! `auth.public_key`. Their `publish` and `subscribe` claims list topic patterns; a publish is
//! allowed when a pattern names its topic, a subscription when the patterns cover it whole
//! (`Selector::covers`), so a token for `/chat/*` cannot subscribe to `/chat/**` or `/**`. The
//! `auth.public_subscribe` and `auth.public_publish` patterns are granted to everyone.
//!
//! A client's rights are a [`Grant`], resolved once where it authenticates: per request for
//! HTTP, at the upgrade or the first `auth` command for WebSocket and raw TCP, at the handshake
//! (Bayeux) or join (Pushlet) for a session, which keeps it. The checks take the policy of the
//! moment ([`Auth::current`]), so a reload ([`Auth::reload`], wired to SIGHUP elsewhere)
//! applies to grants already held.
//!
//! Refusals ([`Denied`]) are 401 (no token, a bad or expired one; with `WWW-Authenticate:
//! Bearer`) or 403 (the token does not cover the topic, or a publish from a non-loopback peer
//! with auth off), with one-line reasons that never echo the token.
//!
//! With no key configured (the default), auth is off: anyone reads, and clients publish only
//! from loopback peers, whatever the surface.

mod jwt;
mod record;
pub use record::GrantRecord;
pub mod token;

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

pub use self::jwt::{mint_hs256, Claims, Verifier, MAX_TOKEN_PATTERNS};
use crate::config;
use crate::http::Reject;
use crate::model::Selector;

/// The auth state shared by every worker, replaceable at run time.
#[derive(Debug)]
pub struct Auth {
    policy: RwLock<Arc<Policy>>,
}

impl Auth {
    /// The policy of `config`; an error (unreadable key or secret file) names the option.
    pub fn new(config: &config::Auth) -> Result<Auth, String> {
        Ok(Auth { policy: RwLock::new(Arc::new(Policy::new(config)?)) })
    }

    /// The policy in force now.
    pub fn current(&self) -> Arc<Policy> {
        match self.policy.read() {
            Ok(policy) => Arc::clone(&policy),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Replaces the policy with `config`'s (keys re-read from their files) and says what
    /// changed, one line per setting, never a secret. On error the old policy stays.
    pub fn reload(&self, config: &config::Auth) -> Result<Vec<String>, String> {
        let new = Policy::new(config)?;
        let old = self.current();
        let changes = old.changes_to(&new);
        match self.policy.write() {
            Ok(mut policy) => *policy = Arc::new(new),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(new),
        }
        Ok(changes)
    }
}

/// One version of the policy: the keys, the public patterns, the cookie name.
#[derive(Debug)]
pub struct Policy {
    verifier: Option<Verifier>,
    /// What it was built from (the secret as loaded), to tell what a reload changed.
    source: config::Auth,
    public_subscribe: Vec<Selector>,
    public_publish: Vec<Selector>,
}

impl Policy {
    pub fn new(config: &config::Auth) -> Result<Policy, String> {
        let secret = config.load_secret().map_err(|e| e.to_string())?;
        let verifier = if config.is_on() {
            Some(Verifier::new(secret.as_ref(), config.public_key.as_deref()).map_err(|e| format!("auth: {e}"))?)
        } else {
            None
        };
        let parse = |list: &[String]| list.iter().filter_map(|p| Selector::parse(p).ok()).collect::<Vec<_>>();
        Ok(Policy {
            verifier,
            public_subscribe: parse(&config.public_subscribe),
            public_publish: parse(&config.public_publish),
            source: config::Auth { secret, ..config.clone() },
        })
    }

    /// Whether tokens are checked.
    pub fn is_on(&self) -> bool {
        self.verifier.is_some()
    }

    /// The HS256 secret in force (as loaded), for the demo's token endpoint
    /// (`server/web.rs`, only with `--demo`); never logged.
    pub fn secret(&self) -> Option<&config::Secret> {
        self.source.secret.as_ref()
    }

    /// The cookie a token may come in.
    pub fn cookie(&self) -> &str {
        &self.source.cookie
    }

    /// The rights of a client presenting `token` (or none) from `peer`: with auth off, every
    /// read and (from loopback) every publish; with auth on, the token's patterns or, without
    /// one, the public ones. A bad or expired token is refused even where the public patterns
    /// would do: the client should learn its token is stale.
    pub fn resolve(&self, token: Option<&str>, peer: Option<IpAddr>) -> Result<Grant, Denied> {
        let Some(verifier) = &self.verifier else {
            return Ok(Grant::Open { loopback: peer.is_some_and(is_loopback) });
        };
        let Some(token) = token else { return Ok(Grant::Anonymous) };
        Ok(Grant::Token(Arc::new(verifier.verify(token, now_ms() / 1000)?)))
    }

    /// Whether `grant` covers every one of `selectors` for reading.
    pub fn may_subscribe(&self, grant: &Grant, selectors: &[Selector]) -> Result<(), Denied> {
        for selector in selectors {
            self.may_subscribe_one(grant, selector)?;
        }
        Ok(())
    }

    /// Whether `grant` covers `selector` for reading.
    pub fn may_subscribe_one(&self, grant: &Grant, selector: &Selector) -> Result<(), Denied> {
        if !self.is_on() {
            return Ok(());
        }
        let covered = |list: &[Selector]| list.iter().any(|p| p.covers(selector));
        if covered(&self.public_subscribe) {
            return Ok(());
        }
        match grant {
            Grant::Token(token) if token.is_expired() => Err(Denied::Expired),
            Grant::Token(token) if covered(&token.subscribe) => Ok(()),
            Grant::Token(_) => Err(Denied::NotCovered { publish: false, topic: selector.as_str().into() }),
            Grant::Open { .. } | Grant::Anonymous => {
                Err(Denied::NoToken { publish: false, topic: selector.as_str().into() })
            }
        }
    }

    /// Whether `grant` may publish to `topic`.
    pub fn may_publish(&self, grant: &Grant, topic: &str) -> Result<(), Denied> {
        if !self.is_on() {
            // Only a grant resolved with auth off, for a loopback peer: a grant made while auth
            // was on (a SIGHUP turned it off since) says nothing about the peer's address.
            return match grant {
                Grant::Open { loopback: true } => Ok(()),
                _ => Err(Denied::LoopbackOnly),
            };
        }
        let named = |list: &[Selector]| list.iter().any(|p| p.names(topic));
        if named(&self.public_publish) {
            return Ok(());
        }
        match grant {
            Grant::Token(token) if token.is_expired() => Err(Denied::Expired),
            Grant::Token(token) if named(&token.publish) => Ok(()),
            Grant::Token(_) => Err(Denied::NotCovered { publish: true, topic: topic.into() }),
            Grant::Open { .. } | Grant::Anonymous => Err(Denied::NoToken { publish: true, topic: topic.into() }),
        }
    }

    /// One line per setting that differs in `new`.
    pub(crate) fn changes_to(&self, new: &Policy) -> Vec<String> {
        let (a, b) = (&self.source, &new.source);
        let mut changes = Vec::new();
        if a.secret != b.secret {
            changes.push("auth.secret changed".to_owned());
        }
        if a.secret_file != b.secret_file {
            changes.push(format!("auth.secret_file: {:?} -> {:?}", a.secret_file, b.secret_file));
        }
        if a.public_key != b.public_key {
            changes.push(format!("auth.public_key: {:?} -> {:?}", a.public_key, b.public_key));
        } else if a.public_key.is_some() {
            changes.push("auth.public_key re-read".to_owned());
        }
        if a.public_subscribe != b.public_subscribe {
            changes.push(format!("auth.public_subscribe: {:?} -> {:?}", a.public_subscribe, b.public_subscribe));
        }
        if a.public_publish != b.public_publish {
            changes.push(format!("auth.public_publish: {:?} -> {:?}", a.public_publish, b.public_publish));
        }
        if a.cookie != b.cookie {
            changes.push(format!("auth.cookie: {:?} -> {:?}", a.cookie, b.cookie));
        }
        if self.is_on() != new.is_on() {
            changes.push(format!("auth is now {}", if new.is_on() { "on" } else { "off" }));
        }
        changes
    }
}

/// What a client may do, as resolved where it authenticated.
#[derive(Debug, Clone)]
pub enum Grant {
    /// Auth was off: anyone reads; publishing from loopback peers only.
    Open { loopback: bool },
    /// Auth on, no token: the public patterns.
    Anonymous,
    /// A verified token.
    Token(Arc<TokenGrant>),
}

impl Grant {
    /// When the token expires (unix ms); a connection or session holding it ends then.
    pub fn expires_ms(&self) -> Option<u64> {
        match self {
            Grant::Token(token) => Some(token.expires_ms),
            _ => None,
        }
    }

    /// Whether the grant is a token whose `exp` has passed (by the wall clock): a connection
    /// or session holding it ends, a session record holding it is not adopted.
    pub fn is_expired(&self) -> bool {
        match self {
            Grant::Token(token) => token.is_expired(),
            _ => false,
        }
    }

    /// The token's subject, if any.
    pub fn sub(&self) -> Option<&str> {
        match self {
            Grant::Token(token) => token.sub.as_deref(),
            _ => None,
        }
    }
}

/// A verified token's rights.
#[derive(Debug)]
pub struct TokenGrant {
    pub sub: Option<Box<str>>,
    /// `exp`, in unix ms.
    pub expires_ms: u64,
    publish: Vec<Selector>,
    subscribe: Vec<Selector>,
}

impl TokenGrant {
    fn is_expired(&self) -> bool {
        self.expires_ms <= now_ms()
    }
}

/// Why a client may not do what it asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// Auth is on and no token came, and the public patterns do not cover the request (401).
    NoToken { publish: bool, topic: Box<str> },
    /// The token is malformed, badly signed, uses another algorithm or bad claims (401).
    BadToken(&'static str),
    /// The token's `exp` has passed (401).
    Expired,
    /// A valid token that does not cover the topic (403).
    NotCovered { publish: bool, topic: Box<str> },
    /// Auth is off and the publisher is not on a loopback address (403).
    LoopbackOnly,
}

impl Denied {
    /// 401 or 403.
    pub fn status(&self) -> u16 {
        match self {
            Denied::NoToken { .. } | Denied::BadToken(_) | Denied::Expired => 401,
            Denied::NotCovered { .. } | Denied::LoopbackOnly => 403,
        }
    }

    /// One line for the client; names the topic (the client's own input), never the token.
    pub fn reason(&self) -> Cow<'static, str> {
        let verb = |publish: bool| if publish { "publish to" } else { "subscribe to" };
        match self {
            Denied::NoToken { publish, topic } => format!("a token is needed to {} {topic}", verb(*publish)).into(),
            Denied::BadToken(why) => Cow::Borrowed(why),
            Denied::Expired => Cow::Borrowed("token expired"),
            Denied::NotCovered { publish, topic } => {
                format!("the token does not allow to {} {topic}", verb(*publish)).into()
            }
            Denied::LoopbackOnly => Cow::Borrowed(
                "publishing is accepted only from loopback clients while no auth is configured (see docs/AUTH.md)",
            ),
        }
    }

    /// The `WWW-Authenticate` challenge of a 401 (RFC 6750 §3).
    fn challenge(&self) -> Option<String> {
        match self {
            Denied::NoToken { .. } => Some("Bearer realm=\"halley\"".to_owned()),
            Denied::BadToken(_) | Denied::Expired => Some(format!(
                "Bearer realm=\"halley\", error=\"invalid_token\", error_description=\"{}\"",
                self.reason()
            )),
            _ => None,
        }
    }
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason())
    }
}

impl From<Denied> for Reject {
    fn from(denied: Denied) -> Reject {
        let reject = Reject::new(denied.status(), denied.reason());
        match denied.challenge() {
            Some(challenge) => reject.with_header("WWW-Authenticate", challenge),
            None => reject,
        }
    }
}

/// Whether a peer address is loopback (127.0.0.0/8, ::1, or an IPv4-mapped 127.x).
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

/// The wall clock in unix ms (token expiry is wall-clock time): the hub's clock, the one
/// message times are stamped with.
pub fn now_ms() -> u64 {
    crate::hub::system_clock_ms()
}

#[cfg(test)]
mod tests;
