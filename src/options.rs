//! [`LockOptions`]: how to ask for a lock, the one value every acquire call of every primitive
//! takes (the TTL, and the acquire wait, lock-delay and extension cap where they differ from
//! the defaults). A bare [`Duration`] converts into options with that TTL, so
//! `redlock.acquire("r", Duration::from_secs(5))` asks with the defaults.
//!
//! **Lock-delay** (as Chubby's and Consul's, but opt-in): the lock key is written with a server
//! expiry of `ttl + delay`. The holder's validity still comes from `ttl` alone; past it the key
//! is a tombstone that keeps the lock unavailable for `delay` more, so a holder that vanished
//! without releasing cannot be followed at once by another (a store that cannot check fencing
//! tokens gets `delay` for the old holder's in-flight writes to land or fail). A release deletes
//! the key, so a released lock is free at once. Extending moves the whole window. Every time
//! involved is the master's own key expiry: no client clock is compared with a master's.
//!
//! **Extension cap** (`max_lease`): this is the one place a cap is set. The guard carries it,
//! and every watchdog over that guard (`with_lock`,
//! [`LockGuard::with_watchdog`](crate::LockGuard::with_watchdog), a leadership) never extends
//! the validity past the cap from when the watchdog started (for a leadership: from the win).

use std::time::Duration;

use crate::defaults::MAX_TTL;
use crate::error::{Error, Result};
use crate::invalid::ArgumentReason;

/// How to ask for a lock: its TTL and the per-lock settings that differ from the client's.
///
/// Every acquire call takes `impl Into<LockOptions>`: a [`Duration`] is a TTL with the
/// defaults, a `LockOptions` (or `&LockOptions`) sets more. A call given an option it cannot
/// honour (a wait for a single try, a lock-delay for a primitive whose keys do not keep one)
/// returns [`Error::InvalidArgument`] with [`ArgumentReason::Unsupported`]; no option is
/// silently ignored.
///
/// | option | default | honoured by |
/// |---|---|---|
/// | `ttl` | (required) | every call |
/// | [`wait`](Self::wait) | [`Builder::acquire_wait`](crate::Builder::acquire_wait) (a campaign: no deadline) | every waiting call (`acquire`, `acquire_many`, `read`, `write`, `with_*`, `campaign`); not `try_*`, not `resume` |
/// | [`lock_delay`](Self::lock_delay) | zero (off) | the basic lock (`acquire`, `try_acquire`, `with_lock`) and `campaign` |
/// | [`max_lease`](Self::max_lease) | none (no cap) | every call: the guard carries it to its watchdog |
///
/// The owner id and fencing are the client's ([`Builder::owner_id`](crate::Builder::owner_id),
/// [`Builder::fencing`](crate::Builder::fencing)); a reentrant owner is its handle's.
///
/// ```no_run
/// # use std::time::Duration;
/// # async fn run(redlock: redquorum::Redlock) -> redquorum::Result<()> {
/// let options = redquorum::LockOptions::new(Duration::from_secs(10))
///     .lock_delay(Duration::from_secs(5)) // abandoned: unavailable 5 s more
///     .max_lease(Duration::from_secs(60)); // the watchdog never extends past a minute
/// redlock
///     .with_lock("nightly-export", &options, |lock| async move {
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

impl From<Duration> for LockOptions {
    /// A lock of that TTL with the defaults.
    fn from(ttl: Duration) -> Self {
        Self::new(ttl)
    }
}

impl From<&LockOptions> for LockOptions {
    fn from(options: &LockOptions) -> Self {
        options.clone()
    }
}

impl LockOptions {
    /// A lock of `ttl`, with the client's acquire wait, no lock-delay and no extension cap.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            wait: None,
            lock_delay: Duration::ZERO,
            max_lease: None,
        }
    }

    /// How long an acquire waits for the lock (default:
    /// [`Builder::acquire_wait`](crate::Builder::acquire_wait); a campaign: no deadline). Zero
    /// still makes one round (as `try_*`, but with the errors of the waiting call).
    #[must_use]
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = Some(wait);
        self
    }

    /// After the holder's TTL runs out without a release, the lock stays unavailable for
    /// `delay` more. A released lock is free at once. Default: zero (off). At most
    /// [`MAX_TTL`](crate::defaults::MAX_TTL).
    #[must_use]
    pub fn lock_delay(mut self, delay: Duration) -> Self {
        self.lock_delay = delay;
        self
    }

    /// Extension cap: a watchdog over this lock's guard never extends its validity past
    /// `cap` from when it started (a leadership: from the win); when it would have to, it
    /// signals [`LeaseState::Capped`](crate::LeaseState::Capped) and the lock is lost at its
    /// validity deadline, so a runaway holder cannot keep a lock forever. Default: no cap.
    /// Must be positive.
    #[must_use]
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

    /// The extension cap, if set.
    pub(crate) fn cap(&self) -> Option<Duration> {
        self.max_lease
    }

    /// The wait of a waiting call: the one set, else `default`.
    pub(crate) fn wait_or(&self, default: Duration) -> Duration {
        self.wait.unwrap_or(default)
    }

    /// Refuses what no call can honour (a zero cap), and the options `call` cannot honour:
    /// a wait unless `waits`, a lock-delay unless `delays` (else one over the masters' limit).
    pub(crate) fn check(&self, call: &'static str, waits: bool, delays: bool) -> Result<()> {
        if self.max_lease.is_some_and(|cap| cap.is_zero()) {
            return Err(Error::InvalidArgument(ArgumentReason::ZeroMaxLease));
        }
        if !waits && self.wait.is_some() {
            return Err(unsupported("wait", call));
        }
        if !self.lock_delay.is_zero() {
            if !delays {
                return Err(unsupported("lock_delay", call));
            }
            check_lock_delay(self.ttl, self.lock_delay)?;
        }
        Ok(())
    }
}

fn unsupported(option: &'static str, call: &'static str) -> Error {
    Error::InvalidArgument(ArgumentReason::Unsupported { option, call })
}

/// Rejects a lock-delay the masters could not keep.
fn check_lock_delay(ttl: Duration, delay: Duration) -> Result<()> {
    if delay > MAX_TTL || ttl.saturating_add(delay) > MAX_TTL.saturating_mul(2) {
        return Err(Error::InvalidArgument(ArgumentReason::LockDelayTooLong {
            delay,
            max: MAX_TTL,
        }));
    }
    Ok(())
}
