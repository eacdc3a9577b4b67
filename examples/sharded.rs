//! Locks sharded over three groups of three masters, then a group added and one removed while
//! locks are taken.
//!
//! How to run: `cargo run --example sharded` starts four groups of three local `redis-server`
//! masters itself (stopped when the example ends); it needs `redis-server` on `PATH`.
//!
//! What it shows: where resources live (the ring over the group names), a multi-resource lock
//! spanning groups (taken group by group, one token per resource), a group change (joint
//! phase of one max TTL, here 2 s) with a worker locking throughout, and how the tokens of one
//! resource keep increasing while it moves.

use std::time::Duration;

use anyhow::Context;
use redquorum::{Redlock, ShardedRedlock};
use testcluster::Cluster;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let clusters: Vec<Cluster> = (0..4)
        .map(|_| Cluster::start(3))
        .collect::<Result<_, _>>()
        .context("starting redis-server masters (is redis-server installed?)")?;
    let group = |i: usize| Redlock::builder().masters(clusters[i].urls());
    let sharded = ShardedRedlock::builder()
        .group("g1", 1, group(0))
        .group("g2", 1, group(1))
        .group("g3", 1, group(2))
        .max_ttl(Duration::from_secs(2))
        .build()
        .await?;
    println!("epoch {}, groups {:?}", sharded.epoch(), sharded.groups());
    for r in ["invoice:1", "invoice:2", "invoice:3", "user:42"] {
        println!("{r:>10} lives on {}", sharded.owner(r));
    }

    let ttl = Duration::from_secs(1);
    let both = sharded.acquire_many(["invoice:1", "user:42"], ttl).await?;
    println!("multi-resource lock held as {:?}", both.holds());
    for r in ["invoice:1", "user:42"] {
        println!("  token of {r}: {:?}", both.fencing_token_of(r));
    }
    both.release().await?;

    // A worker keeps locking one resource while g4 joins and g3 leaves.
    let moving = (0..1000)
        .map(|i| format!("job:{i}"))
        .find(|r| sharded.owner(r) == "g3")
        .expect("some resource lives on g3");
    let worker = {
        let sharded = sharded.clone();
        let moving = moving.clone();
        tokio::spawn(async move {
            let mut last = 0;
            for _ in 0..40 {
                let lock = sharded.acquire(&moving, ttl).await?;
                let token = lock.fencing_token().unwrap_or(0);
                assert!(token > last, "tokens strictly increase per resource");
                if lock.epoch() != (last >> 48) {
                    println!("  {moving}: epoch {} on {:?}", lock.epoch(), lock.groups());
                }
                last = token;
                lock.release().await?;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            anyhow::Ok(())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = sharded
        .change_groups([
            ("g1", 1, group(0)),
            ("g2", 1, group(1)),
            ("g4", 1, group(3)),
        ])
        .await?;
    println!("change: {report:?}");
    worker.await??;
    println!("epoch {}, groups {:?}", sharded.epoch(), sharded.groups());
    Ok(())
}
