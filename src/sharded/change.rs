//! Group changes: store the joint topology, wait out every lock granted before it, store the
//! final one (module docs, "A group change").

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
        let lock = self.lock_change(&specs).await?;
        let result = self.change_locked(specs, &lock).await;
        lock.release().await;
        result
    }

    /// [`change_groups`](Self::change_groups) once the change lock is held.
    async fn change_locked(
        &self,
        specs: Vec<GroupSpec>,
        lock: &ChangeLock,
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
            self.resume_change(lock).await?;
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

    /// Finishes an interrupted change: its joint topology may have reached only some masters,
    /// so old-view grants may still be happening. It is stored again, exactly, on a quorum of
    /// every group (the same spec under the same epoch is accepted again); where another spec
    /// is pinned to its epoch, the same change is stored instead under an epoch above every
    /// epoch the masters report, with the same previous groups (every joint spec of that epoch
    /// shares them: placements overlap). The wait counts from the store.
    ///
    /// Where a master reports an epoch above the joint's and a spec newer than the joint can
    /// be read, another change came after it: its previous groups are not this joint's, so
    /// storing this joint again (under any epoch) would route some resources by groups the
    /// newer change never told; nothing is written, the newest topology is loaded instead,
    /// and the caller goes on from it. Where no newer spec can be read (the epoch is this
    /// joint's own final, stored on a few masters that have since lost it, or a pin of an
    /// acquire routed by it), the joint is replaced as above: refusing would leave the change
    /// unfinishable for good.
    async fn resume_change(&self, lock: &ChangeLock) -> Result<()> {
        let view = self.view();
        match store_everywhere(&view, &view.topology, lock).await {
            Ok(()) => {}
            Err(e) if store::is_stale(&e) => {
                let joint = &view.topology;
                let seen = store::highest_epoch(&view.all()).await?;
                if seen > joint.epoch {
                    tracing::info!(
                        epoch = joint.epoch,
                        newer = seen,
                        "interrupted change superseded by a newer one; reloading"
                    );
                    if self.reload().await? > joint.epoch {
                        return Ok(());
                    }
                }
                let epoch = joint.epoch.max(seen) + 1;
                if epoch + 1 > MAX_EPOCH {
                    return Err(Error::InvalidConfig(ConfigReason::EpochsUsedUp {
                        max: MAX_EPOCH,
                    }));
                }
                tracing::warn!(
                    epoch = joint.epoch,
                    replaced_by = epoch,
                    error = %e,
                    "interrupted change conflicts; storing it under a new epoch"
                );
                let replacement = Topology::new(
                    epoch,
                    joint.max_ttl,
                    joint.groups.clone(),
                    joint.previous.clone(),
                )?;
                let view = self.connect_view(replacement).await?;
                store_everywhere(&view, &view.topology, lock).await?;
                self.set_view(view);
            }
            Err(e) => return Err(e),
        }
        self.finish_change(Instant::now(), lock).await?;
        Ok(())
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
    store::write_quorums(&view.all(), topology, Some(&lock.token)).await
}

/// The change lock: one key per master (`topology_change_lock.lua`), held on a quorum of every
/// group a change involves, old and new. Two administrators cannot both hold a quorum of one
/// group, and every topology write of a change is refused (`TOPOLOGYBUSY`) on a master where
/// its lock is not held, so the writes of two changes never interleave on a quorum.
pub(crate) struct ChangeLock {
    token: String,
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
                let now = self.view();
                if now.groups.keys().all(|g| lock.groups.contains_key(g)) {
                    return Ok(lock);
                }
                lock.release().await;
                continue;
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
