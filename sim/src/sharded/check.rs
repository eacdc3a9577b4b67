//! The sharded run's oracle: what it records beside the history (each holding's groups, the
//! windows of documented non-guarantees, the topology pins seen on a quorum), the observer
//! that reads the masters' topology state while the run goes, and the verdict at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::history::{self, Holding};
use crate::value::Value;

use super::{CONCURRENT_ADMINS_SAFE, GROUP, TOPOLOGY_SEALED, World, slot_of};

/// Kinds of events a documented non-guarantee allows (counted, reported, never dropped).
pub mod allowed {
    pub use crate::history::allowed::*;
    /// An overlap or token involving a group with a master that lost its topology state (a
    /// restart without data, a takeover) that was not stored again since: README "Sharding",
    /// non-guarantees ("Masters restarting without data", issue 18 item 1).
    pub const TOPOLOGY_LOST: &str = "sharded: a group's master lost its topology state (item 1)";
    /// With the sealed topology (item 1): an overlap, token or pin involving a group in which
    /// every master that kept a restriction a quorum had established (an epoch, or a spec
    /// pinned to it) lost its topology state before any of them was sealed again: what
    /// `src/sharded/seal.rs` and the README say remains ("every master that kept a
    /// restriction losing its state before one of them is sealed again"). Most of a group
    /// losing its state, at once or one after another, is covered while one master that kept
    /// the restriction keeps its state: a seal then reads every master (issue 18's second
    /// example).
    pub const TOPOLOGY_MAJORITY_LOST: &str = "sharded: every master of a group that kept a restriction lost it before a seal (seal.rs: what remains)";
    /// During or soon after two `change_groups` at once: README "Sharding", non-guarantees
    /// ("Concurrent change_groups calls are not tested", issue 18 item 5).
    pub const CONCURRENT_ADMINS: &str = "sharded: two administrators changed the groups at once";
    /// After a fault the docs do not cover for mutual exclusion (a clock jump, data lost without
    /// the restart quarantine, a takeover seen by a client built after it).
    pub const UNCOVERED: &str = "sharded: after an uncovered fault";
    /// A token not above an earlier one of a group most of whose masters lost their fencing
    /// counters at once (README "Fencing counters": tokens go backwards when every master that
    /// knew the last token lost it). Tokens only, never an overlap.
    pub const FENCE_LOST: &str = "sharded: most of a group lost its fencing counters at once";
}

/// What the checks know beyond the history. Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Side(Arc<Mutex<Inner>>);

#[derive(Default)]
struct Inner {
    /// Per holding (its index in the history): the groups it held and its epoch.
    holds: BTreeMap<usize, (Vec<String>, u64)>,
    /// Windows of documented non-guarantees.
    windows: Vec<Window>,
    /// Per group slot and epoch: the digests pinned to that epoch on a quorum of the group.
    pins: BTreeMap<(usize, u64), BTreeSet<String>>,
    /// Per group slot: the restrictions a quorum of its masters kept at some moment (seen by
    /// the observer or just before a loss), not lost since.
    established: BTreeMap<usize, BTreeSet<Restriction>>,
    /// Administrators inside `change_groups` now, and since when two were.
    admins_in: usize,
    concurrent_since: Option<Instant>,
    violations: Vec<String>,
    /// How often each scenario happened (the run's coverage, reported with the counts).
    events: BTreeMap<&'static str, u64>,
}

/// A span of time in which a documented non-guarantee holds, maybe only for one group slot.
struct Window {
    kind: &'static str,
    slot: Option<usize>,
    /// For a lost topology: the master, and the spec epoch it must store again to end it.
    master: Option<(usize, u64)>,
    from: Instant,
    to: Option<Instant>,
    /// Only holdings that existed at `from` (acquire started before, valid after): data lost
    /// without the restart quarantine endangers the holds its keys carried, not later grants.
    existing: bool,
}

impl Side {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Scenario `kind` happened once more.
    pub(crate) fn event(&self, kind: &'static str) {
        *self.inner().events.entry(kind).or_default() += 1;
    }

    /// How often each scenario happened.
    pub(crate) fn events(&self) -> BTreeMap<&'static str, u64> {
        self.inner().events.clone()
    }

    /// Holding `index` held `groups` under `epoch`.
    pub(crate) fn held(&self, index: usize, groups: Vec<String>, epoch: u64) {
        self.inner().holds.insert(index, (groups, epoch));
    }

    /// From now on, an uncovered fault has happened (for the rest of the run).
    pub(crate) fn uncovered(&self, world: &World, why: &str) {
        world.net.log(format!("uncovered from now on: {why}"));
        self.inner().windows.push(Window {
            kind: allowed::UNCOVERED,
            slot: None,
            master: None,
            from: Instant::now(),
            to: None,
            existing: false,
        });
    }

    /// Masters of group slot `slot` lost their data without the restart quarantine: the holds
    /// of the group that exist now are not covered from now on (their keys may be gone from a
    /// quorum); grants after this are (a group's later grants need a quorum that has the keys).
    pub(crate) fn uncovered_holds(&self, world: &World, slot: usize, why: &str) {
        world.net.log(format!(
            "holds of g{slot} existing now are uncovered: {why}"
        ));
        self.inner().windows.push(Window {
            kind: allowed::UNCOVERED,
            slot: Some(slot),
            master: None,
            from: Instant::now(),
            to: None,
            existing: true,
        });
    }

    /// The newest epoch any master of any group slot has seen (a write's or an acquire's).
    pub(crate) fn newest_epoch(world: &World) -> u64 {
        (0..world.net.len())
            .map(|i| topology(world, i).epoch)
            .max()
            .unwrap_or(0)
    }

    /// The newest spec epoch stored on any master of any group slot.
    pub(crate) fn newest_spec_epoch(world: &World) -> u64 {
        (0..world.net.len())
            .map(|i| topology(world, i).spec_epoch)
            .max()
            .unwrap_or(0)
    }

    /// The newest spec epoch stored on a master of group slot `slot` (0: none).
    pub(crate) fn spec_epoch(world: &World, slot: usize) -> u64 {
        world
            .masters(slot)
            .map(|i| topology(world, i).spec_epoch)
            .max()
            .unwrap_or(0)
    }

    /// Masters `lost` of group slot `slot` just lost their data (a restart without data, a
    /// takeover), the group's states having been `before` (per master of the slot, read just
    /// before) and its newest spec epoch `need`: each one's group is unsealed until it stores
    /// the topology again (counted, never an allowance with the sealed topology); and if every
    /// master that kept a restriction a quorum had established lost it now, the group is open
    /// to old views from now on (seal.rs: what remains).
    pub(crate) fn topology_lost(
        &self,
        world: &World,
        slot: usize,
        lost: &[usize],
        before: &[(usize, State)],
        need: u64,
    ) {
        if need == 0 {
            return;
        }
        let mut i = self.inner();
        for &m in lost {
            world.net.log(format!(
                "master {m} lost the topology of group g{slot} (spec epoch {need})"
            ));
            i.windows.push(Window {
                kind: allowed::TOPOLOGY_LOST,
                slot: Some(slot),
                master: Some((m, need)),
                from: Instant::now(),
                to: None,
                existing: false,
            });
        }
        let established = i.established.entry(slot).or_default();
        establish(established, before.iter().map(|(_, s)| s));
        let after: Vec<&State> = before
            .iter()
            .filter(|(m, _)| !lost.contains(m))
            .map(|(_, s)| s)
            .collect();
        let gone: Vec<Restriction> = established
            .iter()
            .filter(|r| !after.iter().any(|s| r.kept_by(s)))
            .cloned()
            .collect();
        if gone.is_empty() {
            return;
        }
        for r in &gone {
            established.remove(r);
        }
        let already = i.windows.iter().any(|w| {
            w.slot == Some(slot) && w.to.is_none() && w.kind == allowed::TOPOLOGY_MAJORITY_LOST
        });
        world.net.log(format!(
            "every master of g{slot} that kept {gone:?} lost its topology state before a seal"
        ));
        if !already {
            i.windows.push(Window {
                kind: allowed::TOPOLOGY_MAJORITY_LOST,
                slot: Some(slot),
                master: None,
                from: Instant::now(),
                to: None,
                existing: false,
            });
        }
    }

    /// The observer read group slot `slot`'s `states`: the restrictions a quorum keeps now are
    /// established.
    fn observed(&self, slot: usize, states: &[State]) {
        let mut i = self.inner();
        establish(i.established.entry(slot).or_default(), states.iter());
    }

    /// Each master of group slot `slot` with its topology state, read now.
    pub(crate) fn states(world: &World, slot: usize) -> Vec<(usize, State)> {
        world
            .masters(slot)
            .map(|m| (m, topology(world, m)))
            .collect()
    }

    /// Most of group slot `slot`'s masters lost their fencing counters at once: tokens of the
    /// group may go backwards from now on (README "Fencing counters").
    pub(crate) fn fence_lost_at(&self, world: &World, slot: usize) {
        world.net.log(format!(
            "most of g{slot} lost its fencing counters at once (tokens may go backwards)"
        ));
        self.inner().windows.push(Window {
            kind: allowed::FENCE_LOST,
            slot: Some(slot),
            master: None,
            from: Instant::now(),
            to: None,
            existing: false,
        });
    }

    /// Whether a token order between `a` and `b` is allowed by a fencing loss of a group one of
    /// them held, the later one acquired after the loss.
    fn fence_lost(
        &self,
        (ia, a): (usize, &Holding),
        (ib, b): (usize, &Holding),
    ) -> Option<&'static str> {
        let i = self.inner();
        let later = a.started.max(b.started);
        let groups = |index: usize| i.holds.get(&index).map(|h| h.0.clone()).unwrap_or_default();
        let (ga, gb) = (groups(ia), groups(ib));
        i.windows
            .iter()
            .filter(|w| w.kind == allowed::FENCE_LOST && w.from <= later)
            .any(|w| ga.iter().chain(&gb).any(|g| slot_of(g) == w.slot))
            .then_some(allowed::FENCE_LOST)
    }

    /// An administrator enters (`true`) or leaves `change_groups`.
    pub(crate) fn admin(&self, entering: bool, linger: Duration) {
        let mut i = self.inner();
        let now = Instant::now();
        if entering {
            i.admins_in += 1;
            if i.admins_in == 2 {
                *i.events.entry("two changes at once").or_default() += 1;
                i.concurrent_since = Some(now);
            }
        } else {
            i.admins_in -= 1;
            if i.admins_in == 1
                && let Some(from) = i.concurrent_since.take()
            {
                i.windows.push(Window {
                    kind: allowed::CONCURRENT_ADMINS,
                    slot: None,
                    master: None,
                    from,
                    to: Some(now + linger),
                    existing: false,
                });
            }
        }
    }

    /// Whether another administrator was inside `change_groups` at some moment since `since`
    /// (now, or in a two-changes window that began after `since`).
    pub(crate) fn other_admin_since(&self, since: Instant) -> bool {
        let i = self.inner();
        i.admins_in >= 2
            || i.windows
                .iter()
                .any(|w| w.kind == allowed::CONCURRENT_ADMINS && w.from >= since)
    }

    /// The documented non-guarantee that allows an overlap or a token order between `a` and
    /// `b` (holdings `ia`, `ib`), if any.
    fn allowance(
        &self,
        (ia, a): (usize, &Holding),
        (ib, b): (usize, &Holding),
    ) -> Option<&'static str> {
        if a.uncovered || b.uncovered {
            return Some(allowed::UNCOVERED);
        }
        let i = self.inner();
        // An uncovered fault first: it explains the others (data lost without the quarantine
        // also loses the topology).
        let uncovered = i.windows.iter().filter(|w| w.kind == allowed::UNCOVERED);
        let others = i.windows.iter().filter(|w| w.kind != allowed::UNCOVERED);
        for w in uncovered.chain(others) {
            if w.kind == allowed::FENCE_LOST
                || (w.kind == allowed::TOPOLOGY_LOST && TOPOLOGY_SEALED)
                || (w.kind == allowed::CONCURRENT_ADMINS && CONCURRENT_ADMINS_SAFE)
            {
                continue;
            }
            let hit = |index: usize, h: &Holding| {
                let to = w.to.unwrap_or(h.end());
                let in_time = if w.existing {
                    h.started < w.from && w.from < h.end()
                } else {
                    h.started < to && w.from < h.end().max(h.started)
                };
                let in_group = w.slot.is_none_or(|slot| {
                    i.holds
                        .get(&index)
                        .is_some_and(|(groups, _)| groups.iter().any(|g| slot_of(g) == Some(slot)))
                });
                in_time && in_group
            };
            if hit(ia, a) || hit(ib, b) {
                return Some(w.kind);
            }
        }
        None
    }

    /// Pins seen on a quorum of a group that contradict each other (checked as they are seen).
    fn pinned(&self, slot: usize, epoch: u64, digest: &str, world: &World) {
        let mut i = self.inner();
        let set = i.pins.entry((slot, epoch)).or_default();
        if !set.insert(digest.to_owned()) || set.len() < 2 {
            return;
        }
        let digests = set.clone();
        let lost = i
            .windows
            .iter()
            .filter(|w| w.slot == Some(slot) && topology_allows(w.kind))
            .map(|w| w.kind)
            .next();
        if let Some(kind) = lost {
            world.net.log(format!(
                "allowed ({kind}): two specs pinned to epoch {epoch} on a quorum of g{slot}"
            ));
            drop(i);
            world.history.non_guarantee(kind);
            return;
        }
        i.violations.push(format!(
            "two specs pinned to epoch {epoch} on a quorum of group g{slot}: {digests:?}"
        ));
    }

    /// Ends the lost-topology windows of masters that store their group's topology again
    /// (sealed: with a seal generation; before item 1: with the spec epoch it lost).
    fn resealed(&self, world: &World, m: usize, state: &State) {
        let mut i = self.inner();
        for w in i.windows.iter_mut() {
            if let Some((master, need)) = w.master
                && master == m
                && w.to.is_none()
                && (if TOPOLOGY_SEALED {
                    state.sealed
                } else {
                    state.spec_epoch >= need
                })
            {
                w.to = Some(Instant::now());
                world
                    .net
                    .log(format!("master {m} stores its group's topology again"));
            }
        }
    }
}

/// Whether a lost-topology window of `kind` allows an overlap, token or pin: before item 1
/// any lost state does; with the sealed topology, only most of a group's at once.
fn topology_allows(kind: &str) -> bool {
    match kind {
        allowed::TOPOLOGY_LOST => !TOPOLOGY_SEALED,
        allowed::TOPOLOGY_MAJORITY_LOST => true,
        _ => false,
    }
}

/// A restriction of `seal.rs`'s proof, kept by a master whose state refuses what it refuses:
/// "the epoch is at least `epoch`" (`digest` `None`), or "`epoch` pins `digest`".
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Restriction {
    epoch: u64,
    digest: Option<String>,
}

impl Restriction {
    /// Whether a master in state `s` refuses what this restriction refuses.
    fn kept_by(&self, s: &State) -> bool {
        match &self.digest {
            None => s.epoch >= self.epoch,
            Some(d) => {
                s.epoch > self.epoch
                    || (s.epoch == self.epoch
                        && s.digest
                            .as_deref()
                            .is_some_and(|x| x == d || x == "conflict"))
            }
        }
    }
}

/// Adds to `established` every restriction that a quorum of `states` (one group's masters, all
/// read at one moment) keeps.
fn establish<'a>(established: &mut BTreeSet<Restriction>, states: impl Iterator<Item = &'a State>) {
    let states: Vec<&State> = states.collect();
    let quorum = GROUP / 2 + 1;
    for s in &states {
        if s.epoch == 0 {
            continue;
        }
        let candidates = [
            Restriction {
                epoch: s.epoch,
                digest: None,
            },
            Restriction {
                epoch: s.epoch,
                digest: s.digest.clone(),
            },
        ];
        for r in candidates {
            if states.iter().filter(|o| r.kept_by(o)).count() >= quorum {
                established.insert(r);
            }
        }
    }
}

/// One master's topology state, read directly.
pub(crate) struct State {
    epoch: u64,
    digest: Option<String>,
    spec_epoch: u64,
    /// With a seal generation (`gen`, item 1).
    sealed: bool,
}

fn topology(world: &World, i: usize) -> State {
    let key = format!("{}topology:state", redquorum::defaults::DEFAULT_KEY_PREFIX);
    let field = |f: &str| match world
        .net
        .exec_now(i, &[b"HGET".to_vec(), key.clone().into_bytes(), f.into()])
    {
        Value::Bulk(b) => Some(String::from_utf8_lossy(&b).into_owned()),
        _ => None,
    };
    let number = |f: &str| field(f).and_then(|v| v.parse().ok()).unwrap_or(0);
    State {
        epoch: number("epoch"),
        digest: field("digest"),
        spec_epoch: number("spec_epoch"),
        sealed: field("gen").is_some(),
    }
}

/// Reads every master's topology state every few milliseconds until `done`: records the
/// (epoch, digest) pins a quorum of a group shares, and ends lost-topology windows.
pub(crate) async fn observe(world: World, done: CancellationToken) {
    let quorum = GROUP / 2 + 1;
    while !done.is_cancelled() {
        for slot in 0..world.plan.slots {
            let mut count: BTreeMap<(u64, String), usize> = BTreeMap::new();
            let mut states = Vec::new();
            for m in world.masters(slot) {
                let state = topology(&world, m);
                world.side.resealed(&world, m, &state);
                if let Some(digest) = &state.digest {
                    *count.entry((state.epoch, digest.clone())).or_default() += 1;
                }
                states.push(state);
            }
            world.side.observed(slot, &states);
            for ((epoch, digest), n) in count {
                if n >= quorum {
                    world.side.pinned(slot, epoch, &digest, &world);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The verdict over the whole run: overlaps and tokens backwards per resource, each either a
/// violation or counted under the non-guarantee that allows it; the observer's violations;
/// holders past their validity (counted). Returns (violations, allowed by kind).
pub(crate) fn verdict(world: &World) -> (Vec<String>, BTreeMap<&'static str, u64>) {
    let holdings = world.history.holdings();
    let side = &world.side;
    let mut out = side.inner().violations.clone();
    let mut allowed: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut verdict = |found: String, allowance: Option<&'static str>| match allowance {
        Some(kind) => {
            world.net.log(format!("allowed ({kind}): {found}"));
            *allowed.entry(kind).or_default() += 1;
        }
        None => out.push(found),
    };
    // Every holding is a mutex holding of one resource (a sharded lock on two resources is
    // two holdings).
    for (ia, a) in holdings.iter().enumerate() {
        for (ib, b) in holdings.iter().enumerate().skip(ia + 1) {
            if a.resource != b.resource {
                continue;
            }
            if a.acquired < b.end() && b.acquired < a.end() {
                let found = history::overlaps(&[clean(a), clean(b)], world.base);
                for f in found {
                    verdict(f, side.allowance((ia, a), (ib, b)));
                }
            }
            let found = history::tokens_backwards(&[clean(a), clean(b)]);
            if !found.is_empty() {
                let epochs = {
                    let i = side.inner();
                    (i.holds.get(&ia).map(|h| h.1), i.holds.get(&ib).map(|h| h.1))
                };
                for f in found {
                    let allowance = side
                        .allowance((ia, a), (ib, b))
                        .or_else(|| side.fence_lost((ia, a), (ib, b)));
                    verdict(format!("{f} (epochs {epochs:?})"), allowance);
                }
            }
        }
    }
    let (used, overlapped) = history::past_validity(&holdings);
    allowed.insert(allowed::USED_PAST_VALIDITY, used);
    allowed.insert(allowed::OVERLAP_PAST_VALIDITY, overlapped);
    allowed.retain(|_, n| *n > 0);
    (out, allowed)
}

/// `h` as the history's checks see it when this module classifies (never skipped there).
fn clean(h: &Holding) -> Holding {
    Holding {
        uncovered: false,
        ..h.clone()
    }
}

/// Quiet-phase keys left on any master of any group slot.
pub(crate) fn leftovers(world: &World) -> Vec<String> {
    crate::run::leftovers(&world.net)
}
