//! Time per key lookup on rings of 5 and 1,000 equal-weight nodes.
//!
//! `cargo bench --bench ring_lookup`

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use redquorum::{HashRing, RingNode};

/// Enough distinct keys that the binary search does not always hit the same cache lines.
const KEYS: usize = 4_096;

fn ring(n: usize) -> HashRing {
    HashRing::from_nodes((0..n).map(|i| {
        RingNode::new(
            format!("10.{}.{}.{}", i / 65_536, i / 256 % 256, i % 256),
            6379,
        )
    }))
}

fn keys() -> Vec<String> {
    (0..KEYS)
        .map(|i| format!("bench:user:{i}:profile"))
        .collect()
}

fn lookup(c: &mut Criterion) {
    let keys = keys();
    let mut group = c.benchmark_group("ring");
    group.throughput(Throughput::Elements(1));
    for n in [5, 1_000] {
        let ring = ring(n);
        let mut i = 0;
        group.bench_with_input(BenchmarkId::new("node_for", n), &ring, |b, ring| {
            b.iter(|| {
                i = (i + 1) % KEYS;
                black_box(ring.node_for(black_box(&keys[i])))
            })
        });
        group.bench_with_input(BenchmarkId::new("nodes_for_3", n), &ring, |b, ring| {
            b.iter(|| {
                i = (i + 1) % KEYS;
                black_box(ring.nodes_for(black_box(&keys[i]), 3))
            })
        });
    }
    let mut i = 0;
    group.bench_function("key_hash", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(HashRing::key_hash(black_box(keys[i].as_bytes())))
        })
    });
    group.bench_function(BenchmarkId::new("rebuild", 1_000), |b| {
        let mut ring = ring(1_000);
        b.iter(|| ring.add(RingNode::new("10.9.9.9", 6379)));
    });
    group.finish();
}

criterion_group!(benches, lookup);
criterion_main!(benches);
