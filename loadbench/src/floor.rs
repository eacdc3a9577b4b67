//! The floor: the fewest commands any Redlock client must send for one lock + unlock, sent the
//! cheapest way, so that "the library adds at most x % on the minimal commands" can be computed.
//!
//! Acquire is a plain `SET key token NX PX ttl` to every master in parallel; release is a
//! compare-and-delete script (`GET` == token then `DEL`), the one the Redis page on Redlock
//! gives. Like redquorum, each step returns as soon as a majority has answered (yes for the
//! acquire); the other masters' answers are collected in the background. No fencing token,
//! no `PUBLISH`, no timeouts, no rollback, no retry: an uncontended key only.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use redis::aio::MultiplexedConnection;
use redis::{Cmd, Value};

/// Compare-and-delete, as on <https://redis.io/docs/latest/develop/use/patterns/distributed-locks/>.
const UNLOCK_LUA: &str = r#"if redis.call("GET", KEYS[1]) == ARGV[1] then
    return redis.call("DEL", KEYS[1])
else
    return 0
end"#;

/// One multiplexed connection per master (the same kind of connection redquorum uses).
pub struct Floor {
    conns: Vec<MultiplexedConnection>,
    unlock_sha: String,
    prefix: &'static str,
}

impl Floor {
    pub async fn connect(urls: &[String]) -> Result<Self> {
        let mut conns = Vec::new();
        for url in urls {
            let mut conn = redis::Client::open(url.as_str())?
                .get_multiplexed_async_connection()
                .await?;
            let _: String = redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(UNLOCK_LUA)
                .query_async(&mut conn)
                .await?;
            conns.push(conn);
        }
        Ok(Self {
            conns,
            unlock_sha: redis::Script::new(UNLOCK_LUA).get_hash().to_owned(),
            prefix: "floor:lock:",
        })
    }

    fn majority(&self) -> usize {
        self.conns.len() / 2 + 1
    }

    /// Sends `cmd` to every master and returns once `needed` answers satisfied `yes`, or
    /// `None` once that can no longer happen. Every command is queued before this returns;
    /// the answers still out are awaited by a background task, so none is cut off unsent.
    async fn fan_out(&self, cmd: Cmd, needed: usize, yes: fn(&Value) -> bool) -> Option<usize> {
        let cmd = Arc::new(cmd);
        let mut calls: FuturesUnordered<_> = self
            .conns
            .iter()
            .map(|c| {
                let (mut c, cmd) = (c.clone(), cmd.clone());
                async move { c.send_packed_command(&cmd).await }
            })
            .collect();
        let (mut granted, mut answered, n) = (0, 0, self.conns.len());
        let mut decided = None;
        while let Some(reply) = calls.next().await {
            answered += 1;
            if matches!(&reply, Ok(v) if yes(v)) {
                granted += 1;
            }
            if granted >= needed {
                decided = Some(granted);
                break;
            }
            if granted + (n - answered) < needed {
                break;
            }
        }
        if !calls.is_empty() {
            tokio::spawn(async move { while calls.next().await.is_some() {} });
        }
        decided
    }

    pub async fn acquire(&self, resource: &str, ttl: Duration) -> Result<(String, String)> {
        let key = format!("{}{resource}", self.prefix);
        let token = uuid::Uuid::new_v4().simple().to_string();
        let mut cmd = redis::cmd("SET");
        cmd.arg(&key)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis() as u64);
        let ok = |v: &Value| {
            matches!(v, Value::Okay) || matches!(v, Value::SimpleString(s) if s == "OK")
        };
        if self.fan_out(cmd, self.majority(), ok).await.is_none() {
            bail!("floor acquire of {key}: no majority (the floor has no retry)");
        }
        Ok((key, token))
    }

    pub async fn release(&self, key: &str, token: &str) -> Result<()> {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.unlock_sha).arg(1).arg(key).arg(token);
        let answered = |v: &Value| !matches!(v, Value::ServerError(_));
        if self.fan_out(cmd, self.majority(), answered).await.is_none() {
            bail!("floor release of {key}: no majority answered");
        }
        Ok(())
    }
}
