//! The lease behind [`Redlock::with_lock`](crate::Redlock::with_lock) and
//! [`LockGuard::with_watchdog`]: a background task that keeps extending a guard, and the
//! [`LockContext`] through which the work learns that the lock was lost.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::guard::LockGuard;

/// What the closure of [`Redlock::with_lock`](crate::Redlock::with_lock) gets: the lock's
/// fencing token and a way to learn that the lock was lost.
#[derive(Clone, Debug)]
pub struct LockContext {
    resource: Arc<str>,
    fencing_token: Option<u64>,
    lost: CancellationToken,
    valid_until: watch::Receiver<Instant>,
}

impl LockContext {
    /// The resource held.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The fencing token of this acquisition (see [`LockGuard::fencing_token`]).
    pub fn fencing_token(&self) -> Option<u64> {
        self.fencing_token
    }

    /// Whether the lock was lost (it could not be extended before its validity ran out).
    pub fn is_lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    /// Completes when the lock is lost; never completes while it is held. Use it in a
    /// `tokio::select!` to stop work that must not continue without the lock.
    pub async fn lost(&self) {
        self.lost.cancelled().await;
    }

    /// Validity left as of the last successful extension.
    pub fn remaining(&self) -> Duration {
        self.valid_until
            .borrow()
            .saturating_duration_since(Instant::now())
    }
}

/// A guard handed to a background task that keeps extending it.
pub(crate) struct Lease {
    stop: CancellationToken,
    lost: CancellationToken,
    task: Option<tokio::task::JoinHandle<LockGuard>>,
}

impl Lease {
    pub(crate) fn start(guard: LockGuard, ttl: Duration) -> (Self, LockContext) {
        let stop = CancellationToken::new();
        let lost = CancellationToken::new();
        let (valid_tx, valid_rx) = watch::channel(guard.valid_until());
        let context = LockContext {
            resource: guard.resource().into(),
            fencing_token: guard.fencing_token(),
            lost: lost.clone(),
            valid_until: valid_rx,
        };
        let task = tokio::spawn(watchdog(guard, ttl, stop.clone(), lost.clone(), valid_tx));
        (
            Self {
                stop,
                lost,
                task: Some(task),
            },
            context,
        )
    }

    /// Stops extending and hands the guard back, with whether the lock was lost meanwhile.
    pub(crate) async fn stop(mut self) -> (Option<LockGuard>, bool) {
        self.stop.cancel();
        let guard = match self.task.take() {
            Some(task) => task.await.ok(),
            None => None,
        };
        (guard, self.lost.is_cancelled())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // with_lock was cancelled or its closure panicked: stop extending; the watchdog then
        // drops the guard, which releases it.
        self.stop.cancel();
    }
}

/// Extends the lock every third of its TTL; signals `lost` when the validity runs out before an
/// extension succeeds, or as soon as a quorum says the lock is no longer ours.
async fn watchdog(
    mut guard: LockGuard,
    ttl: Duration,
    stop: CancellationToken,
    lost: CancellationToken,
    valid_tx: watch::Sender<Instant>,
) -> LockGuard {
    let mut next = Instant::now() + ttl / 3;
    loop {
        // Never sleep past the validity: loss must be signalled on time.
        let wake = next.min(guard.valid_until());
        tokio::select! {
            _ = stop.cancelled() => return guard,
            _ = tokio::time::sleep_until(wake) => {}
        }
        if !guard.is_valid() {
            tracing::warn!(
                resource = guard.resource(),
                "lock validity ran out before it could be extended"
            );
            crate::metrics::lock_lost();
            lost.cancel();
            return guard;
        }
        match guard.extend(ttl).await {
            Ok(()) => {
                let _ = valid_tx.send(guard.valid_until());
                next = Instant::now() + ttl / 3;
            }
            Err(e @ Error::NotHeld { .. }) => {
                tracing::warn!(resource = guard.resource(), error = %e, "lock lost");
                crate::metrics::lock_lost();
                lost.cancel();
                return guard;
            }
            Err(e) => {
                // Transient (masters slow or down): retry soon, while validity lasts.
                tracing::debug!(resource = guard.resource(), error = %e, "extend failed, retrying");
                next = Instant::now() + (ttl / 20).max(Duration::from_millis(10));
            }
        }
    }
}
