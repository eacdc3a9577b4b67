//! [`Cache::get_or_compute`]: a miss is computed by one caller across all processes while the
//! others wait for its value.
//!
//! Two levels keep a cold key from being computed many times (a cache stampede):
//! 1. In this process, concurrent callers for one key share one fill (`flight`): one leader,
//!    the rest wait on it.
//! 2. Across processes, the leaders race for a Redlock on the key (the *fill lock*). The
//!    winner re-reads the cache (the value may have landed between its miss and its lock),
//!    computes, writes the value only where the key is still absent, and releases. Losers poll the cache with a growing, jittered delay and
//!    retry the lock each time, so they take over as soon as the lock is released or expires.
//! 3. A read that fails (the key's node does not answer) is not a miss: a value computed
//!    while the node is unreachable is parked with the fill lock, where the others find it.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tracing::{Instrument, field};

use crate::error::Error;
use crate::guard::LockGuard;
use crate::lease::Lease;

use super::flight::{self, Join, Waited};
use super::{Cache, CasOutcome, Read, check_ttl};

/// First delay between two polls of a waiting caller.
const POLL_MIN: Duration = Duration::from_millis(5);
/// Largest delay between two polls: bounds how late a waiter sees a value once it lands.
const POLL_MAX: Duration = Duration::from_millis(100);

/// Why [`Cache::get_or_compute`] returned no value.
///
/// Keeps the computation's own error type, so a caller can match on it.
#[derive(Debug)]
#[non_exhaustive]
pub enum ComputeError<E> {
    /// The computation ran in this caller and failed; its error, unchanged. Nothing was
    /// cached, and other callers waiting for the value compute it themselves.
    Compute(E),
    /// No value could be had: the fill wait ran out ([`Error::FillTimeout`]), or the input was
    /// invalid.
    Cache(Error),
}

impl<E> ComputeError<E> {
    /// Whether the computation itself failed.
    pub fn is_compute(&self) -> bool {
        matches!(self, Self::Compute(_))
    }

    /// Whether the caller gave up waiting for another caller's computation.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Cache(e) if e.is_timeout())
    }

    /// The computation's error, if that is what failed.
    pub fn into_compute(self) -> Option<E> {
        match self {
            Self::Compute(e) => Some(e),
            Self::Cache(_) => None,
        }
    }

    /// The cache's error, if that is what failed.
    pub fn as_cache(&self) -> Option<&Error> {
        match self {
            Self::Cache(e) => Some(e),
            Self::Compute(_) => None,
        }
    }
}

impl<E> From<Error> for ComputeError<E> {
    fn from(e: Error) -> Self {
        Self::Cache(e)
    }
}

impl<E: fmt::Display> fmt::Display for ComputeError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Compute(_) => f.write_str("computing the cache value failed"),
            Self::Cache(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for ComputeError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Compute(e) => Some(e),
            // Transparent: the cache error's Display is this one's.
            Self::Cache(e) => e.source(),
        }
    }
}

impl Cache {
    /// The value of `key`; on a miss, `compute` runs in **one** caller across all processes
    /// sharing the nodes, its value is cached for `ttl` (unless the key was written meanwhile,
    /// see below), and every concurrent caller gets it.
    ///
    /// - In this process, concurrent callers for `key` share one in-flight fill.
    /// - Across processes, a Redlock on the key (the *fill lock*, TTL
    ///   [`CacheBuilder::fill_lock_ttl`](crate::CacheBuilder::fill_lock_ttl)) picks the one
    ///   that computes. It re-checks the cache once it holds the lock, keeps the lock extended
    ///   while `compute` runs, fills the key, then releases.
    /// - The others poll the cache (5 ms, doubling to 100 ms, jittered) and retry the lock,
    ///   for at most [`CacheBuilder::fill_wait`](crate::CacheBuilder::fill_wait).
    ///
    /// `compute` is called at most once, and only by a caller that won the lock (or, if too
    /// many masters are down for any lock, without one: a cache must not fail because of its
    /// nodes; concurrent computations are then possible across processes).
    ///
    /// # A fill never overwrites
    /// A computation can outlast its fill lock (a stalled process, masters that could not
    /// extend it): then another caller takes over and writes a fresher value, or a user's
    /// [`set`](Self::set) lands while it runs. So the fill is written only if `key` is still
    /// absent, checked and written atomically on the key's node (a
    /// [`compare_and_set`](Self::compare_and_set) with `None`):
    /// - a value written meanwhile by [`set`](Self::set), [`set_many`](Self::set_many),
    ///   [`compare_and_set`](Self::compare_and_set) or another caller's fill is kept;
    /// - if the fill lock was found lost while `compute` ran (an extension refused, or its
    ///   validity ran out), nothing is written at all;
    /// - a key deleted or expired while `compute` ran is absent, so it is filled;
    /// - the write is sent once; if its reply is lost, the value may or may not be cached.
    ///
    /// In every case the caller (and the callers of this process waiting on it) get the value
    /// `compute` returned, even when the cache kept another one.
    ///
    /// # When the key's node does not answer
    /// A read that fails is not a miss: the value may be there. The caller that wins the fill
    /// lock and cannot read the node first looks for a value parked with the fill lock, and
    /// computes only if there is none; if the node then does not take the value, it parks it
    /// on the fill lock's masters (`<lock prefix>cache-fill-value:<data key>`, for
    /// `min(ttl, fill_wait)`) before releasing the lock. Waiting callers whose reads fail take
    /// it from there: one computation across processes while the fill lock has its quorum, and
    /// no `FillTimeout` caused by the node. Callers that come after the parked value expired
    /// compute again (one at a time) while the node stays down. The parked value is only read
    /// when the node's read failed, but it is not withdrawn by later writes: if the node comes
    /// back, takes a newer value (or a delete) and stops answering again within the parked
    /// value's lifetime, `get_or_compute` can return the older parked value (at most
    /// `min(ttl, fill_wait)` after it was parked).
    ///
    /// # When the computing process dies
    /// Its fill lock is no longer extended and expires after at most the fill lock TTL; a
    /// waiting caller then wins the lock and computes. With the defaults (lock TTL 5 s, wait
    /// 10 s) waiters survive that. If the computing *caller* is cancelled (its future dropped)
    /// or panics, the lock is released at once in the background and a waiter takes over.
    ///
    /// # Errors
    /// [`ComputeError::Compute`] with `compute`'s error, to the caller that ran it only: other
    /// callers waiting for the value are not failed, they compute it themselves.
    /// [`ComputeError::Cache`] with [`Error::FillTimeout`] when the wait ran out while another
    /// caller held the fill lock, or [`Error::InvalidTtl`] for a bad `ttl`.
    ///
    /// ```no_run
    /// # async fn run(cache: redquorum::Cache) -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// let report = cache
    ///     .get_or_compute("report:2024", Duration::from_secs(300), || async {
    ///         // an expensive query, run once however many callers ask at the same time
    ///         Ok::<_, std::io::Error>(b"...".to_vec())
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn get_or_compute<F, Fut, E>(
        &self,
        key: &str,
        ttl: Duration,
        compute: F,
    ) -> Result<Bytes, ComputeError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<u8>, E>>,
    {
        check_ttl(ttl)?;
        let span = tracing::debug_span!("get_or_compute", key, outcome = field::Empty);
        async {
            if let Some(value) = self.get_quiet(key).await {
                self.inner.counters.hits(1);
                tracing::Span::current().record("outcome", "hit");
                return Ok(value);
            }
            self.inner.counters.misses(1);
            let started = Instant::now();
            let deadline = crate::config::deadline_after(started, self.inner.fill_wait);
            let data_key = self.data_key(key);
            let mut compute = Some(compute);
            // Whether the read above is still the latest look at the cache.
            let mut just_missed = true;
            loop {
                match self.inner.flights.join(&data_key) {
                    Join::Follower(rx) => match flight::wait(rx, deadline).await {
                        Waited::Value(value) => {
                            crate::metrics::cache_stampede_avoided("shared");
                            tracing::Span::current().record("outcome", "shared");
                            return Ok(value);
                        }
                        // The leader failed or was cancelled: try again, maybe as the leader.
                        Waited::Abandoned => just_missed = false,
                        Waited::TimedOut => {
                            return Err(Error::FillTimeout {
                                key: key.to_owned(),
                                waited: started.elapsed(),
                            }
                            .into());
                        }
                    },
                    Join::Leader(flight) => {
                        // A caller leads at most once: leading always returns.
                        let compute = compute.take().expect("compute is taken once");
                        let value = self
                            .fill(key, ttl, compute, just_missed, started, deadline)
                            .await?;
                        flight.complete(value.clone());
                        return Ok(value);
                    }
                }
            }
        }
        .instrument(span)
        .await
    }

    /// The cross-process part, run by this process's leader for the key.
    async fn fill<F, Fut, E>(
        &self,
        key: &str,
        ttl: Duration,
        compute: F,
        just_missed: bool,
        started: Instant,
        deadline: Instant,
    ) -> Result<Bytes, ComputeError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<u8>, E>>,
    {
        let resource = format!("cache-fill:{}", self.data_key(key));
        let mut delay = POLL_MIN;
        let mut read = !just_missed;
        loop {
            if read && let Some(value) = self.look(key).await {
                return Ok(value);
            }
            read = true;
            match self
                .inner
                .redlock
                .try_acquire(&resource, self.inner.fill_lock_ttl)
                .await
            {
                Ok(Some(guard)) => {
                    // Double-check: the holder before us may have written (or parked) and
                    // released between our read and our lock.
                    if let Some(value) = self.look(key).await {
                        let _ = guard.release().await;
                        return Ok(value);
                    }
                    tracing::Span::current().record("outcome", "computed");
                    return self.compute_and_store(key, ttl, compute, Some(guard)).await;
                }
                Ok(None) => {}
                Err(e) if e.is_unavailable() => {
                    tracing::warn!(key, error = %e,
                        "fill lock unavailable; computing without cross-process exclusion");
                    tracing::Span::current().record("outcome", "computed unlocked");
                    return self.compute_and_store(key, ttl, compute, None).await;
                }
                Err(e) => return Err(e.into()),
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::FillTimeout {
                    key: key.to_owned(),
                    waited: started.elapsed(),
                }
                .into());
            }
            tokio::time::sleep(jittered(delay).min(deadline - now)).await;
            delay = (delay * 2).min(POLL_MAX);
        }
    }

    /// The value of `key` if another caller already produced it: on its node, or, when the
    /// node does not answer (a failed read is not a miss), parked with the fill lock by a
    /// caller that computed it while the node was unreachable.
    async fn look(&self, key: &str) -> Option<Bytes> {
        let (value, how) = match self.read(key).await {
            Read::Hit(value) => (value, "filled_elsewhere"),
            Read::Miss => return None,
            Read::Failed => (self.parked(key).await?, "parked"),
        };
        tracing::Span::current().record("outcome", "filled elsewhere");
        crate::metrics::cache_stampede_avoided(how);
        Some(value)
    }

    /// Where a computed value is parked while its node is unreachable: a key on the fill
    /// lock's masters, next to the fill lock (`<lock prefix>cache-fill-value:<data key>`).
    fn parking_key(&self, key: &str) -> String {
        self.inner
            .redlock
            .config()
            .key("cache-fill-value", &self.data_key(key))
    }

    /// Parks `value` on the fill lock's masters for `min(ttl, fill wait)`: the callers waiting
    /// for it (at most the fill wait) find it there while the key's node does not answer.
    /// Written before the fill lock is released, so the next winner finds it. Best effort:
    /// `true` when a quorum of the masters stored it.
    async fn park(&self, key: &str, value: &Bytes, ttl: Duration) -> bool {
        let masters = self.inner.redlock.master_set();
        let life = ttl.min(self.inner.fill_wait).max(Duration::from_millis(1));
        let mut set = redis::cmd("SET");
        set.arg(self.parking_key(key))
            .arg(value.as_ref())
            .arg("PX")
            .arg(crate::scripts::millis(life));
        let set = std::sync::Arc::new(set);
        let round = masters
            .vote(
                masters.quorum(),
                |master| {
                    let (master, set) = (master.clone(), set.clone());
                    async move { master.query(&set).await }
                },
                |answer| matches!(answer, Ok(redis::Value::Okay)),
            )
            .await;
        round.decision == crate::quorum::Decision::Won
    }

    /// A value parked for `key` by [`park`](Self::park), from the first master that has it.
    async fn parked(&self, key: &str) -> Option<Bytes> {
        let masters = self.inner.redlock.master_set();
        let mut get = redis::cmd("GET");
        get.arg(self.parking_key(key));
        let get = std::sync::Arc::new(get);
        let round = masters
            .vote(
                1,
                |master| {
                    let (master, get) = (master.clone(), get.clone());
                    async move { master.query(&get).await }
                },
                |answer| matches!(answer, Ok(redis::Value::BulkString(_))),
            )
            .await;
        round.answers.into_iter().find_map(|answer| match answer {
            Some(Ok(redis::Value::BulkString(bytes))) => Some(Bytes::from(bytes)),
            _ => None,
        })
    }

    /// Runs `compute` (keeping the fill lock extended meanwhile), fills the key unless the lock
    /// was lost (and parks the value if its node did not take it), releases.
    async fn compute_and_store<F, Fut, E>(
        &self,
        key: &str,
        ttl: Duration,
        compute: F,
        guard: Option<LockGuard>,
    ) -> Result<Bytes, ComputeError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<u8>, E>>,
    {
        // Dropping the lease (this future cancelled, or `compute` panicked) stops the
        // extension and releases the lock in the background.
        let lease = guard.map(|g| Lease::start(g, self.inner.fill_lock_ttl).0);
        let computed = compute().await;
        let (guard, lost) = match lease {
            Some(lease) => lease.stop().await,
            None => (None, false),
        };
        let result = match computed {
            Ok(value) => {
                let value = Bytes::from(value);
                if lost {
                    // Whoever took the lock over may have written a fresher value already.
                    tracing::warn!(key, "fill lock lost while computing; value not cached");
                } else if !self.fill_if_absent(key, &value, ttl).await && guard.is_some() {
                    // Not on the node (it did not answer): parked with the fill lock, before
                    // the release, so that the callers waiting for it (and the next winner)
                    // take it instead of computing again.
                    if !self.park(key, &value, ttl).await {
                        tracing::debug!(key, "computed value not parked");
                    }
                }
                Ok(value)
            }
            Err(e) => Err(ComputeError::Compute(e)),
        };
        if let Some(guard) = guard {
            let _ = guard.release().await;
        }
        result
    }

    /// Caches a computed value only where `key` is still absent: the lock may have been lost
    /// unnoticed, and a plain `set` does not take it, so a value found there is newer. `true`
    /// when the node confirmed that it holds a value for the key (this one or a newer one).
    async fn fill_if_absent(&self, key: &str, value: &[u8], ttl: Duration) -> bool {
        match self.compare_and_set(key, None, value, ttl).await {
            Ok(CasOutcome::Conflict { .. }) => {
                tracing::debug!(key, "key written while computing; fill not cached");
                true
            }
            Ok(CasOutcome::Written { .. }) => {
                crate::metrics::cache_filled();
                true
            }
            Ok(_) => {
                tracing::debug!(key, "fill dropped: node unreachable");
                false
            }
            Err(e) => {
                tracing::debug!(key, error = %e, "fill not confirmed");
                false
            }
        }
    }
}

/// `delay` plus up to half of it again, so waiters in many processes do not poll in lockstep.
fn jittered(delay: Duration) -> Duration {
    delay + crate::random::jitter(delay / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_half_again() {
        for _ in 0..100 {
            let d = jittered(POLL_MIN);
            assert!(d >= POLL_MIN && d <= POLL_MIN + POLL_MIN / 2, "{d:?}");
        }
    }

    #[test]
    fn compute_error_keeps_its_type_and_source() {
        let e: ComputeError<std::io::Error> = ComputeError::Compute(std::io::Error::other("boom"));
        assert!(e.is_compute() && !e.is_timeout());
        assert_eq!(e.to_string(), "computing the cache value failed");
        let source = std::error::Error::source(&e).expect("the computation's error");
        assert_eq!(source.to_string(), "boom");
        assert_eq!(e.into_compute().unwrap().to_string(), "boom");

        let e: ComputeError<std::io::Error> = Error::FillTimeout {
            key: "k".into(),
            waited: Duration::from_secs(1),
        }
        .into();
        assert!(e.is_timeout() && !e.is_compute());
        assert!(e.as_cache().is_some());
        assert!(
            e.to_string()
                .starts_with("cache key \"k\" still not filled")
        );
    }

    #[test]
    fn compute_error_is_send_sync_static_for_such_errors() {
        fn check<T: Send + Sync + 'static + std::error::Error>() {}
        check::<ComputeError<std::io::Error>>();
    }
}
