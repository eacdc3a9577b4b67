//! Lock-delay and lease signals on the basic lock.
//!
//! How to run: `cargo run --example lock_delay` starts five local `redis-server` masters
//! itself (stopped when the example ends). To use masters of your own instead:
//! `REDQUORUM_MASTERS=redis://h1:6379,redis://h2:6379,redis://h3:6379 cargo run --example lock_delay`.
//!
//! What it shows: a lock taken with a lock-delay and released is free at once; one whose holder
//! vanishes (no release) stays unavailable for its TTL plus the delay; a `with_lock`
//! closure follows its lease's states and is capped by `max_lease`.

mod common;

use std::time::Duration;

use redquorum::{LeaseState, LockOptions, Redlock};
use tokio::time::Instant;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (urls, _cluster) = common::masters()?;
    println!("masters: {}", urls.join(" "));
    let holder = Redlock::builder().masters(urls.clone()).build().await?;
    let other = Redlock::builder().masters(urls.clone()).build().await?;
    let (ttl, delay) = (Duration::from_secs(1), Duration::from_secs(2));
    let options = LockOptions::new(ttl).lock_delay(delay);

    let lock = holder.acquire("export", &options).await?;
    lock.release().await?;
    let free = other.try_acquire("export", ttl).await?;
    println!("released: free at once? {}", free.is_some());
    if let Some(lock) = free {
        lock.release().await?;
    }

    let taken = Instant::now();
    let lock = holder.acquire("export", &options).await?;
    std::mem::forget(lock); // the holder "crashes": nothing is sent
    let next = other
        .acquire(
            "export",
            LockOptions::new(ttl).wait(Duration::from_secs(10)),
        )
        .await?;
    println!(
        "abandoned: taken again after {:?} (ttl {ttl:?} + delay {delay:?})",
        taken.elapsed()
    );
    next.release().await?;

    let capped = LockOptions::new(ttl).max_lease(Duration::from_millis(2500));
    let started = Instant::now();
    let result = holder
        .with_lock("report", &capped, |lock| async move {
            let mut states = lock.states();
            while *states.borrow() != LeaseState::Lost {
                states.changed().await.ok();
                println!("  lease {:?} at {:?}", *states.borrow(), started.elapsed());
            }
        })
        .await;
    println!("with_lock under a 2.5 s cap: {result:?}");
    Ok(())
}
