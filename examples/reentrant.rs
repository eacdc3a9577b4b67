//! A recursive job that takes the same lock at every level, with a reentrant lock.
//!
//! How to run: `cargo run --example reentrant` starts five local `redis-server` masters itself
//! (stopped when the example ends). To use masters of your own instead:
//! `REDQUORUM_MASTERS=redis://h1:6379,redis://h2:6379,redis://h3:6379 cargo run --example reentrant`.
//!
//! What it shows: a job (owner id `job-1`) walks a tree and locks `catalog` at every level; with
//! a plain lock the second level would wait for the first forever. Each level holds its own
//! guard, and another owner (`job-2`), asking meanwhile, gets the lock only after the outermost
//! level released it. Then the cost of a first acquisition and of a re-entry.

mod common;

use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use redquorum::{Redlock, ReentrantLock};

fn walk(
    owner: ReentrantLock,
    depth: usize,
    started: Instant,
) -> BoxFuture<'static, anyhow::Result<()>> {
    Box::pin(async move {
        let guard = owner.acquire("catalog", Duration::from_secs(5)).await?;
        println!(
            "{:>5} ms  {}job-1 holds `catalog` at depth {depth} (fencing token {})",
            started.elapsed().as_millis(),
            "  ".repeat(depth),
            guard.fencing_token().unwrap_or(0)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        if depth < 3 {
            walk(owner, depth + 1, started).await?;
        }
        guard.release().await?;
        println!(
            "{:>5} ms  {}job-1 released depth {depth}",
            started.elapsed().as_millis(),
            "  ".repeat(depth)
        );
        Ok(())
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (urls, _cluster) = common::masters()?;
    println!("masters: {}", urls.join(" "));
    let a = Redlock::builder().masters(urls.clone()).build().await?;
    let b = Redlock::builder().masters(urls.clone()).build().await?;
    let started = Instant::now();
    let job = tokio::spawn(walk(a.reentrant("job-1"), 0, started));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let other = b
        .reentrant("job-2")
        .acquire("catalog", Duration::from_secs(5))
        .await?;
    println!(
        "{:>5} ms  job-2 got `catalog` (after job-1's last release)",
        started.elapsed().as_millis()
    );
    other.release().await?;
    job.await??;

    let owner = a.reentrant("job-3");
    let ttl = Duration::from_secs(5);
    common::timed("first acquire + release, 2 round trips", 200, |i| {
        let owner = owner.clone();
        async move {
            owner
                .acquire(&format!("r{i}"), ttl)
                .await?
                .release()
                .await?;
            Ok(())
        }
    })
    .await?;
    let outer = owner.acquire("held", ttl).await?;
    common::timed("re-entry acquire + release, 2 round trips", 200, |_| {
        let owner = owner.clone();
        async move {
            owner.acquire("held", ttl).await?.release().await?;
            Ok(())
        }
    })
    .await?;
    outer.release().await?;
    Ok(())
}
