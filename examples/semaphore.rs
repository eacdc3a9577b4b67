//! At most three workers at a time on a shared resource, with a semaphore over the quorum.
//!
//! How to run: `cargo run --example semaphore` starts five local `redis-server` masters itself
//! (stopped when the example ends). To use masters of your own instead:
//! `REDQUORUM_MASTERS=redis://h1:6379,redis://h2:6379,redis://h3:6379 cargo run --example semaphore`.
//!
//! What it shows: ten workers (each its own client) each want a permit of `api-quota` (3
//! permits) five times; the number inside at once never exceeds 3, and `available()` is
//! sampled meanwhile. Then a holder that vanishes without releasing: its permit comes back when
//! its lease expires. Then the cost of a permit.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redquorum::Redlock;

const PERMITS: u32 = 3;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (urls, _cluster) = common::masters()?;
    println!("masters: {}", urls.join(" "));
    let inside = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let ttl = Duration::from_secs(5);

    let mut workers = Vec::new();
    for _ in 0..10 {
        let redlock = Redlock::builder().masters(urls.clone()).build().await?;
        let (inside, most) = (inside.clone(), most.clone());
        workers.push(tokio::spawn(async move {
            let quota = redlock.semaphore("api-quota", PERMITS);
            for _ in 0..5 {
                let permit = quota.acquire(ttl).await?;
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(15)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
                permit.release().await?;
            }
            anyhow::Ok(())
        }));
    }
    let redlock = Redlock::builder().masters(urls.clone()).build().await?;
    let quota = redlock.semaphore("api-quota", PERMITS);
    let mut samples = Vec::new();
    while workers.iter().any(|w| !w.is_finished()) {
        samples.push(quota.available().await?);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    for w in workers {
        w.await??;
    }
    println!(
        "50 permits taken by 10 workers, at most {} inside at once (limit {PERMITS}); available() samples {samples:?}",
        most.load(Ordering::SeqCst)
    );
    assert!(most.load(Ordering::SeqCst) <= PERMITS as usize);

    let short = Duration::from_secs(1);
    let one = redlock.semaphore("one", 1);
    std::mem::forget(one.acquire(short).await?); // a holder that crashes without releasing
    println!(
        "a holder vanished: available {} of 1; after its 1 s lease ...",
        one.available().await?
    );
    tokio::time::sleep(short).await;
    println!("... available {} of 1", one.available().await?);

    common::timed("semaphore acquire + release, 2 round trips", 200, |_| {
        let quota = quota.clone();
        async move {
            quota.acquire(ttl).await?.release().await?;
            Ok(())
        }
    })
    .await?;
    common::timed("available(), 1 round trip to every master", 200, |_| {
        let quota = quota.clone();
        async move {
            quota.available().await?;
            Ok(())
        }
    })
    .await?;
    Ok(())
}
