//! A ketama consistent-hash ring, byte-compatible with libmemcached's weighted mode.
//!
//! The continuum is built exactly as libmemcached 1.x builds it with
//! `MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED` and `MEMCACHED_BEHAVIOR_KETAMA_HASH = MD5`
//! (`update_continuum()` in `libmemcached/hosts.cc`), so a Rust service and a PHP, Python,
//! Java or C client configured with the same server list agree on where every key lives.
//! `tests/ring_vectors.rs` checks this key for key against vectors produced by the real
//! libmemcached (`tools/ketama-vectors/`).
//!
//! # The algorithm
//!
//! * Only nodes with a weight above zero take part ("live" nodes, `n` of them, total weight
//!   `W`).
//! * A live node of weight `w` gets `d = floor(w / W * 160 / 4 * n + 1e-10)` MD5 digests,
//!   evaluated in `f32` in exactly that order, as libmemcached does. This is *usually*
//!   `floor(w / W * 40 * n)`, but not always: with equal weights and `n` = 25, 47, 50, 100, ...
//!   `1/n` rounds down in `f32` and every node gets 39 digests instead of 40.
//! * Digest `i` (from 0) is `MD5("<name>-<i>")` where the name is `host` when the port is
//!   11211 (memcached's default) and `host:port` otherwise; see [`RingNode::name`].
//! * Each 16-byte digest yields 4 points: bytes `0..4`, `4..8`, `8..12`, `12..16`, each read
//!   as a little-endian `u32`.
//! * A key hashes to the first 4 bytes of `MD5(key)`, little-endian ([`HashRing::key_hash`]).
//! * The key belongs to the node owning the first point `>= hash`, wrapping to the first point
//!   of the ring when the hash is above the last one.
//!
//! # Ties
//!
//! Two nodes can own the same 32-bit point. libmemcached sorts the continuum by
//! `(point, server index)` and looks up the *first* point `>= hash`, so the node that comes
//! earlier in the server list wins every tie. This ring does the same with the order of
//! [`HashRing::nodes`]: [`HashRing::add`] appends (or replaces in place) and
//! [`HashRing::remove`] keeps the order of the rest, so the winner of a tie never changes
//! while both nodes stay in the ring. The `tie-ab` / `tie-ba` vectors pin this behaviour
//! down against libmemcached.
//!
//! # Movement on add and remove
//!
//! With equal weights every node gets the same number of digests whatever `n` is, so removing
//! a node moves only that node's keys and adding one moves keys only onto it. Two
//! libmemcached-compatible exceptions: at the `n` where `f32` rounding gives 39 digests
//! instead of 40 (25, 47, 50, 55, ...), crossing that `n` drops or restores every node's 40th
//! digest, moving about 1/40 of the keys between surviving nodes; and with unequal weights
//! every node's digest count is recomputed from its new share, so survivors also trade the
//! keys of the digests they gained or lost. Since digest `i` is the same string whatever the
//! count, only those digests' arcs change hands.
//!
//! # Where it differs from libmemcached
//!
//! * Weight 0: libmemcached treats it as weight 1 (checked against 1.1.4); here it drains
//!   the node, see [`RingNode::with_weight`]. Nodes default to weight 1, so this only
//!   matters for a weight of 0 set on purpose.
//! * No defaults are substituted: `memcached_server_add()` turns port 0 into 11211 and an
//!   empty host into `localhost`; this ring hashes host and port as given.
//! * No size limit: Debian's libmemcached 1.1 aborts on an assertion above 100 servers, so
//!   agreement can only be checked up to 100; larger rings follow the same algorithm.
//! * `MEMCACHED_BEHAVIOR_SORT_HOSTS` (off by default) sorts libmemcached's server list, which
//!   changes the tie order; to match a client using it, pass the nodes sorted by host, then
//!   port.

use std::fmt;
use std::io::Write as _;

use md5::{Digest, Md5};

/// memcached's default port: libmemcached leaves it out of a server's ketama name.
const MEMCACHED_DEFAULT_PORT: u16 = 11211;

/// libmemcached's `MEMCACHED_POINTS_PER_SERVER_KETAMA`: points per server of average weight.
const POINTS_PER_SERVER: f32 = 160.0;

/// Points taken from one 16-byte MD5 digest.
const POINTS_PER_DIGEST: usize = 4;

/// Up to this many replicas, [`HashRing::nodes_for`] dedups by scanning what it picked.
const LINEAR_SCAN_REPLICAS: usize = 16;

/// One server on the ring: where it is and how large a share of the keys it takes.
///
/// Two nodes are the same node when host and port are equal; the host is compared as written
/// (no case folding, no name resolution), because libmemcached hashes it as written.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RingNode {
    host: String,
    port: u16,
    weight: u32,
}

impl RingNode {
    /// A node of weight 1 at `host:port`.
    ///
    /// The host is used verbatim in the ketama name, so `"Cache-1"` and `"cache-1"` are
    /// different nodes with different points, as they are for libmemcached. An empty host and
    /// port 0 are kept as given (libmemcached would substitute `localhost` and 11211).
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            weight: 1,
        }
    }

    /// Sets the weight (default 1). A node's share of the keys is its weight over the total.
    ///
    /// A weight of 0 keeps the node in [`HashRing::nodes`] but gives it no points: no key
    /// maps to it and placement is exactly that of a ring without it (a "drained" node).
    /// Note that libmemcached itself treats a weight of 0 as 1.
    #[must_use]
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// The host, as given.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The weight (1 unless set with [`RingNode::with_weight`]).
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// The name libmemcached hashes to place this node: `host` when the port is 11211,
    /// `host:port` otherwise.
    ///
    /// ```
    /// use redquorum::RingNode;
    /// assert_eq!(RingNode::new("10.0.0.1", 11211).name(), "10.0.0.1");
    /// assert_eq!(RingNode::new("10.0.0.1", 6379).name(), "10.0.0.1:6379");
    /// ```
    pub fn name(&self) -> String {
        if self.port == MEMCACHED_DEFAULT_PORT {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    fn is_at(&self, host: &str, port: u16) -> bool {
        self.port == port && self.host == host
    }
}

impl fmt::Display for RingNode {
    /// `host:port`, always with the port (unlike [`RingNode::name`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// A ketama consistent-hash ring over [`RingNode`]s, placing keys exactly as libmemcached's
/// weighted ketama does (see the module documentation for the algorithm and tie order).
///
/// Lookups are a binary search over the sorted points (`O(log points)`, no allocation).
/// [`add`](HashRing::add) and [`remove`](HashRing::remove) rebuild the whole continuum
/// (`O(points log points)`, about 160 points per node), because in weighted mode every
/// node's point count depends on the total weight and the number of nodes.
///
/// ```
/// use redquorum::{HashRing, RingNode};
///
/// let ring = HashRing::from_nodes([
///     RingNode::new("10.0.0.1", 6379),
///     RingNode::new("10.0.0.2", 6379),
///     RingNode::new("10.0.0.3", 6379).with_weight(2),
/// ]);
/// let owner = ring.node_for("user:42").expect("the ring has live nodes");
/// let replicas = ring.nodes_for("user:42", 2);
/// assert_eq!(replicas[0], owner);
/// assert_ne!(replicas[0], replicas[1]);
/// ```
#[derive(Clone, Default)]
pub struct HashRing {
    nodes: Vec<RingNode>,
    /// Sorted point values; `owners[i]` is the index in `nodes` owning `points[i]`.
    /// Kept apart so the binary search walks a dense `u32` array.
    points: Vec<u32>,
    owners: Vec<u32>,
    /// Nodes with a weight above zero, counted at rebuild so lookups stay `O(log points)`.
    live: usize,
}

impl HashRing {
    /// An empty ring; every lookup returns `None` until a node of weight > 0 is added.
    pub fn new() -> Self {
        Self::default()
    }

    /// A ring over `nodes`, in that order (the order decides ties, as libmemcached's server
    /// list order does). A later node at the same host and port replaces the earlier one in
    /// place, as [`HashRing::add`] does.
    pub fn from_nodes(nodes: impl IntoIterator<Item = RingNode>) -> Self {
        let mut ring = Self::new();
        for node in nodes {
            ring.insert_node(node);
        }
        ring.rebuild();
        ring
    }

    /// Adds `node` at the end of [`HashRing::nodes`], or, if a node with the same host and port
    /// is already present, replaces it in place (keeping its position, so a weight change
    /// does not alter tie order).
    pub fn add(&mut self, node: RingNode) {
        self.insert_node(node);
        self.rebuild();
    }

    /// Removes the node at `host:port`. Returns whether it was present. The other nodes keep
    /// their relative order.
    pub fn remove(&mut self, host: &str, port: u16) -> bool {
        match self.position(host, port) {
            Some(i) => {
                self.nodes.remove(i);
                self.rebuild();
                true
            }
            None => false,
        }
    }

    /// Number of nodes, including nodes of weight 0.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the ring has no nodes at all.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The nodes, in insertion order. [`HashRing::node_index_for`] indexes into this slice.
    pub fn nodes(&self) -> &[RingNode] {
        &self.nodes
    }

    /// The node at `host:port`, if present.
    pub fn get(&self, host: &str, port: u16) -> Option<&RingNode> {
        self.position(host, port).map(|i| &self.nodes[i])
    }

    /// Whether a node at `host:port` is present.
    pub fn contains(&self, host: &str, port: u16) -> bool {
        self.position(host, port).is_some()
    }

    /// Number of points on the continuum (4 per digest, summed over nodes of weight > 0).
    pub fn point_count(&self) -> usize {
        self.points.len()
    }

    /// Index into [`HashRing::nodes`] of the node owning `key`, or `None` when no node has
    /// a weight above zero.
    pub fn node_index_for(&self, key: impl AsRef<[u8]>) -> Option<usize> {
        let start = self.start(Self::key_hash(key.as_ref()))?;
        Some(self.owners[start] as usize)
    }

    /// The node owning `key`, or `None` when no node has a weight above zero.
    pub fn node_for(&self, key: impl AsRef<[u8]>) -> Option<&RingNode> {
        self.node_index_for(key).map(|i| &self.nodes[i])
    }

    /// Up to `r` distinct nodes for `key`: the owner first, then the next distinct nodes met
    /// walking the ring clockwise from the key's point (the usual replica placement).
    ///
    /// Returns fewer than `r` nodes when fewer nodes have a weight above zero, and an empty
    /// vector for `r == 0` or a ring without live nodes.
    pub fn nodes_for(&self, key: impl AsRef<[u8]>, r: usize) -> Vec<&RingNode> {
        let Some(start) = self.start(Self::key_hash(key.as_ref())) else {
            return Vec::new();
        };
        let want = r.min(self.live);
        let mut picked: Vec<&RingNode> = Vec::with_capacity(want);
        // The usual replica count is tiny: a linear scan of what was picked beats
        // allocating and clearing a flag per node on a large ring.
        let mut seen = if want > LINEAR_SCAN_REPLICAS {
            vec![false; self.nodes.len()]
        } else {
            Vec::new()
        };
        let mut picked_idx: Vec<u32> = Vec::with_capacity(want);
        let (after, before) = self.owners.split_at(start);
        for &owner in before.iter().chain(after) {
            if picked.len() == want {
                break;
            }
            let new = if seen.is_empty() {
                !picked_idx.contains(&owner)
            } else {
                !std::mem::replace(&mut seen[owner as usize], true)
            };
            if new {
                picked_idx.push(owner);
                picked.push(&self.nodes[owner as usize]);
            }
        }
        picked
    }

    /// The ketama hash of a key: the first 4 bytes of `MD5(key)` as a little-endian `u32`
    /// (libhashkit's `hashkit_md5`).
    ///
    /// ```
    /// use redquorum::HashRing;
    /// // MD5("") = d41d8cd9 8f00b204 ...
    /// assert_eq!(HashRing::key_hash(b""), 0xd98c_1dd4);
    /// ```
    pub fn key_hash(key: &[u8]) -> u32 {
        let digest = Md5::digest(key);
        u32::from_le_bytes([digest[0], digest[1], digest[2], digest[3]])
    }

    fn position(&self, host: &str, port: u16) -> Option<usize> {
        self.nodes.iter().position(|n| n.is_at(host, port))
    }

    fn insert_node(&mut self, node: RingNode) {
        match self.position(&node.host, node.port) {
            Some(i) => self.nodes[i] = node,
            None => self.nodes.push(node),
        }
    }

    fn live_nodes(&self) -> usize {
        self.nodes.iter().filter(|n| n.weight > 0).count()
    }

    /// Index of the first point `>= hash`, wrapping to 0; `None` on an empty continuum.
    fn start(&self, hash: u32) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let i = self.points.partition_point(|&p| p < hash);
        Some(if i == self.points.len() { 0 } else { i })
    }

    fn rebuild(&mut self) {
        let live = self.live_nodes();
        self.live = live;
        let total_weight: u64 = self.nodes.iter().map(|n| u64::from(n.weight)).sum();
        let mut continuum: Vec<(u32, u32)> = Vec::new();
        for (index, node) in self.nodes.iter().enumerate() {
            if node.weight == 0 {
                continue;
            }
            // Unreachable in practice: 2^32 nodes would need terabytes of points first.
            let owner = u32::try_from(index).expect("more than u32::MAX ring nodes");
            let digests = digests_per_node(node.weight, total_weight, live);
            continuum.reserve(digests as usize * POINTS_PER_DIGEST);
            let name = node.name();
            let mut hasher_input = Vec::with_capacity(name.len() + 11);
            for i in 0..digests {
                hasher_input.clear();
                hasher_input.extend_from_slice(name.as_bytes());
                hasher_input.push(b'-');
                write!(hasher_input, "{i}").expect("writing to a Vec cannot fail");
                let digest = Md5::digest(&hasher_input);
                for chunk in digest.chunks_exact(4) {
                    let point = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
                    continuum.push((point, owner));
                }
            }
        }
        // (point, owner index): the earlier node wins a tie, as with libmemcached's qsort
        // comparator `continuum_item_cmp`.
        continuum.sort_unstable();
        self.points = continuum.iter().map(|&(p, _)| p).collect();
        self.owners = continuum.iter().map(|&(_, o)| o).collect();
    }
}

/// Digests for one node, computed as libmemcached's `update_continuum()` does in weighted
/// mode, in `f32` and in the same order of operations:
///
/// ```c
/// float pct = (float) weight / (float) total_weight;
/// pointer_per_server = floor(pct * 160 / 4 * (float) live_servers + 0.0000000001F) * 4;
/// ```
///
/// The rounding is part of the format: with equal weights and `live` = 25, 47, 50, 100, ...
/// `1/live` rounds down and the result is 39, not 40.
fn digests_per_node(weight: u32, total_weight: u64, live: usize) -> u32 {
    let pct = weight as f32 / total_weight as f32;
    let digests = (pct * POINTS_PER_SERVER / POINTS_PER_DIGEST as f32 * live as f32
        + 0.000_000_000_1_f32)
        .floor();
    // `as` saturates; libmemcached would overflow only for absurd weights.
    digests as u32
}

impl fmt::Debug for HashRing {
    /// The nodes and the number of points; the points themselves are too many to be useful.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HashRing")
            .field("nodes", &self.nodes)
            .field("points", &self.points.len())
            .finish()
    }
}

impl FromIterator<RingNode> for HashRing {
    fn from_iter<I: IntoIterator<Item = RingNode>>(iter: I) -> Self {
        Self::from_nodes(iter)
    }
}

impl Extend<RingNode> for HashRing {
    /// Adds every node (replacing same host:port in place) and rebuilds once.
    fn extend<I: IntoIterator<Item = RingNode>>(&mut self, iter: I) {
        for node in iter {
            self.insert_node(node);
        }
        self.rebuild();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn equal_nodes(n: usize) -> Vec<RingNode> {
        (0..n)
            .map(|i| RingNode::new(format!("10.0.{}.{}", i / 250, i % 250), 6379))
            .collect()
    }

    #[test]
    fn name_omits_only_the_memcached_default_port() {
        assert_eq!(RingNode::new("cache", 11211).name(), "cache");
        assert_eq!(RingNode::new("cache", 6379).name(), "cache:6379");
        assert_eq!(RingNode::new("::1", 6380).name(), "::1:6380");
        assert_eq!(RingNode::new("cache", 6379).to_string(), "cache:6379");
        assert_eq!(RingNode::new("cache", 11211).to_string(), "cache:11211");
    }

    #[test]
    fn key_hash_is_md5_prefix_little_endian() {
        // MD5("") = d41d8cd98f00b204e9800998ecf8427e
        assert_eq!(HashRing::key_hash(b""), 0xd98c_1dd4);
        // MD5("a") = 0cc175b9c0f1b6a831c399e269772661
        assert_eq!(HashRing::key_hash(b"a"), 0xb975_c10c);
    }

    #[test]
    fn equal_weights_give_160_points_except_where_f32_rounds_down() {
        for n in [1, 2, 3, 5, 10, 24, 26, 99] {
            let ring = HashRing::from_nodes(equal_nodes(n));
            assert_eq!(ring.point_count(), 160 * n, "n = {n}");
        }
        // 1/n rounds down in f32 for these n; libmemcached gives 39 digests, 156 points.
        for n in [25, 47, 50, 100] {
            let ring = HashRing::from_nodes(equal_nodes(n));
            assert_eq!(ring.point_count(), 156 * n, "n = {n}");
        }
    }

    #[test]
    fn weighted_points_follow_the_share() {
        // Weights 1,2,3,5 of 11 over 4 nodes: floor(w/11 * 160) digests... * 4 points each.
        let ring = HashRing::from_nodes(
            [1, 2, 3, 5]
                .into_iter()
                .enumerate()
                .map(|(i, w)| RingNode::new(format!("redis-{i}"), 6379).with_weight(w)),
        );
        let expected: Vec<u32> = [1u32, 2, 3, 5]
            .iter()
            .map(|&w| digests_per_node(w, 11, 4))
            .collect();
        assert_eq!(expected, [14, 29, 43, 72]);
        let total: u32 = expected.iter().sum::<u32>() * 4;
        assert_eq!(ring.point_count(), total as usize);
        for (i, &d) in expected.iter().enumerate() {
            let owned = ring.owners.iter().filter(|&&o| o as usize == i).count();
            assert_eq!(owned, d as usize * 4);
        }
    }

    #[test]
    fn points_are_sorted_and_each_digest_gives_four_le_points() {
        let ring = HashRing::from_nodes([RingNode::new("cache", 11211)]);
        assert!(ring.points.windows(2).all(|w| w[0] <= w[1]));
        let d = Md5::digest(b"cache-0");
        for c in d.chunks_exact(4) {
            let p = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            assert!(ring.points.binary_search(&p).is_ok());
        }
    }

    #[test]
    fn lookup_takes_first_point_at_or_above_and_wraps() {
        let ring = HashRing::from_nodes(equal_nodes(3));
        let first = ring.points[0];
        let last = *ring.points.last().unwrap();
        assert_eq!(ring.start(0), Some(0));
        assert_eq!(ring.start(first), Some(0));
        assert_eq!(ring.start(last), Some(ring.points.len() - 1));
        // Above the last point: wrap to the first.
        assert_eq!(ring.start(last.wrapping_add(1)), Some(0));
        assert_eq!(ring.start(u32::MAX), Some(0));
        // Exactly between two points: the upper one.
        let (a, b) = (ring.points[10], ring.points[11]);
        assert!(a < b);
        assert_eq!(ring.start(a + 1), Some(11));
    }

    #[test]
    fn empty_ring_and_all_zero_weights_map_nothing() {
        let ring = HashRing::new();
        assert!(ring.is_empty());
        assert_eq!(ring.node_for("k"), None);
        assert_eq!(ring.node_index_for("k"), None);
        assert!(ring.nodes_for("k", 3).is_empty());

        let ring = HashRing::from_nodes([RingNode::new("a", 1).with_weight(0)]);
        assert_eq!(ring.len(), 1);
        assert_eq!(ring.point_count(), 0);
        assert_eq!(ring.node_for("k"), None);
        assert!(ring.nodes_for("k", 1).is_empty());
    }

    #[test]
    fn zero_weight_node_is_excluded_and_changes_nothing() {
        let without = HashRing::from_nodes(equal_nodes(4));
        let mut with = without.clone();
        with.add(RingNode::new("drained", 6379).with_weight(0));
        assert_eq!(with.len(), 5);
        assert_eq!(with.point_count(), without.point_count());
        for i in 0..2_000 {
            let key = format!("k{i}");
            assert_eq!(with.node_for(&key), without.node_for(&key));
            assert_eq!(with.nodes_for(&key, 10).len(), 4);
        }
    }

    #[test]
    fn nodes_for_returns_distinct_nodes_starting_with_the_owner() {
        // 40 nodes so both dedup strategies (scan below 17 replicas, flags above) run.
        let ring = HashRing::from_nodes(equal_nodes(40));
        for i in 0..300 {
            let key = format!("key:{i}");
            let owner = ring.node_for(&key).unwrap();
            let all = ring.nodes_for(&key, 100);
            assert_eq!(all.len(), 40);
            for r in [0, 1, 2, 3, 16, 17, 39, 40, 41] {
                let got = ring.nodes_for(&key, r);
                assert_eq!(got.len(), r.min(40));
                if r > 0 {
                    assert_eq!(got[0], owner);
                }
                for (j, a) in got.iter().enumerate() {
                    assert!(got[j + 1..].iter().all(|b| a != b), "duplicate in {got:?}");
                }
                // A prefix of the longer answer: replica order is stable.
                assert_eq!(got, all[..r.min(40)]);
            }
        }
    }

    #[test]
    fn nodes_for_follows_ring_order_across_the_wrap() {
        let ring = HashRing::from_nodes(equal_nodes(3));
        // A key hashing above the last point starts at point 0.
        let last = *ring.points.last().unwrap();
        let key = (0u32..)
            .map(|i| format!("wrap-{i}"))
            .find(|k| HashRing::key_hash(k.as_bytes()) > last)
            .unwrap();
        let got = ring.nodes_for(&key, 3);
        let mut expected = Vec::new();
        for &o in &ring.owners {
            let n = &ring.nodes[o as usize];
            if !expected.contains(&n) {
                expected.push(n);
            }
        }
        assert_eq!(got, expected);
    }

    #[test]
    fn add_replaces_same_host_port_in_place_and_remove_keeps_order() {
        let mut ring = HashRing::from_nodes(equal_nodes(3));
        let second = ring.nodes()[1].clone();
        ring.add(second.clone().with_weight(5));
        assert_eq!(ring.len(), 3);
        assert_eq!(ring.nodes()[1].weight(), 5);
        assert!(ring.contains(second.host(), second.port()));
        assert_eq!(ring.get(second.host(), 6379).map(RingNode::weight), Some(5));
        // Same host, other port: another node.
        ring.add(RingNode::new(second.host(), 6380));
        assert_eq!(ring.len(), 4);

        assert!(ring.remove(second.host(), 6379));
        assert!(!ring.remove(second.host(), 6379));
        let names: Vec<String> = ring.nodes().iter().map(RingNode::to_string).collect();
        assert_eq!(names, ["10.0.0.0:6379", "10.0.0.2:6379", "10.0.0.1:6380"]);
    }

    #[test]
    fn ties_go_to_the_node_earlier_in_the_list() {
        // These two names share the point 86362442 (found by tools/ketama-vectors).
        let a = RingNode::new("tie1042.example", 11211);
        let b = RingNode::new("tie2639.example", 11211);
        let filler = RingNode::new("tie-filler.example", 11211);
        let ab = HashRing::from_nodes([a.clone(), b.clone(), filler.clone()]);
        let ba = HashRing::from_nodes([b.clone(), a.clone(), filler]);
        let tie = 86_362_442;
        let at = ab.points.partition_point(|&p| p < tie);
        assert_eq!(&ab.points[at..at + 2], [tie, tie]);
        // A hash exactly on the tied point, and the key libmemcached was asked about.
        assert_eq!(ab.nodes[ab.owners[ab.start(tie).unwrap()] as usize], a);
        assert_eq!(ba.nodes[ba.owners[ba.start(tie).unwrap()] as usize], b);
        assert_eq!(ab.node_for("tie-probe-11254"), Some(&a));
        assert_eq!(ba.node_for("tie-probe-11254"), Some(&b));
    }

    #[test]
    fn debug_is_short() {
        let ring = HashRing::from_nodes(equal_nodes(2));
        let s = format!("{ring:?}");
        assert!(s.contains("points: 320"), "{s}");
    }
}
