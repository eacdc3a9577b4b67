//! Per-lock options ([`LockOptions`]): the acquire wait, the lock-delay, and the extension cap
//! of the watchdog, for the basic lock.
//!
//! **Lock-delay** (as Chubby's and Consul's, but opt-in): the lock key is written with a server
//! expiry of `ttl + delay`. The holder's validity still comes from `ttl` alone; past it the key
//! is a tombstone that keeps the lock unavailable for `delay` more, so a holder that vanished
//! without releasing cannot be followed at once by another (a store that cannot check fencing
//! tokens gets `delay` for the old holder's in-flight writes to land or fail). A release deletes
//! the key, so a released lock is free at once. Extending moves the whole window. Every time
//! involved is the master's own key expiry: no client clock is compared with a master's.

use std::future::Future;
use std::time::Duration;

use crate::config::check_resource;
use crate::defaults::MAX_TTL;
use crate::error::{Error, Result};
use crate::guard::LockGuard;
use crate::held::{Attempt, HeldBy};
use crate::invalid::ArgumentReason;
use crate::lease::LockContext;
use crate::lock::{Redlock, Wake};
use crate::scripts::{ACQUIRE, LOCK_DELAY_EXTEND, LOCK_DELAY_RELEASE, ScriptCall, millis};

/// How to take one lock: its TTL and the per-lock settings that differ from the client's.
///
/// ```no_run
/// # use std::time::Duration;
/// # async fn run(redlock: redquorum::Redlock) -> redquorum::Result<()> {
/// let options = redquorum::LockOptions::new(Duration::from_secs(10))
///     .lock_delay(Duration::from_secs(5)) // abandoned: unavailable 5 s more
///     .max_lease(Duration::from_secs(60)); // the watchdog never extends past a minute
/// redlock
///     .with_lock_options("nightly-export", &options, |lock| async move {
///         tokio::select! {
///             _ = lock.lost() => { /* stop: the lock is gone */ }
///             _ = async { /* work */ } => {}
///         }
///     })
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockOptions {
    ttl: Duration,
    wait: Option<Duration>,
    lock_delay: Duration,
    max_lease: Option<Duration>,
}

impl LockOptions {
    /// A lock of `ttl`, with the client's acquire wait and extension cap, and no lock-delay.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            wait: None,
            lock_delay: Duration::ZERO,
            max_lease: None,
        }
    }

    /// How long an acquire waits for the lock (default: [`Builder::acquire_wait`](crate::Builder::acquire_wait)).
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = Some(wait);
        self
    }

    /// After the holder's TTL runs out without a release, the lock stays unavailable for
    /// `delay` more. A released lock is free at once. Default: zero (off).
    pub fn lock_delay(mut self, delay: Duration) -> Self {
        self.lock_delay = delay;
        self
    }

    /// Extension cap of the watchdog of [`Redlock::with_lock_options`] (default:
    /// [`Builder::max_lease`](crate::Builder::max_lease)).
    pub fn max_lease(mut self, cap: Duration) -> Self {
        self.max_lease = Some(cap);
        self
    }

    /// The TTL.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The lock-delay (zero when off).
    pub fn delay(&self) -> Duration {
        self.lock_delay
    }
}

/// Rejects a lock-delay the masters could not keep.
pub(crate) fn check_lock_delay(ttl: Duration, delay: Duration) -> Result<()> {
    if delay > MAX_TTL || ttl.saturating_add(delay) > MAX_TTL.saturating_mul(2) {
        return Err(Error::InvalidArgument(ArgumentReason::LockDelayTooLong {
            delay,
            max: MAX_TTL,
        }));
    }
    Ok(())
}

impl Redlock {
    /// [`acquire`](Self::acquire) with per-lock options (lock-delay, wait).
    ///
    /// # Errors
    /// As [`acquire`](Self::acquire), and [`Error::InvalidArgument`] for a lock-delay over
    /// [`MAX_TTL`](crate::defaults::MAX_TTL).
    pub async fn acquire_with_options(
        &self,
        resource: &str,
        options: &LockOptions,
    ) -> Result<LockGuard> {
        self.check_options(resource, options)?;
        let wait = options.wait.unwrap_or(self.config().acquire_wait);
        // As `acquire_with_wait`: a caller that will wait for a release message marks itself
        // on refusal, so that the release publishes (notify.rs).
        let waits = self.wakeups().is_some() && !wait.is_zero();
        self.acquire_loop(resource, options.ttl, wait, Wake::OnRelease, || {
            self.delayed_attempt(resource, options, waits)
        })
        .await
    }

    /// [`try_acquire`](Self::try_acquire) with per-lock options: one round.
    ///
    /// # Errors
    /// As [`acquire_with_options`](Self::acquire_with_options).
    pub async fn try_acquire_with_options(
        &self,
        resource: &str,
        options: &LockOptions,
    ) -> Result<Option<LockGuard>> {
        self.check_options(resource, options)?;
        self.try_once(resource, || self.delayed_attempt(resource, options, false))
            .await
    }

    /// [`with_lock`](Self::with_lock) with per-lock options (lock-delay, wait, extension cap).
    ///
    /// # Errors
    /// As [`with_lock`](Self::with_lock).
    pub async fn with_lock_options<T, F, Fut>(
        &self,
        resource: &str,
        options: &LockOptions,
        work: F,
    ) -> Result<T>
    where
        F: FnOnce(LockContext) -> Fut,
        Fut: Future<Output = T>,
    {
        let cap = options.max_lease.or(self.config().max_lease);
        self.acquire_with_options(resource, options)
            .await?
            .with_watchdog_capped(options.ttl, cap, work)
            .await
    }

    fn check_options(&self, resource: &str, options: &LockOptions) -> Result<()> {
        check_resource(resource)?;
        self.config().check_lock_key(resource)?;
        self.config().check_ttl(options.ttl)?;
        check_lock_delay(options.ttl, options.lock_delay)?;
        if options.max_lease.is_some_and(|cap| cap.is_zero()) {
            return Err(Error::InvalidArgument(ArgumentReason::ZeroMaxLease));
        }
        Ok(())
    }

    /// The basic lock's round, with the key living `ttl + delay` on the masters.
    fn delayed_attempt(&self, resource: &str, options: &LockOptions, waits: bool) -> Attempt {
        let config = self.config();
        let key = config.lock_key(resource);
        let delay = options.lock_delay;
        let held = if delay.is_zero() {
            HeldBy::lock(
                key.clone(),
                crate::notify::waiter_marker(&config.key_prefix, resource),
            )
        } else {
            // Not "lock": a hand-off handle does not carry the delay, and a resume would
            // extend the key with the plain script, dropping the delay window.
            HeldBy::new(
                "lock-delay",
                vec![key.clone()],
                &LOCK_DELAY_EXTEND,
                &LOCK_DELAY_RELEASE,
            )
            .args(vec![millis(delay)])
            .announced()
        };
        let ttl = options.ttl;
        let mut keys = vec![key, config.fence_key()];
        if waits {
            // Refused while waiting: mark the resource so that its release publishes.
            keys.push(crate::notify::waiter_marker(&config.key_prefix, resource));
        }
        // The stored value names its holder for inspection (owner_id.rs).
        let token = crate::owner_id::compose(&crate::held::new_token(), &config.owner_id);
        Attempt::with_token(token, ttl, held, |token| {
            ScriptCall::new(
                &ACQUIRE,
                keys,
                vec![
                    token.to_owned(),
                    // Whole milliseconds of each, as validity counts the TTL (quorum.rs).
                    millis(ttl + delay),
                    config.fencing_arg(),
                ],
            )
        })
    }
}
