//! Group changes: store the joint topology, wait out every lock granted before it, store the
//! final one (module docs, "A group change").

use std::time::Duration;

use tokio::time::Instant;

use crate::config::Builder;
use crate::error::{Error, Result};
use crate::lock::Redlock;
use crate::quorum::drift;

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
    /// Run changes from one client at a time ([crate docs](crate#sharding)). On an error the
    /// stored topology may be the joint one: call again to finish.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for bad groups or when the epochs are used up;
    /// [`Error::TopologyMismatch`] for a group that keeps its name with other masters or other
    /// keys (key prefix, fencing key): remove it and add one under a new name instead;
    /// [`Error::StaleTopology`] when another change got there first; [`Error::Unavailable`]
    /// when a group (old or new) has no quorum to store the topology on.
    pub async fn change_groups<I, S>(&self, groups: I) -> Result<ChangeReport>
    where
        I: IntoIterator<Item = (S, u32, Builder)>,
        S: Into<String>,
    {
        let groups: Vec<(String, u32, Builder)> = groups
            .into_iter()
            .map(|(n, w, b)| (n.into(), w, b))
            .collect();
        self.reload().await?;
        if self.view().topology.is_joint() {
            self.resume_change().await?;
        }
        let specs = groups
            .iter()
            .map(|(name, weight, b)| super::builder::spec_of(name, *weight, b))
            .collect::<Vec<GroupSpec>>();
        let current = self.view().topology.clone();
        super::topology::check_identity(&current.all_groups(), &specs)?;
        self.remember_builders(&groups);
        // Above every epoch a master reports: an acquire routed with a spec stored on few
        // masters may have pinned the next epoch to it on some.
        let seen = store::highest_epoch(&self.view().all()).await;
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
        store_everywhere(&view, &view.topology).await?;
        let joint_stored = Instant::now();
        self.set_view(view);
        tracing::info!(
            epoch,
            "joint topology stored; waiting out the previous locks"
        );
        let (waited, final_stored_in) = self.finish_change(joint_stored).await?;
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
    /// is pinned to its epoch (or a newer epoch was seen), the same change is stored instead
    /// under an epoch above every epoch the masters report, with the same previous groups
    /// (every joint spec of that epoch shares them: placements overlap). The wait counts from
    /// the store.
    async fn resume_change(&self) -> Result<()> {
        let view = self.view();
        match store_everywhere(&view, &view.topology).await {
            Ok(()) => {}
            Err(e) if store::is_stale(&e) => {
                let joint = &view.topology;
                let seen = store::highest_epoch(&view.all()).await;
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
                store_everywhere(&view, &view.topology).await?;
                self.set_view(view);
            }
            Err(e) => return Err(e),
        }
        self.finish_change(Instant::now()).await?;
        Ok(())
    }

    /// From the joint topology stored at `stored_at`: waits until every lock granted before it
    /// has expired, then stores and adopts the final topology. Returns the wait and the store
    /// time.
    async fn finish_change(&self, stored_at: Instant) -> Result<(Duration, Duration)> {
        let view = self.view();
        let joint = &view.topology;
        let until = stored_at + joint_wait(&view);
        tokio::time::sleep_until(until).await;
        let waited = stored_at.elapsed();
        let last = joint
            .final_of()
            .ok_or_else(|| Error::InvalidConfig(ConfigReason::NotJoint))?;
        let t1 = Instant::now();
        store_everywhere(&view, &last).await?;
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

/// Stores `topology` on a quorum of every group the view knows (old and new).
async fn store_everywhere(view: &View, topology: &Topology) -> Result<()> {
    store::write_quorums(&view.all(), topology).await
}
