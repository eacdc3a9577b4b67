//! Reentrant lock: the same owner may acquire again; released when its last hold is released.

use std::future::Future;
use std::time::Duration;

use crate::config::check_resource;
use crate::error::{Error, Result};
use crate::guard::LockGuard;
use crate::held::{Attempt, HeldBy};
use crate::invalid::ArgumentReason;
use crate::lease::LockContext;
use crate::lock::{Redlock, Wake};
use crate::options::LockOptions;
use crate::scripts::millis;
use crate::scripts::{REENTRANT_ACQUIRE, REENTRANT_EXTEND, REENTRANT_RELEASE, ScriptCall};

/// A reentrant lock for one owner. Created by [`Redlock::reentrant`]; cheap to clone.
///
/// Async tasks have no thread identity, so the owner is an explicit id: every acquisition made
/// with the same owner id (by any task, any client, any process) is the same owner and may
/// hold the lock several times at once; another owner id is refused while any hold remains.
///
/// Each acquisition returns its own [`LockGuard`] with its own lease: releasing (or dropping)
/// it removes that hold only, and the lock is free once every hold of the owner is released
/// or expired. On each master the lock is a hash with the owner and one field per hold, so a
/// failed round rolls back exactly the hold it added, never the owner's other holds (a counter
/// decremented blindly would undo holds that a timed-out master had not even recorded).
#[derive(Clone, Debug)]
pub struct ReentrantLock {
    redlock: Redlock,
    owner: String,
}

impl Redlock {
    /// A reentrant lock handle for `owner` (any id unique to the owner: a job id, a request id,
    /// a uuid kept by a task tree). An empty id is refused at acquire.
    pub fn reentrant(&self, owner: impl Into<String>) -> ReentrantLock {
        ReentrantLock {
            redlock: self.clone(),
            owner: owner.into(),
        }
    }
}

impl ReentrantLock {
    /// The owner id.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Acquires `resource` for this owner (again, if it already holds it), retrying as
    /// [`Redlock::acquire`] does while another owner holds it.
    ///
    /// Honours the TTL, the wait ([`LockOptions::wait`]) and the cap, not a lock-delay. A
    /// re-entry gets its own lease of the TTL, and never shortens the lease of the owner's
    /// other holds (the key's expiry only grows). It also gets its own, larger fencing token:
    /// tokens strictly increase across every acquisition in the namespace, re-entries included,
    /// so the owner should fence with the largest token it holds.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty owner id or a lock-delay; otherwise as
    /// [`Redlock::acquire`].
    pub async fn acquire(
        &self,
        resource: &str,
        options: impl Into<LockOptions>,
    ) -> Result<LockGuard> {
        let options = options.into();
        self.check(resource, &options, "ReentrantLock::acquire", true)?;
        let ttl = options.ttl();
        let wait = options.wait_or(self.redlock.config().acquire_wait);
        self.redlock
            .acquire_loop(resource, &options, wait, Wake::Poll, || {
                self.attempt(resource, ttl)
            })
            .await
    }

    /// One round: `Ok(None)` when another owner holds the lock.
    ///
    /// # Errors
    /// As [`Redlock::try_acquire`], and [`Error::InvalidArgument`] for an empty owner id.
    pub async fn try_acquire(
        &self,
        resource: &str,
        options: impl Into<LockOptions>,
    ) -> Result<Option<LockGuard>> {
        let options = options.into();
        self.check(resource, &options, "ReentrantLock::try_acquire", false)?;
        let ttl = options.ttl();
        self.redlock
            .try_once(resource, &options, || self.attempt(resource, ttl))
            .await
    }

    /// [`Redlock::with_lock`] for this owner: acquire, extend while `work` runs, release.
    ///
    /// # Errors
    /// The errors of [`acquire`](Self::acquire), and [`Error::LockLost`].
    pub async fn with_lock<T, F, Fut>(
        &self,
        resource: &str,
        options: impl Into<LockOptions>,
        work: F,
    ) -> Result<T>
    where
        F: FnOnce(LockContext) -> Fut,
        Fut: Future<Output = T>,
    {
        let options = options.into();
        let guard = self.acquire(resource, &options).await?;
        guard.with_watchdog(options.ttl(), work).await
    }

    fn check(
        &self,
        resource: &str,
        options: &LockOptions,
        call: &'static str,
        waits: bool,
    ) -> Result<()> {
        check_resource(resource)?;
        self.redlock.config().refuse_interop("reentrant lock")?;
        if self.owner.is_empty() {
            return Err(Error::InvalidArgument(ArgumentReason::EmptyReentrantOwner));
        }
        self.redlock.config().check_ttl(options.ttl())?;
        options.check(call, waits, false)
    }

    fn attempt(&self, resource: &str, ttl: Duration) -> Attempt {
        let config = self.redlock.config();
        let key = config.key("reentrant", resource);
        let held = HeldBy::new(
            "reentrant",
            vec![key.clone()],
            &REENTRANT_EXTEND,
            &REENTRANT_RELEASE,
        )
        .args(vec![self.owner.clone()]);
        Attempt::new(ttl, held, |token| {
            ScriptCall::new(
                &REENTRANT_ACQUIRE,
                vec![key, config.fence_key()],
                vec![
                    token.to_owned(),
                    millis(ttl),
                    config.fencing_arg(),
                    self.owner.clone(),
                ],
            )
        })
    }
}
