//! What the clients did, as the checker needs it: every holding with its validity, fencing
//! token and kind, every acquire's duration, and every violation seen along the way; and the
//! checks over the holdings.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// What a holding excludes: the rule the checker applies between two holdings of one
/// resource. Every primitive has its own resource names (see `primitives.rs`), except the
/// multi-resource lock, whose holdings are `Mutex` holdings of each of its resources.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Excludes every other holding of the resource (basic, multi-resource and fair locks).
    Mutex,
    /// A read lease: excludes writers only.
    Read,
    /// A write lock: excludes readers and writers.
    Write,
    /// One of `k` permits: at most `k` holdings at once.
    Permit {
        /// The semaphore's permits.
        k: u32,
    },
    /// A reentrant hold: excludes the holds of other owner ids only.
    Reentrant {
        /// The owner id.
        owner: String,
    },
}

impl Kind {
    /// Whether holdings of kinds `self` and `other` of one resource may not overlap. Permits
    /// are counted instead (see [`permits_exceeded`]); kinds that never share a resource name
    /// conflict, so that a harness mix-up shows.
    fn excludes(&self, other: &Kind) -> bool {
        match (self, other) {
            (Kind::Read, Kind::Read) | (Kind::Permit { .. }, Kind::Permit { .. }) => false,
            (Kind::Reentrant { owner: a }, Kind::Reentrant { owner: b }) => a != b,
            _ => true,
        }
    }
}

/// One granted lock, from the holder's point of view.
#[derive(Clone, Debug)]
pub struct Holding {
    /// `client.task`, for the report.
    pub who: String,
    /// The resource, in its primitive's name space (`r0`, `fair:r0`, `rw:r0`, ...).
    pub resource: String,
    /// What the holding excludes.
    pub kind: Kind,
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

/// `t` as the trace shows times: milliseconds since `base`, the start of the run.
fn ms(t: Instant, base: Instant) -> String {
    format!(
        "{:.3} ms",
        t.saturating_duration_since(base).as_secs_f64() * 1e3
    )
}

/// Two holdings of one resource inside their validity windows whose kinds exclude each other
/// (mutexes, a writer against a reader or a writer, two owners of a reentrant lock). Times are
/// reported from `base`, the start of the run, as in the trace.
pub fn overlaps(holdings: &[Holding], base: Instant) -> Vec<String> {
    let mut out = Vec::new();
    for (i, a) in holdings.iter().enumerate() {
        for b in &holdings[i + 1..] {
            if a.resource != b.resource || a.uncovered || b.uncovered || !a.kind.excludes(&b.kind) {
                continue;
            }
            if a.acquired < b.end() && b.acquired < a.end() {
                out.push(format!(
                    "two holders of {}: {} {:?} {}..{} and {} {:?} {}..{}",
                    a.resource,
                    a.who,
                    a.kind,
                    ms(a.acquired, base),
                    ms(a.end(), base),
                    b.who,
                    b.kind,
                    ms(b.acquired, base),
                    ms(b.end(), base)
                ));
            }
        }
    }
    out
}

/// More than `k` holders of one semaphore inside their validity windows at some instant, or
/// holders of one semaphore that disagree on `k`. Times from `base`, as in [`overlaps`].
pub fn permits_exceeded(holdings: &[Holding], base: Instant) -> Vec<String> {
    // Per semaphore, in name order (deterministic reports): the windows of its covered permits.
    let mut by_resource: BTreeMap<&str, Vec<&Holding>> = BTreeMap::new();
    for h in holdings {
        if matches!(h.kind, Kind::Permit { .. }) && !h.uncovered {
            by_resource.entry(&h.resource).or_default().push(h);
        }
    }
    let mut out = Vec::new();
    for (resource, permits) in by_resource {
        let ks: Vec<u32> = permits
            .iter()
            .filter_map(|h| match h.kind {
                Kind::Permit { k } => Some(k),
                _ => None,
            })
            .collect();
        let k = ks[0];
        if ks.iter().any(|&other| other != k) {
            out.push(format!(
                "holders of {resource} disagree on the permits: {ks:?}"
            ));
            continue;
        }
        // Sweep the window ends: windows are half-open [acquired, end), so at one instant the
        // ends (-1) go before the starts (+1), as in `overlaps`.
        let mut events: Vec<(Instant, i32, usize)> = Vec::new();
        for (i, h) in permits.iter().enumerate() {
            if h.acquired < h.end() {
                events.push((h.acquired, 1, i));
                events.push((h.end(), -1, i));
            }
        }
        events.sort();
        let mut inside: Vec<usize> = Vec::new();
        for (at, step, i) in events {
            if step < 0 {
                inside.retain(|&j| j != i);
                continue;
            }
            inside.push(i);
            if inside.len() > k as usize {
                let who: Vec<String> = inside
                    .iter()
                    .map(|&j| {
                        let h = permits[j];
                        format!("{} {}..{}", h.who, ms(h.acquired, base), ms(h.end(), base))
                    })
                    .collect();
                out.push(format!(
                    "{} holders of {resource} (k = {k}) at {}: {who:?}",
                    inside.len(),
                    ms(at, base)
                ));
                // One report per excess is enough to replay it.
                break;
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
