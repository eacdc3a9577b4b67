//! Read-write lock: many readers or one writer, with writer preference.

use std::future::Future;
use std::time::Duration;

use crate::config::check_resource;
use crate::defaults::DEFAULT_WAITER_TIMEOUT;
use crate::error::Result;
use crate::guard::LockGuard;
use crate::held::{Attempt, HeldBy, new_token};
use crate::lease::LockContext;
use crate::lock::{Redlock, Wake};
use crate::options::LockOptions;
use crate::primitives::queue::{LeaveOnDrop, leave_now, leave_on_drop};
use crate::scripts::millis;
use crate::scripts::{
    EXTEND, RELEASE, RW_READ_ACQUIRE, RW_READ_EXTEND, RW_READ_RELEASE, RW_WRITE_ACQUIRE,
    RW_WRITE_RELEASE, ScriptCall,
};

/// A read-write lock on one resource. Created by [`Redlock::rw_lock`]; cheap to clone.
///
/// On every master: a writer key (`SET NX`, as the basic lock), a set of read leases with their
/// own expiries, and a set of waiting writers. A read is granted where no writer holds or waits;
/// a write where no writer holds and no read lease is live. Any read quorum and any write
/// quorum share a master, which granted one of them first and refused the other, so **no writer
/// overlaps any other holder** within their validity windows; readers overlap freely.
///
/// **Writer preference**: a writer registers its intent on every attempt (kept for the
/// [waiter timeout](RwLock::waiter_timeout) after its last attempt), and new readers are refused
/// while a writer waits, so a stream of readers cannot starve writers. The price: a stream of
/// writers can starve readers. Read leases already granted are not revoked: they end when
/// released or expired, so a reader that keeps extending (e.g. under
/// [`with_read`](Self::with_read)) delays a waiting writer until it is done.
#[derive(Clone, Debug)]
pub struct RwLock {
    redlock: Redlock,
    resource: String,
    waiter_timeout: Duration,
}

impl Redlock {
    /// A read-write lock handle for `resource` (writer wait timeout
    /// [`DEFAULT_WAITER_TIMEOUT`]).
    pub fn rw_lock(&self, resource: impl Into<String>) -> RwLock {
        RwLock {
            redlock: self.clone(),
            resource: resource.into(),
            waiter_timeout: DEFAULT_WAITER_TIMEOUT,
        }
    }
}

impl RwLock {
    /// How long a waiting writer's intent (which shuts out new readers) outlives its last
    /// attempt: a writer that vanishes blocks new readers this long at most. Default
    /// [`DEFAULT_WAITER_TIMEOUT`]; at least twice the retry delay plus jitter plus the
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

    /// Acquires a read lease, retrying while a writer holds or waits, for at most the
    /// acquire wait ([`LockOptions::wait`], default the client's). Honours the TTL, the wait
    /// and the cap, not a lock-delay.
    ///
    /// # Errors
    /// As [`Redlock::acquire`].
    pub async fn read(&self, options: impl Into<LockOptions>) -> Result<LockGuard> {
        let options = options.into();
        self.check(&options, "RwLock::read", true)?;
        let (ttl, wait) = (options.ttl(), self.wait(&options));
        self.redlock
            .acquire_loop(&self.resource, &options, wait, Wake::Poll, || {
                self.read_attempt(ttl)
            })
            .await
    }

    /// One read round: `Ok(None)` when a writer holds or waits.
    ///
    /// # Errors
    /// As [`Redlock::try_acquire`].
    pub async fn try_read(&self, options: impl Into<LockOptions>) -> Result<Option<LockGuard>> {
        let options = options.into();
        self.check(&options, "RwLock::try_read", false)?;
        let ttl = options.ttl();
        self.redlock
            .try_once(&self.resource, &options, || self.read_attempt(ttl))
            .await
    }

    /// Acquires the write lock, waiting for the readers to drain (new readers are refused
    /// meanwhile), for at most the acquire wait.
    ///
    /// # Errors
    /// As [`Redlock::acquire`]; [`Error::InvalidArgument`](crate::Error::InvalidArgument) for
    /// a too short waiter timeout.
    ///
    /// # Cancellation
    /// Dropping the future part-way rolls back a round in flight and withdraws the writer's
    /// intent in the background; giving up withdraws it too.
    pub async fn write(&self, options: impl Into<LockOptions>) -> Result<LockGuard> {
        let options = options.into();
        self.check(&options, "RwLock::write", true)?;
        let (ttl, wait) = (options.ttl(), self.wait(&options));
        self.redlock
            .config()
            .check_waiter_timeout(self.waiter_timeout)?;
        let writer = new_token();
        let mut intent = self.intent(&writer);
        let result = self
            .redlock
            .acquire_loop(&self.resource, &options, wait, Wake::Poll, || {
                self.write_attempt(ttl, &writer)
            })
            .await;
        match result {
            Ok(guard) => {
                intent.disarm();
                Ok(guard)
            }
            Err(e) => {
                leave_now(intent).await;
                Err(e)
            }
        }
    }

    /// One write round: `Ok(None)` when a writer holds or a reader is live (the intent is then
    /// withdrawn, so a failed try does not hold readers up).
    ///
    /// # Errors
    /// As [`Redlock::try_acquire`].
    pub async fn try_write(&self, options: impl Into<LockOptions>) -> Result<Option<LockGuard>> {
        let options = options.into();
        self.check(&options, "RwLock::try_write", false)?;
        let ttl = options.ttl();
        self.redlock
            .config()
            .check_waiter_timeout(self.waiter_timeout)?;
        let writer = new_token();
        let mut intent = self.intent(&writer);
        let result = self
            .redlock
            .try_once(&self.resource, &options, || {
                self.write_attempt(ttl, &writer)
            })
            .await;
        if let Ok(Some(_)) = result {
            intent.disarm();
        } else {
            leave_now(intent).await;
        }
        result
    }

    /// Runs `work` under a read lease, extended while it runs, released after.
    ///
    /// # Errors
    /// The errors of [`read`](Self::read), and [`Error::LockLost`](crate::Error::LockLost).
    pub async fn with_read<T, F, Fut>(&self, options: impl Into<LockOptions>, work: F) -> Result<T>
    where
        F: FnOnce(LockContext) -> Fut,
        Fut: Future<Output = T>,
    {
        let options = options.into();
        let guard = self.read(&options).await?;
        guard.with_watchdog(options.ttl(), work).await
    }

    /// Runs `work` under the write lock, extended while it runs, released after.
    ///
    /// # Errors
    /// The errors of [`write`](Self::write), and [`Error::LockLost`](crate::Error::LockLost).
    pub async fn with_write<T, F, Fut>(&self, options: impl Into<LockOptions>, work: F) -> Result<T>
    where
        F: FnOnce(LockContext) -> Fut,
        Fut: Future<Output = T>,
    {
        let options = options.into();
        let guard = self.write(&options).await?;
        guard.with_watchdog(options.ttl(), work).await
    }

    fn check(&self, options: &LockOptions, call: &'static str, waits: bool) -> Result<()> {
        check_resource(&self.resource)?;
        self.redlock.config().refuse_interop("read-write lock")?;
        self.redlock.config().check_ttl(options.ttl())?;
        options.check(call, waits, false)
    }

    fn wait(&self, options: &LockOptions) -> Duration {
        options.wait_or(self.redlock.config().acquire_wait)
    }

    /// Writer key, read leases, waiting writers.
    fn keys(&self) -> Vec<String> {
        let config = self.redlock.config();
        vec![
            config.key("rw-writer", &self.resource),
            config.key("rw-readers", &self.resource),
            config.key("rw-writers-waiting", &self.resource),
        ]
    }

    fn intent(&self, writer: &str) -> LeaveOnDrop {
        let waiting = self.keys().swap_remove(2);
        leave_on_drop(self.redlock.clone(), vec![waiting], writer.to_owned())
    }

    fn read_attempt(&self, ttl: Duration) -> Attempt {
        let config = self.redlock.config();
        let held = HeldBy::new("read", self.keys(), &RW_READ_EXTEND, &RW_READ_RELEASE);
        let mut keys = held.keys.clone();
        keys.push(config.fence_key());
        Attempt::new(ttl, held, |token| {
            ScriptCall::new(
                &RW_READ_ACQUIRE,
                keys,
                vec![token.to_owned(), millis(ttl), config.fencing_arg()],
            )
        })
    }

    fn write_attempt(&self, ttl: Duration, writer: &str) -> Attempt {
        let config = self.redlock.config();
        let held = HeldBy::new("write", self.keys(), &EXTEND, &RW_WRITE_RELEASE)
            // A failed round gives the writer key back but keeps the intent.
            .rollback(&RELEASE)
            .args(vec![writer.to_owned()]);
        let mut keys = held.keys.clone();
        keys.push(config.fence_key());
        Attempt::new(ttl, held, |token| {
            ScriptCall::new(
                &RW_WRITE_ACQUIRE,
                keys,
                vec![
                    token.to_owned(),
                    millis(ttl),
                    config.fencing_arg(),
                    writer.to_owned(),
                    millis(self.waiter_timeout),
                ],
            )
        })
    }
}
