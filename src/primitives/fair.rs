//! Fair lock: waiters are served first come, first served, by ticket.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::Value;

use crate::config::check_resource;
use crate::defaults::DEFAULT_WAITER_TIMEOUT;
#[cfg(doc)]
use crate::error::Error;
use crate::error::{Replies, Result};
use crate::guard::LockGuard;
use crate::held::{Attempt, HeldBy, new_token};
use crate::lease::LockContext;
use crate::lock::{Redlock, Wake};
use crate::options::LockOptions;
use crate::primitives::queue::{LeaveOnDrop, leave_now, leave_on_drop};
use crate::quorum::Decision;
use crate::scripts::millis;
use crate::scripts::{EXTEND, FAIR_ACQUIRE, FAIR_RELEASE, FAIR_TICKET, RELEASE, ScriptCall};

/// A fair lock on one resource. Created by [`Redlock::fair_lock`]; cheap to clone.
///
/// Mutual exclusion is the basic lock's (a key set with `SET NX` on a quorum). Fairness is
/// layered on top, on every master: a queue of waiters ordered by ticket, and a master grants
/// the lock only to the waiter at the head of its queue. An acquire takes a ticket first (one
/// round: the largest ticket queued on each of a quorum of masters, plus one), then polls; each
/// attempt re-joins the queue at that ticket, so the queues agree on the order everywhere
/// (ties broken by waiter id) and a master that missed the waiter learns it.
///
/// - **First come, first served** among waiters whose arrivals do not overlap: a waiter that
///   takes its ticket after another waiter's first attempt reached a quorum gets a larger
///   ticket (the two quorums share a master) and is served after it.
/// - **No starvation**: later waiters only ever queue behind; a waiter ahead either gets the
///   lock, gives up (it leaves the queue), or vanishes (dropped after the waiter timeout).
/// - A vanished waiter (crashed, partitioned) holds the queue up for one
///   [waiter timeout](FairLock::waiter_timeout) at most; a waiter that cannot poll within
///   it (paused longer) loses its place and re-joins at its ticket on its next attempt.
/// - Not fair against the basic lock: [`Redlock::acquire`] on the same name uses other keys.
#[derive(Clone, Debug)]
pub struct FairLock {
    redlock: Redlock,
    resource: String,
    waiter_timeout: Duration,
}

impl Redlock {
    /// A fair lock handle for `resource` (waiter timeout [`DEFAULT_WAITER_TIMEOUT`]).
    pub fn fair_lock(&self, resource: impl Into<String>) -> FairLock {
        FairLock {
            redlock: self.clone(),
            resource: resource.into(),
            waiter_timeout: DEFAULT_WAITER_TIMEOUT,
        }
    }
}

impl FairLock {
    /// How long a waiter keeps its place after its last attempt. Default
    /// [`DEFAULT_WAITER_TIMEOUT`]. Must be at least twice the retry delay plus jitter plus the
    /// per-master timeout (checked at acquire).
    #[must_use]
    pub fn waiter_timeout(mut self, timeout: Duration) -> Self {
        self.waiter_timeout = timeout;
        self
    }

    /// The resource.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// Queues for the lock and waits for this waiter's turn, for at most the acquire wait
    /// ([`LockOptions::wait`], default the client's). Honours the TTL, the wait and the cap,
    /// not a lock-delay.
    ///
    /// Round trips: one for the ticket, then one per attempt (polling every retry delay plus
    /// jitter, like [`Redlock::acquire`]); release is one more.
    ///
    /// # Errors
    /// As [`Redlock::acquire`]; [`Error::Unavailable`] also when no quorum answered the
    /// ticket round; [`Error::InvalidArgument`] for a too short waiter timeout or a lock-delay.
    ///
    /// # Cancellation
    /// Dropping the future part-way rolls back a round in flight and leaves the queue on every
    /// master in the background. Giving up (the wait ran out) leaves the queue too.
    pub async fn acquire(&self, options: impl Into<LockOptions>) -> Result<LockGuard> {
        let options = options.into();
        self.check(&options, "FairLock::acquire", true)?;
        let ttl = options.ttl();
        let started = tokio::time::Instant::now();
        let waiter = new_token();
        let mut leave = self.queued(&waiter);
        let ticket = self.ticket().await?;
        let wait = options
            .wait_or(self.redlock.config().acquire_wait)
            .saturating_sub(started.elapsed());
        let result = self
            .redlock
            .acquire_loop(&self.resource, &options, wait, Wake::Poll, || {
                self.attempt(ttl, &waiter, ticket)
            })
            .await;
        match result {
            Ok(guard) => {
                leave.disarm();
                Ok(guard)
            }
            Err(e) => {
                leave_now(leave).await;
                Err(e)
            }
        }
    }

    /// Takes a ticket and tries once: `Ok(None)` when another waiter is ahead or the lock is
    /// held (the waiter then leaves the queue). Two round trips.
    ///
    /// # Errors
    /// As [`acquire`](Self::acquire), without the contended case; [`Error::InvalidArgument`]
    /// for a wait.
    pub async fn try_acquire(&self, options: impl Into<LockOptions>) -> Result<Option<LockGuard>> {
        let options = options.into();
        self.check(&options, "FairLock::try_acquire", false)?;
        let ttl = options.ttl();
        let waiter = new_token();
        let mut leave = self.queued(&waiter);
        let ticket = self.ticket().await?;
        let result = self
            .redlock
            .try_once(&self.resource, &options, || {
                self.attempt(ttl, &waiter, ticket)
            })
            .await;
        if let Ok(Some(_)) = result {
            leave.disarm();
        } else {
            leave_now(leave).await;
        }
        result
    }

    /// [`Redlock::with_lock`] for a fair lock: wait for the turn, extend while `work` runs,
    /// release (which hands the lock to the next waiter).
    ///
    /// # Errors
    /// The errors of [`acquire`](Self::acquire), and [`Error::LockLost`].
    pub async fn with_lock<T, F, Fut>(&self, options: impl Into<LockOptions>, work: F) -> Result<T>
    where
        F: FnOnce(LockContext) -> Fut,
        Fut: Future<Output = T>,
    {
        let options = options.into();
        let guard = self.acquire(&options).await?;
        guard.with_watchdog(options.ttl(), work).await
    }

    fn check(&self, options: &LockOptions, call: &'static str, waits: bool) -> Result<()> {
        check_resource(&self.resource)?;
        self.redlock.config().refuse_interop("fair lock")?;
        let config = self.redlock.config();
        config.check_ttl(options.ttl())?;
        options.check(call, waits, false)?;
        config.check_waiter_timeout(self.waiter_timeout)
    }

    fn keys(&self) -> [String; 3] {
        let config = self.redlock.config();
        [
            config.key("fair", &self.resource),
            config.key("fair-queue", &self.resource),
            config.key("fair-waiters", &self.resource),
        ]
    }

    fn queued(&self, waiter: &str) -> LeaveOnDrop {
        let [_, queue, waiters] = self.keys();
        leave_on_drop(
            self.redlock.clone(),
            vec![queue, waiters],
            waiter.to_owned(),
        )
    }

    /// The ticket round: the largest ticket queued on a quorum of masters, plus one.
    async fn ticket(&self) -> Result<u64> {
        let redlock = &self.redlock;
        let [_, queue, _] = self.keys();
        let call = Arc::new(ScriptCall::new(&FAIR_TICKET, vec![queue], vec![]));
        let round = redlock
            .master_set()
            .vote(
                redlock.master_set().quorum(),
                |master| master.run_owned(&call),
                |answer| matches!(answer, Ok(Value::Int(_))),
            )
            .await;
        if round.decision == Decision::Won {
            let ticket = round
                .answers
                .iter()
                .filter_map(|a| match a {
                    Some(Ok(Value::Int(t))) => Some(*t as u64),
                    _ => None,
                })
                .max()
                .unwrap_or(1);
            return Ok(ticket);
        }
        let replies = Replies::from_answers(&round.answers, |_| true);
        Err(redlock.master_set().unavailable(replies))
    }

    fn attempt(&self, ttl: Duration, waiter: &str, ticket: u64) -> Attempt {
        let config = self.redlock.config();
        let [lock, queue, waiters] = self.keys();
        let held = HeldBy::new("fair", vec![lock, queue, waiters], &EXTEND, &FAIR_RELEASE)
            // A failed round gives the lock key back but keeps the waiter's place.
            .rollback(&RELEASE)
            .args(vec![waiter.to_owned()]);
        let mut keys = held.keys.clone();
        keys.push(config.fence_key());
        Attempt::new(ttl, held, |token| {
            ScriptCall::new(
                &FAIR_ACQUIRE,
                keys,
                vec![
                    token.to_owned(),
                    millis(ttl),
                    config.fencing_arg(),
                    waiter.to_owned(),
                    ticket.to_string(),
                    millis(self.waiter_timeout),
                ],
            )
        })
    }
}
