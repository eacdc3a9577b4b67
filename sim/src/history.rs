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
    /// Client stalls so far (see [`Stall`]); `None` until a run enables the stall checks.
    stalls: Option<Vec<Stall>>,
    /// The tokio task of each holding's `hold` call (the task that acquired).
    tasks: Vec<Option<tokio::task::Id>>,
    /// Events a documented non-guarantee allows, by kind: counted and reported, never silenced.
    non_guarantees: BTreeMap<&'static str, u64>,
}

/// One client stall: a task frozen at a point of the protocol (`redquorum::sim::set_stalls`)
/// or while a holder worked (`holder.work`).
#[derive(Clone, Debug)]
pub struct Stall {
    /// The point (`acquire.validated`, `lease.renewed`, ...).
    pub point: &'static str,
    /// The owner token of the lock concerned (empty for a holder's work).
    pub owner: String,
    /// The task that stalled.
    pub task: Option<tokio::task::Id>,
    /// From when to when.
    pub from: Instant,
    /// Until when.
    pub to: Instant,
}

impl Stall {
    /// Whether the stall came after the library's last validity check (of an acquire or an
    /// extend) or while the holder worked: the client may come back past its validity, which
    /// no lock service can prevent (a documented non-guarantee).
    pub fn after_validity_check(&self) -> bool {
        self.point.ends_with(".validated") || self.point == "holder.work"
    }
}

/// Kinds of [`History::non_guarantee`] events.
pub mod allowed {
    /// A guard came back with no validity left: its client stalled after the validity check.
    pub const EXPIRED_GRANT: &str = "granted expired (stalled after the validity check)";
    /// `lost()` fired after the validity deadline: the watchdog stalled with a renewal's
    /// outcome, or the guard was handed to it already expired.
    pub const LATE_LOST: &str = "lost() late (the watchdog or the acquire stalled)";
    /// A holder used the lock past its validity (stalled or paused) while another held it.
    pub const OVERLAP_PAST_VALIDITY: &str = "overlap past the holder's validity";
    /// A holder used the lock past its validity (whether or not another held it meanwhile).
    pub const USED_PAST_VALIDITY: &str = "used past validity";
    /// A group change refused (`TOPOLOGYBUSY`) on a master where another administrator's
    /// change lock lingers: that change was cut or failed and its release missed the master
    /// (down, cut off), so the lock stays there until its TTL. A liveness limit (call again),
    /// not a safety one: the refusal is the change lock doing its work.
    pub const CHANGE_LOCK_LINGERS: &str = "change refused where a cut change's lock lingers";
}

impl History {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a holding; returns its index, to close it later.
    pub fn hold(&self, holding: Holding) -> usize {
        let task = tokio::task::try_id();
        let mut i = self.inner();
        i.acquires += 1;
        // With the stall checks on: a guard with no validity left must be explained by a stall
        // of the acquiring task after the library's validity check, one that began inside the
        // validity and ended at or after its deadline. A stall is a timer: tokio's timers fire
        // on whole milliseconds, so the task wakes up to one tick after the stall's end.
        let tick = Duration::from_millis(1);
        if i.stalls.is_some() && holding.acquired >= holding.valid_until && !holding.uncovered {
            let explained = i.stalls.iter().flatten().any(|s| {
                s.task == task
                    && s.after_validity_check()
                    && s.from >= holding.started
                    && s.from <= holding.valid_until
                    && s.to + tick >= holding.valid_until
            });
            if explained {
                *i.non_guarantees.entry(allowed::EXPIRED_GRANT).or_default() += 1;
            } else {
                let what = format!(
                    "{}: {} granted with no validity left ({:?} past it) and no stall after \
                     its validity check",
                    holding.who,
                    holding.resource,
                    holding.acquired - holding.valid_until
                );
                i.violations.push(what);
            }
        }
        i.holdings.push(holding);
        i.tasks.push(task);
        i.holdings.len() - 1
    }

    /// Turns on the stall checks (see [`stalled`](Self::stalled)).
    pub fn check_stalls(&self) {
        self.inner().stalls.get_or_insert_with(Vec::new);
    }

    /// How long the calling task has stalled since `from` (stalls that started since).
    pub fn stalled_since(&self, from: Instant) -> Duration {
        let task = tokio::task::try_id();
        self.inner()
            .stalls
            .iter()
            .flatten()
            .filter(|s| s.task == task && s.from >= from)
            .map(|s| s.to - s.from)
            .sum()
    }

    /// Records a client stall.
    pub fn stalled(&self, stall: Stall) {
        if let Some(stalls) = self.inner().stalls.as_mut() {
            stalls.push(stall);
        }
    }

    /// `lost()` of a lease owned by `owner` (if known) fired at `at`, its validity deadline
    /// being `deadline`: late is a violation unless the watchdog stalled across the deadline.
    pub fn lost_signalled(&self, who: &str, owner: Option<&str>, deadline: Instant, at: Instant) {
        let mut i = self.inner();
        // Tokio's timers tick in whole milliseconds: a wake-up at the deadline may come up to
        // one tick after it.
        let tick = Duration::from_millis(1);
        if at <= deadline + tick || i.stalls.is_none() {
            return;
        }
        // The watchdog stalled with a renewal's outcome, or the guard came back from its
        // acquire already expired (a stall after the acquire's validity check). Not a stall
        // inside a renewal: the watchdog races the renewal against the deadline.
        let explained = i.stalls.iter().flatten().any(|s| {
            matches!(s.point, "lease.renewed" | "acquire.validated")
                && owner.is_none_or(|o| o == s.owner)
                && s.from <= deadline + tick
                && s.to >= deadline
        });
        if explained {
            *i.non_guarantees.entry(allowed::LATE_LOST).or_default() += 1;
        } else {
            let what = format!(
                "{who}: lost() fired {:?} after the validity deadline, the watchdog not stalled",
                at - deadline
            );
            i.violations.push(what);
        }
    }

    /// Counts an event a documented non-guarantee allows.
    pub fn non_guarantee(&self, kind: &'static str) {
        *self.inner().non_guarantees.entry(kind).or_default() += 1;
    }

    /// The events documented non-guarantees allowed, by kind.
    pub fn non_guarantees(&self) -> BTreeMap<&'static str, u64> {
        self.inner().non_guarantees.clone()
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

/// Holders that used a lock past their validity (paused or stalled, then released late), and
/// of those, the ones another holder overlapped after their validity ran out: both allowed by
/// the documented non-guarantee (a client must check its validity and stop; a paused one
/// cannot), so counted, not violations. Returns (used past validity, overlapped).
pub fn past_validity(holdings: &[Holding]) -> (u64, u64) {
    let (mut used, mut overlapped) = (0, 0);
    for (i, a) in holdings.iter().enumerate() {
        let Some(released) = a.released else { continue };
        let from = a.valid_until.max(a.acquired);
        if a.uncovered || released <= from {
            continue;
        }
        used += 1;
        let hit = holdings.iter().enumerate().any(|(j, b)| {
            j != i
                && b.resource == a.resource
                && !b.uncovered
                && a.kind.excludes(&b.kind)
                && b.acquired < released
                && from < b.end()
        });
        if hit {
            overlapped += 1;
        }
    }
    (used, overlapped)
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
