//! [`Leadership`]: what a won campaign returns: the term, the lease signals, resignation.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::Election;
use crate::error::Result;
use crate::guard::LockGuard;
use crate::lease::{Lease, LeaseState, LockContext};

/// This candidate leads. Kept alive in the background (extended every third of the TTL) until
/// [`resign`](Self::resign)ed, dropped, lost or capped.
///
/// Leading is a lease, not a fact: act as leader only while [`is_valid`](Self::is_valid), stop
/// when [`lost`](Self::lost) completes (no later than the local validity deadline, even if a
/// renewal hangs), and pass [`term`](Self::term) to whatever the leader writes to, so that a
/// deposed leader that was paused past its lease is rejected there.
///
/// # Drop
/// Dropping it stops the extension and resigns in the background (as a [`LockGuard`] does).
pub struct Leadership {
    election: String,
    value: String,
    term: u64,
    context: LockContext,
    lease: Option<Lease>,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("election", &self.election)
            .field("value", &self.value)
            .field("term", &self.term)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Leadership {
    /// Keeps `guard` (won at `won_at`, which its extension cap counts from) as a leadership,
    /// extended to `ttl`.
    pub(super) fn start(
        election: &Election,
        guard: LockGuard,
        ttl: Duration,
        won_at: Instant,
        value: String,
        term: u64,
    ) -> Self {
        let (lease, context) = Lease::start_from(guard, ttl, won_at);
        Self {
            election: election.name.clone(),
            value,
            term,
            context,
            lease: Some(lease),
        }
    }

    /// The term: the fencing token of this leadership, larger than every earlier leader's of
    /// any election (and lock) in the key namespace.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// The value this candidate campaigned with.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// The election's name.
    pub fn election(&self) -> &str {
        &self.election
    }

    /// How the leadership's lease stands now.
    pub fn state(&self) -> LeaseState {
        self.context.state()
    }

    /// Every state change, as a `watch` receiver.
    pub fn states(&self) -> watch::Receiver<LeaseState> {
        self.context.states()
    }

    /// Completes when the leadership is lost, no later than its local validity deadline.
    pub async fn lost(&self) {
        self.context.lost().await;
    }

    /// Completes as soon as the lease is not [`Held`](LeaseState::Held) (a renewal failed, the
    /// cap was reached, or it is lost).
    pub async fn jeopardy(&self) {
        self.context.jeopardy().await;
    }

    /// Whether this candidate still leads: not lost and within its validity.
    pub fn is_valid(&self) -> bool {
        self.state() != LeaseState::Lost && Instant::now() < self.context.valid_until()
    }

    /// The local validity deadline (what [`lost`](Self::lost) fires at unless a quorum says
    /// earlier that it is gone), as a `watch` receiver that changes with every successful
    /// extension: for code that must act before the deadline (the state alone does not change
    /// while renewals keep succeeding).
    pub fn deadlines(&self) -> watch::Receiver<Instant> {
        self.context.deadlines()
    }

    /// Validity left as of the last successful extension.
    pub fn remaining(&self) -> Duration {
        self.context.remaining()
    }

    /// Steps down: stops extending and deletes the leadership on every master, announcing it,
    /// so that waiting candidates of every client with wake-ups on try again at once (the next
    /// leader is elected within a round trip or two, not a TTL). `Ok(true)`: a quorum deleted
    /// it. `Ok(false)`: it had already run out.
    ///
    /// # Errors
    /// As [`LockGuard::release`]; the leadership then expires after its TTL (plus the
    /// lock-delay, since nothing confirmed a resignation).
    pub async fn resign(mut self) -> Result<bool> {
        let Some(lease) = self.lease.take() else {
            return Ok(false);
        };
        match lease.stop().await {
            (Some(guard), _) => guard.release().await,
            (None, _) => Ok(false),
        }
    }
}
