//! What the clients did, as the checker needs it: every holding with its validity and fencing
//! token, every acquire's duration, and every violation seen along the way.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// One granted lock, from the holder's point of view.
#[derive(Clone, Debug)]
pub struct Holding {
    /// `client.task`, for the report.
    pub who: String,
    /// The resource (for the semaphore: the resource and the slot's permit count).
    pub resource: String,
    /// When the acquire call started.
    pub started: Instant,
    /// When it returned the guard.
    pub acquired: Instant,
    /// The guard's validity deadline (as last extended).
    pub valid_until: Instant,
    /// When the holder released it, if it did before its validity ran out.
    pub released: Option<Instant>,
    /// The fencing token.
    pub token: Option<u64>,
    /// Acquired while faults the docs do not cover for mutual exclusion had happened (a clock
    /// jump, data loss without quarantine, a takeover seen by a client built after it).
    pub uncovered: bool,
}

impl Holding {
    /// Until when the holder may rely on the lock.
    pub fn end(&self) -> Instant {
        match self.released {
            Some(r) if r < self.valid_until => r,
            _ => self.valid_until,
        }
    }
}

/// Shared by every task of a run. Cheap to clone.
#[derive(Clone, Default)]
pub struct History(Arc<Mutex<Inner>>);

#[derive(Default)]
struct Inner {
    holdings: Vec<Holding>,
    violations: Vec<String>,
    acquires: u64,
    refusals: u64,
    errors: u64,
}

impl History {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a holding; returns its index, to close it later.
    pub fn hold(&self, holding: Holding) -> usize {
        let mut i = self.inner();
        i.acquires += 1;
        i.holdings.push(holding);
        i.holdings.len() - 1
    }

    /// The holding `index` was extended to `valid_until`.
    pub fn extended(&self, index: usize, valid_until: Instant) {
        self.inner().holdings[index].valid_until = valid_until;
    }

    /// The holding `index` was released at `at`.
    pub fn released(&self, index: usize, at: Instant) {
        self.inner().holdings[index].released = Some(at);
    }

    /// An acquire ended without a lock.
    pub fn refused(&self, error: bool) {
        let mut i = self.inner();
        if error {
            i.errors += 1;
        } else {
            i.refusals += 1;
        }
    }

    /// Records a violation seen while running.
    pub fn violation(&self, what: String) {
        self.inner().violations.push(what);
    }

    /// The violations seen while running.
    pub fn violations(&self) -> Vec<String> {
        self.inner().violations.clone()
    }

    /// Every holding.
    pub fn holdings(&self) -> Vec<Holding> {
        self.inner().holdings.clone()
    }

    /// (acquisitions, refusals, errors).
    pub fn counts(&self) -> (u64, u64, u64) {
        let i = self.inner();
        (i.acquires, i.refusals, i.errors)
    }
}

/// Two holders of one resource inside their validity windows (mutexes only).
pub fn overlaps(holdings: &[Holding]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, a) in holdings.iter().enumerate() {
        for b in &holdings[i + 1..] {
            if a.resource != b.resource || a.uncovered || b.uncovered {
                continue;
            }
            if a.acquired < b.end() && b.acquired < a.end() {
                out.push(format!(
                    "two holders of {}: {} {:?}..{:?} and {} {:?}..{:?}",
                    a.resource,
                    a.who,
                    a.acquired,
                    a.end(),
                    b.who,
                    b.acquired,
                    b.end()
                ));
            }
        }
    }
    out
}

/// A token that is not larger than one handed out before its acquire started.
pub fn tokens_backwards(holdings: &[Holding]) -> Vec<String> {
    let mut out = Vec::new();
    for a in holdings {
        for b in holdings {
            let (Some(ta), Some(tb)) = (a.token, b.token) else {
                continue;
            };
            if b.started > a.acquired && tb <= ta {
                out.push(format!(
                    "fencing token went backwards: {} got {tb} after {} got {ta}",
                    b.who, a.who
                ));
            }
        }
    }
    out
}

/// The bound on an acquire call: its wait plus two per-master timeouts (the votes, and the
/// write-back when counters disagree), plus scheduling slack.
pub fn acquire_bound(wait: Duration, master_timeout: Duration) -> Duration {
    wait + master_timeout * 2 + Duration::from_millis(5)
}
