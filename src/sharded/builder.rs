//! [`ShardedBuilder`]: the groups, their weights, the maximum lock TTL, and how a client
//! connects to a group it learns about from the stored topology.

use std::time::Duration;

use crate::config::Builder;
use crate::defaults::{DEFAULT_SHARD_MAX_TTL, MAX_TTL};
use crate::error::{Error, Result};
use crate::lock::Redlock;

use super::ShardedRedlock;
use super::topology::{GroupKeys, GroupSpec};
use crate::invalid::ConfigReason;

/// Configures and connects a [`ShardedRedlock`]. Created by [`ShardedRedlock::builder`].
#[must_use]
#[derive(Clone, Debug)]
pub struct ShardedBuilder {
    pub(crate) groups: Vec<(String, u32, Builder)>,
    pub(crate) template: Builder,
    pub(crate) max_ttl: Duration,
}

impl Default for ShardedBuilder {
    fn default() -> Self {
        Self {
            groups: Vec::new(),
            template: Redlock::builder(),
            max_ttl: DEFAULT_SHARD_MAX_TTL,
        }
    }
}

impl ShardedBuilder {
    /// A group: `name` (no whitespace; it places resources on the ring, so every client must
    /// use the same names), its ring `weight` (>= 1; a group of weight 2 gets about twice the
    /// resources of weight 1) and a normal Redlock configuration with the group's masters. Each
    /// group is its own quorum. The group's key prefix, timeouts and fencing apply within it.
    pub fn group(mut self, name: impl Into<String>, weight: u32, group: Builder) -> Self {
        self.groups.push((name.into(), weight, group));
        self
    }

    /// The settings (everything but the masters) for groups this client learns from the
    /// topology stored on the masters (a group added by another client). Default:
    /// [`Redlock::builder`]'s defaults.
    pub fn template(mut self, settings: Builder) -> Self {
        self.template = settings;
        self
    }

    /// The longest TTL (and extension) this client grants, and the length of a group change's
    /// joint phase. Only used when the masters store no topology yet: a stored topology
    /// carries its own, which every client then enforces. Default
    /// [`DEFAULT_SHARD_MAX_TTL`].
    pub fn max_ttl(mut self, ttl: Duration) -> Self {
        self.max_ttl = ttl;
        self
    }

    /// Connects every group and loads the topology stored on their masters; when none is
    /// stored yet, stores this one (epoch 1) on a quorum of every group.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for bad groups or max TTL; any group's build error
    /// ([`Builder::build`]); [`Error::Unavailable`] when a group has no quorum to store the
    /// first topology on.
    pub async fn build(self) -> Result<ShardedRedlock> {
        if self.max_ttl.is_zero() || self.max_ttl > MAX_TTL {
            return Err(Error::InvalidConfig(ConfigReason::ShardedMaxTtl {
                max: MAX_TTL,
            }));
        }
        ShardedRedlock::connect(self).await
    }

    /// The groups as the topology records them.
    pub(crate) fn specs(&self) -> Vec<GroupSpec> {
        self.groups
            .iter()
            .map(|(name, weight, b)| spec_of(name, *weight, b))
            .collect()
    }

    /// How to connect `spec`: its own builder if it was given with the same masters (its keys
    /// were checked against the spec's), else the template with the spec's masters and keys.
    /// Wake-ups are off (sharded acquires poll).
    pub(crate) fn builder_for(&self, spec: &GroupSpec) -> Builder {
        let given = self
            .groups
            .iter()
            .find(|(name, _, b)| *name == spec.name && b.masters == spec.masters);
        let builder = match given {
            Some((_, _, b)) => b.clone(),
            None => {
                let b = self.template.clone().masters(spec.masters.clone());
                match &spec.keys {
                    Some(k) => b.key_prefix(k.prefix.clone()).fence_key(k.fence.clone()),
                    None => b,
                }
            }
        };
        builder.wake_ups(false)
    }
}

/// A group as the topology records it: name, weight, masters, and where its keys live.
pub(crate) fn spec_of(name: &str, weight: u32, b: &Builder) -> GroupSpec {
    GroupSpec {
        name: name.to_owned(),
        weight,
        masters: b.masters.clone(),
        keys: Some(GroupKeys {
            prefix: b.config.key_prefix.clone(),
            fence: b.config.fence_key(),
        }),
    }
}
