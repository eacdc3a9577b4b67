//! The things measured: redquorum, rslock, the floor and the raw-command ceiling, behind one
//! enum so that every workload drives them through the same loop.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::future::join_all;
use redis::aio::MultiplexedConnection;
use redis::{Cmd, Value};

use crate::floor::Floor;
use crate::{Args, BATCHED, CEILING, FLOOR, NO_FENCE, NO_WAKE, Named, OURS, RSLOCK};

/// A lock script as redquorum sends it, byte for byte (the ceiling sends the same commands):
/// `acquire` or `release`, assembled from its pieces by the library.
fn script(name: &str) -> &'static str {
    redquorum::script_sources()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, source)| source)
        .expect("redquorum has the script")
}

/// The ceiling's fencing counter (redquorum's key layout, under another prefix).
const RAW_FENCE_KEY: &str = "raw:fence";

/// One library (or the ceiling) under test.
#[derive(Clone)]
pub enum Subject {
    Ours(redquorum::Redlock),
    #[cfg(feature = "rslock")]
    Rslock(rslock::LockManager),
    Raw(Arc<Raw>),
    Floor(Arc<Floor>),
}

/// A lock held by one of the subjects.
pub enum Held {
    Ours(redquorum::LockGuard),
    #[cfg(feature = "rslock")]
    Rslock(rslock::Lock),
    Raw {
        key: String,
        token: String,
    },
    Floor {
        key: String,
        token: String,
    },
}

impl Subject {
    /// Acquires `key`, retrying under contention until `wait` runs out. `None` when it did not
    /// get the lock in time.
    pub async fn acquire(&self, key: &str, ttl: Duration, wait: Duration) -> Result<Option<Held>> {
        match self {
            Subject::Ours(r) => match r
                .acquire(key, redquorum::LockOptions::new(ttl).wait(wait))
                .await
            {
                Ok(g) => Ok(Some(Held::Ours(g))),
                Err(e) if e.is_contended() => Ok(None),
                Err(e) => Err(e.into()),
            },
            #[cfg(feature = "rslock")]
            Subject::Rslock(m) => match m.lock(key.as_bytes(), ttl).await {
                Ok(l) => Ok(Some(Held::Rslock(l))),
                // rslock gives up after its retry count; the caller loops until its deadline.
                Err(rslock::LockError::Unavailable) => Ok(None),
                Err(e) => bail!("rslock: {e}"),
            },
            Subject::Raw(raw) => raw.acquire(key, ttl).await.map(Some),
            Subject::Floor(f) => {
                let (key, token) = f.acquire(key, ttl).await?;
                Ok(Some(Held::Floor { key, token }))
            }
        }
    }

    pub async fn release(&self, held: Held) -> Result<()> {
        match (self, held) {
            (Subject::Ours(_), Held::Ours(g)) => {
                g.release().await?;
            }
            #[cfg(feature = "rslock")]
            (Subject::Rslock(m), Held::Rslock(l)) => m.unlock(&l).await,
            (Subject::Raw(raw), Held::Raw { key, token }) => raw.release(&key, &token).await?,
            (Subject::Floor(f), Held::Floor { key, token }) => f.release(&key, &token).await?,
            _ => bail!("held lock of another subject"),
        }
        Ok(())
    }

    /// One lock + unlock on a key nobody else uses.
    pub async fn pair(&self, key: &str, ttl: Duration) -> Result<()> {
        match self.acquire(key, ttl, Duration::ZERO).await? {
            Some(held) => self.release(held).await,
            None => bail!("uncontended key {key} was not granted"),
        }
    }
}

/// The ceiling: redquorum's acquire and release scripts sent to all masters in parallel over one
/// multiplexed connection each, with no timeouts, no vote counting, no fencing write-back and no
/// rollback. It waits for all N answers (there is no quorum to decide at).
pub struct Raw {
    conns: Vec<MultiplexedConnection>,
    acquire_sha: String,
    release_sha: String,
    fence_key: String,
    prefix: String,
}

impl Raw {
    pub async fn connect(urls: &[String]) -> Result<Self> {
        let mut conns = Vec::new();
        for url in urls {
            let client = redis::Client::open(url.as_str())?;
            let mut conn = client.get_multiplexed_async_connection().await?;
            for src in [script("acquire"), script("release")] {
                let _: String = redis::cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(src)
                    .query_async(&mut conn)
                    .await?;
            }
            // The acquire script refuses (-2, "unsealed") while the fencing hash has no seal
            // generation; redquorum seals its own on connect, the ceiling must seal its own too.
            let _: Value = redis::cmd("HSETNX")
                .arg(RAW_FENCE_KEY)
                .arg("gen")
                .arg("raw")
                .query_async(&mut conn)
                .await?;
            conns.push(conn);
        }
        Ok(Self {
            conns,
            acquire_sha: redis::Script::new(script("acquire")).get_hash().to_owned(),
            release_sha: redis::Script::new(script("release")).get_hash().to_owned(),
            // Same key layout as redquorum's defaults, under another prefix.
            fence_key: RAW_FENCE_KEY.into(),
            prefix: "raw:lock:".into(),
        })
    }

    async fn all(&self, cmd: &Cmd) -> Result<Vec<Value>> {
        let replies = join_all(self.conns.iter().map(|c| {
            let mut c = c.clone();
            async move { c.send_packed_command(cmd).await }
        }))
        .await;
        replies
            .into_iter()
            .map(|r| r.and_then(Value::extract_error).map_err(Into::into))
            .collect()
    }

    async fn acquire(&self, resource: &str, ttl: Duration) -> Result<Held> {
        let key = format!("{}{resource}", self.prefix);
        let token = format!("{:032x}", rand::random::<u128>());
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.acquire_sha)
            .arg(2)
            .arg(&key)
            .arg(&self.fence_key)
            .arg(&token)
            .arg(ttl.as_millis() as u64)
            .arg("1");
        let granted = self
            .all(&cmd)
            .await?
            .iter()
            // Granted: {counter, generation} with fencing on, 0 with it off.
            .filter(|v| matches!(v, Value::Array(_)) || matches!(v, Value::Int(n) if *n >= 0))
            .count();
        if granted < self.conns.len() {
            bail!("raw acquire of {key} granted on {granted} masters only");
        }
        Ok(Held::Raw { key, token })
    }

    async fn release(&self, key: &str, token: &str) -> Result<()> {
        // Announced like redquorum's releases (PUBLISH on a channel nobody listens to here).
        let channel = format!("raw:released:{}", &key[self.prefix.len()..]);
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.release_sha)
            .arg(1)
            .arg(key)
            .arg(token)
            .arg(channel)
            .arg(rand::random::<u64>() | 1);
        self.all(&cmd).await.context("raw release")?;
        Ok(())
    }
}

/// Connects the subject called `label` to the masters at `urls` (the worker processes of W3b
/// build theirs with this too, so that both sides measure the same thing).
pub async fn build(label: &str, urls: &[String], args: &Args) -> Result<Named> {
    let subject = match label {
        OURS | NO_WAKE | BATCHED | NO_FENCE => Subject::Ours(
            redquorum::Redlock::builder()
                .masters(urls.iter().cloned())
                // Without wake-ups, waiters poll with the jittered retry delay only.
                .wake_ups(label != NO_WAKE)
                .batching(label == BATCHED)
                .fencing(label != NO_FENCE)
                .build()
                .await?,
        ),
        #[cfg(feature = "rslock")]
        RSLOCK => {
            let mut m = rslock::LockManager::new(urls.to_vec());
            m.set_retry(3, Duration::from_millis(args.rslock_retry_ms));
            Subject::Rslock(m)
        }
        FLOOR => Subject::Floor(Arc::new(Floor::connect(urls).await?)),
        CEILING => Subject::Raw(Arc::new(Raw::connect(urls).await?)),
        other => bail!("unknown or not built subject {other:?}"),
    };
    let label = [OURS, NO_WAKE, BATCHED, NO_FENCE, RSLOCK, FLOOR, CEILING]
        .into_iter()
        .find(|l| *l == label)
        .expect("matched above");
    let _ = args;
    Ok(Named { label, subject })
}
