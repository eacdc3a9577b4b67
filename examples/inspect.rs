//! Who holds a lock, per master and over the quorum: `Redlock::inspect`.
//!
//! How to run: `cargo run --example inspect` starts five local `redis-server` masters itself
//! (stopped when the example ends). To use masters of your own instead:
//! `REDQUORUM_MASTERS=redis://h1:6379,redis://h2:6379,redis://h3:6379 cargo run --example inspect`.
//!
//! What it shows: the view of a free lock, of a lock held by a client with an owner id, and of
//! the lock after release. The view is advisory: a snapshot that may be stale when printed.

mod common;

use std::time::Duration;

use redquorum::Redlock;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (urls, _cluster) = common::masters()?;
    let holder = Redlock::builder()
        .masters(urls.clone())
        .owner_id("billing-worker-1")
        .build()
        .await?;
    let viewer = Redlock::builder().masters(urls).build().await?;

    show(&viewer, "before").await?;
    let lock = holder.acquire("invoices", Duration::from_secs(10)).await?;
    tokio::time::sleep(Duration::from_millis(20)).await; // let the slowest masters answer
    show(&viewer, "while held").await?;
    lock.release().await?;
    show(&viewer, "after release").await?;
    Ok(())
}

async fn show(redlock: &Redlock, when: &str) -> anyhow::Result<()> {
    let seen = redlock.inspect("invoices").await?;
    println!("{when}: {}", seen.quorum);
    for (i, master) in seen.masters.iter().enumerate() {
        println!("  master {i}: {master}");
    }
    Ok(())
}
