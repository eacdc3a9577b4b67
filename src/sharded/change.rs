//! Group changes: store the joint topology, wait out every lock granted before it, store the
//! final one (module docs of `sharded`, "A group change"), under a change lock; and resuming
//! a change that was cut off part-way.
//!
//! # Resuming an interrupted change
//! A change cut off after it began storing its joint spec leaves that spec on some masters.
//! Two administrators can each leave one of the same epoch `e` (the masters pin one spec per
//! epoch, so at most one of them reaches a quorum of any group): B's cut off right after its
//! change lock, stored on a few masters; A's, whose reads missed those masters, completed, and
//! A cut off while storing its final spec `F_A(e+1)`, which only A's added group `c` took. A
//! client built then routes by `F_A`. B's view is its own joint spec (read from the masters
//! that store it). The resume used to replace B's spec under `e + 1` on B's groups only: `c`
//! never heard of it, and a client of `F_A` held on `c` what a client of B's final held on
//! B's added group (`tests/sharded_admins.rs`).
//!
//! **What a resume does** (`settle`), once storing the view's joint spec `J` again was refused:
//! 1. read, from a quorum of every group of `J`, every joint spec of epoch `e` stored; `U` is
//!    every group any of them names (previous groups `P`, shared by every joint spec of one
//!    epoch: each is built from the final spec of the epoch before it, under the change lock);
//! 2. take the change lock on the groups of `U` it lacks (`ChangeLock::cover`) and read a
//!    quorum of every group of `U`;
//! 3. a spec above `e` read anywhere: adopt the newest and go on from it (nothing written);
//! 4. a master at epoch `e + 1` pinning the digest of the final spec of one of the joint
//!    specs: that change was finished; adopt that final spec (it follows from the joint spec
//!    alone) and go on from it;
//! 5. otherwise store one joint spec of epoch `e` exactly, the one pinned on the most masters
//!    of `P` first, on a quorum of every group of `U`; if every one is refused, store the
//!    first under an epoch above every epoch read, with its groups and `P`, on `U` as well.
//!    Then the wait, and the final spec, stored on every group of `U`.
//!
//! **Invariant.** What a resume stores is either exactly the joint spec `X` of epoch `e`
//! pinned on a quorum of a group of `P` (if one is) or a spec under an epoch above every
//! epoch established on a quorum of any group of `U`, and it reaches a quorum of every group
//! of `U`; and a resume never stores a joint spec of epoch `e` while a final spec of epoch
//! `e + 1` has a holder.
//!
//! **Proof.** Masters keep restrictions established on a quorum (a pin, a raised epoch)
//! across restarts (`seal.rs`), and a read of a quorum meets every quorum of the same group.
//! - *At most one joint spec of epoch `e` was completed*, that is stored on a quorum of every
//!   group it names: two would both be pinned on a quorum of one group of `P`. Only a
//!   completed joint spec gets a final spec (`finish_change` runs after the store), so at most
//!   one final spec `F_X(e+1)` exists, and only `X` can be pinned on a quorum of a group of
//!   `P`. A completed `X` is read in step 1: its write left its spec on a quorum of every
//!   group of `P`, and a master replaces a stored spec only by a newer one (a write, or a
//!   seal's merge), which step 3 then reads instead.
//! - *A holder under `F_X` was granted on a quorum of its owner group `g`*, a group of `X`,
//!   so of `U`, which then pinned epoch `e + 1` (or more). Step 2 reads a master of that
//!   quorum: it reports `e + 1` with `F_X`'s digest (step 4), a spec above `e` (step 3), or
//!   a higher epoch. So with such a holder the resume stores no spec of epoch `e`; from the
//!   adopted spec the change goes on as any change: an epoch above every one reported by a
//!   quorum of each of its groups, previous groups = the adopted spec's, stored on a quorum
//!   of each. The `b <= a + 1` case of `mod.rs` then excludes a second holder.
//! - *Otherwise no final spec of epoch `e + 1` has a holder*, and holders exist only under
//!   joint specs of epoch `e`. Each of their placements contains the resource's owner in `P`,
//!   won on a quorum of it. Step 5 stores a joint spec with the same `P` on a quorum of every
//!   group of `U`: a spec of epoch `e` is accepted on a quorum of a group of `P` only where no
//!   other is pinned on a quorum, so only `X` if `X` is pinned on a quorum of one; a
//!   replacement takes an epoch above every epoch read (`highest_of` over a quorum of each
//!   group of `U`, the other administrator's added groups included), so above every epoch
//!   established on a quorum of any of them. Either way the spec stored shares the previous
//!   owner of every resource with every joint spec of epoch `e`: holds under them and under
//!   it exclude each other on that group (the basic lock's argument on one key), and the
//!   wait then runs from a store on a quorum of every group of `U`, so the `b >= a + 2` case
//!   of `mod.rs` covers the final spec. The groups that only another administrator's spec
//!   added get the new epoch too, so a client that routes by that spec is refused there.
//! - *Nothing else writes meanwhile*: the resume holds the change lock on a quorum of every
//!   group of `U` before it reads them, and every topology write is refused where the
//!   writer's lock is not held (`TOPOLOGYBUSY`).
//!
//! # The change lock is not a lease
//! It is taken for `2 * max_ttl + 10 s` (`CHANGE_LOCK_SLACK`), enough for one joint phase
//! (one max TTL plus drift, for any drift factor the builder accepts) and its writes, and
//! taken again with the same token (`ChangeLock::renew`) before each further phase: each
//! resume, and the call's own change after one. It is not kept alive in the background. (Taken
//! once for a whole call, a resume and the call's own change did not fit with a large drift
//! factor or max TTL, and every call after an interruption failed at its final store, found
//! by review: `tests/sharded_admins.rs`.) A phase that outlives it (a process paused between
//! its joint and its final spec) stores nothing more: `store_everywhere` refuses
//! to send after the lock's validity, and a write already on its way is refused on every
//! master where the lock key no longer holds its token (`TOPOLOGYBUSY`: expired, or taken by
//! another administrator). The change then fails ("call again"), and whoever takes the lock
//! next resumes it as above. Safety does not rest on the lock (the pins above exclude two
//! specs of one epoch on a quorum without it); it keeps administrators from failing each
//! other's writes.
//!
//! What remains: a spec stored only on masters the resume did not read (fewer than a quorum
//! of every group) whose epoch was raised by acquires after the reads: the resume's write is
//! then refused there and it fails ("call again"), it does not overlap. A joint spec of epoch
//! `e` with other previous groups (which the change lock and the epoch rule keep from being
//! built) only adds its groups to `U`; it is never finished. A resume needs a quorum of every
//! group of `U`: while a group that only the other administrator added is unreachable, the
//! resume fails with [`Error::Unavailable`] rather than guess.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use redis::Value;
use tokio::time::Instant;

use crate::config::Builder;
use crate::error::{Error, Result};
use crate::lock::Redlock;
use crate::quorum::{Decision, drift};
use crate::scripts::{ScriptCall, TOPOLOGY_CHANGE_LOCK};

use super::token::MAX_EPOCH;
use super::topology::{GroupSpec, Topology};
use super::{ShardedRedlock, View, store};
use crate::invalid::ConfigReason;

/// What a group change did and what it cost.
#[derive(Clone, Debug)]
pub struct ChangeReport {
    /// The joint topology's epoch.
    pub joint_epoch: u64,
    /// The final topology's epoch.
    pub final_epoch: u64,
    /// Storing the joint topology on a quorum of every group.
    pub joint_stored_in: Duration,
    /// The wait for every lock granted under the previous topology to expire.
    pub waited: Duration,
    /// Storing the final topology.
    pub final_stored_in: Duration,
}

impl ShardedRedlock {
    /// Changes the groups to `groups` (name, weight, configuration with the masters): adds,
    /// removes and re-weights. Takes about the max TTL (the joint phase); acquires keep
    /// working throughout, resources that move pay one extra group while it lasts. A change
    /// interrupted earlier (a joint topology stored, no final one) is finished first.
    ///
    /// Changes from several clients at once are serialised: a change takes a change lock on a
    /// quorum of every group it involves (old and new) and waits (about one change at most)
    /// while another administrator holds it; each of its topology writes is refused where its
    /// lock is not held. On an error the stored topology may be the joint one: call again to
    /// finish.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for bad groups or when the epochs are used up;
    /// [`Error::TopologyMismatch`] for a group that keeps its name with other masters or other
    /// keys (key prefix, fencing key): remove it and add one under a new name instead;
    /// [`Error::StaleTopology`] when another change got there first; [`Error::Unavailable`]
    /// when a group (old or new) has no quorum to store the topology on;
    /// [`Error::Contended`] when another administrator held the change lock throughout the
    /// wait.
    pub async fn change_groups<I, S>(&self, groups: I) -> Result<ChangeReport>
    where
        I: IntoIterator<Item = (S, u32, Builder)>,
        S: Into<String>,
    {
        let groups: Vec<(String, u32, Builder)> = groups
            .into_iter()
            .map(|(n, w, b)| (n.into(), w, b))
            .collect();
        let specs = groups
            .iter()
            .map(|(name, weight, b)| super::builder::spec_of(name, *weight, b))
            .collect::<Vec<GroupSpec>>();
        self.reload().await?;
        super::topology::check_identity(&self.view().topology.all_groups(), &specs)?;
        self.remember_builders(&groups);
        // One administrator at a time: the change lock on a quorum of every group involved,
        // checked again by every topology write of this change.
        // A change dropped part-way gives the lock back in the background (ChangeLock's Drop).
        let mut lock = self.lock_change(&specs).await?;
        let result = self.change_locked(specs, &mut lock).await;
        lock.release().await;
        result
    }

    /// [`change_groups`](Self::change_groups) once the change lock is held.
    async fn change_locked(
        &self,
        specs: Vec<GroupSpec>,
        lock: &mut ChangeLock,
    ) -> Result<ChangeReport> {
        // Each resume either finishes the stored joint spec or finds a newer change and
        // reloads; a few in a row mean changes keep racing this one.
        let mut resumes = 0;
        while self.view().topology.is_joint() {
            if resumes == MAX_RESUMES {
                return Err(Error::StaleTopology {
                    epoch: self.view().topology.epoch,
                    reason: "other changes kept landing while this one resumed; call again".into(),
                });
            }
            resumes += 1;
            // Each phase (a resume, then the change itself) waits out one joint phase: the
            // lock, sized for one, is renewed before each rather than taken for all of them.
            lock.renew().await?;
            self.resume_change(lock).await?;
        }
        if resumes > 0 {
            lock.renew().await?;
        }
        let current = self.view().topology.clone();
        super::topology::check_identity(&current.all_groups(), &specs)?;
        // Above every epoch a master reports: an acquire routed with a spec stored on few
        // masters may have pinned the next epoch to it on some.
        let seen = store::highest_epoch(&self.view().all()).await?;
        let epoch = current.epoch.max(seen) + 1;
        if epoch + 1 > MAX_EPOCH {
            return Err(Error::InvalidConfig(ConfigReason::EpochsUsedUp {
                max: MAX_EPOCH,
            }));
        }
        let joint = Topology::new(epoch, current.max_ttl, specs, Some(current.groups))?;
        let t0 = Instant::now();
        // Stored first, routed by after: a client must find a spec for every epoch it meets.
        let view = self.connect_view(joint).await?;
        store_everywhere(&view, &view.topology, lock).await?;
        let joint_stored = Instant::now();
        self.set_view(view);
        tracing::info!(
            epoch,
            "joint topology stored; waiting out the previous locks"
        );
        let (waited, final_stored_in) = self.finish_change(joint_stored, lock).await?;
        Ok(ChangeReport {
            joint_epoch: epoch,
            final_epoch: epoch + 1,
            joint_stored_in: joint_stored - t0,
            waited,
            final_stored_in,
        })
    }

    /// Finishes an interrupted change (module docs, "Resuming an interrupted change"): stores
    /// the view's joint spec again, exactly, on a quorum of every group (the same spec under
    /// the same epoch is accepted again). Where it is refused, [`settle`](Self::settle)
    /// decides what to go on from. The wait counts from the store.
    async fn resume_change(&self, lock: &mut ChangeLock) -> Result<()> {
        let view = self.view();
        lock.cover(&view).await?;
        match store_everywhere(&view, &view.topology, lock).await {
            Ok(()) => {}
            Err(e) if store::is_stale(&e) => {
                tracing::info!(
                    epoch = view.topology.epoch,
                    error = %e,
                    "interrupted change refused; looking for the joint spec pinned on a quorum"
                );
                if !self.settle(lock).await? {
                    return Ok(());
                }
            }
            Err(e) => return Err(e),
        }
        self.finish_change(Instant::now(), lock).await?;
        Ok(())
    }

    /// After the view's joint spec `J` (epoch `e`) was refused: reads every joint spec of
    /// epoch `e` the masters of `J`'s groups store, takes the change lock on every group any of
    /// them names as well, reads a quorum of each of those groups, and then, in this order:
    /// adopts a newer spec if one is stored (`false`: the caller goes on from it); adopts the
    /// final spec of one of those joint specs if a master pins it (`false`); stores one of
    /// the joint specs exactly, the one pinned on the most masters of the previous groups
    /// first, on a quorum of every group (`true`: the caller waits and stores its final); or
    /// stores the best pinned one under an epoch above every epoch read (`true`). Every store
    /// goes to every group read, the other administrator's added groups included.
    async fn settle(&self, lock: &mut ChangeLock) -> Result<bool> {
        let own = self.view();
        let joint = own.topology.clone();
        let epoch = joint.epoch;
        // 1. The joint specs of this epoch: the view's and those other masters store. Every
        //    joint spec of one epoch is built from the same final spec (module docs), so they
        //    share the previous groups; a spec of this epoch with others only adds its groups
        //    to what is read and written.
        let read = store::read_each_quorum(&own.all()).await?;
        let mut specs = vec![joint.clone()];
        for (e, spec) in read.iter().flatten().filter_map(|s| s.spec.as_ref()) {
            if *e == epoch && !specs.iter().any(|s| s.encode() == *spec) {
                specs.push(Topology::decode(*e, spec)?);
            }
        }
        // 2. Every group any of them names, under the change lock.
        let mut involved: Vec<GroupSpec> = Vec::new();
        for spec in &specs {
            let groups: Vec<GroupSpec> = spec.all_groups().into_iter().cloned().collect();
            super::topology::check_identity(&involved.iter().collect::<Vec<_>>(), &groups)?;
            for g in groups {
                if !involved.iter().any(|i| i.name == g.name) {
                    involved.push(g);
                }
            }
        }
        let union = self
            .connect_view(Topology::new(0, joint.max_ttl, involved, None)?)
            .await?;
        lock.cover(&union).await?;
        let read = store::read_each_quorum(&union.all()).await?;
        let states: Vec<&store::Stored> = read.iter().flatten().collect();
        let seen = store::highest_of(states.iter().copied());
        // 3. A newer spec: a change came after (the other administrator's final, say).
        if let Some((newer, spec)) = store::newest(states.iter().copied())
            && newer > epoch
        {
            tracing::info!(
                epoch,
                newer,
                "interrupted change superseded; going on from it"
            );
            self.adopt(Topology::decode(newer, &spec)?).await?;
            return Ok(false);
        }
        // 4. The final spec of one of them pinned where its spec is not read (an acquire
        //    routed by it, a write that reached few masters): that joint spec was finished.
        for spec in &specs {
            let Some(last) = spec.final_of() else {
                continue;
            };
            let digest = last.digest();
            if states
                .iter()
                .any(|s| s.epoch == epoch + 1 && s.digest.as_deref() == Some(&digest))
            {
                tracing::info!(
                    epoch,
                    "an interrupted change's final spec is pinned; adopting it"
                );
                self.adopt(last).await?;
                return Ok(false);
            }
        }
        // 5. The joint spec pinned on the most masters of the previous groups first (the one
        //    pinned on a quorum of one of them, if any: no other can be), own first on a tie,
        //    stored exactly; or, refused everywhere, the first under a new epoch.
        let previous: Vec<&str> = joint
            .previous
            .iter()
            .flatten()
            .map(|g| g.name.as_str())
            .collect();
        let pins = |spec: &Topology| {
            let digest = spec.digest();
            union
                .groups
                .keys()
                .zip(&read)
                .filter(|(name, _)| previous.contains(&name.as_str()))
                .flat_map(|(_, states)| states)
                .filter(|s| s.epoch == epoch && s.digest.as_deref() == Some(&digest))
                .count()
        };
        let mut joints: Vec<(usize, Topology)> = specs
            .into_iter()
            .filter(|s| s.previous == joint.previous)
            .map(|s| (pins(&s), s))
            .collect();
        joints.sort_by_key(|(pinned, _)| std::cmp::Reverse(*pinned));
        for (pinned, spec) in &joints {
            let view = View::new(spec.clone(), union.groups.clone());
            match store_everywhere(&view, spec, lock).await {
                Ok(()) => {
                    tracing::info!(epoch, pinned, "interrupted change stored again");
                    self.set_view(view);
                    return Ok(true);
                }
                Err(e) if store::is_stale(&e) => {}
                Err(e) => return Err(e),
            }
        }
        let (pinned, best) = &joints[0];
        let replaced_by = epoch.max(seen) + 1;
        if replaced_by + 1 > MAX_EPOCH {
            return Err(Error::InvalidConfig(ConfigReason::EpochsUsedUp {
                max: MAX_EPOCH,
            }));
        }
        tracing::warn!(
            epoch,
            replaced_by,
            pinned,
            "interrupted change refused everywhere; storing it under a new epoch"
        );
        let replacement = Topology::new(
            replaced_by,
            best.max_ttl,
            best.groups.clone(),
            best.previous.clone(),
        )?;
        let view = View::new(replacement, union.groups.clone());
        store_everywhere(&view, &view.topology, lock).await?;
        self.set_view(view);
        Ok(true)
    }

    /// From the joint topology stored at `stored_at`: waits until every lock granted before it
    /// has expired, then stores and adopts the final topology. Returns the wait and the store
    /// time.
    async fn finish_change(
        &self,
        stored_at: Instant,
        lock: &ChangeLock,
    ) -> Result<(Duration, Duration)> {
        let view = self.view();
        let joint = &view.topology;
        let until = stored_at + joint_wait(&view);
        tokio::time::sleep_until(until).await;
        let waited = stored_at.elapsed();
        let last = joint
            .final_of()
            .ok_or_else(|| Error::InvalidConfig(ConfigReason::NotJoint))?;
        let t1 = Instant::now();
        store_everywhere(&view, &last, lock).await?;
        let stored_in = t1.elapsed();
        // The final view keeps only the current groups' connections: the removed ones close.
        self.adopt(last).await?;
        Ok((waited, stored_in))
    }
}

/// How long after the joint topology is on a quorum of every group a lock granted before it
/// can still be valid: the max TTL, plus the largest drift allowance any group uses.
fn joint_wait(view: &View) -> Duration {
    let ttl = view.topology.max_ttl;
    let factor = view
        .groups
        .values()
        .map(|g: &Redlock| g.config().drift_factor)
        .fold(0.0_f64, f64::max);
    ttl + drift(ttl, factor)
}

/// Stores `topology` on a quorum of every group the view knows (old and new), each write
/// accepted only where `lock` is held, and only while it is valid.
async fn store_everywhere(view: &View, topology: &Topology, lock: &ChangeLock) -> Result<()> {
    let missing: Vec<&String> = view
        .groups
        .keys()
        .filter(|g| !lock.groups.contains_key(*g))
        .collect();
    if !missing.is_empty() || Instant::now() >= lock.valid_until {
        return Err(Error::StaleTopology {
            epoch: topology.epoch,
            reason: format!(
                "the change lock does not cover groups {missing:?} or ran out; call again"
            ),
        });
    }
    super::seal::write_quorums(&view.all(), topology, Some(&lock.token)).await
}

/// The change lock: one key per master (`topology_change_lock.lua`), held on a quorum of every
/// group a change involves, old and new. Two administrators cannot both hold a quorum of one
/// group, and every topology write of a change is refused (`TOPOLOGYBUSY`) on a master where
/// its lock is not held, so the writes of two changes never interleave on a quorum.
pub(crate) struct ChangeLock {
    token: String,
    ttl: Duration,
    groups: BTreeMap<String, Redlock>,
    /// The lock's validity (from before the first group's round, minus drift): no write after.
    valid_until: Instant,
}

impl ChangeLock {
    /// Takes the lock on a quorum of each group of `view`, or gives back what it took.
    async fn take(view: &View, ttl: Duration) -> Result<Option<Self>> {
        let token = crate::random::token();
        let t0 = Instant::now();
        let mut lock = ChangeLock {
            token,
            ttl,
            groups: BTreeMap::new(),
            valid_until: t0 + ttl - drift(ttl, 0.01),
        };
        for (name, group) in &view.groups {
            match lock_group(group, &lock.token, ttl).await {
                Ok(true) => {}
                held_or_failed => {
                    lock.release().await;
                    return held_or_failed.map(|_| None);
                }
            }
            lock.groups.insert(name.clone(), group.clone());
        }
        Ok(Some(lock))
    }

    /// Takes the lock also on the groups of `view` it does not cover yet (a resume that finds
    /// groups another administrator's spec added). Its validity stays the first take's.
    ///
    /// # Errors
    /// [`Error::Contended`] when another administrator holds it on one of them, or this lock's
    /// validity ran out; [`Error::Unavailable`] when failing masters rule a quorum out.
    async fn cover(&mut self, view: &View) -> Result<()> {
        for (name, group) in &view.groups {
            if self.groups.contains_key(name) {
                continue;
            }
            if Instant::now() >= self.valid_until
                || !lock_group(group, &self.token, self.ttl).await?
            {
                return Err(Error::Contended {
                    resource: format!("topology change lock on group {name}"),
                    attempts: 1,
                    waited: Duration::ZERO,
                    replies: crate::error::Replies::default(),
                });
            }
            self.groups.insert(name.clone(), group.clone());
        }
        Ok(())
    }

    /// Takes the lock again, with the same token, on every group it holds: its TTL and its
    /// validity start over (a change that first resumes another waits out two joint phases,
    /// and the lock is sized for one). The masters renew only where this token holds it.
    ///
    /// # Errors
    /// [`Error::Contended`] when another administrator took it meanwhile on a quorum of one
    /// group (this one's had run out there); [`Error::Unavailable`] when failing masters rule
    /// a quorum out.
    async fn renew(&mut self) -> Result<()> {
        let t0 = Instant::now();
        for (name, group) in &self.groups {
            if !lock_group(group, &self.token, self.ttl).await? {
                return Err(Error::Contended {
                    resource: format!("topology change lock on group {name}"),
                    attempts: 1,
                    waited: Duration::ZERO,
                    replies: crate::error::Replies::default(),
                });
            }
        }
        self.valid_until = t0 + self.ttl - drift(self.ttl, 0.01);
        Ok(())
    }

    /// Gives the lock back on every group it was taken on (best effort: it expires anyway).
    async fn release(mut self) {
        let groups = std::mem::take(&mut self.groups);
        release_groups(&self.token, groups).await;
    }
}

/// A lock dropped without [`ChangeLock::release`] (a change whose future was dropped, or one
/// that failed with `?`) is given back in the background, so that it does not hold every
/// other administrator up for its whole TTL.
impl Drop for ChangeLock {
    fn drop(&mut self) {
        if self.groups.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (token, groups) = (self.token.clone(), std::mem::take(&mut self.groups));
        runtime.spawn(async move { release_groups(&token, groups).await });
    }
}

async fn release_groups(token: &str, groups: BTreeMap<String, Redlock>) {
    let releases = groups
        .values()
        .map(|g| lock_group(g, token, Duration::ZERO));
    for released in join_all(releases).await {
        if let Err(e) = released {
            tracing::debug!(error = %e, "change lock release failed; it expires");
        }
    }
}

/// One group's change lock round: `ttl` zero releases. Whether a quorum holds (or released)
/// it; an error when failing masters alone rule a quorum out.
async fn lock_group(group: &Redlock, token: &str, ttl: Duration) -> Result<bool> {
    let call = Arc::new(ScriptCall::new(
        &TOPOLOGY_CHANGE_LOCK,
        vec![store::change_key(group)],
        vec![token.to_owned(), (ttl.as_millis() as u64).to_string()],
    ));
    let masters = group.master_set();
    let round = masters
        .vote(
            masters.quorum(),
            |master| master.run_owned(&call),
            |answer| matches!(answer, Ok(Value::Int(1))),
        )
        .await;
    if round.decision == Decision::Won {
        return Ok(true);
    }
    let replies =
        crate::error::Replies::from_answers(&round.answers, |v| matches!(v, Value::Int(1)));
    let unavailable = replies.failures() > masters.len() - masters.quorum();
    if ttl.is_zero() {
        return if unavailable {
            Err(masters.unavailable(replies))
        } else {
            Ok(false)
        };
    }
    // Not held: give back what landed.
    let release = Arc::new(ScriptCall::new(
        &TOPOLOGY_CHANGE_LOCK,
        vec![store::change_key(group)],
        vec![token.to_owned(), "0".into()],
    ));
    masters
        .vote(
            masters.len(),
            |master| master.run_owned(&release),
            |answer| matches!(answer, Ok(Value::Int(1))),
        )
        .await;
    if unavailable {
        return Err(masters.unavailable(replies));
    }
    Ok(false)
}

impl ShardedRedlock {
    /// Takes the change lock on every group the current topology and `specs` name, waiting
    /// while another administrator holds it (up to two max TTLs plus the acquire wait: about
    /// one change). Under the lock the newest topology is loaded again; if it names a group
    /// not locked (another change added it meanwhile), the lock is taken again.
    async fn lock_change(&self, specs: &[GroupSpec]) -> Result<ChangeLock> {
        let started = Instant::now();
        let max_ttl = self.view().topology.max_ttl;
        let ttl = max_ttl * 2 + CHANGE_LOCK_SLACK;
        let deadline = started + max_ttl * 2 + self.wait_setting();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let current = self.view().topology.clone();
            let previous = current.all_groups().into_iter().cloned().collect();
            let involved = Topology::new(0, max_ttl, specs.to_vec(), Some(previous))?;
            let view = self.connect_view(involved).await?;
            if let Some(lock) = ChangeLock::take(&view, ttl).await? {
                self.reload().await?;
                // The groups the topology names; a view may connect more (a resume's, with the
                // groups of another administrator's spec: `resume_change` covers those).
                let now = self.view().topology.clone();
                if now
                    .all_groups()
                    .iter()
                    .all(|g| lock.groups.contains_key(&g.name))
                {
                    return Ok(lock);
                }
                lock.release().await;
                if Instant::now() < deadline {
                    continue;
                }
            }
            let retry = view.groups.values().next().map(|g| g.config().retry_delay);
            let retry =
                retry.unwrap_or_default() + crate::random::jitter(retry.unwrap_or_default());
            if Instant::now() + retry >= deadline {
                return Err(Error::Contended {
                    resource: "topology change lock".into(),
                    attempts,
                    waited: started.elapsed(),
                    replies: crate::error::Replies::default(),
                });
            }
            tokio::time::sleep(retry).await;
        }
    }
}

/// Resumes of interrupted changes one `change_groups` call goes through before it gives up.
const MAX_RESUMES: usize = 3;

/// How much longer than two max TTLs the change lock lives: the stores and the waits of one
/// change take about one max TTL plus a few quorum writes.
const CHANGE_LOCK_SLACK: Duration = Duration::from_secs(10);

#[cfg(test)]
#[path = "change_tests.rs"]
mod tests;
