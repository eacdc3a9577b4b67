//! [`ShardedRedlock::with_lock`](super::ShardedRedlock::with_lock): the work runs while the
//! sharded lock is extended beside it, in the same task; [`ShardedContext`] tells the work
//! the token and whether the lock was lost.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

use super::guard::ShardedGuard;

/// What the closure of [`ShardedRedlock::with_lock`](super::ShardedRedlock::with_lock) gets.
#[derive(Clone, Debug)]
pub struct ShardedContext {
    resource: String,
    fencing_token: Option<u64>,
    lost: CancellationToken,
}

impl ShardedContext {
    /// The resource held.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The sharded fencing token (see [`ShardedGuard::fencing_token`]).
    pub fn fencing_token(&self) -> Option<u64> {
        self.fencing_token
    }

    /// Whether the lock was lost (not extended before its validity ran out).
    pub fn is_lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    /// Completes when the lock is lost; select on it to stop work that needs the lock.
    pub async fn lost(&self) {
        self.lost.cancelled().await;
    }
}

/// Runs `work` while extending `guard` every third of `ttl`, then releases the guard.
pub(crate) async fn run_extended<T, F, Fut>(
    mut guard: ShardedGuard,
    ttl: Duration,
    work: F,
) -> Result<T>
where
    F: FnOnce(ShardedContext) -> Fut,
    Fut: Future<Output = T>,
{
    let lost = CancellationToken::new();
    let context = ShardedContext {
        resource: guard.resource().to_owned(),
        fencing_token: guard.fencing_token(),
        lost: lost.clone(),
    };
    let output = {
        let work = work(context);
        tokio::pin!(work);
        tokio::select! {
            out = &mut work => out,
            never = keep_extended(&mut guard, ttl, &lost) => match never {},
        }
    };
    let resource = guard.resource().to_owned();
    let _ = guard.release().await;
    if lost.is_cancelled() {
        return Err(Error::LockLost { resource });
    }
    Ok(output)
}

/// Extends every third of `ttl`; retries failed extensions soon while validity lasts, then
/// signals `lost` and stops extending (never returns: the work decides when to stop).
async fn keep_extended(
    guard: &mut ShardedGuard,
    ttl: Duration,
    lost: &CancellationToken,
) -> std::convert::Infallible {
    let mut next = Instant::now() + ttl / 3;
    loop {
        tokio::time::sleep_until(next.min(guard.valid_until())).await;
        if !guard.is_valid() {
            tracing::warn!(resource = guard.resource(), "sharded lock lost");
            lost.cancel();
            return std::future::pending().await;
        }
        next = match guard.extend(ttl).await {
            Ok(()) => Instant::now() + ttl / 3,
            Err(e) => {
                tracing::debug!(resource = guard.resource(), error = %e, "extend failed");
                Instant::now() + (ttl / 20).max(Duration::from_millis(10))
            }
        };
    }
}
