//! Optimistic concurrency: [`Cache::get_versioned`] and [`Cache::compare_and_set`], each one
//! Lua script call, atomic on the key's node.
//!
//! A version is drawn from a per-node counter that only increases, so a key never gets the
//! same version twice, not even after it expired or was deleted and was written again: a
//! writer holding an old version always conflicts (no ABA). This holds while the node keeps
//! its data; a node that restarts empty starts counting again.

use std::time::Duration;

use bytes::Bytes;
use redis::{ServerErrorKind, Value};

use crate::error::{Error, Result};
use crate::scripts::CACHE_VERSIONED as VERSIONED;
use crate::scripts::millis;

use super::{Cache, CasOutcome, Unconfirmed, VERSION_COUNTER_KEY, check_ttl, version_key};

impl Cache {
    /// The value of `key` with its version, or `None` when it is absent, expired, or its node is
    /// down. Pass the version to [`compare_and_set`](Self::compare_and_set).
    ///
    /// A value written by [`set`](Self::set) gets a fresh version the first time it is read
    /// here; so does one written by another client, but only if the key had no version then
    /// (see [`compare_and_set`](Self::compare_and_set)).
    ///
    /// # Errors
    /// None today: a failing node makes a miss.
    pub async fn get_versioned(&self, key: &str) -> Result<Option<(u64, Bytes)>> {
        let reply = self.versioned(key, &[b"get".as_slice()], false).await;
        let found = match reply {
            Ok(Value::Array(items)) => match <[Value; 2]>::try_from(items) {
                Ok([version, value]) => parse_version(&version).zip(super::parse_bytes(value)),
                Err(_) => None,
            },
            _ => None,
        };
        self.count_reads(&[found.as_ref().map(|(_, v)| v.clone())]);
        Ok(found)
    }

    /// Writes `value` under `key` for `ttl` only if the key's version is still `expected`:
    /// `Some(v)` for a value read at version `v`, `None` for "only if absent". Atomic on the
    /// key's node, so of two writers with the same `expected` exactly one wins.
    ///
    /// Versions only guard against writers that go through this crate. A plain `SET` from
    /// another client does not touch the version key, so it is **not** seen as a change when
    /// the key already has a version (a [`get_versioned`](Self::get_versioned) or
    /// compare-and-set since this crate last wrote it with [`set`](Self::set)): the foreign
    /// value keeps the old version, and a compare-and-set holding that version overwrites it.
    /// It is seen as a change only when the key had no version: it then gets a fresh one at its
    /// next versioned read or write, and older versions conflict.
    ///
    /// The call is sent once, never again on a new connection: a second copy of a write that
    /// landed would find its own version and report a conflict with itself.
    ///
    /// # Errors
    /// [`Error::InvalidTtl`] for a TTL under 1 ms or over 365 days. [`Error::OutcomeUnknown`]
    /// when the call was sent but the node timed out or the connection broke before the reply:
    /// the value may or may not have been written (read it back before retrying). A node that
    /// was not reached (down, no connection) or answered an error is not an error: the result
    /// is [`CasOutcome::Dropped`] and nothing was written.
    pub async fn compare_and_set(
        &self,
        key: &str,
        expected: Option<u64>,
        value: impl AsRef<[u8]>,
        ttl: Duration,
    ) -> Result<CasOutcome> {
        check_ttl(ttl)?;
        let expected = expected.map(|v| v.to_string()).unwrap_or_default();
        let ttl_ms = millis(ttl);
        let args = [
            b"cas".as_slice(),
            expected.as_bytes(),
            value.as_ref(),
            ttl_ms.as_bytes(),
        ];
        let outcome = match self.versioned(key, &args, true).await {
            Ok(reply) => parse_cas(&reply),
            Err(Unconfirmed::NotApplied) => None,
            Err(Unconfirmed::Unknown(reply)) => {
                self.inner.counters.write_drops(1);
                return Err(Error::OutcomeUnknown {
                    key: key.to_owned(),
                    node: self.node_index(key),
                    reply,
                });
            }
        };
        Ok(outcome.unwrap_or_else(|| {
            self.inner.counters.write_drops(1);
            CasOutcome::Dropped
        }))
    }

    /// Runs the versioned script on `key`'s node: `EVALSHA`, then `EVAL` if the node does not
    /// have the script (restarted, or `SCRIPT FLUSH`; not a second copy: `NOSCRIPT` means it
    /// did not run). A `write` is sent at most once (`exchange_once`).
    async fn versioned(
        &self,
        key: &str,
        args: &[&[u8]],
        write: bool,
    ) -> Result<Value, Unconfirmed> {
        let data_key = self.data_key(key);
        let version_key = version_key(&data_key);
        let node = self.node_index(key);
        let call = |verb: &str, body: &str| {
            let mut pipe = redis::pipe();
            let cmd = pipe
                .cmd(verb)
                .arg(body)
                .arg(3)
                .arg(&data_key)
                .arg(&version_key)
                .arg(VERSION_COUNTER_KEY);
            for arg in args {
                cmd.arg(*arg);
            }
            pipe
        };
        // Loaded on every connection with the lock scripts; EVAL if the node lost it since.
        let script = &*VERSIONED;
        let first = self
            .send(node, &call("EVALSHA", &script.sha1), write)
            .await?;
        let reply = match first.into_iter().next() {
            Some(Value::ServerError(e)) if e.kind() == Some(ServerErrorKind::NoScript) => {
                tracing::debug!(node, "NOSCRIPT, using EVAL");
                let eval = self.send(node, &call("EVAL", script.source), write).await?;
                eval.into_iter().next()
            }
            other => other,
        };
        match reply {
            Some(Value::ServerError(e)) => {
                self.inner.counters.node_error();
                tracing::warn!(node, error = %e, "cache script failed");
                Err(Unconfirmed::NotApplied)
            }
            Some(reply) => Ok(reply),
            None => Err(Unconfirmed::NotApplied),
        }
    }
}

fn parse_version(value: &Value) -> Option<u64> {
    match value {
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok()?.parse().ok(),
        Value::Int(v) => u64::try_from(*v).ok(),
        _ => None,
    }
}

/// `{1, version}` written, `{0, version}` conflict with a present key, `{0}` with an absent one.
fn parse_cas(reply: &Value) -> Option<CasOutcome> {
    let Value::Array(items) = reply else {
        return None;
    };
    match items.as_slice() {
        [Value::Int(1), version] => Some(CasOutcome::Written {
            version: parse_version(version)?,
        }),
        [Value::Int(0), version] => Some(CasOutcome::Conflict {
            current: Some(parse_version(version)?),
        }),
        [Value::Int(0)] => Some(CasOutcome::Conflict { current: None }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn cas_replies() {
        let written = Value::Array(vec![Value::Int(1), bulk("9007199254740993")]);
        assert_eq!(
            parse_cas(&written),
            Some(CasOutcome::Written {
                version: 9_007_199_254_740_993
            })
        );
        let conflict = Value::Array(vec![Value::Int(0), bulk("4")]);
        assert_eq!(
            parse_cas(&conflict),
            Some(CasOutcome::Conflict { current: Some(4) })
        );
        let absent = Value::Array(vec![Value::Int(0)]);
        assert_eq!(
            parse_cas(&absent),
            Some(CasOutcome::Conflict { current: None })
        );
        assert_eq!(parse_cas(&Value::Nil), None);
        assert_eq!(parse_cas(&Value::Array(vec![Value::Int(1)])), None);
    }

    #[test]
    fn script_hash_is_sha1_hex() {
        assert_eq!(VERSIONED.sha1.len(), 40);
        assert!(VERSIONED.source.contains("KEYS[3]"));
    }
}
