//! Load balance and key movement of the ketama ring over 1,000,000 keys.
//!
//! `cargo run --release --example ring_stats [keys]`
//!
//! For N equal-weight nodes: keys per node (peak and lowest over the mean), then the
//! fraction of keys that move when one node is removed or one is added, next to that node's
//! share of the keys, and how many keys moved between nodes that were there both times
//! (0 unless libmemcached's f32 rounding changes every node's digest count at that N).

use std::time::Instant;

use redquorum::{HashRing, RingNode};

fn node(i: usize) -> RingNode {
    RingNode::new(format!("10.4.{}.{}", i / 256, i % 256), 6379)
}

fn owners(ring: &HashRing, keys: &[String]) -> Vec<usize> {
    keys.iter()
        .map(|k| ring.node_index_for(k).expect("ring has live nodes"))
        .collect()
}

fn main() -> anyhow::Result<()> {
    let n_keys: usize = match std::env::args().nth(1) {
        Some(s) => s.parse()?,
        None => 1_000_000,
    };
    let keys: Vec<String> = (0..n_keys).map(|i| format!("stats:key:{i}")).collect();
    let started = Instant::now();

    println!("{n_keys} keys, equal weights");
    println!(
        "{:>4} {:>7} {:>9} {:>6} {:>6} | {:>8} {:>8} {:>9} | {:>8} {:>8} {:>9}",
        "N",
        "points",
        "mean",
        "peak",
        "low",
        "rm moved",
        "rm share",
        "rm betw.",
        "add mov.",
        "add shr.",
        "add betw."
    );
    for n in [5, 10, 20, 50, 100] {
        let ring = HashRing::from_nodes((0..n).map(node));
        let before = owners(&ring, &keys);

        let mut load = vec![0usize; n];
        for &o in &before {
            load[o] += 1;
        }
        let mean = n_keys as f64 / n as f64;
        let peak = *load.iter().max().unwrap() as f64 / mean;
        let low = *load.iter().min().unwrap() as f64 / mean;

        // Remove the middle node. Indices above it shift down by one.
        let victim = n / 2;
        let mut smaller = ring.clone();
        smaller.remove(ring.nodes()[victim].host(), ring.nodes()[victim].port());
        let after = owners(&smaller, &keys);
        let unshift = |i: usize| if i >= victim { i + 1 } else { i };
        let rm_moved = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| **b != unshift(**a))
            .count();
        let rm_between = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| **b != victim && **b != unshift(**a))
            .count();
        let rm_share = load[victim];

        // Add one node at the end (index n).
        let mut bigger = ring.clone();
        bigger.add(node(n));
        let after = owners(&bigger, &keys);
        let add_moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        let add_between = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| b != a && **a != n)
            .count();
        let add_share = after.iter().filter(|&&a| a == n).count();

        let f = |x: usize| x as f64 / n_keys as f64;
        println!(
            "{n:>4} {:>7} {mean:>9.0} {peak:>6.3} {low:>6.3} | {:>8.4} {:>8.4} {:>9.4} | {:>8.4} {:>8.4} {:>9.4}",
            ring.point_count(),
            f(rm_moved),
            f(rm_share),
            f(rm_between),
            f(add_moved),
            f(add_share),
            f(add_between),
        );
    }
    println!("({:.1} s)", started.elapsed().as_secs_f64());
    Ok(())
}
