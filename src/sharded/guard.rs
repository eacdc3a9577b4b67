//! [`ShardedGuard`]: the holds one sharded acquire took (one per group), with a fencing token
//! per resource.

use std::time::Duration;

use futures::FutureExt;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::guard::LockGuard;

use super::token;
use super::topology::Topology;

/// One group's share of a sharded lock.
pub(crate) struct Part {
    pub(crate) group: String,
    pub(crate) names: Vec<String>,
    pub(crate) guard: LockGuard,
}

/// A held sharded lock: one hold per group it had to win. Dropping it releases every hold in
/// the background.
#[must_use = "dropping the guard releases the lock"]
pub struct ShardedGuard {
    resource: String,
    epoch: u64,
    max_ttl: Duration,
    parts: Vec<Part>,
    /// Per resource (sorted by name): its token, from its owner group in this epoch.
    tokens: Vec<(String, Option<u64>)>,
}

impl std::fmt::Debug for ShardedGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardedGuard")
            .field("resource", &self.resource)
            .field("epoch", &self.epoch)
            .field("groups", &self.groups())
            .field("tokens", &self.tokens)
            .finish()
    }
}

impl ShardedGuard {
    pub(crate) fn new(topology: &Topology, names: &[String], parts: Vec<Part>) -> Result<Self> {
        let mut tokens = Vec::with_capacity(names.len());
        for name in names {
            let owner = topology.owner(name);
            let counter = parts
                .iter()
                .find(|p| p.group == owner)
                .and_then(|p| p.guard.fencing_token());
            tokens.push((name.clone(), token::compose(topology.epoch, counter)?));
        }
        Ok(Self {
            resource: names.join(", "),
            epoch: topology.epoch,
            max_ttl: topology.max_ttl,
            parts,
            tokens,
        })
    }

    /// The resources held, sorted and joined by `", "`.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The topology epoch the lock was granted under.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The groups holding a part of the lock, in acquire order.
    pub fn groups(&self) -> Vec<&str> {
        self.parts.iter().map(|p| p.group.as_str()).collect()
    }

    /// The fencing token of the first (for a single resource, the only) resource; `None` when
    /// fencing is off. Per resource, across groups and group changes, larger than the token of
    /// every grant that completed before this lock's round started (module docs, "Fencing
    /// tokens"); tokens of different resources are not comparable.
    pub fn fencing_token(&self) -> Option<u64> {
        self.tokens.first().and_then(|(_, t)| *t)
    }

    /// The fencing token of `resource`, if this lock holds it.
    pub fn fencing_token_of(&self, resource: &str) -> Option<u64> {
        self.tokens
            .iter()
            .find(|(name, _)| name == resource)
            .and_then(|(_, t)| *t)
    }

    /// When the first hold stops being valid.
    pub fn valid_until(&self) -> Instant {
        let ends = self.parts.iter().map(|p| p.guard.valid_until());
        ends.min().expect("a sharded guard has at least one part")
    }

    /// Validity left: the smallest of the holds'.
    pub fn remaining(&self) -> Duration {
        self.valid_until().saturating_duration_since(Instant::now())
    }

    /// Whether every hold is still valid.
    pub fn is_valid(&self) -> bool {
        self.parts.iter().all(|p| p.guard.is_valid())
    }

    /// Extends every hold to `ttl` from now (concurrently). Refused after a topology change
    /// the hold's placement does not cover ([crate docs](crate#sharding)).
    ///
    /// # Errors
    /// [`Error::InvalidTtl`] above the max TTL; the first failing hold's error
    /// ([`LockGuard::extend`]); the holds that did extend keep their new validity.
    pub async fn extend(&mut self, ttl: Duration) -> Result<()> {
        self.extend_waiting(ttl, None).await
    }

    /// [`extend`](Self::extend), each hold waiting for its masters' answers until `until` when
    /// given (the watchdog's renewal: `LockGuard::extend_within`).
    pub(crate) async fn extend_waiting(
        &mut self,
        ttl: Duration,
        until: Option<Instant>,
    ) -> Result<()> {
        self.check_ttl(ttl)?;
        let extends = self.parts.iter_mut().map(|p| match until {
            Some(until) => p.guard.extend_within(ttl, until).boxed(),
            None => p.guard.extend(ttl).boxed(),
        });
        let results = futures::future::join_all(extends).await;
        // One group no longer holding its part ends the whole lock: report that first.
        let mut first = None;
        for r in results {
            match r {
                Err(e @ Error::NotHeld { .. }) => return Err(e),
                Err(e) => first = first.or(Some(e)),
                Ok(()) => {}
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Rejects a TTL above the topology's max TTL or one a group would refuse.
    pub(crate) fn check_ttl(&self, ttl: Duration) -> Result<()> {
        if ttl > self.max_ttl {
            return Err(Error::InvalidTtl {
                ttl,
                reason: format!("at most the topology's max ttl {:?}", self.max_ttl),
            });
        }
        self.parts.iter().try_for_each(|p| p.guard.check_ttl(ttl))
    }

    /// The longest per-master timeout of the groups holding a part (the lease's jeopardy
    /// threshold: a renewal of every part is undecided for longer only when some group is slow).
    pub(crate) fn master_timeout(&self) -> Duration {
        let timeouts = self.parts.iter().map(|p| p.guard.master_timeout());
        timeouts.max().unwrap_or_default()
    }

    /// The owner token of the first hold (the simulator keys its stalls by it).
    #[cfg(feature = "sim")]
    pub(crate) fn first_owner_token(&self) -> &str {
        self.parts[0].guard.owner_token()
    }

    /// The extension cap it was asked with (every part carries it; the smallest, should
    /// they differ).
    pub(crate) fn max_lease(&self) -> Option<Duration> {
        let caps = self.parts.iter().filter_map(|p| p.guard.lease_cap());
        caps.min()
    }

    /// Releases every hold (concurrently). `Ok(true)` when every group released its hold.
    ///
    /// # Errors
    /// The first failing hold's [`LockGuard::release`] error; the others were released.
    pub async fn release(self) -> Result<bool> {
        let releases = self.parts.into_iter().map(|p| p.guard.release());
        let results = futures::future::join_all(releases).await;
        let mut all = true;
        for r in results {
            all &= r?;
        }
        Ok(all)
    }

    /// Each part's group and the names it holds there (tests, traces).
    pub fn holds(&self) -> Vec<(&str, &[String])> {
        self.parts
            .iter()
            .map(|p| (p.group.as_str(), p.names.as_slice()))
            .collect()
    }
}
