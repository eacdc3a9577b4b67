//! A topology: the groups (name, weight, masters), the epoch, the maximum lock TTL, and during
//! a change the previous groups (the joint phase). Where a resource lives follows from it
//! alone: the ketama ring over the group names, weighted.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::ring::{HashRing, RingNode};

/// The port that `RingNode::name` omits, so that a group's ring name is exactly its name (the
/// ring then hashes `"<name>-<i>"`, as libmemcached would for a server called `<name>`).
const NAME_ONLY_PORT: u16 = 11211;

/// One group as the topology records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GroupSpec {
    pub(crate) name: String,
    pub(crate) weight: u32,
    pub(crate) masters: Vec<String>,
}

/// Groups, epoch, max TTL and (during a change) the previous groups.
#[derive(Clone, Debug)]
pub(crate) struct Topology {
    pub(crate) epoch: u64,
    pub(crate) max_ttl: Duration,
    pub(crate) groups: Vec<GroupSpec>,
    /// `Some` during the joint phase of a change: the groups before it.
    pub(crate) previous: Option<Vec<GroupSpec>>,
    ring: HashRing,
    previous_ring: Option<HashRing>,
}

impl Topology {
    /// Checks the groups (at least one, distinct names without whitespace, weights >= 1,
    /// masters given, URLs without whitespace) and builds the rings.
    pub(crate) fn new(
        epoch: u64,
        max_ttl: Duration,
        groups: Vec<GroupSpec>,
        previous: Option<Vec<GroupSpec>>,
    ) -> Result<Self> {
        check_groups(&groups)?;
        if let Some(p) = &previous {
            check_groups(p)?;
        }
        Ok(Self {
            ring: ring_of(&groups),
            previous_ring: previous.as_deref().map(ring_of),
            epoch,
            max_ttl,
            groups,
            previous,
        })
    }

    /// Whether this is the joint phase of a change.
    pub(crate) fn is_joint(&self) -> bool {
        self.previous.is_some()
    }

    /// The group that owns `resource` under the current groups; its fencing counter gives the
    /// resource's tokens in this epoch.
    pub(crate) fn owner(&self, resource: &str) -> &str {
        owner_in(&self.ring, resource)
    }

    /// The group that owned `resource` before the change, during the joint phase.
    pub(crate) fn previous_owner(&self, resource: &str) -> Option<&str> {
        self.previous_ring.as_ref().map(|r| owner_in(r, resource))
    }

    /// The groups an acquire of `resource` must win, sorted: its owner, plus during the joint
    /// phase its previous owner when that differs.
    pub(crate) fn placement(&self, resource: &str) -> Vec<&str> {
        let mut groups = vec![self.owner(resource)];
        if let Some(old) = self.previous_owner(resource)
            && old != groups[0]
        {
            groups.push(old);
            groups.sort_unstable();
        }
        groups
    }

    /// The last epoch under which a hold granted in this epoch may still be extended (see the
    /// module docs of `sharded`, "Extensions").
    pub(crate) fn extendable_until(&self) -> u64 {
        if self.is_joint() {
            self.epoch + 1
        } else {
            self.epoch
        }
    }

    /// Every group named by the current or previous groups.
    pub(crate) fn all_groups(&self) -> Vec<&GroupSpec> {
        let mut all: Vec<&GroupSpec> = self.groups.iter().collect();
        for g in self.previous.iter().flatten() {
            if !all.iter().any(|a| a.name == g.name) {
                all.push(g);
            }
        }
        all
    }

    /// The stored form: one line per fact, deterministic (the write script compares specs).
    pub(crate) fn encode(&self) -> String {
        let mut out = format!("v1\nmax_ttl_ms {}\n", self.max_ttl.as_millis());
        let mut line = |kind: &str, g: &GroupSpec| {
            out.push_str(&format!("{kind} {} {}", g.name, g.weight));
            for m in &g.masters {
                out.push(' ');
                out.push_str(m);
            }
            out.push('\n');
        };
        for g in &self.groups {
            line("group", g);
        }
        for g in self.previous.iter().flatten() {
            line("previous", g);
        }
        out
    }

    /// Parses [`encode`](Self::encode)'s output stored under `epoch`.
    pub(crate) fn decode(epoch: u64, spec: &str) -> Result<Self> {
        let bad = |why: &str| Error::InvalidConfig(format!("stored topology {epoch}: {why}"));
        let mut lines = spec.lines();
        if lines.next() != Some("v1") {
            return Err(bad("unknown format"));
        }
        let (mut max_ttl, mut groups, mut previous) = (None, Vec::new(), Vec::new());
        for line in lines {
            let mut words = line.split(' ');
            let kind = words.next().unwrap_or_default();
            if kind == "max_ttl_ms" {
                let ms = words.next().and_then(|w| w.parse().ok());
                max_ttl = Some(Duration::from_millis(ms.ok_or_else(|| bad("max_ttl_ms"))?));
                continue;
            }
            let name = words.next().ok_or_else(|| bad("group name"))?.to_owned();
            let weight = words.next().and_then(|w| w.parse().ok());
            let weight = weight.ok_or_else(|| bad("group weight"))?;
            let masters = words.map(str::to_owned).collect();
            let group = GroupSpec {
                name,
                weight,
                masters,
            };
            match kind {
                "group" => groups.push(group),
                "previous" => previous.push(group),
                _ => return Err(bad("unknown line")),
            }
        }
        let previous = (!previous.is_empty()).then_some(previous);
        Self::new(
            epoch,
            max_ttl.ok_or_else(|| bad("no max_ttl_ms"))?,
            groups,
            previous,
        )
    }
}

/// The ring over the group names, each with its weight.
fn ring_of(groups: &[GroupSpec]) -> HashRing {
    groups
        .iter()
        .map(|g| RingNode::new(g.name.clone(), NAME_ONLY_PORT).with_weight(g.weight))
        .collect()
}

/// The ring's owner of `resource`. Rings are built from checked groups (at least one, every
/// weight >= 1), so there is always one.
fn owner_in<'a>(ring: &'a HashRing, resource: &str) -> &'a str {
    ring.node_for(resource)
        .map(RingNode::host)
        .expect("a checked topology has a group of positive weight")
}

fn check_groups(groups: &[GroupSpec]) -> Result<()> {
    let bad = |why: String| Err(Error::InvalidConfig(why));
    if groups.is_empty() {
        return bad("a sharded lock needs at least one group".into());
    }
    for (i, g) in groups.iter().enumerate() {
        if g.name.is_empty() || g.name.chars().any(char::is_whitespace) {
            return bad(format!("group name {:?}: empty or with whitespace", g.name));
        }
        if groups[..i].iter().any(|o| o.name == g.name) {
            return bad(format!("group {:?} given twice", g.name));
        }
        if g.weight == 0 {
            return bad(format!("group {:?}: weight must be at least 1", g.name));
        }
        if g.masters.is_empty() || g.masters.iter().any(|m| m.chars().any(char::is_whitespace)) {
            return bad(format!(
                "group {:?}: no masters, or a URL with whitespace",
                g.name
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(name: &str, weight: u32) -> GroupSpec {
        GroupSpec {
            name: name.into(),
            weight,
            masters: vec![format!("redis://{name}:6379")],
        }
    }

    #[test]
    fn encode_decode_round_trips() {
        let t = Topology::new(
            7,
            Duration::from_secs(30),
            vec![group("a", 1), group("b", 3)],
            Some(vec![group("a", 1)]),
        )
        .unwrap();
        let back = Topology::decode(7, &t.encode()).unwrap();
        assert_eq!(back.encode(), t.encode());
        assert_eq!(back.groups, t.groups);
        assert_eq!(back.previous, t.previous);
        assert_eq!(back.max_ttl, t.max_ttl);
    }

    #[test]
    fn bad_groups_are_refused() {
        let ttl = Duration::from_secs(1);
        for groups in [
            vec![],
            vec![group("a", 0)],
            vec![group("a", 1), group("a", 2)],
            vec![group("a b", 1)],
        ] {
            assert!(matches!(
                Topology::new(1, ttl, groups, None),
                Err(Error::InvalidConfig(_))
            ));
        }
        assert!(Topology::decode(1, "v2\n").is_err());
    }

    #[test]
    fn joint_placement_is_old_and_new_owner_exactly_where_they_differ() {
        let ttl = Duration::from_secs(1);
        let old = vec![group("a", 1), group("b", 1)];
        let new = vec![group("a", 1), group("b", 1), group("c", 1)];
        let joint = Topology::new(2, ttl, new.clone(), Some(old.clone())).unwrap();
        let (old_ring, new_ring) = (ring_of(&old), ring_of(&new));
        for i in 0..5000 {
            let r = format!("resource:{i}");
            let o = old_ring.node_for(&r).unwrap().host();
            let n = new_ring.node_for(&r).unwrap().host();
            let mut want = vec![o, n];
            want.sort_unstable();
            want.dedup();
            assert_eq!(joint.placement(&r), want, "{r}");
            assert_eq!(joint.owner(&r), n);
        }
        assert_eq!(joint.extendable_until(), 3);
    }
}
