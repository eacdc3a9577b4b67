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
        let token = format!("{:032x}", rand::random::<u128>());
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

#[cfg(test)]
mod tests {
    //! The floor must be a real lock (else W1 vs floor compares against something that does
    //! less than a lock), and must return at a majority like redquorum (else it waits for the
    //! slowest master and looks slower than the minimum).

    use std::time::{Duration, Instant};

    use super::Floor;

    const TTL: Duration = Duration::from_secs(10);

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_held_key_is_refused_until_its_owner_releases_it() {
        let cluster = testcluster::Cluster::start(5).unwrap();
        let floor = Floor::connect(&cluster.urls()).await.unwrap();
        let (key, token) = floor.acquire("k", TTL).await.unwrap();
        assert!(
            floor.acquire("k", TTL).await.is_err(),
            "a held key was granted twice"
        );
        // Compare-and-delete: a wrong token deletes nothing.
        floor.release(&key, "not-the-owner").await.unwrap();
        assert!(
            floor.acquire("k", TTL).await.is_err(),
            "a stranger's release freed the key"
        );
        floor.release(&key, &token).await.unwrap();
        floor
            .acquire("k", TTL)
            .await
            .expect("released key not granted");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn returns_at_a_majority_with_a_master_paused() {
        let cluster = testcluster::Cluster::start(5).unwrap();
        let floor = Floor::connect(&cluster.urls()).await.unwrap();
        cluster.pause(4).unwrap();
        let t0 = Instant::now();
        let result = tokio::time::timeout(Duration::from_secs(10), async {
            for i in 0..20 {
                let (key, token) = floor.acquire(&format!("p{i}"), TTL).await?;
                floor.release(&key, &token).await?;
            }
            anyhow::Ok(())
        })
        .await;
        let took = t0.elapsed();
        cluster.resume(4).unwrap();
        result
            .expect("the floor waited for the paused master")
            .unwrap();
        // 20 pairs on loopback; a wait for the paused master would be the 10 s timeout.
        assert!(took < Duration::from_secs(5), "20 pairs took {took:?}");
    }
}
