//! The lease behind [`Redlock::with_lock`](crate::Redlock::with_lock) and
//! [`LockGuard::with_watchdog`]: a background task that keeps extending a guard, and the
//! [`LockContext`] through which the work learns how the lease stands ([`LeaseState`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::guard::LockGuard;

/// How an automatically extended lease stands, as its watchdog sees it.
///
/// The state only moves forward, except from [`Jeopardy`](Self::Jeopardy) back to
/// [`Held`](Self::Held) when a renewal succeeds again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LeaseState {
    /// The last renewal (or the acquire) succeeded and the validity has not run out.
    Held,
    /// A renewal failed, or has not succeeded within one per-master timeout (masters slow,
    /// paused or down), but validity remains: the lease is still valid, the renewal keeps
    /// waiting for late answers and is retried until the validity deadline. Time to prepare
    /// for losing it (stop starting new work, flush what can be flushed).
    Jeopardy,
    /// The extension cap ([`LockOptions::max_lease`](crate::LockOptions::max_lease)) was reached: the
    /// watchdog no longer extends, and the lease will be [`Lost`](Self::Lost) at its validity
    /// deadline.
    Capped,
    /// The lease is no longer valid: its validity deadline passed before a renewal succeeded
    /// (also while a renewal still hangs), or a quorum said the lock is no longer ours.
    Lost,
}

/// What the closure of [`Redlock::with_lock`](crate::Redlock::with_lock) gets: the lock's
/// fencing token and the lease's signals ([`LeaseState`]).
#[derive(Clone, Debug)]
pub struct LockContext {
    resource: Arc<str>,
    fencing_token: Option<u64>,
    state: watch::Receiver<LeaseState>,
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

    /// The lease's state now.
    pub fn state(&self) -> LeaseState {
        *self.state.borrow()
    }

    /// A receiver of every state change, for code that wants to follow the lease itself.
    pub fn states(&self) -> watch::Receiver<LeaseState> {
        self.state.clone()
    }

    /// Whether the lock was lost (it could not be extended before its validity ran out).
    pub fn is_lost(&self) -> bool {
        self.state() == LeaseState::Lost
    }

    /// Completes when the lock is lost; never completes while a quorum keeps the key and
    /// answers a renewal before the deadline (late answers count). Completes no later than the
    /// local validity deadline, even while a renewal hangs. Use it in a
    /// `tokio::select!` to stop work that must not continue without the lock.
    pub async fn lost(&self) {
        wait_for(self.state.clone(), |s| s == LeaseState::Lost).await;
    }

    /// Completes as soon as the lease is not [`Held`](LeaseState::Held): a renewal failed
    /// ([`Jeopardy`](LeaseState::Jeopardy)), the extension cap was reached, or it is lost.
    pub async fn jeopardy(&self) {
        wait_for(self.state.clone(), |s| s != LeaseState::Held).await;
    }

    /// Validity left as of the last successful extension.
    pub fn remaining(&self) -> Duration {
        self.valid_until
            .borrow()
            .saturating_duration_since(Instant::now())
    }

    /// The local validity deadline as of the last successful extension.
    pub fn valid_until(&self) -> Instant {
        *self.valid_until.borrow()
    }

    /// The validity deadline, notified at every successful extension.
    pub(crate) fn deadlines(&self) -> watch::Receiver<Instant> {
        self.valid_until.clone()
    }
}

/// Waits until `state` satisfies `done`; if the watchdog is gone without saying so (it
/// panicked), the lease cannot be trusted: treated as done.
async fn wait_for(mut state: watch::Receiver<LeaseState>, done: impl Fn(LeaseState) -> bool) {
    let _ = state.wait_for(|s| done(*s)).await;
}

/// What a watchdog keeps extending: a [`LockGuard`], or a sharded lock's holds (one guard per
/// group, `sharded/guard.rs`). The hook that lets every lease share this one watchdog.
pub(crate) trait Renewable: Send + 'static {
    fn resource(&self) -> &str;
    fn fencing_token(&self) -> Option<u64>;
    /// The local validity deadline.
    fn valid_until(&self) -> Instant;
    /// The extension cap the lock was asked with ([`LockOptions::max_lease`](crate::LockOptions::max_lease)).
    fn lease_cap(&self) -> Option<Duration>;
    /// One renewal to `ttl` that waits for each master's answer until `until` (a late yes
    /// still counts, see `LockGuard::extend_within`); [`Error::NotHeld`] when a quorum says
    /// the lock is no longer ours.
    fn extend_within(
        &mut self,
        ttl: Duration,
        until: Instant,
    ) -> impl Future<Output = crate::Result<()>> + Send;
    /// The per-master timeout: a renewal undecided for longer puts the lease in jeopardy.
    fn master_timeout(&self) -> Duration;
    /// Refuses a `ttl` an extend would refuse.
    fn check_ttl(&self, ttl: Duration) -> crate::Result<()>;
    /// Gives the lock back.
    fn release(self) -> impl Future<Output = crate::Result<bool>> + Send;
    /// The owner token the simulator's stalls are keyed by.
    #[cfg(feature = "sim")]
    fn owner_token(&self) -> &str;

    fn is_valid(&self) -> bool {
        Instant::now() < self.valid_until()
    }

    /// Validity left.
    fn remaining(&self) -> Duration {
        self.valid_until().saturating_duration_since(Instant::now())
    }
}

impl Renewable for LockGuard {
    fn resource(&self) -> &str {
        LockGuard::resource(self)
    }
    fn fencing_token(&self) -> Option<u64> {
        LockGuard::fencing_token(self)
    }
    fn valid_until(&self) -> Instant {
        LockGuard::valid_until(self)
    }
    fn lease_cap(&self) -> Option<Duration> {
        LockGuard::lease_cap(self)
    }
    fn extend_within(
        &mut self,
        ttl: Duration,
        until: Instant,
    ) -> impl Future<Output = crate::Result<()>> + Send {
        LockGuard::extend_within(self, ttl, until)
    }
    fn master_timeout(&self) -> Duration {
        LockGuard::master_timeout(self)
    }
    fn check_ttl(&self, ttl: Duration) -> crate::Result<()> {
        LockGuard::check_ttl(self, ttl)
    }
    fn release(self) -> impl Future<Output = crate::Result<bool>> + Send {
        LockGuard::release(self)
    }
    #[cfg(feature = "sim")]
    fn owner_token(&self) -> &str {
        LockGuard::owner_token(self)
    }
}

/// Runs `work` while `guard` is held, kept extended to `ttl` by a [`Lease`] (capped at the
/// guard's cap), and releases it after: the body of every `with_watchdog` (basic and sharded).
///
/// # Errors
/// The guard's `check_ttl` error for a `ttl` an extend would refuse (then `work` does not run
/// and the lock is released); [`Error::LockLost`] if the lock was lost while `work` ran.
pub(crate) async fn run_leased<G, T, F, Fut>(guard: G, ttl: Duration, work: F) -> crate::Result<T>
where
    G: Renewable,
    F: FnOnce(LockContext) -> Fut,
    Fut: Future<Output = T>,
{
    if let Err(invalid) = guard.check_ttl(ttl) {
        // Every extend would be refused and, taken for a transient failure, retried until
        // the lock ran out: `LockLost` instead of the caller's mistake. The guard is ours
        // and `work` will not run, so give the lock back now rather than at its expiry.
        let _ = guard.release().await;
        return Err(invalid);
    }
    let resource = guard.resource().to_owned();
    let (lease, context) = Lease::start(guard, ttl);
    let output = work(context).await;
    let (guard, lost) = lease.stop().await;
    if let Some(guard) = guard {
        // The closure is done either way; a failed release only leaves keys to expire.
        let _ = guard.release().await;
    }
    if lost {
        return Err(Error::LockLost { resource });
    }
    Ok(output)
}

/// The automatic extension for any guard (the basic lock's and every primitive's).
impl LockGuard {
    /// Runs `work` while this lock is held, extending it to `ttl` in the background every third
    /// of `ttl` (the first time after a third of the validity the guard has left, if that is
    /// less), and releases it after: [`Redlock::with_lock`](crate::Redlock::with_lock) for
    /// any guard (multi-resource, reentrant, fair, read, write, semaphore permit).
    ///
    /// `work` gets a [`LockContext`] whose [`lost`](LockContext::lost) future completes if the
    /// lock could not be extended before its validity ran out (no later than the deadline, even
    /// while a renewal hangs), or when the extension cap the lock was asked with
    /// ([`LockOptions::max_lease`](crate::LockOptions::max_lease), counted from now) ended it; its
    /// [`state`](LockContext::state) and [`jeopardy`](LockContext::jeopardy) say earlier that a
    /// renewal failed. The closure is not cancelled on loss; select on `lost()` to stop early.
    ///
    /// # Errors
    /// [`Error::InvalidTtl`](crate::Error::InvalidTtl) for a `ttl` that [`extend`](Self::extend) would refuse: then
    /// `work` does not run and the lock is released before the error is returned.
    /// [`Error::LockLost`](crate::Error::LockLost) if the lock was lost while `work` ran (its output is then dropped,
    /// since it was produced without the lock).
    ///
    /// # Cancellation
    /// Dropping the returned future stops the extension and releases the lock in the
    /// background.
    pub async fn with_watchdog<T, F, Fut>(self, ttl: Duration, work: F) -> crate::Result<T>
    where
        F: FnOnce(LockContext) -> Fut,
        Fut: Future<Output = T>,
    {
        run_leased(self, ttl, work).await
    }
}

/// A guard handed to a background task that keeps extending it.
pub(crate) struct Lease<G = LockGuard> {
    stop: CancellationToken,
    state: watch::Receiver<LeaseState>,
    task: Option<tokio::task::JoinHandle<G>>,
}

impl<G: Renewable> Lease<G> {
    /// Starts extending `guard` to `ttl` every third of `ttl`, never past its extension cap
    /// from now.
    pub(crate) fn start(guard: G, ttl: Duration) -> (Self, LockContext) {
        Self::start_from(guard, ttl, Instant::now())
    }

    /// [`start`](Self::start) with the cap counted from `won_at` (when the lock was won, before
    /// whatever its owner did with it before handing it here: an election records its term
    /// first).
    pub(crate) fn start_from(guard: G, ttl: Duration, won_at: Instant) -> (Self, LockContext) {
        let max_lease = guard.lease_cap();
        let stop = CancellationToken::new();
        let (state_tx, state_rx) = watch::channel(LeaseState::Held);
        let (valid_tx, valid_rx) = watch::channel(guard.valid_until());
        let context = LockContext {
            resource: guard.resource().into(),
            fencing_token: guard.fencing_token(),
            state: state_rx.clone(),
            valid_until: valid_rx,
        };
        let cap_end = max_lease.map(|cap| crate::config::deadline_after(won_at, cap));
        let signals = Signals {
            state: state_tx,
            valid_until: valid_tx,
        };
        let task = tokio::spawn(watchdog(guard, ttl, cap_end, stop.clone(), signals));
        (
            Self {
                stop,
                state: state_rx,
                task: Some(task),
            },
            context,
        )
    }

    /// Stops extending and hands the guard back, with whether the lock was lost meanwhile.
    pub(crate) async fn stop(mut self) -> (Option<G>, bool) {
        self.stop.cancel();
        let guard = match self.task.take() {
            Some(task) => task.await.ok(),
            None => None,
        };
        let lost = *self.state.borrow() == LeaseState::Lost;
        (guard, lost)
    }
}

impl<G> Drop for Lease<G> {
    fn drop(&mut self) {
        // with_lock was cancelled or its closure panicked: stop extending; the watchdog then
        // drops the guard, which releases it.
        self.stop.cancel();
    }
}

/// The watchdog's side of the signals.
struct Signals {
    state: watch::Sender<LeaseState>,
    valid_until: watch::Sender<Instant>,
}

impl Signals {
    fn set(&self, state: LeaseState) {
        self.state.send_if_modified(|s| {
            let changed = *s != state && *s != LeaseState::Lost;
            if changed {
                *s = state;
            }
            changed
        });
    }
}

/// How one renewal attempt ended.
enum Renewal {
    Extended,
    /// Masters failed or were slow; retry while validity lasts.
    Failed,
    /// A quorum said the lock is no longer ours.
    NotHeld,
    /// The validity deadline passed while the renewal was still in flight.
    OutOfTime,
}

/// When to renew a lease next: after a third of the validity it has (a third of `ttl` once
/// extended; less for a guard with less validity left than `ttl` when its watchdog starts, so
/// that the first renewal comes in time for the guard's own validity, not for `ttl`'s).
fn renewal_in(ttl: Duration, remaining: Duration) -> Duration {
    ttl.min(remaining) / 3
}

/// Extends the lock every third of its TTL (sooner at first, see [`renewal_in`]) until
/// stopped. Signals `Jeopardy` when a renewal fails or has not succeeded within one per-master
/// timeout, `Capped` when the next extension would pass `cap_end`, and `Lost` at the validity
/// deadline (a hanging renewal is raced against it, so it cannot delay the signal) or as soon
/// as a quorum says the lock is no longer ours.
///
/// A renewal waits for the masters' answers until the validity deadline, not only for one
/// per-master timeout: an answer that comes late but before the deadline still proves the key
/// was this owner's and is extended from no earlier than the renewal's start (validity is
/// counted from there), so a quorum that keeps holding the key is never reported lost because
/// its answers are slow.
async fn watchdog<G: Renewable>(
    mut guard: G,
    ttl: Duration,
    cap_end: Option<Instant>,
    stop: CancellationToken,
    signals: Signals,
) -> G {
    let mut next = Instant::now() + renewal_in(ttl, guard.remaining());
    let mut capped = false;
    let slow_after = guard.master_timeout();
    let resource: Arc<str> = guard.resource().into();
    loop {
        // Never sleep past the validity: loss must be signalled on time.
        let wake = if capped {
            guard.valid_until()
        } else {
            next.min(guard.valid_until())
        };
        // A wake-up already due (a renewal failed at the deadline) is not slept on: a sleep to
        // an instant already past still waits for the timer's next tick, and loss would be
        // signalled a tick after the deadline.
        if wake > Instant::now() {
            tokio::select! {
                _ = stop.cancelled() => return guard,
                _ = tokio::time::sleep_until(wake) => {}
            }
        } else if stop.is_cancelled() {
            return guard;
        }
        if !guard.is_valid() {
            tracing::warn!(resource = guard.resource(), "lock validity ran out");
            crate::metrics::lock_lost();
            signals.set(LeaseState::Lost);
            return guard;
        }
        if capped {
            continue;
        }
        if cap_end.is_some_and(|end| Instant::now() + ttl > end) {
            // One more extension would carry the lease past the cap.
            tracing::info!(resource = guard.resource(), "extension cap reached");
            signals.set(LeaseState::Capped);
            capped = true;
            continue;
        }
        let deadline = guard.valid_until();
        let slow_at = Instant::now() + slow_after;
        let renewal = {
            let extend = guard.extend_within(ttl, deadline);
            tokio::pin!(extend);
            let mut slow = false;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break None,
                    _ = tokio::time::sleep_until(deadline) => break Some(Renewal::OutOfTime),
                    // Not decided within a per-master timeout: masters are slow or down.
                    _ = tokio::time::sleep_until(slow_at), if !slow => {
                        slow = true;
                        signals.set(LeaseState::Jeopardy);
                    }
                    r = &mut extend => break Some(match r {
                        Ok(()) => Renewal::Extended,
                        Err(e @ Error::NotHeld { .. }) => {
                            tracing::warn!(resource = &*resource, error = %e, "lock lost");
                            Renewal::NotHeld
                        }
                        Err(e) => {
                            tracing::debug!(resource = &*resource, error = %e, "extend failed");
                            Renewal::Failed
                        }
                    }),
                }
            }
        };
        let Some(renewal) = renewal else {
            return guard;
        };
        #[cfg(feature = "sim")]
        crate::sim::stall("lease.renewed", guard.owner_token()).await;
        match renewal {
            Renewal::Extended => {
                let _ = signals.valid_until.send(guard.valid_until());
                signals.set(LeaseState::Held);
                next = Instant::now() + renewal_in(ttl, guard.remaining());
            }
            Renewal::Failed => {
                // A guard of several holds (a sharded lock over several groups) keeps what the
                // holds that did extend gained: its validity, the smallest of theirs, may have
                // grown. The context tells it, so that `lost()` never comes after the deadline
                // the context last reported.
                let valid_until = guard.valid_until();
                signals.valid_until.send_if_modified(|known| {
                    let grown = valid_until > *known;
                    if grown {
                        *known = valid_until;
                    }
                    grown
                });
                signals.set(LeaseState::Jeopardy);
                next = Instant::now() + (ttl / 20).max(Duration::from_millis(10));
            }
            Renewal::NotHeld | Renewal::OutOfTime => {
                crate::metrics::lock_lost();
                signals.set(LeaseState::Lost);
                return guard;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewals_come_within_a_third_of_the_validity_left() {
        let s = Duration::from_secs;
        assert_eq!(renewal_in(s(3), s(3)), s(1));
        // A guard with less validity than the watchdog's TTL: a third of what it has.
        assert_eq!(renewal_in(s(15), s(3)), s(1));
        assert_eq!(renewal_in(s(3), Duration::ZERO), Duration::ZERO);
    }
}
