//! One Redis connection as the cluster's threads use it: opened with connect and read timeouts
//! (a frozen or half-open Redis shows as a timeout, never as a thread blocked for ever),
//! reopened with exponential backoff and jitter, and the Lua scripts run by SHA with a reload
//! after `NOSCRIPT` (a restarted Redis has forgotten them). Also the scripts themselves and the
//! key names.

use std::time::Duration;

use redis::{Client, Connection, RedisError, RedisResult, Value};

use crate::xorshift::XorShift;

/// The hash with the log's epoch, last seq and the epoch's first seq (`base`).
pub(super) const META: &str = "{halley}:meta";
/// The stream of every message; entry ids are `<seq>-0`.
pub(super) const LOG: &str = "{halley}:log";
/// Prefix of the keys remembering a publish by its idempotency key.
pub(super) const IDEM_PREFIX: &str = "{halley}:idem:";

/// Publish a batch in one script call (one Lua invocation per batch, not per message: the
/// per-call overhead was most of Redis's cost per publish). For each message, in order:
/// a key already remembered (by Redis, or earlier in this batch) with the same fingerprint (a
/// hash of topic, event, content type and payload) is a retry: its stored result again; with
/// another fingerprint it is someone else's publish: `conflict`. Otherwise: read or create the
/// epoch (rotating it if the log went back below what this node has seen), take the next seq,
/// append with that seq as the entry id and an approximate `MAXLEN`, remember the result under
/// the key with its fingerprint for the TTL. The seq counter is written once at the end (the
/// script is atomic, so no one sees it in between, and an append Redis refuses takes no seq).
/// An append Redis refuses (out of memory) answers that message `error ...` and the batch goes
/// on. Keys and arguments grow with the batch, which the writer bounds (`writer::CALL_MAX`,
/// `writer::CALL_BYTES`) so that one call never holds Redis for long.
/// KEYS: meta, log, then one idempotency key per message. ARGV: idem ttl ms, maxlen, time ms,
/// candidate epoch, candidate base, node's epoch, node's highest seq, then per message: topic,
/// event, content type, data, fingerprint.
/// Returns one string per message: "epoch seq time", "conflict" or "error <reason>".
pub(super) const PUBLISH: &str = r#"
local n = #KEYS - 2
if n < 1 then return {} end
local done = redis.call('MGET', unpack(KEYS, 3))
local now = ARGV[3]
local epoch, seq
local wrote = false
local mine = {}
local out = {}
for i = 1, n do
  local key = KEYS[i + 2]
  local a = 7 + (i - 1) * 5
  local fp = ARGV[a + 5]
  local prev = mine[key] or done[i]
  if prev then
    local e, s, t, f = string.match(prev, '^(%S+) (%S+) (%S+) (%S+)$')
    if (not e) or f ~= fp then out[i] = 'conflict' else out[i] = e .. ' ' .. s .. ' ' .. t end
  else
    if not epoch then
      epoch = redis.call('HGET', KEYS[1], 'epoch')
      seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
      if (not epoch) or (epoch == ARGV[6] and seq < tonumber(ARGV[7])) then
        epoch = ARGV[4]
        seq = tonumber(ARGV[5])
        redis.call('HSET', KEYS[1], 'epoch', epoch, 'seq', ARGV[5], 'base', ARGV[5])
      end
    end
    local id = string.format('%d', seq + 1)
    local added = redis.pcall('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], id .. '-0',
      'e', epoch, 't', ARGV[a + 1], 'v', ARGV[a + 2], 'c', ARGV[a + 3], 'd', ARGV[a + 4], 'ts', now)
    if type(added) == 'table' and added.err then
      out[i] = 'error ' .. added.err
    else
      seq = seq + 1
      wrote = true
      local result = epoch .. ' ' .. id .. ' ' .. now
      mine[key] = result .. ' ' .. fp
      redis.pcall('SET', key, mine[key], 'PX', ARGV[1])
      out[i] = result
    end
  end
end
if wrote then redis.call('HSET', KEYS[1], 'seq', string.format('%d', seq)) end
return out
"#;

/// Read the log's epoch, creating it if there is none, and rotate it if it is `ARGV[3]` but
/// its seq is below `ARGV[4]` (the log went back: a replica that missed writes).
/// KEYS: meta. ARGV: candidate epoch, candidate base, node's epoch, node's highest seq.
/// Returns "epoch seq base".
pub(super) const META_SCRIPT: &str = r#"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
if (not epoch) or (epoch == ARGV[3] and seq < tonumber(ARGV[4])) then
  redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'seq', ARGV[2], 'base', ARGV[2])
end
local m = redis.call('HMGET', KEYS[1], 'epoch', 'seq', 'base')
return m[1] .. ' ' .. m[2] .. ' ' .. m[3]
"#;

/// Shortest and longest wait between two connection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// A connection that is reopened on demand, with its scripts' SHAs.
pub(super) struct Link {
    client: Client,
    name: &'static str,
    conn: Option<Connection>,
    read_timeout: Duration,
    connect_timeout: Duration,
    failures: u32,
    jitter: XorShift,
    publish_sha: Option<String>,
    meta_sha: Option<String>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").field("name", &self.name).field("up", &self.conn.is_some()).finish()
    }
}

impl Link {
    pub(super) fn new(client: Client, name: &'static str, read_timeout: Duration) -> Link {
        let seed = crate::hub::system_clock_ms() ^ (name.len() as u64).rotate_left(17);
        Link {
            client,
            name,
            conn: None,
            read_timeout,
            connect_timeout: Duration::from_secs(2),
            failures: 0,
            jitter: XorShift::new(seed),
            publish_sha: None,
            meta_sha: None,
        }
    }

    /// The open connection, opening it if needed (one attempt, bounded by the timeouts).
    pub(super) fn conn(&mut self) -> RedisResult<&mut Connection> {
        if self.conn.is_none() {
            let conn = self.client.get_connection_with_timeout(self.connect_timeout)?;
            conn.set_read_timeout(Some(self.read_timeout))?;
            conn.set_write_timeout(Some(self.read_timeout))?;
            self.conn = Some(conn);
            // A new connection may reach a restarted Redis: the scripts are loaded again.
            self.publish_sha = None;
            self.meta_sha = None;
        }
        self.conn.as_mut().ok_or_else(|| RedisError::from(std::io::Error::other("no connection")))
    }

    /// Whether a connection is open (it may still turn out dead on its next command).
    pub(super) fn is_open(&self) -> bool {
        self.conn.is_some()
    }

    /// After an error: drop the connection unless the error was Redis answering (the
    /// connection is fine then), and count the failure for the backoff.
    pub(super) fn failed(&mut self, err: &RedisError) {
        if err.is_io_error() || err.is_timeout() || err.is_connection_dropped() || err.is_unrecoverable_error() {
            self.conn = None;
        }
        self.failures = self.failures.saturating_add(1);
        log::debug!("redis {}: {err}", self.name);
    }

    /// The call worked: the backoff starts over.
    pub(super) fn succeeded(&mut self) {
        self.failures = 0;
    }

    /// How long to wait before the next attempt: doubling from `BACKOFF_MIN` up to
    /// `BACKOFF_MAX`, each wait drawn from its upper half so that nodes do not retry in step.
    pub(super) fn backoff(&mut self) -> Duration {
        let exp = self.failures.min(6);
        let ceiling = (BACKOFF_MIN * 2u32.pow(exp)).min(BACKOFF_MAX);
        let half = ceiling / 2;
        let spread = u64::try_from(half.as_millis()).unwrap_or(1).max(1);
        half + Duration::from_millis(self.jitter.next_u64() % spread)
    }

    /// The SHA of the publish script, loading it if this connection has not.
    pub(super) fn publish_sha(&mut self) -> RedisResult<String> {
        if let Some(sha) = &self.publish_sha {
            return Ok(sha.clone());
        }
        let sha: String = redis::cmd("SCRIPT").arg("LOAD").arg(PUBLISH).query(self.conn()?)?;
        self.publish_sha = Some(sha.clone());
        Ok(sha)
    }

    /// Forget the loaded scripts (after `NOSCRIPT`).
    pub(super) fn scripts_lost(&mut self) {
        self.publish_sha = None;
        self.meta_sha = None;
    }

    /// Runs the meta script: the log's (epoch, seq, base), created if missing, rotated if it
    /// went back below `seen` under `known`.
    pub(super) fn meta(&mut self, candidate: (&str, u64), known: &str, seen: u64) -> RedisResult<(String, u64, u64)> {
        for _ in 0..2 {
            let sha = match &self.meta_sha {
                Some(sha) => sha.clone(),
                None => {
                    let sha: String = redis::cmd("SCRIPT").arg("LOAD").arg(META_SCRIPT).query(self.conn()?)?;
                    self.meta_sha = Some(sha.clone());
                    sha
                }
            };
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(sha).arg(1).arg(META).arg(candidate.0).arg(candidate.1).arg(known).arg(seen);
            match cmd.query::<String>(self.conn()?) {
                Ok(text) => return parse_meta(&text),
                Err(err) if is_noscript(&err) => self.scripts_lost(),
                Err(err) => return Err(err),
            }
        }
        Err(RedisError::from(std::io::Error::other("meta script not loadable")))
    }
}

/// Redis forgot the script (restarted, or `SCRIPT FLUSH`).
pub(super) fn is_noscript(err: &RedisError) -> bool {
    err.code() == Some("NOSCRIPT")
}

fn parse_meta(text: &str) -> RedisResult<(String, u64, u64)> {
    let bad = || RedisError::from(std::io::Error::other(format!("bad meta reply {text:?}")));
    let mut parts = text.split(' ');
    let epoch = parts.next().ok_or_else(bad)?.to_owned();
    let seq = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let base = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    Ok((epoch, seq, base))
}

/// A bulk or simple string reply as text.
pub(super) fn text(value: &Value) -> Option<&str> {
    match value {
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}
