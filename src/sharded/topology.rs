//! A topology: the groups (name, weight, masters), the epoch, the maximum lock TTL, and during
//! a change the previous groups (the joint phase). Where a resource lives follows from it
//! alone: the ketama ring over the group names, weighted.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::invalid::ConfigReason;
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
    /// Where the group's locks and fencing counter live. `None` only in a spec stored by a
    /// client that did not record them (format v1).
    pub(crate) keys: Option<GroupKeys>,
}

/// A group's key prefix and fencing key: every client must use the same ones, or two clients
/// would lock the same resource under two keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GroupKeys {
    pub(crate) prefix: String,
    pub(crate) fence: String,
}

impl GroupSpec {
    /// Whether `other` (the same name) disagrees on where the group's keys live.
    pub(crate) fn keys_differ(&self, other: &GroupSpec) -> bool {
        matches!((&self.keys, &other.keys), (Some(a), Some(b)) if a != b)
    }
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

    /// The digest of the stored form (MD5, hex): what the masters pin to the epoch and what
    /// every acquire and extend is checked against (an epoch pins exactly one spec).
    pub(crate) fn digest(&self) -> String {
        use md5::{Digest, Md5};
        Md5::digest(self.encode().as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The final topology that ends this joint phase (the next epoch, the same groups, no
    /// previous ones); `None` when this is not a joint phase.
    pub(crate) fn final_of(&self) -> Option<Topology> {
        self.is_joint().then(|| {
            Topology::new(self.epoch + 1, self.max_ttl, self.groups.clone(), None)
                .expect("the groups of a checked topology are checked")
        })
    }

    /// The stored form: one line per fact, deterministic (the write script compares specs).
    /// Format v2 records each group's keys (hex, after `@`); v1 (no keys) is written only for
    /// a spec read in v1, so that it re-encodes to the same bytes.
    pub(crate) fn encode(&self) -> String {
        let v2 = self.all_groups().iter().all(|g| g.keys.is_some());
        let mut out = format!(
            "{}\nmax_ttl_ms {}\n",
            if v2 { "v2" } else { "v1" },
            self.max_ttl.as_millis()
        );
        let mut line = |kind: &str, g: &GroupSpec| {
            out.push_str(&format!("{kind} {} {}", g.name, g.weight));
            if let Some(k) = g.keys.as_ref().filter(|_| v2) {
                out.push_str(&format!(" @{} @{}", hex(&k.prefix), hex(&k.fence)));
            }
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
        let bad = |part| Error::InvalidConfig(ConfigReason::StoredTopology { epoch, part });
        let mut lines = spec.lines();
        let v2 = match lines.next() {
            Some("v1") => false,
            Some("v2") => true,
            _ => return Err(bad("unknown format")),
        };
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
            let keys = if v2 {
                let mut key = || {
                    let word = words.next().and_then(|w| w.strip_prefix('@'));
                    word.and_then(unhex).ok_or_else(|| bad("group keys"))
                };
                Some(GroupKeys {
                    prefix: key()?,
                    fence: key()?,
                })
            } else {
                None
            };
            let masters = words.map(str::to_owned).collect();
            let group = GroupSpec {
                name,
                weight,
                masters,
                keys,
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

/// Group identity: a group is its name together with its masters and its keys. Refuses (a
/// typed error) a group of `given` that has the name of a group of `known` but other masters
/// (a group's masters cannot change under its name: resources would move to them without a
/// joint phase) or other keys (the same resource would be locked under two keys).
pub(crate) fn check_identity(known: &[&GroupSpec], given: &[GroupSpec]) -> Result<()> {
    for g in given {
        for k in known.iter().filter(|k| k.name == g.name) {
            let redact = |m: &[String]| {
                m.iter()
                    .map(|u| crate::error::redact_url(u))
                    .collect::<Vec<_>>()
            };
            if k.masters != g.masters {
                return Err(Error::TopologyMismatch {
                    reason: format!(
                        "group {:?} is stored with masters {:?}, given {:?}: a group's masters \
                         cannot change under its name (remove it and add one with a new name)",
                        g.name,
                        redact(&k.masters),
                        redact(&g.masters)
                    ),
                });
            }
            if k.keys_differ(g) {
                return Err(Error::TopologyMismatch {
                    reason: format!(
                        "group {:?} is stored with keys {:?}, given {:?} (key prefix, fencing key)",
                        g.name, k.keys, g.keys
                    ),
                });
            }
        }
    }
    Ok(())
}

fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(word: &str) -> Option<String> {
    if !word.len().is_multiple_of(2) {
        return None;
    }
    let bytes = (0..word.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(word.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
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
    let bad = |why: String| Err(Error::InvalidConfig(ConfigReason::Groups(why)));
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
            keys: Some(GroupKeys {
                prefix: format!("{name} x:"),
                fence: "f".into(),
            }),
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
        // A v1 spec (no keys) re-encodes to the same bytes.
        let v1 = "v1\nmax_ttl_ms 1000\ngroup a 1 redis://x:1\n";
        let old = Topology::decode(3, v1).unwrap();
        assert_eq!(old.groups[0].keys, None);
        assert_eq!(old.encode(), v1);
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
        assert!(Topology::decode(1, "v3\n").is_err());
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
