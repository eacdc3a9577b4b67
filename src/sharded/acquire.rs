//! The sharded acquire calls: route every resource to its groups, win them one group at a
//! time in name order (each group by the multi-resource acquire, `primitives/multi.rs`, with
//! the topology epoch check), give back what was taken when a later group fails or the whole
//! came out of its validity, and reload the topology when a master says the client's is stale.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{Error, Replies, Result};
use crate::guard::LockGuard;
use crate::lease::LockContext;
use crate::lock::Redlock;
use crate::options::LockOptions;
use crate::primitives::multi::{EpochCheck, Patience as Rounds, sorted_names};

use super::guard::{Part, ShardedGuard};
use super::store::{is_stale, is_unsealed, topology_key};
use super::{ShardedRedlock, View};

/// Reloads (after a stale-topology refusal) before an acquire gives up: a change takes two
/// epochs, so two reloads normally suffice; one spare for a change racing the retry.
const MAX_RELOADS: u32 = 3;

/// Seals (after a refusal by masters whose topology state is not sealed, seal.rs) before an
/// acquire gives up: one normally suffices; one spare for a master lost again meanwhile.
const MAX_SEALS: u32 = 2;

/// Whether a round may wait (retrying within a deadline) or is a single try.
#[derive(Clone, Copy)]
enum Patience {
    Until(Instant),
    Once,
}

impl ShardedRedlock {
    /// Acquires `resource` for the options' TTL on its group (both groups while it moves),
    /// retrying until granted or the wait ([`LockOptions::wait`], default the groups' acquire
    /// wait) runs out. Honours the TTL, the wait and the extension cap (carried by the guard to
    /// [`ShardedGuard::with_watchdog`]); a lock-delay is refused.
    ///
    /// # Errors
    /// As [`Redlock::acquire`], plus [`Error::InvalidTtl`] for a TTL above the max TTL,
    /// [`Error::InvalidArgument`] for a lock-delay, and [`Error::StaleTopology`] when masters
    /// keep refusing this client's topology after it reloaded.
    pub async fn acquire(
        &self,
        resource: &str,
        options: impl Into<LockOptions>,
    ) -> Result<ShardedGuard> {
        self.acquire_many([resource], options).await
    }

    /// One try for `resource`: `Ok(None)` when it is held (on any of its groups).
    ///
    /// # Errors
    /// As [`acquire`](Self::acquire), without the contention errors; a wait is refused.
    pub async fn try_acquire(
        &self,
        resource: &str,
        options: impl Into<LockOptions>,
    ) -> Result<Option<ShardedGuard>> {
        self.try_acquire_many([resource], options).await
    }

    /// Acquires every resource of `resources` as one lock: grouped by owner group, the groups
    /// taken one by one in name order (deadlock-free), each as one multi-resource round; a
    /// failure in a later group releases the earlier groups' holds. The wait is for all groups
    /// together.
    ///
    /// # Errors
    /// [`Error::EmptyResource`] for no or empty names; otherwise as [`acquire`](Self::acquire).
    pub async fn acquire_many<I, S>(
        &self,
        resources: I,
        options: impl Into<LockOptions>,
    ) -> Result<ShardedGuard>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let options = options.into();
        let names = sorted_names(resources)?;
        options.check("ShardedRedlock::acquire_many", true, false)?;
        let wait = options.wait_or(self.wait_setting());
        let deadline = crate::config::deadline_after(Instant::now(), wait);
        let guard = self
            .routed(&names, &options, Patience::Until(deadline))
            .await?;
        Ok(guard.expect("a waiting acquire returns a guard or an error"))
    }

    /// One try for all of `resources`: `Ok(None)` when any is held.
    ///
    /// # Errors
    /// As [`acquire_many`](Self::acquire_many), without the contention errors; a wait is
    /// refused.
    pub async fn try_acquire_many<I, S>(
        &self,
        resources: I,
        options: impl Into<LockOptions>,
    ) -> Result<Option<ShardedGuard>>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let options = options.into();
        let names = sorted_names(resources)?;
        options.check("ShardedRedlock::try_acquire_many", false, false)?;
        self.routed(&names, &options, Patience::Once).await
    }

    /// Runs `work` while holding `resource`, extending the lock in the background every third
    /// of the TTL (the core's lease, `lease.rs`: jeopardy, the options' extension cap
    /// [`LockOptions::max_lease`], `lost` no later than the validity deadline even while a
    /// renewal hangs), and releases it after.
    ///
    /// # Errors
    /// The errors of [`acquire`](Self::acquire), and [`Error::LockLost`] when the lock could
    /// not be extended before its validity ran out (for instance after a group change, see the
    /// [crate docs](crate#sharding)) or the extension cap ended it; the output of `work` is
    /// then dropped.
    pub async fn with_lock<T, F, Fut>(
        &self,
        resource: &str,
        options: impl Into<LockOptions>,
        work: F,
    ) -> Result<T>
    where
        F: FnOnce(LockContext) -> Fut,
        Fut: Future<Output = T>,
    {
        let options = options.into();
        let guard = self.acquire(resource, &options).await?;
        guard.with_watchdog(options.ttl(), work).await
    }

    /// The acquire wait of the groups (the longest, if they differ).
    pub(crate) fn wait_setting(&self) -> Duration {
        let view = self.view();
        let waits = view.groups.values().map(|g| g.config().acquire_wait);
        waits.max().unwrap_or(crate::defaults::DEFAULT_ACQUIRE_WAIT)
    }

    /// Acquires `names` by the current view; on a stale-topology refusal, reloads and tries
    /// again (at most [`MAX_RELOADS`] times). A lock whose validity ran out before its last
    /// group was won is given back and tried again while the wait lasts: an expired guard is
    /// never returned.
    async fn routed(
        &self,
        names: &[String],
        options: &LockOptions,
        patience: Patience,
    ) -> Result<Option<ShardedGuard>> {
        let ttl = options.ttl();
        let started = Instant::now();
        let (mut reloads, mut expired, mut seals) = (0, 0u32, 0);
        loop {
            let view = self.view();
            check_ttl(&view, ttl)?;
            check_names(&view, names)?;
            let outcome = acquire_in(&view, names, options, patience).await;
            if let Err(e) = &outcome
                && is_unsealed(e)
                && seals < MAX_SEALS
            {
                // Masters whose topology state is not sealed for their process did not vote:
                // seal them from a quorum (seal.rs), then try again (after a reload, if the
                // others refused this view).
                seals += 1;
                let deadline = match patience {
                    Patience::Until(deadline) => deadline,
                    Patience::Once => Instant::now() + self.wait_setting(),
                };
                for group in plan(&view, names).into_keys() {
                    super::seal::seal_group(view.group(group), deadline).await;
                }
                if !is_stale(e) {
                    continue;
                }
            }
            match outcome {
                Err(e) if is_stale(&e) && reloads < MAX_RELOADS => {
                    reloads += 1;
                    let before = view.topology.epoch;
                    let after = self.refresh().await?;
                    tracing::debug!(before, after, "acquire refused for a stale topology");
                }
                Err(e) if is_stale(&e) => {
                    return Err(Error::StaleTopology {
                        epoch: view.topology.epoch,
                        reason: format!("still refused after {reloads} reloads: {e}"),
                    });
                }
                Ok(Won::Expired) => {
                    expired += 1;
                    let retry = view.groups.values().next().map(|g| g.config().retry_delay);
                    let retry = retry.unwrap_or_default();
                    match patience {
                        Patience::Until(deadline) if Instant::now() + retry < deadline => {
                            tokio::time::sleep(retry).await;
                        }
                        Patience::Once => return Ok(None),
                        Patience::Until(_) => {
                            return Err(Error::Timeout {
                                resource: names.join(", "),
                                attempts: expired,
                                waited: started.elapsed(),
                                replies: Replies::default(),
                            });
                        }
                    }
                }
                Ok(Won::Held(guard)) => return Ok(Some(guard)),
                Ok(Won::Refused) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }
}

fn check_ttl(view: &View, ttl: Duration) -> Result<()> {
    if ttl > view.topology.max_ttl {
        return Err(Error::InvalidTtl {
            ttl,
            reason: format!(
                "a sharded lock's ttl must be at most the topology's max ttl {:?}",
                view.topology.max_ttl
            ),
        });
    }
    Ok(())
}

/// The basic lock's name checks, by every group a name is placed on, before any is asked.
fn check_names(view: &View, names: &[String]) -> Result<()> {
    for (group, group_names) in plan(view, names) {
        let config = view.group(group).config();
        group_names
            .iter()
            .try_for_each(|n| config.check_lock_key(n))?;
    }
    Ok(())
}

/// The groups and names of an acquire, in acquire order (group name order).
fn plan<'a>(view: &'a View, names: &[String]) -> BTreeMap<&'a str, Vec<String>> {
    let mut plan: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for name in names {
        for group in view.topology.placement(name) {
            plan.entry(group).or_default().push(name.clone());
        }
    }
    plan
}

/// How one acquire by a view ended.
enum Won {
    Held(ShardedGuard),
    /// A group refused (held there), on a single try.
    Refused,
    /// Every group was won, but the first hold's validity ran out before the last was: given
    /// back.
    Expired,
}

/// One acquire by `view`: group by group; what was taken is released if a later group fails
/// or the whole is no longer valid at the end (validity: the smallest of the holds', each
/// measured from its own round's start minus its drift).
async fn acquire_in(
    view: &View,
    names: &[String],
    options: &LockOptions,
    patience: Patience,
) -> Result<Won> {
    let mut parts: Vec<Part> = Vec::new();
    for (group, group_names) in plan(view, names) {
        let redlock = view.group(group);
        let outcome = acquire_group(view, redlock, &group_names, options, patience).await;
        match outcome {
            Ok(Some(guard)) => parts.push(Part {
                group: group.to_owned(),
                names: group_names,
                guard,
            }),
            Ok(None) => {
                release_parts(parts).await;
                return Ok(Won::Refused);
            }
            Err(e) => {
                release_parts(parts).await;
                return Err(e);
            }
        }
    }
    if parts.iter().any(|p| !p.guard.is_valid()) {
        tracing::debug!(
            resource = names.join(", "),
            "sharded lock expired before its last group was won; given back"
        );
        release_parts(parts).await;
        return Ok(Won::Expired);
    }
    ShardedGuard::new(&view.topology, names, parts).map(Won::Held)
}

/// One group's hold of `names` (sorted): the multi-resource acquire with the view's epoch
/// check, by the group's own retry policy within what is left of the wait.
async fn acquire_group(
    view: &View,
    redlock: &Redlock,
    names: &[String],
    options: &LockOptions,
    patience: Patience,
) -> Result<Option<LockGuard>> {
    let check = EpochCheck {
        key: topology_key(redlock),
        epoch: view.topology.epoch,
        digest: view.digest.clone(),
        extendable_until: view.topology.extendable_until(),
        final_digest: view.final_digest.clone(),
    };
    let rounds = match patience {
        Patience::Once => Rounds::Once,
        Patience::Until(deadline) => {
            Rounds::Wait(deadline.saturating_duration_since(Instant::now()))
        }
    };
    redlock
        .acquire_names(names, options, rounds, Some(&check))
        .await
}

/// Gives back holds taken before a later group failed (concurrently; each bounded by its
/// group's per-master timeout). Failures are only logged: the keys expire with their TTL.
pub(crate) async fn release_parts(parts: Vec<Part>) {
    let releases = parts.into_iter().map(|p| async move {
        if let Err(e) = p.guard.release().await {
            tracing::warn!(group = %p.group, error = %e, "rollback of a sharded hold failed");
        }
    });
    futures::future::join_all(releases).await;
}
