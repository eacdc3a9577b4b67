//! [`LockGuard`]: a held lock's validity, extend, release and drop behaviour (the automatic
//! extension is in `lease.rs`).

use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use tokio::time::Instant;
use tracing::{Instrument, field};

use crate::error::{Error, MasterReply, Replies, Result};
use crate::held::HeldBy;
use crate::lock::Redlock;
use crate::quorum::{Decision, drift, sent_ttl, valid_until, votes};

/// A lock held on a quorum of masters.
///
/// The lock is safe to rely on only while [`is_valid`](Self::is_valid) is true: after that the
/// keys may have expired and someone else may hold the lock. Pass the
/// [`fencing_token`](Self::fencing_token) to the protected resource so that it can reject writes
/// from a holder that was paused past its validity.
///
/// # Drop
/// Dropping a guard without calling [`release`](Self::release) spawns a best-effort release on
/// the current tokio runtime and returns at once (it never blocks). Outside a runtime nothing
/// is sent and the keys expire after their TTL. Prefer `release().await`, which reports whether
/// a quorum released.
pub struct LockGuard {
    redlock: Redlock,
    resource: String,
    held: HeldBy,
    token: String,
    valid_until: Instant,
    fencing_token: Option<u64>,
    /// The extension cap it was asked with ([`LockOptions::max_lease`](crate::LockOptions::max_lease)).
    max_lease: Option<Duration>,
    released: bool,
}

impl std::fmt::Debug for LockGuard {
    // The owner token is left out: anyone holding it can release or extend the lock.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("kind", &self.held.kind)
            .field("resource", &self.resource)
            .field("remaining", &self.remaining())
            .field("fencing_token", &self.fencing_token)
            .finish_non_exhaustive()
    }
}

impl LockGuard {
    pub(crate) fn new(
        redlock: Redlock,
        resource: &str,
        held: HeldBy,
        token: String,
        valid_until: Instant,
        fencing_token: Option<u64>,
    ) -> Self {
        Self {
            redlock,
            resource: resource.to_owned(),
            held,
            token,
            valid_until,
            fencing_token,
            max_lease: None,
            released: false,
        }
    }

    /// Sets the extension cap its watchdogs keep to (the acquire's options).
    pub(crate) fn capped(mut self, max_lease: Option<Duration>) -> Self {
        self.max_lease = max_lease;
        self
    }

    /// The resource this lock is for.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// Validity left: the TTL minus the time the acquire (or last extend) round took, minus the
    /// clock-drift allowance, minus the time since. Zero once expired.
    pub fn remaining(&self) -> Duration {
        self.valid_until.saturating_duration_since(Instant::now())
    }

    /// The instant (on tokio's monotonic clock) the lock stops being valid.
    pub fn valid_until(&self) -> Instant {
        self.valid_until
    }

    /// The owner token, for primitives that follow up a won round (the election's term).
    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    /// The extension cap its watchdogs keep to ([`LockOptions::max_lease`](crate::LockOptions::max_lease)).
    pub(crate) fn lease_cap(&self) -> Option<Duration> {
        self.max_lease
    }

    /// Whether the validity has not run out yet.
    pub fn is_valid(&self) -> bool {
        Instant::now() < self.valid_until
    }

    /// The owner token (the simulator's checker reads it; not a public API: anyone holding it
    /// can release or extend the lock).
    #[cfg(feature = "sim")]
    #[doc(hidden)]
    pub fn owner_token(&self) -> &str {
        &self.token
    }

    /// What a hand-off needs (`handoff.rs`): the kind of hold and the owner token.
    pub(crate) fn kind_and_token(&self) -> (&'static str, &str) {
        (self.held.kind, &self.token)
    }

    /// Forgets the hold without releasing it: its new owner is a hand-off handle, or nobody
    /// (a resume that failed must not delete keys another resume may still extend).
    pub(crate) fn disarm(&mut self) {
        self.released = true;
    }

    /// The fencing token of this acquisition, if fencing is on: strictly larger than the token
    /// of every acquisition in the same key namespace that completed before this one's round
    /// started (acquisitions whose rounds overlap are not ordered; see the crate docs). Send it
    /// with every write to the protected resource, which must reject a token lower than one it
    /// has seen.
    pub fn fencing_token(&self) -> Option<u64> {
        self.fencing_token
    }

    /// Extends the lock to `ttl` from now, if this owner still holds it on a quorum.
    ///
    /// Only keys that still carry this owner's token are extended; a key that expired is never
    /// re-created (someone else may hold the lock), and a failed extend never deletes anything,
    /// so the guard stays valid until its old validity runs out.
    ///
    /// # Errors
    /// [`Error::InvalidTtl`] for a bad TTL; [`Error::NotHeld`] when so many masters answered that
    /// they no longer have this owner's key that no quorum can (refusals alone); [`Error::Unavailable`] when too many masters failed to answer;
    /// [`Error::Timeout`] when the round took so long that no validity is left.
    pub async fn extend(&mut self, ttl: Duration) -> Result<()> {
        self.extend_waiting(ttl, None).await
    }

    /// [`extend`](Self::extend) that waits for each master's answer until `until` (at least one
    /// per-master timeout): the watchdog's renewal, for which an answer that comes late but
    /// before the validity deadline still counts (lease.rs). Safe: a master's yes means the key
    /// still held this owner's token and now lives `ttl` from when the master ran the script,
    /// which is no earlier than the round's start, from which the validity is counted.
    pub(crate) async fn extend_within(&mut self, ttl: Duration, until: Instant) -> Result<()> {
        self.extend_waiting(ttl, Some(until)).await
    }

    /// The per-master timeout of this guard's client.
    pub(crate) fn master_timeout(&self) -> Duration {
        self.redlock.config().master_timeout
    }

    async fn extend_waiting(&mut self, ttl: Duration, until: Option<Instant>) -> Result<()> {
        let config = self.redlock.config();
        config.check_ttl(ttl)?;
        let inner = &self.redlock.inner;
        let span = tracing::debug_span!("extend", resource = %self.resource, votes = field::Empty,
            elapsed_us = field::Empty);
        let call = Arc::new(self.held.extend_call(&self.token, ttl));
        let t0 = Instant::now();
        let wait = until.map(|until| {
            until
                .saturating_duration_since(t0)
                .max(config.master_timeout)
        });
        let round = inner
            .masters
            .vote(
                inner.masters.quorum(),
                |master| {
                    let master = master.clone();
                    let call = call.clone();
                    let quarantined = self.redlock.is_quarantined(&master);
                    async move {
                        if quarantined {
                            return Err(MasterReply::Quarantined);
                        }
                        let answer = match wait {
                            Some(wait) => master.run_within(&call, wait).await,
                            None => master.run(&call).await,
                        };
                        // A sharded hold's extend answers with the topology's seal generation.
                        crate::master::topology_checked(&master, answer)
                    }
                },
                |answer| matches!(answer, Ok(Value::Int(1))),
            )
            .instrument(span.clone())
            .await;
        let replies = replies_of(&round.answers);
        span.record("votes", replies.granted());
        span.record("elapsed_us", t0.elapsed().as_micros() as u64);
        if round.decision == Decision::Won {
            #[cfg(feature = "sim")]
            crate::sim::stall("extend.quorum", &self.token).await;
            // From t0, with the TTL the masters were sent (whole milliseconds).
            let drift = drift(sent_ttl(ttl), config.drift_factor);
            return match valid_until(t0, sent_ttl(ttl), drift, Instant::now()) {
                Some(until) => {
                    self.valid_until = until;
                    #[cfg(feature = "sim")]
                    crate::sim::stall("extend.validated", &self.token).await;
                    Ok(())
                }
                None => {
                    let late = Error::Timeout {
                        resource: self.resource.clone(),
                        attempts: 1,
                        waited: t0.elapsed(),
                        replies,
                    };
                    crate::metrics::extend_failed(&late);
                    Err(late)
                }
            };
        }
        let failure = self.quorum_failure(replies);
        crate::metrics::extend_failed(&failure);
        Err(failure)
    }

    /// Releases the lock on every master (compare-and-delete: only this owner's keys).
    ///
    /// Returns once the outcome is known for a quorum; the calls to the other masters finish in
    /// the background. `Ok(true)`: a quorum deleted this owner's key. `Ok(false)`: so many masters
    /// answered that they no longer held it that no quorum did (it had expired, so the lock was
    /// not held until now).
    ///
    /// # Errors
    /// [`Error::Unavailable`] when too many masters failed to answer for the outcome to be known
    /// (also when some refused but those that failed may still have held the key); the keys
    /// then expire after their TTL.
    ///
    /// # Cancellation
    /// If this future is dropped before the round is decided, the guard's drop releases the
    /// lock in the background instead.
    pub async fn release(mut self) -> Result<bool> {
        let inner = &self.redlock.inner;
        let span = tracing::debug_span!("release", resource = %self.resource, votes = field::Empty,
            elapsed_us = field::Empty);
        let t0 = Instant::now();
        // A basic lock's release also PUBLISHes (with a random id, so that a waiter woken by
        // one master ignores the other masters' copies): waiters retry at once (notify.rs).
        let config = self.redlock.config();
        let release_id = crate::random::u64() | 1;
        let channel = crate::notify::channel(&config.key_prefix, &self.resource);
        let marker = crate::notify::waiter_marker(&config.key_prefix, &self.resource);
        let call = Arc::new(self.held.release_call_announced(
            &self.token,
            (&channel, &marker),
            release_id,
        ));
        let released = votes(inner.masters.len(), inner.masters.quorum(), |answer| {
            matches!(answer, Ok(Value::Int(1)))
        });
        let round = inner
            .masters
            .ask_then(
                |master| master.run_owned(&call),
                released,
                // Once our deletes are queued, a waiting task of this client may try at once: its
                // SETs go down the same connections behind them (notify.rs, "local wake-ups").
                || {
                    if let Some(w) = &inner.wakeups {
                        w.released_locally(&self.resource, release_id);
                    }
                },
            )
            .instrument(span.clone())
            .await;
        // Decided: every master's call is on its way or finishing in the background.
        self.released = true;
        let replies = replies_of(&round.answers);
        span.record("votes", replies.granted());
        span.record("elapsed_us", t0.elapsed().as_micros() as u64);
        let result = match round.decision {
            Decision::Won => Ok(true),
            _ => match self.quorum_failure(replies) {
                Error::NotHeld { .. } => Ok(false),
                other => Err(other),
            },
        };
        crate::metrics::released(&result);
        result
    }

    /// Rejects a TTL that this guard's client would refuse for an acquire or an extend.
    pub(crate) fn check_ttl(&self, ttl: Duration) -> Result<()> {
        self.redlock.config().check_ttl(ttl)
    }

    /// Why a round of this guard failed. "Not held" only when refusals alone rule out a quorum:
    /// masters that failed or were not waited for may still hold the key, so with them in the
    /// count the lock may well be held, and the failure is transient (`Unavailable`).
    fn quorum_failure(&self, replies: Replies) -> Error {
        let n = self.redlock.masters();
        if replies.refused() > n - self.redlock.quorum() {
            Error::NotHeld {
                resource: self.resource.clone(),
                replies,
            }
        } else {
            Error::unavailable(n, replies)
        }
    }
}

fn replies_of(answers: &[Option<std::result::Result<Value, MasterReply>>]) -> Replies {
    Replies::from_answers(answers, |v| matches!(v, Value::Int(1)))
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let guard = LockGuard {
            redlock: self.redlock.clone(),
            resource: std::mem::take(&mut self.resource),
            held: self.held.clone(),
            token: std::mem::take(&mut self.token),
            valid_until: self.valid_until,
            fencing_token: self.fencing_token,
            max_lease: self.max_lease,
            // `release` does not check this flag. Were it false, a runtime that is shutting
            // down (which drops spawned futures unpolled, inside `spawn`) would drop this
            // guard right here, spawn again, and recurse until the stack overflows.
            released: true,
        };
        self.released = true;
        handle.spawn(async move {
            let _ = guard.release().await;
        });
    }
}
