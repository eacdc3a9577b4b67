//! W8: sharded locks (`ShardedRedlock`) over 1, 2 and 3 groups of 3 masters.
//!
//! Opt-in (`--only w8`): it starts its own nine masters. It measures
//! - throughput and each group's masters' CPU (from `INFO cpu`) at a fixed total load
//!   (`W8_TASKS` tasks doing lock + unlock on distinct keys), with 1, 2 and 3 groups. On a
//!   2-core machine the total cannot grow with groups; what must show is that each group's
//!   share of the masters' CPU divides as the groups do;
//! - routing cost: W1's shape (one task, lock + unlock) on one group of 3 masters, plain
//!   `Redlock` against `ShardedRedlock` with that single group (p50, p99);
//! - balance: owners of 1,000,000 resource names with 1, 2 and 3 equal groups (min / max per
//!   group).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use redquorum::{Redlock, ShardedRedlock};
use testcluster::Cluster;

use crate::Args;
use crate::workloads::Lat;

/// Tasks of the fixed total load.
const W8_TASKS: usize = 32;
const GROUP_SIZE: usize = 3;
const TTL: Duration = Duration::from_secs(10);
const BALANCE_RESOURCES: usize = 1_000_000;
/// Per-master timeout: 32 tasks on a shared 2-core machine keep masters busy for longer than
/// the default 50 ms at times; the figures are about load, not about timeouts.
const MASTER_TIMEOUT: Duration = Duration::from_millis(250);

/// Runs W8 and prints its tables.
pub async fn run(args: &Args) -> Result<()> {
    let clusters = tokio::task::spawn_blocking(|| {
        (0..3)
            .map(|_| Cluster::start(GROUP_SIZE))
            .collect::<Result<Vec<_>, _>>()
    })
    .await?
    .context("starting 3 groups of 3 masters")?;
    for c in &clusters {
        crate::set_persistence(&c.urls(), args.persistence).await?;
    }
    let slot = Duration::from_secs_f64(args.secs * args.rounds as f64);
    println!("W8: {W8_TASKS} tasks, lock + unlock on distinct keys, {slot:?} per setup");
    println!(
        "groups | pairs/s | masters' CPU per group (% of one core) | CPU us/pair | keys per group"
    );
    for g in 1..=3 {
        let sharded = client(&clusters[..g], &format!("w8g{g}:")).await?;
        let before = cpu(&clusters[..g]).await?;
        let (pairs, per_group) = load(&sharded, slot).await?;
        let after = cpu(&clusters[..g]).await?;
        let shares: Vec<String> = before
            .iter()
            .zip(&after)
            .map(|(b, a)| format!("{:.0}%", (a - b) / slot.as_secs_f64() * 100.0))
            .collect();
        let total: f64 = before.iter().zip(&after).map(|(b, a)| a - b).sum();
        println!(
            "{g:>6} | {:>7.0} | {:<38} | {:>11.1} | {per_group:?}",
            pairs as f64 / slot.as_secs_f64(),
            shares.join(" "),
            total * 1e6 / pairs.max(1) as f64
        );
    }
    routing(&clusters[0], args.max_ops).await?;
    balance(&clusters).await?;
    Ok(())
}

/// A sharded client over `clusters` (groups `g1`..), keys under `prefix` so that every setup
/// has a topology of its own.
async fn client(clusters: &[Cluster], prefix: &str) -> Result<ShardedRedlock> {
    let mut b = ShardedRedlock::builder().max_ttl(TTL);
    for (i, c) in clusters.iter().enumerate() {
        let group = Redlock::builder()
            .masters(c.urls())
            .master_timeout(MASTER_TIMEOUT)
            .key_prefix(prefix);
        b = b.group(format!("g{}", i + 1), 1, group);
    }
    Ok(b.build().await?)
}

/// The fixed load for `slot`: pairs done, and how many keys each group served.
async fn load(
    sharded: &ShardedRedlock,
    slot: Duration,
) -> Result<(usize, std::collections::BTreeMap<String, usize>)> {
    let stop = Instant::now() + slot;
    let tasks: Vec<_> = (0..W8_TASKS)
        .map(|t| {
            let sharded = sharded.clone();
            tokio::spawn(async move {
                let mut served = std::collections::BTreeMap::<String, usize>::new();
                let mut i = 0usize;
                while Instant::now() < stop {
                    let key = format!("w8:{t}:{i}");
                    i += 1;
                    // A failed pair (a timeout under load) counts as nothing served.
                    let Ok(lock) = sharded.acquire(&key, TTL).await else {
                        continue;
                    };
                    let group = lock.groups()[0].to_owned();
                    if lock.release().await.is_ok() {
                        *served.entry(group).or_default() += 1;
                    }
                }
                anyhow::Ok(served)
            })
        })
        .collect();
    let mut total = std::collections::BTreeMap::new();
    for t in tasks {
        for (g, n) in t.await?? {
            *total.entry(g).or_default() += n;
        }
    }
    Ok((total.values().sum(), total))
}

/// CPU seconds (user + sys) used so far by each group's masters together.
async fn cpu(clusters: &[Cluster]) -> Result<Vec<f64>> {
    let mut out = Vec::new();
    for c in clusters {
        let mut sum = 0.0;
        for url in c.urls() {
            let mut conn = redis::Client::open(url.as_str())?
                .get_multiplexed_async_connection()
                .await?;
            let info: String = redis::cmd("INFO").arg("cpu").query_async(&mut conn).await?;
            sum += info
                .lines()
                .filter(|l| l.starts_with("used_cpu_sys:") || l.starts_with("used_cpu_user:"))
                .filter_map(|l| l.split(':').nth(1)?.trim().parse::<f64>().ok())
                .sum::<f64>();
        }
        out.push(sum);
    }
    Ok(out)
}

/// W1's shape on one group: plain Redlock against the sharded client with that one group.
async fn routing(cluster: &Cluster, max_ops: usize) -> Result<()> {
    let plain = Redlock::builder()
        .masters(cluster.urls())
        .master_timeout(MASTER_TIMEOUT)
        .key_prefix("w8plain:")
        .build()
        .await?;
    let sharded = client(std::slice::from_ref(cluster), "w8one:").await?;
    let n = max_ops.min(3000);
    let (mut p, mut s) = (Lat::default(), Lat::default());
    // Alternate in blocks so that machine noise hits both alike.
    for block in 0..6 {
        for i in 0..n / 6 {
            let key = format!("w1:{block}:{i}");
            let t = Instant::now();
            plain.acquire(&key, TTL).await?.release().await?;
            p.push(t.elapsed());
            let t = Instant::now();
            sharded.acquire(&key, TTL).await?.release().await?;
            s.push(t.elapsed());
        }
    }
    let us = |l: &Lat, q: f64| l.pct(q).map_or("-".into(), |v| format!("{v:.0}"));
    println!("W8 routing (W1 shape, one group of {GROUP_SIZE}, {n} pairs each, us):");
    println!("  Redlock        p50 {} p99 {}", us(&p, 50.0), us(&p, 99.0));
    println!("  ShardedRedlock p50 {} p99 {}", us(&s, 50.0), us(&s, 99.0));
    Ok(())
}

/// Owners of 1,000,000 names with 1, 2, 3 equal groups: min and max per group.
async fn balance(clusters: &[Cluster]) -> Result<()> {
    println!("W8 balance over {BALANCE_RESOURCES} resources:");
    for g in 1..=3 {
        let sharded = client(&clusters[..g], &format!("w8g{g}:")).await?;
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        for i in 0..BALANCE_RESOURCES {
            *counts
                .entry(sharded.owner(&format!("resource:{i}")))
                .or_default() += 1;
        }
        let (min, max) = (counts.values().min(), counts.values().max());
        println!(
            "  {g} groups: min {} max {} (ideal {}) {counts:?}",
            min.unwrap_or(&0),
            max.unwrap_or(&0),
            BALANCE_RESOURCES / g
        );
    }
    Ok(())
}
