//! [`ShardedRedlock::with_lock`](super::ShardedRedlock::with_lock): the core's lease
//! (`lease.rs`) keeps a [`ShardedGuard`] extended, so a sharded lock has the same signals as a
//! basic one: [`LeaseState`](crate::LeaseState) (jeopardy, the extension cap, `lost` no later
//! than the validity deadline even while a renewal hangs).

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::Result;
use crate::lease::{LockContext, Renewable};

use super::guard::ShardedGuard;

/// What the closure of [`ShardedRedlock::with_lock`](super::ShardedRedlock::with_lock) gets:
/// the basic lock's [`LockContext`] (its fencing token is the sharded token).
pub type ShardedContext = LockContext;

impl Renewable for ShardedGuard {
    fn resource(&self) -> &str {
        ShardedGuard::resource(self)
    }
    fn fencing_token(&self) -> Option<u64> {
        ShardedGuard::fencing_token(self)
    }
    fn valid_until(&self) -> Instant {
        ShardedGuard::valid_until(self)
    }
    fn lease_cap(&self) -> Option<Duration> {
        self.max_lease()
    }
    fn extend_within(
        &mut self,
        ttl: Duration,
        until: Instant,
    ) -> impl Future<Output = Result<()>> + Send {
        ShardedGuard::extend_waiting(self, ttl, Some(until))
    }
    fn master_timeout(&self) -> Duration {
        self.master_timeout()
    }
    fn check_ttl(&self, ttl: Duration) -> Result<()> {
        ShardedGuard::check_ttl(self, ttl)
    }
    fn release(self) -> impl Future<Output = Result<bool>> + Send {
        ShardedGuard::release(self)
    }
    #[cfg(feature = "sim")]
    fn owner_token(&self) -> &str {
        self.first_owner_token()
    }
}

impl ShardedGuard {
    /// Runs `work` while this lock is held, extending it to `ttl` every third of `ttl` by the
    /// core's lease, and releases it after: as
    /// [`LockGuard::with_watchdog`](crate::LockGuard::with_watchdog), with the extension cap
    /// it was asked with ([`LockOptions::max_lease`](crate::LockOptions::max_lease)).
    ///
    /// # Errors
    /// [`Error::InvalidTtl`](crate::Error::InvalidTtl) for a `ttl` an extend would refuse (then `work` does not run and
    /// the lock is released); [`Error::LockLost`](crate::Error::LockLost) if the lock was lost while `work` ran.
    pub async fn with_watchdog<T, F, Fut>(self, ttl: Duration, work: F) -> Result<T>
    where
        F: FnOnce(LockContext) -> Fut,
        Fut: Future<Output = T>,
    {
        crate::lease::run_leased(self, ttl, work).await
    }
}
