//! Many readers or one writer, with writer preference, on a read-write lock.
//!
//! How to run: `cargo run --example rw_lock` starts five local `redis-server` masters itself
//! (stopped when the example ends). To use masters of your own instead:
//! `REDQUORUM_MASTERS=redis://h1:6379,redis://h2:6379,redis://h3:6379 cargo run --example rw_lock`.
//!
//! What it shows: eight readers keep reading a "config" with overlapping read leases (there is
//! never a moment without a reader), and a writer updates it three times. The writer is not
//! starved: once it waits, new readers are refused and the writer gets in as soon as the
//! readers already inside are done. Printed: how many readers were inside at once, what each
//! write waited, and that no reader ever saw a write in progress. Then the cost of a read and
//! of a write.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use redquorum::Redlock;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (urls, _cluster) = common::masters()?;
    println!("masters: {}", urls.join(" "));
    let inside = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let writing = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let ttl = Duration::from_secs(5);

    let mut readers = Vec::new();
    for _ in 0..8 {
        let redlock = Redlock::builder().masters(urls.clone()).build().await?;
        let (inside, most, writing, done) =
            (inside.clone(), most.clone(), writing.clone(), done.clone());
        readers.push(tokio::spawn(async move {
            let config = redlock.rw_lock("config");
            let mut reads = 0;
            while !done.load(Ordering::SeqCst) {
                let lease = config.read(ttl).await?;
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                assert!(
                    !writing.load(Ordering::SeqCst),
                    "a reader saw a write in progress"
                );
                tokio::time::sleep(Duration::from_millis(40)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
                lease.release().await?;
                reads += 1;
            }
            anyhow::Ok(reads)
        }));
    }

    let writer = Redlock::builder().masters(urls.clone()).build().await?;
    let config = writer.rw_lock("config");
    for n in 1..=3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t = Instant::now();
        let lock = config.write(ttl).await?;
        let waited = t.elapsed();
        writing.store(true, Ordering::SeqCst);
        let readers_inside = inside.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
        writing.store(false, Ordering::SeqCst);
        lock.release().await?;
        println!(
            "write {n}: waited {:>4} ms for the readers to drain; readers inside while writing: {readers_inside}",
            waited.as_millis()
        );
    }
    done.store(true, Ordering::SeqCst);
    let mut reads = 0;
    for r in readers {
        reads += r.await??;
    }
    println!(
        "{reads} reads by 8 readers, up to {} at once; no reader saw a write",
        most.load(Ordering::SeqCst)
    );

    common::timed("read + release, 2 round trips", 200, |_| {
        let config = config.clone();
        async move {
            config.read(ttl).await?.release().await?;
            Ok(())
        }
    })
    .await?;
    common::timed("write + release, 2 round trips", 200, |_| {
        let config = config.clone();
        async move {
            config.write(ttl).await?.release().await?;
            Ok(())
        }
    })
    .await?;
    Ok(())
}
