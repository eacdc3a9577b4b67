//! The cost of every lock primitive side by side: acquire + release, uncontended.
//!
//! How to run: `cargo run --release --example primitives_latency` starts five local
//! `redis-server` masters itself (stopped when the example ends), measures with all masters
//! healthy, then with one frozen by SIGSTOP. To use masters of your own instead (healthy run
//! only): `REDQUORUM_MASTERS=redis://h1:6379,redis://h2:6379,redis://h3:6379 cargo run --release --example primitives_latency`.
//!
//! What it shows: p50 / p99 of 300 sequential acquire + release pairs per primitive, with the
//! round trips each needs (every round goes to all masters in parallel and is decided at
//! quorum, so a round trip costs the quorum-th fastest master's reply).

mod common;

use std::time::Duration;

use redquorum::Redlock;

const N: usize = 300;

async fn table(redlock: &Redlock, tag: &str) -> anyhow::Result<()> {
    let ttl = Duration::from_secs(5);
    let r = redlock.clone();
    common::timed("basic lock (1 + 1 round trips)", N, |i| {
        let r = r.clone();
        let name = format!("{tag}-basic-{i}");
        async move {
            r.acquire(&name, ttl).await?.release().await?;
            Ok(())
        }
    })
    .await?;
    common::timed("multi-resource, 4 names (1 + 1)", N, |i| {
        let r = r.clone();
        let names: Vec<String> = (0..4).map(|k| format!("{tag}-multi-{i}-{k}")).collect();
        async move {
            r.acquire_many(&names, ttl).await?.release().await?;
            Ok(())
        }
    })
    .await?;
    let owner = r.reentrant("bench");
    common::timed("reentrant (1 + 1)", N, |i| {
        let owner = owner.clone();
        let name = format!("{tag}-re-{i}");
        async move {
            owner.acquire(&name, ttl).await?.release().await?;
            Ok(())
        }
    })
    .await?;
    common::timed("fair lock (ticket + 1 + 1)", N, |i| {
        let fair = r.fair_lock(format!("{tag}-fair-{i}"));
        async move {
            fair.acquire(ttl).await?.release().await?;
            Ok(())
        }
    })
    .await?;
    common::timed("read lease (1 + 1)", N, |i| {
        let rw = r.rw_lock(format!("{tag}-rw-{i}"));
        async move {
            rw.read(ttl).await?.release().await?;
            Ok(())
        }
    })
    .await?;
    common::timed("write lock (1 + 1)", N, |i| {
        let rw = r.rw_lock(format!("{tag}-rw-{i}"));
        async move {
            rw.write(ttl).await?.release().await?;
            Ok(())
        }
    })
    .await?;
    let sem = r.semaphore(format!("{tag}-sem"), 4);
    common::timed("semaphore permit, 4 permits (1 + 1)", N, |_| {
        let sem = sem.clone();
        async move {
            sem.acquire(ttl).await?.release().await?;
            Ok(())
        }
    })
    .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (urls, cluster) = common::masters()?;
    println!("masters: {}", urls.join(" "));
    let redlock = Redlock::builder().masters(urls).build().await?;
    println!("all masters healthy, acquire + release:");
    table(&redlock, "healthy").await?;
    if let Some(cluster) = &cluster {
        cluster.pause(2)?;
        println!("master 2 frozen with SIGSTOP, acquire + release:");
        table(&redlock, "paused").await?;
        cluster.resume(2)?;
    }
    Ok(())
}
