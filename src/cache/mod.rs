//! A distributed cache over the masters: keys placed on one node each by the ketama
//! [`HashRing`], batched per node, degraded (never failed) by nodes that are down.
//!
//! # Layout
//! - this file: the [`Cache`] handle, placement, `get` / `set` / `delete` and the batched
//!   `get_many` / `set_many`.
//! - `builder`: [`CacheBuilder`], the `DEFAULT_*` constants, validation, connecting.
//! - `outcome`: [`WriteOutcome`], [`WriteReport`], [`CasOutcome`], [`CacheStats`].
//! - `versioned`: `get_versioned` / `compare_and_set` and their Lua script.
//! - `flight`: the per-process single-flight of `get_or_compute`.
//! - `compute`: `get_or_compute`, its cross-process fill lock, [`ComputeError`].
//! - `json`: serde-typed helpers (feature `serde`).
//!
//! # What is stored where
//! A key `k` lives on the node [`Cache::node_for`] names, as a plain Redis string at
//! `<prefix>k` with a `PX` expiry, so any client reading the same servers sees the bytes.
//! Versions for compare-and-set live beside it at `redquorum:version:<prefix>k`, drawn from a
//! per-node counter at `redquorum:version-counter`; keys under `redquorum:` are reserved.
//! The fill lock of `get_or_compute` is the lock client's resource `cache-fill:<prefix>k`.

mod builder;
mod compute;
mod flight;
#[cfg(feature = "serde")]
mod json;
mod outcome;
mod versioned;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use redis::Value;

use crate::error::{Error, MasterReply, Result};
use crate::lock::Redlock;
use crate::master::Master;
use crate::ring::{HashRing, RingNode};

pub use builder::CacheBuilder;
pub use compute::ComputeError;
pub use outcome::{CacheStats, CasOutcome, WriteOutcome, WriteReport};

use outcome::Counters;

/// Longest TTL a cache entry may have.
const MAX_CACHE_TTL: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// Where the version of `<data key>` lives: `VERSION_KEY_PREFIX + <data key>`.
const VERSION_KEY_PREFIX: &str = "redquorum:version:";
/// The per-node counter versions are drawn from.
const VERSION_COUNTER_KEY: &str = "redquorum:version-counter";

/// A distributed cache over a set of Redis masters: each key lives on the one node a
/// libmemcached-compatible ketama ring assigns it.
///
/// Cheap to clone: clones share the connections, the counters and the in-flight computations.
/// Clone it, don't wrap it in an `Arc`. Created by [`Cache::builder`] (its own nodes) or
/// [`Cache::from_redlock`] (a lock client's masters and connections).
///
/// # Failures are misses, not errors
/// A node that is down, paused or slow costs at most the per-node timeout
/// ([`CacheBuilder::node_timeout`]); its keys read as misses and writes to it are dropped and
/// counted ([`CacheStats`]), but no call fails because of it. The other nodes are unaffected.
/// Keys are not moved to other nodes while one is down (the ring is fixed), so a node that
/// comes back with its data serves its keys again, possibly stale if they were written or
/// deleted while it was away: keep TTLs short enough for that.
///
/// # Cancellation
/// Dropping a call's future part-way is safe: writes already sent may or may not land, and
/// nothing is left locked (see [`get_or_compute`](Cache::get_or_compute) for its lock).
///
/// ```no_run
/// # async fn run() -> redquorum::Result<()> {
/// use std::time::Duration;
/// let cache = redquorum::Cache::builder()
///     .nodes(["redis://10.0.0.1:6379", "redis://10.0.0.2:6379", "redis://10.0.0.3:6379"])
///     .build()
///     .await?;
/// cache.set("user:42", b"{\"name\":\"Ada\"}", Duration::from_secs(60)).await?;
/// let hit = cache.get("user:42").await?;
/// let many = cache.get_many(["user:42", "user:43"]).await?;
/// assert_eq!(many.len(), 2);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    redlock: Redlock,
    /// Index `i` is the master behind ring node `i`.
    nodes: Vec<Arc<Master>>,
    ring: HashRing,
    node_timeout: Duration,
    key_prefix: String,
    hash_with_prefix: bool,
    fill_lock_ttl: Duration,
    fill_wait: Duration,
    counters: Counters,
    flights: flight::Flights,
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addrs: Vec<&str> = self.inner.nodes.iter().map(|m| m.addr.as_str()).collect();
        f.debug_struct("Cache")
            .field("nodes", &addrs)
            .field("key_prefix", &self.inner.key_prefix)
            .field("node_timeout", &self.inner.node_timeout)
            .finish_non_exhaustive()
    }
}

impl Cache {
    /// Starts configuring a cache with its own nodes. See [`CacheBuilder`] for every setting
    /// and its default.
    pub fn builder() -> CacheBuilder {
        CacheBuilder::default()
    }

    /// Starts configuring a cache over `redlock`'s masters, sharing its connections and using
    /// its locks for [`get_or_compute`](Self::get_or_compute). Same as
    /// `Cache::builder().redlock(redlock.clone())`.
    ///
    /// # Only on masters that do not evict
    /// Sharing is only safe when the masters never evict keys (`maxmemory-policy noeviction`,
    /// Redis' default). Under a `volatile-*` or `allkeys-*` policy, cache entries filling the
    /// memory can evict a lock key or the fencing counter: a lock is then granted twice, or a
    /// token handed out again, and nothing detects it. [`build`](CacheBuilder::build) asks
    /// every master for its `CONFIG GET maxmemory-policy` and logs one warning (`tracing`)
    /// naming the masters that evict or could not be asked; it does not fail. Give the cache
    /// its own nodes ([`Cache::builder`]) if the lock masters must evict.
    ///
    /// ```no_run
    /// # async fn run(redlock: redquorum::Redlock) -> redquorum::Result<()> {
    /// let cache = redquorum::Cache::from_redlock(&redlock).build().await?;
    /// # Ok(()) }
    /// ```
    pub fn from_redlock(redlock: &Redlock) -> CacheBuilder {
        CacheBuilder::default().redlock(redlock.clone())
    }

    /// The ring: nodes in the order given, index `i` being the `i`-th URL or master.
    pub fn ring(&self) -> &HashRing {
        &self.inner.ring
    }

    /// The node `key` lives on.
    pub fn node_for(&self, key: &str) -> &RingNode {
        &self.inner.ring.nodes()[self.node_index(key)]
    }

    /// The lock client the cache uses for [`get_or_compute`](Self::get_or_compute): the one
    /// given to [`CacheBuilder::redlock`], or one over the cache's own nodes.
    pub fn redlock(&self) -> &Redlock {
        &self.inner.redlock
    }

    /// The counters of this handle and its clones since it was built.
    pub fn stats(&self) -> CacheStats {
        self.inner.counters.snapshot()
    }

    /// The value of `key`, or `None` when it is absent, expired, or its node is down.
    ///
    /// # Errors
    /// None today: a failing node makes a miss. The `Result` leaves room for input checks.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let value = self.get_quiet(key).await;
        self.count_reads(std::slice::from_ref(&value));
        Ok(value)
    }

    /// Stores `value` under `key` for `ttl`, replacing any value (and its version: a
    /// compare-and-set holding an older version will conflict).
    ///
    /// Sent once: never again on a new connection after a broken one, since a second copy could
    /// land after a newer write and undo it.
    ///
    /// # Errors
    /// [`Error::InvalidTtl`] for a TTL under 1 ms or over 365 days. A failing node is not an
    /// error: the result is [`WriteOutcome::Dropped`] (after a timeout or a broken connection
    /// the value may have landed all the same).
    pub async fn set(
        &self,
        key: &str,
        value: impl AsRef<[u8]>,
        ttl: Duration,
    ) -> Result<WriteOutcome> {
        check_ttl(ttl)?;
        Ok(self.set_quiet(key, value.as_ref(), ttl).await)
    }

    /// Deletes `key` (and its version). [`WriteOutcome::Written`] means the node confirmed,
    /// whether or not the key existed. Sent once, like [`set`](Self::set).
    ///
    /// # Errors
    /// None today: a failing node makes [`WriteOutcome::Dropped`].
    pub async fn delete(&self, key: &str) -> Result<WriteOutcome> {
        let data_key = self.data_key(key);
        let mut pipe = redis::pipe();
        pipe.cmd("DEL").arg(&data_key).arg(version_key(&data_key));
        let outcome = match self.exchange_once(self.node_index(key), &pipe).await {
            Ok(values) if matches!(values.first(), Some(Value::Int(_))) => WriteOutcome::Written,
            _ => WriteOutcome::Dropped,
        };
        if outcome.is_dropped() {
            self.inner.counters.write_drops(1);
        }
        Ok(outcome)
    }

    /// The values of `keys`, in input order (`None` for a miss). One `MGET` per node, all
    /// nodes queried concurrently; a failing node makes misses of its keys only.
    ///
    /// # Errors
    /// None today: failing nodes make misses.
    pub async fn get_many<I, K>(&self, keys: I) -> Result<Vec<Option<Bytes>>>
    where
        I: IntoIterator<Item = K>,
        K: AsRef<str>,
    {
        let keys: Vec<K> = keys.into_iter().collect();
        let mut out: Vec<Option<Bytes>> = vec![None; keys.len()];
        let groups = self.group_by_node(keys.iter().map(AsRef::as_ref));
        let calls = groups.iter().map(|(node, positions)| {
            let mut mget = redis::cmd("MGET");
            for &p in positions {
                mget.arg(self.data_key(keys[p].as_ref()));
            }
            let mut pipe = redis::pipe();
            pipe.add_command(mget);
            self.exchange(*node, pipe)
        });
        for ((_, positions), values) in groups.iter().zip(join_all(calls).await) {
            let Some(Value::Array(values)) = values.and_then(|mut v| v.pop()) else {
                continue;
            };
            for (&p, value) in positions.iter().zip(values) {
                out[p] = parse_bytes(value);
            }
        }
        self.count_reads(&out);
        Ok(out)
    }

    /// Stores every `(key, value)` for `ttl`. One pipeline per node (in a `MULTI`/`EXEC`, so a
    /// node applies its share all or nothing), all nodes written concurrently; a failing node
    /// drops its items only. The report says what happened to each item, in input order. Each
    /// pipeline is sent once, like [`set`](Self::set).
    ///
    /// # Errors
    /// [`Error::InvalidTtl`] for a TTL under 1 ms or over 365 days.
    pub async fn set_many<I, K, V>(&self, items: I, ttl: Duration) -> Result<WriteReport>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<[u8]>,
    {
        check_ttl(ttl)?;
        let items: Vec<(K, V)> = items.into_iter().collect();
        let mut outcomes = vec![WriteOutcome::Dropped; items.len()];
        let groups = self.group_by_node(items.iter().map(|(k, _)| k.as_ref()));
        let calls = groups.iter().map(|(node, positions)| {
            let mut pipe = redis::pipe();
            pipe.atomic();
            for &p in positions {
                let (key, value) = &items[p];
                push_set(&mut pipe, &self.data_key(key.as_ref()), value.as_ref(), ttl);
            }
            async move { self.exchange_once(*node, &pipe).await }
        });
        for ((_, positions), values) in groups.iter().zip(join_all(calls).await) {
            let Ok(values) = values else { continue };
            for (i, &p) in positions.iter().enumerate() {
                if matches!(values.get(2 * i), Some(Value::Okay)) {
                    outcomes[p] = WriteOutcome::Written;
                }
            }
        }
        let report = WriteReport { outcomes };
        self.inner.counters.write_drops(report.dropped() as u64);
        Ok(report)
    }

    /// `get` without counting a hit or a miss.
    async fn get_quiet(&self, key: &str) -> Option<Bytes> {
        self.read(key).await.value()
    }

    /// One read of `key` from its node, telling a miss from a node that did not answer (the
    /// polls of `get_or_compute`, which must not take a failed read for a miss).
    async fn read(&self, key: &str) -> Read {
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(self.data_key(key));
        match self.exchange(self.node_index(key), pipe).await {
            None => Read::Failed,
            Some(mut values) => match values.pop().and_then(parse_bytes) {
                Some(value) => Read::Hit(value),
                None => Read::Miss,
            },
        }
    }

    /// `set` after the TTL was checked; counts a drop.
    async fn set_quiet(&self, key: &str, value: &[u8], ttl: Duration) -> WriteOutcome {
        let mut pipe = redis::pipe();
        pipe.atomic();
        push_set(&mut pipe, &self.data_key(key), value, ttl);
        let outcome = match self.exchange_once(self.node_index(key), &pipe).await {
            Ok(values) if matches!(values.first(), Some(Value::Okay)) => WriteOutcome::Written,
            _ => WriteOutcome::Dropped,
        };
        if outcome.is_dropped() {
            self.inner.counters.write_drops(1);
        }
        outcome
    }

    fn count_reads(&self, values: &[Option<Bytes>]) {
        let hits = values.iter().filter(|v| v.is_some()).count() as u64;
        self.inner.counters.hits(hits);
        self.inner.counters.misses(values.len() as u64 - hits);
    }

    /// One exchange with node `node`, bounded by the per-node timeout, for reads: it may be
    /// sent again on a new connection after a broken one. `None` (logged and counted) when the
    /// node is down, timed out, or failed the whole pipeline.
    async fn exchange(
        &self,
        node: usize,
        pipe: impl std::borrow::Borrow<redis::Pipeline>,
    ) -> Option<Vec<Value>> {
        self.send(node, pipe.borrow(), false).await.ok()
    }

    /// [`exchange`](Self::exchange) for writes: sent at most once, never again on a new
    /// connection, since the first copy may have run (see [`Unconfirmed`]).
    async fn exchange_once(
        &self,
        node: usize,
        pipe: &redis::Pipeline,
    ) -> Result<Vec<Value>, Unconfirmed> {
        self.send(node, pipe, true).await
    }

    async fn send(
        &self,
        node: usize,
        pipe: &redis::Pipeline,
        once: bool,
    ) -> Result<Vec<Value>, Unconfirmed> {
        let master = &self.inner.nodes[node];
        let timeout = self.inner.node_timeout;
        let result = if once {
            master.pipeline_once(pipe, timeout).await
        } else {
            master.pipeline(pipe, timeout).await.map_err(|r| (r, false))
        };
        result.map_err(|(reply, sent)| {
            self.inner.counters.node_error();
            tracing::debug!(node, addr = %master.addr, %reply, "cache node failed");
            // Sent and unanswered (no reply, or the connection broke) may have run; an error
            // reply or no connection at all means it did not.
            let unanswered = matches!(reply, MasterReply::TimedOut | MasterReply::Unavailable(_));
            if sent && unanswered {
                Unconfirmed::Unknown(reply)
            } else {
                Unconfirmed::NotApplied
            }
        })
    }

    fn data_key(&self, key: &str) -> String {
        format!("{}{}", self.inner.key_prefix, key)
    }

    fn node_index(&self, key: &str) -> usize {
        let ring = &self.inner.ring;
        let index = if self.inner.hash_with_prefix {
            ring.node_index_for(self.data_key(key))
        } else {
            ring.node_index_for(key)
        };
        // Every node has weight 1 and there is at least one.
        index.expect("the cache ring always has live nodes")
    }

    /// Positions of `keys` grouped by node, nodes in first-seen order.
    fn group_by_node<'k>(&self, keys: impl Iterator<Item = &'k str>) -> Vec<(usize, Vec<usize>)> {
        let mut by_node: Vec<Option<usize>> = vec![None; self.inner.nodes.len()];
        let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
        for (position, key) in keys.enumerate() {
            let node = self.node_index(key);
            let group = *by_node[node].get_or_insert_with(|| {
                groups.push((node, Vec::new()));
                groups.len() - 1
            });
            groups[group].1.push(position);
        }
        groups
    }
}

/// What one read of a key found.
enum Read {
    Hit(Bytes),
    /// The node answered: the key is absent (or holds something that is not a value).
    Miss,
    /// The node did not answer (down, paused, slow, or the exchange failed): the key may well
    /// be there.
    Failed,
}

impl Read {
    fn value(self) -> Option<Bytes> {
        match self {
            Read::Hit(value) => Some(value),
            Read::Miss | Read::Failed => None,
        }
    }
}

/// Why a write got no confirmation from its node.
enum Unconfirmed {
    /// It was not applied: the node had no connection to send it on, or answered an error.
    NotApplied,
    /// It was sent, but the node timed out or the connection broke before the reply: it may
    /// have been applied or not.
    Unknown(MasterReply),
}

/// A plain set: the value with its expiry, and the end of any version the old value had.
/// Two commands per key, in the caller's `MULTI`, so a reader never sees the new value with
/// the old version.
fn push_set(pipe: &mut redis::Pipeline, data_key: &str, value: &[u8], ttl: Duration) {
    pipe.cmd("SET")
        .arg(data_key)
        .arg(value)
        .arg("PX")
        .arg(crate::scripts::millis(ttl));
    pipe.cmd("DEL").arg(version_key(data_key));
}

fn version_key(data_key: &str) -> String {
    format!("{VERSION_KEY_PREFIX}{data_key}")
}

/// A `GET` reply as a value. Anything but a string is a miss (an error reply such as
/// `WRONGTYPE` means another client put something else under the key).
fn parse_bytes(value: Value) -> Option<Bytes> {
    match value {
        Value::BulkString(bytes) => Some(Bytes::from(bytes)),
        Value::SimpleString(s) => Some(Bytes::from(s)),
        Value::Nil => None,
        other => {
            tracing::debug!(reply = ?other, "unexpected cache read reply, taken as a miss");
            None
        }
    }
}

/// Rejects TTLs Redis cannot apply as a `PX` expiry, or that are almost surely a bug.
fn check_ttl(ttl: Duration) -> Result<()> {
    let invalid = |reason: &str| {
        Err(Error::InvalidTtl {
            ttl,
            reason: reason.to_owned(),
        })
    };
    if ttl < Duration::from_millis(1) {
        return invalid("cache ttl must be at least 1 ms (redis expires in milliseconds)");
    }
    if ttl > MAX_CACHE_TTL {
        return invalid("cache ttl must be at most 365 days");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_and_their_futures_are_send() {
        fn send_sync<T: Send + Sync + Clone + 'static>(_: &T) {}
        fn send<T: Send>(_: T) {}
        let _ = |cache: Cache| {
            send_sync(&cache);
            send(async move {
                let _ = cache.get_many(["a"]).await;
                let _ = cache.set_many([("a", "b")], Duration::from_secs(1)).await;
                let _ = cache
                    .compare_and_set("a", None, "b", Duration::from_secs(1))
                    .await;
                cache
                    .get_or_compute("a", Duration::from_secs(1), || async {
                        Ok::<_, std::io::Error>(Vec::new())
                    })
                    .await
            });
        };
    }

    #[test]
    fn ttl_bounds() {
        assert!(check_ttl(Duration::ZERO).unwrap_err().is_invalid_input());
        assert!(check_ttl(Duration::from_micros(999)).is_err());
        assert!(check_ttl(Duration::from_millis(1)).is_ok());
        assert!(check_ttl(MAX_CACHE_TTL).is_ok());
        assert!(check_ttl(MAX_CACHE_TTL + Duration::from_millis(1)).is_err());
    }

    #[test]
    fn reads_parse_strings_and_miss_on_anything_else() {
        assert_eq!(
            parse_bytes(Value::BulkString(b"v".to_vec())),
            Some(Bytes::from_static(b"v"))
        );
        assert_eq!(parse_bytes(Value::Nil), None);
        assert_eq!(parse_bytes(Value::Int(3)), None);
    }

    #[test]
    fn plain_sets_drop_the_version() {
        let mut pipe = redis::pipe();
        push_set(&mut pipe, "p:k", b"v", Duration::from_secs(2));
        let packed = String::from_utf8_lossy(&pipe.get_packed_pipeline()).into_owned();
        assert!(packed.contains("SET\r\n$3\r\np:k\r\n$1\r\nv\r\n$2\r\nPX\r\n$4\r\n2000"));
        assert!(packed.contains("DEL\r\n$21\r\nredquorum:version:p:k"));
    }
}
