//! Waiters served first come, first served by a fair lock, compared with the basic lock.
//!
//! How to run: `cargo run --example fair_lock` starts five local `redis-server` masters itself
//! (stopped when the example ends). To use masters of your own instead:
//! `REDQUORUM_MASTERS=redis://h1:6379,redis://h2:6379,redis://h3:6379 cargo run --example fair_lock`.
//!
//! What it shows: while a holder keeps the lock, ten waiters (each its own client) arrive 30 ms
//! apart; then the holder lets go and each waiter holds the lock briefly in turn. The order of
//! service is printed for the fair lock and for the basic lock (which retries with jitter and
//! serves whoever asks first after a release), with Kendall's tau between arrival and service
//! order (1 = first come, first served). Then the cost of an uncontended fair lock.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use redquorum::{LockGuard, Redlock};

const WAITERS: usize = 10;

type Take = fn(Redlock) -> BoxFuture<'static, redquorum::Result<LockGuard>>;

async fn service_order(
    holder: &Redlock,
    waiters: &[Redlock],
    take: Take,
) -> anyhow::Result<Vec<usize>> {
    let first = take(holder.clone()).await?;
    let rank = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (i, redlock) in waiters.iter().cloned().enumerate() {
        let rank = rank.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30 * i as u64)).await;
            let lock = take(redlock).await?;
            let served = rank.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(10)).await;
            lock.release().await?;
            anyhow::Ok(served)
        }));
    }
    tokio::time::sleep(Duration::from_millis(30 * WAITERS as u64 + 100)).await;
    first.release().await?;
    let mut served = Vec::new();
    for t in tasks {
        served.push(t.await??);
    }
    Ok(served)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (urls, _cluster) = common::masters()?;
    println!("masters: {}", urls.join(" "));
    let holder = Redlock::builder().masters(urls.clone()).build().await?;
    let mut waiters = Vec::new();
    for _ in 0..WAITERS {
        waiters.push(Redlock::builder().masters(urls.clone()).build().await?);
    }
    let ttl = Duration::from_secs(5);
    let fair = service_order(&holder, &waiters, |r| {
        Box::pin(async move { r.fair_lock("printer").acquire(Duration::from_secs(5)).await })
    })
    .await?;
    let basic = service_order(&holder, &waiters, |r| {
        Box::pin(async move { r.acquire("printer", Duration::from_secs(5)).await })
    })
    .await?;
    println!(
        "arrival order:            {:?}",
        (0..WAITERS).collect::<Vec<_>>()
    );
    println!(
        "fair lock, served as:     {fair:?}  Kendall tau {:.2}",
        common::kendall_tau(&fair)
    );
    println!(
        "basic lock, served as:    {basic:?}  Kendall tau {:.2}",
        common::kendall_tau(&basic)
    );

    let fair = holder.fair_lock("alone");
    common::timed("fair acquire + release, 3 round trips", 200, |_| {
        let fair = fair.clone();
        async move {
            fair.acquire(ttl).await?.release().await?;
            Ok(())
        }
    })
    .await?;
    Ok(())
}
