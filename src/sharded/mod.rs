//! [`ShardedRedlock`]: locks over several independent quorum groups, each resource placed on
//! one group by the ketama ring over the group names (weighted), with group changes that
//! never allow two holders.
//!
//! # Placement
//! Resource `r` lives on `owner(r)`, the ring's node for `r` among the current groups. Each
//! group is a normal [`Redlock`] (its own masters, quorum, fencing counter, seals, restart
//! quarantine): what a lock guarantees within a group is unchanged. A lock on several
//! resources groups them by group and acquires the groups one by one in name order, each as
//! one multi-resource round (all or none per master); a failure in a later group releases the
//! holds already taken, so the lock is taken or given back as a unit. Every client takes the
//! groups in the same order and holds only groups before the one it waits for, so no cycle of
//! waiters (deadlock) can form; waits are bounded by the acquire wait anyway.
//!
//! # Built on the core
//! - Each group's share of a lock is won by the multi-resource acquire
//!   (`Redlock::acquire_names`, `primitives/multi.rs`): the same names checks as the basic lock
//!   (a name whose key is a fencing key, or under the key prefix with the interop layout, is
//!   refused before any master is asked), the same round, retry loop, guard and rollback.
//! - A lock over several groups is returned only while valid: its validity is the smallest of
//!   the groups' holds, each measured from its own round's start minus its drift. A lock whose
//!   first hold ran out while a later group was being won is given back and tried again while
//!   the wait lasts (a single try then answers "not granted").
//! - [`ShardedRedlock::with_lock`] keeps the lock by the core's lease (`lease.rs`): jeopardy,
//!   the extension cap it was asked with (`LockOptions::max_lease`), and `lost` no later than
//!   the validity deadline even while a renewal hangs.
//! - The stored spec records each group's key prefix and fencing key. A client learning a
//!   group from it connects with those keys; a client given a group with other keys, or a
//!   known group name with other masters (group identity: its name and its masters), gets
//!   [`Error::TopologyMismatch`], and so does a change that would do either.
//!
//! # The topology on the masters
//! Each topology has an **epoch**. It is stored (`store.rs`) on every master of every group as
//! a hash with the spec (groups, weights, masters, max TTL, previous groups) and the newest
//! epoch the master has seen. Every sharded acquire and extend of a group is the
//! multi-resource lock's (`scripts/multi_acquire.lua`, `multi_extend.lua`) with the epoch
//! check on: the script first compares the client's epoch `c` with the master's `s`: `s > c`
//! refuses with `STALETOPOLOGY`, touching nothing; `s < c` raises `s` to `c`; then the
//! multi-resource acquire. A refused client reloads the newest stored spec and
//! retries (a bounded number of times, within its wait). A client that never reloads is
//! refused on a quorum of every group once a newer epoch is stored there: it cannot grant
//! anything.
//!
//! # A group change (joint phase)
//! [`ShardedRedlock::change_groups`] from the final topology `F(e)` (epoch `e`) to groups `G'`:
//! 1. store the **joint** topology `J(e+1)` (groups `G'`, previous groups `G`) on a quorum of
//!    every group of `G ∪ G'`. Under `J`, an acquire of `r` must win on `owner_G(r)` *and*
//!    `owner_G'(r)` (one group when they are equal: only resources whose owner changes pay);
//! 2. wait `max_ttl + drift(max_ttl)` from the moment step 1 completed;
//! 3. store the **final** topology `F(e+2)` (groups `G'` only) the same way.
//!
//! A change interrupted after step 1 started (an error, a crash) is resumed by the next
//! `change_groups`: it stores the joint topology again on a quorum of every group (it may have
//! reached only some masters, so old-view grants may still have been possible) and only then
//! starts the wait.
//!
//! Resources whose ring owner does not change keep their group throughout; the ones that move
//! are exactly those whose owner differs between the two rings (`HashRing`'s own math, checked
//! by `tests/sharded.rs` over many resources).
//!
//! **No two holders.** Take two holds `H1`, `H2` of one resource, granted under epochs
//! `a <= b`, overlapping in time.
//! - `b <= a + 1`: the placements of adjacent epochs share a group (`F(e)` and `J(e+1)` share
//!   `owner_G(r)`; `J(e+1)` and `F(e+2)` share `owner_G'(r)`), and both holds hold the same
//!   key on a quorum of that group: the ordinary Redlock argument excludes the overlap.
//! - `b >= a + 2`: then an epoch `a+1` joint topology `J` sits between them. Epoch `b` only
//!   exists once `J`'s final successor was written, that is after the wait of step 2, which
//!   started once `J` was on a quorum of every group (time `T`). `H1` needed a quorum of its
//!   group with stored epoch `<= a`, which meets `J`'s quorum on a master that granted `H1`
//!   before it stored `J`: `H1`'s round started before `T`, so its validity ended before
//!   `T + max_ttl - drift`. Its extensions do not help it (next section). So `H1` ended before
//!   `H2` could start.
//!
//! # Extensions
//! A hold granted under a final epoch `f` extends only while the masters store `<= f`; one
//! granted under a joint epoch `j` while they store `<= j + 1` (its placement, old and new
//! owner, covers the final owner). The extend script refuses otherwise, on a quorum, so no
//! extension pushes a hold past the wait of the next change. The price: a topology change
//! ends the extension of final-epoch holds (`with_lock` reports the lock lost at the end of
//! its validity); a lock that must outlive a change must be re-acquired.
//!
//! # Fencing tokens: ordered as the basic lock's
//! A sharded token is `(epoch << 48) | counter`, where `counter` is the fencing token of the
//! resource's owner group in that epoch (the group's own namespace counter, ordered as
//! `fencing.rs` proves: a grant whose round started after another grant completed gets a
//! larger token; overlapping rounds are not ordered). During a joint phase the token comes
//! from the new owner. Claim: if `H2`'s round started after `H1` was granted, for the same
//! resource, `H2`'s token is larger. Proof: `H1` (epoch `a`) raised the stored epoch to `>= a` on a quorum of each of
//! its groups before it was granted. If `H2`'s epoch `b` were `< a`: for `b = a - 1` the two
//! placements share a group (previous section) whose quorum stores `>= a`, so `H2`'s acquire
//! there is refused; for `b <= a - 2`, epoch `a` exists only after `a - 1` was stored on a
//! quorum of every group, refusing `H2` as well. So `b >= a`. If `b > a`, the high bits are
//! larger. If `b == a`, both tokens come from the same group's counter (the owner in that
//! epoch), and `H2`'s round started after `H1`'s grant completed, so `fencing.rs` orders them. The bound: counters below `2^48` (a group granting
//! 100,000 locks per second reaches it after 89 years) and epochs below `2^16` (32,767
//! changes); past either the acquire or change fails with a typed error rather than wrap.
//!
//! # An epoch pins exactly one spec
//! Each master stores, besides the spec, the newest epoch it has seen and the **digest** of
//! the spec pinned to that epoch. A topology write and every sharded acquire carry both; a
//! master refuses (`TOPOLOGYCONFLICT`) a write or an acquire whose digest differs from the one
//! pinned to the same epoch, and pins its own otherwise. An extend carries the digest of its
//! hold's spec and, for a joint hold, of that change's final spec (`Topology::final_of`), and
//! is refused where another spec is pinned. So two specs of one epoch can never both be on a
//! quorum of one group, and a hold granted under one was granted on a quorum that pinned it.
//!
//! Why that suffices: a spec at epoch `e >= 2` is a joint one built from the final spec of
//! epoch `e - 1`, or that final spec; a final spec is written only after its joint one was on a
//! quorum of every group (so finals are unique per epoch: two joint specs of one epoch share
//! their previous groups and cannot both be on a quorum of one). Two joint specs of one epoch
//! (an interrupted change's, stored on a few masters, and another one) therefore share the
//! previous owner of every resource: holds under them exclude each other on that group, as in
//! the `b <= a + 1` case above. Epoch 1 has no previous spec: a client routes by a first
//! topology only once it is on a quorum of every group it names (`connect`; the same spec is
//! accepted again), so at most one first topology is ever routed by.
//!
//! A change takes an epoch above every epoch a quorum of each of its groups reports (an
//! acquire routed with a spec stored on few masters may have pinned it). An interrupted change
//! goes on from a newer spec or a finished joint spec's final when a master reports one;
//! otherwise it is finished with exactly the joint spec of its epoch pinned on a quorum (of a
//! previous group), which may be another administrator's, or replaced under an epoch above
//! every epoch a quorum of any involved group reports, with the same previous groups, and
//! stored on every group any joint spec of that epoch names (`change.rs`, with the invariant
//! and its proof).
//!
//! # A sealed topology
//! Everything above counts only masters whose topology state is *sealed* for the server
//! process that answers (`seal.rs`, with the invariant and its proof): a master that lost its
//! state (restart without data, flush) or holds one stored for another process (an old
//! snapshot, a takeover) refuses or is not counted in sharded acquires, extends and topology
//! writes until its state is merged again from what a quorum of its group reports. So "on a
//! quorum" above means a quorum of sealed masters, and it stays true across restarts one
//! after another: the restarted masters come back with the quorum's epoch and pins.
//!
//! # One administrator at a time
//! A change first takes a *change lock* (`change.rs`): a key on each master, set on a quorum of
//! every group the change involves (the current topology's groups, previous ones included,
//! and the new ones), waiting while another administrator holds it. Every topology write of
//! the change carries the lock's token, and a master refuses it (`TOPOLOGYBUSY`) unless its
//! lock key holds that token; writes stop once the lock's validity ran out. Two locks cannot
//! both hold a quorum of one group (the basic lock's argument), so the writes of two changes
//! never both reach a quorum of a group in the same period: changes run one after the other,
//! each on the topology the previous one left (it reloads under the lock). A change that
//! cannot take the lock on a quorum of some group writes nothing. The lock's exclusion is the
//! basic lock's (lost change-lock keys on a majority of a group void it, as for any lock);
//! safety does not rest on it alone: without it, two changes still cannot store two specs of
//! one epoch on a quorum of a group (the pins above), they only fail and retry.
//!
//! # Not guaranteed
//! - **Every master of a group that knew an epoch losing its state before one of them is
//!   sealed again** (most of a group restarting without data at once, say): the group's
//!   topology is then sealed from what is left (logged), and an old view may be accepted
//!   there again (`seal.rs`). Use AOF (`appendfsync always`) on sharded groups' masters.
//! - **Primitives other than the basic and multi-resource lock** (reentrant, fair, read-write,
//!   semaphore) are not epoch-checked: [`ShardedRedlock::group_for`] refuses them with
//!   [`Error::NotEpochChecked`]. [`ShardedRedlock::group_for_unchecked`] hands out the owner
//!   group anyway, for callers who keep changes from moving what they hold there: its holds
//!   are **not** protected across a change. (Checking them would take the epoch check in each
//!   primitive's scripts and a joint-phase acquire on two groups, which a semaphore's or a
//!   fair lock's queue cannot split.)
//!
//! [`change_groups`]: ShardedRedlock::change_groups

mod acquire;
mod builder;
mod change;
mod guard;
mod lease;
mod seal;
mod store;
mod token;
mod topology;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::lock::Redlock;

pub use builder::ShardedBuilder;
pub use change::ChangeReport;
pub use guard::ShardedGuard;
pub use lease::ShardedContext;

use topology::{GroupSpec, Topology};

/// Locks sharded over several independent Redlock groups by the ketama ring: placement, group
/// changes, guarantees and non-guarantees are in the [crate docs](crate#sharding); the proofs
/// are in `src/sharded/mod.rs`.
#[derive(Clone)]
pub struct ShardedRedlock {
    shared: Arc<Shared>,
}

struct Shared {
    view: std::sync::RwLock<Arc<View>>,
    /// The builders given (at build and to changes) and the template for other groups.
    builders: std::sync::Mutex<ShardedBuilder>,
    /// One reload at a time: concurrent acquires refused for the same change reload once.
    reloading: tokio::sync::Mutex<()>,
}

/// A topology and a connected client for each of its groups (current and previous).
pub(crate) struct View {
    pub(crate) topology: Topology,
    pub(crate) groups: BTreeMap<String, Redlock>,
    /// The topology's digest, and during a joint phase its final topology's (computed once).
    pub(crate) digest: String,
    pub(crate) final_digest: Option<String>,
}

impl View {
    pub(crate) fn new(topology: Topology, groups: BTreeMap<String, Redlock>) -> Self {
        Self {
            digest: topology.digest(),
            final_digest: topology.final_of().map(|f| f.digest()),
            topology,
            groups,
        }
    }

    pub(crate) fn group(&self, name: &str) -> &Redlock {
        &self.groups[name]
    }

    pub(crate) fn all(&self) -> Vec<&Redlock> {
        self.groups.values().collect()
    }
}

impl std::fmt::Debug for ShardedRedlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let view = self.view();
        f.debug_struct("ShardedRedlock")
            .field("epoch", &view.topology.epoch)
            .field("groups", &view.groups.keys().collect::<Vec<_>>())
            .field("joint", &view.topology.is_joint())
            .finish()
    }
}

impl ShardedRedlock {
    /// A builder with no groups and the default max TTL.
    pub fn builder() -> ShardedBuilder {
        ShardedBuilder::default()
    }

    /// The topology epoch this client routes by.
    pub fn epoch(&self) -> u64 {
        self.view().topology.epoch
    }

    /// Whether this client's topology is the joint phase of a group change.
    pub fn is_joint(&self) -> bool {
        self.view().topology.is_joint()
    }

    /// The current groups' names and weights.
    pub fn groups(&self) -> Vec<(String, u32)> {
        let view = self.view();
        view.topology
            .groups
            .iter()
            .map(|g| (g.name.clone(), g.weight))
            .collect()
    }

    /// The longest TTL this client grants (stored with the topology).
    pub fn max_ttl(&self) -> Duration {
        self.view().topology.max_ttl
    }

    /// The group that owns `resource` now (its fencing counter gives the resource's tokens).
    pub fn owner(&self, resource: &str) -> String {
        self.view().topology.owner(resource).to_owned()
    }

    /// The groups an acquire of `resource` must win now, in acquire order: the owner, plus
    /// during a change's joint phase the previous owner when it differs.
    pub fn placement(&self, resource: &str) -> Vec<String> {
        let view = self.view();
        view.topology
            .placement(resource)
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    /// Refused: the primitives other than the lock (reentrant, fair, read-write, semaphore)
    /// are not epoch-checked, so on a resource's owner group they would not be protected
    /// across a group change (a holder on the old owner and another on the new one). Use
    /// [`acquire`](Self::acquire) and [`acquire_many`](Self::acquire_many), which are; or,
    /// knowing that no change will move the resource while it is held,
    /// [`group_for_unchecked`](Self::group_for_unchecked).
    ///
    /// # Errors
    /// Always [`Error::NotEpochChecked`].
    pub fn group_for(&self, resource: &str) -> Result<Redlock> {
        Err(Error::NotEpochChecked {
            reason: format!(
                "the primitives on {resource:?}'s owner group ({}) do not check the topology \
                 epoch; use the sharded lock, or group_for_unchecked where no change can move \
                 the resource while it is held",
                self.owner(resource)
            ),
        })
    }

    /// The owner group's [`Redlock`] **without** the topology epoch check: whatever runs on it
    /// (reentrant, fair, read-write, semaphore, or a plain lock) has that group's guarantees
    /// only while no group change moves `resource`. A change that moves it lets a client of
    /// the new topology hold it on the new owner while a hold taken here is still valid (and
    /// keeps extending) on the old one. For primitives on groups whose membership you freeze,
    /// or whose resources you drain before a change.
    pub fn group_for_unchecked(&self, resource: &str) -> Redlock {
        let view = self.view();
        view.group(view.topology.owner(resource)).clone()
    }

    pub(crate) fn view(&self) -> Arc<View> {
        self.shared
            .view
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn set_view(&self, view: View) {
        tracing::info!(
            epoch = view.topology.epoch,
            joint = view.topology.is_joint(),
            "topology adopted"
        );
        *self.shared.view.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(view);
    }

    /// Builds the client: connect the given groups, load or store the topology.
    ///
    /// Bootstrap: a namespace's first topology (epoch 1) has no previous one whose placement
    /// it shares with a rival, so it is routed by only once it is on a quorum of every group
    /// it names. Two clients built at once with different groups: the masters pin the first
    /// spec written to epoch 1, at most one spec reaches a quorum of a group, and each client
    /// either adopts the stored spec (re-stored on a quorum of each of its groups: accepted
    /// only where it is the pinned one) or gets [`Error::TopologyMismatch`].
    async fn connect(builder: ShardedBuilder) -> Result<Self> {
        let given = Topology::new(0, builder.max_ttl, builder.specs(), None)?;
        let groups = connect_groups(&builder, &given, &BTreeMap::new()).await?;
        let mut stored = store::read_newest(&groups.values().collect::<Vec<_>>()).await;
        let mut tries = 0;
        let (topology, groups) = loop {
            tries += 1;
            let (topology, groups) = match stored {
                Some((epoch, spec)) => {
                    let stored = Topology::decode(epoch, &spec)?;
                    topology::check_identity(&stored.all_groups(), &given.groups)?;
                    if stored.groups != given.groups || stored.max_ttl != builder.max_ttl {
                        tracing::warn!(epoch, "the masters store another topology; routing by it");
                    }
                    let groups = connect_groups(&builder, &stored, &groups).await?;
                    (stored, groups)
                }
                None => (
                    Topology::new(1, given.max_ttl, given.groups.clone(), None)?,
                    groups.clone(),
                ),
            };
            if topology.epoch != 1 {
                break (topology, groups);
            }
            let all: Vec<&Redlock> = groups.values().collect();
            match seal::write_quorums(&all, &topology, None).await {
                Ok(()) => break (topology, groups),
                // Another first topology got there first: adopt it if it is the pinned one.
                Err(e) if store::is_stale(&e) && tries < 2 => {
                    stored = store::read_newest(&all).await;
                }
                Err(e) if store::is_stale(&e) => {
                    return Err(Error::TopologyMismatch {
                        reason: format!(
                            "another first topology was stored at the same time and neither is \
                             on a quorum of every group ({e})"
                        ),
                    });
                }
                Err(e) => return Err(e),
            }
        };
        Ok(Self {
            shared: Arc::new(Shared {
                view: std::sync::RwLock::new(Arc::new(View::new(topology, groups))),
                builders: std::sync::Mutex::new(builder),
                reloading: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// Loads the newest topology stored on the masters of every group this client knows, and
    /// routes by it if it is newer than this client's. Returns the epoch routed by after.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when no group of this client's view had a quorum answer (a
    /// newer topology cannot be ruled out: every change is stored on a quorum of every group
    /// of the topology it replaces); [`Error::InvalidConfig`] for a stored spec that does not
    /// parse; a new group's build error.
    pub async fn reload(&self) -> Result<u64> {
        self.reload_from(true).await
    }

    /// [`reload`](Self::reload) from whatever answers: for routing after a refusal, where the
    /// masters' epoch checks keep a view that missed something safe.
    pub(crate) async fn refresh(&self) -> Result<u64> {
        self.reload_from(false).await
    }

    async fn reload_from(&self, need_quorum: bool) -> Result<u64> {
        let _one = self.shared.reloading.lock().await;
        let view = self.view();
        let newest = if need_quorum {
            store::read_newest_checked(&view.all()).await?
        } else {
            store::read_newest(&view.all()).await
        };
        let Some((epoch, spec)) = newest else {
            return Ok(view.topology.epoch);
        };
        let newer = epoch > view.topology.epoch;
        // The same epoch with another spec: the one more masters store (an interrupted change
        // replaced; the masters refuse the other from now on).
        let replaced = epoch == view.topology.epoch && spec != view.topology.encode();
        if !newer && !replaced {
            return Ok(view.topology.epoch);
        }
        self.adopt(Topology::decode(epoch, &spec)?).await?;
        Ok(epoch)
    }

    /// Routes by `topology` from now on, connecting the groups it names that are new.
    pub(crate) async fn adopt(&self, topology: Topology) -> Result<()> {
        let view = self.connect_view(topology).await?;
        self.set_view(view);
        Ok(())
    }

    /// A view of `topology`, with the groups this client does not know yet connected.
    pub(crate) async fn connect_view(&self, topology: Topology) -> Result<View> {
        let builder = self.builders();
        let current = self.view();
        let groups = connect_groups(&builder, &topology, &current.groups).await?;
        Ok(View::new(topology, groups))
    }

    pub(crate) fn builders(&self) -> ShardedBuilder {
        self.shared
            .builders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn remember_builders(&self, groups: &[(String, u32, crate::Builder)]) {
        let mut builders = self
            .shared
            .builders
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for g in groups {
            builders.groups.retain(|(name, _, _)| *name != g.0);
            builders.groups.push(g.clone());
        }
    }
}

/// A client for every group of `topology`: reused from `known` when the masters are the same,
/// else built (concurrently).
async fn connect_groups(
    builder: &ShardedBuilder,
    topology: &Topology,
    known: &BTreeMap<String, Redlock>,
) -> Result<BTreeMap<String, Redlock>> {
    let builds = topology.all_groups().into_iter().map(|spec: &GroupSpec| {
        let reuse = known
            .get(&spec.name)
            .filter(|r| same_masters(r, spec))
            .cloned();
        let build = builder.builder_for(spec);
        let name = spec.name.clone();
        async move {
            let redlock = match reuse {
                Some(r) => r,
                None => build.build().await?,
            };
            Ok::<_, Error>((name, redlock))
        }
    });
    futures::future::try_join_all(builds)
        .await
        .map(|v| v.into_iter().collect())
}

fn same_masters(redlock: &Redlock, spec: &GroupSpec) -> bool {
    redlock.master_set().len() == spec.masters.len()
        && redlock
            .master_set()
            .iter()
            .zip(&spec.masters)
            .all(|(m, url)| m.addr == crate::error::redact_url(url))
}
