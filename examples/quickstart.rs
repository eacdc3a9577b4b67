//! Workers on separate connections take turns on one lock, each write fenced by its token.
//!
//! How to run: `cargo run --example quickstart` starts five local `redis-server` masters
//! itself (they are stopped when the demo ends). To use masters of your own instead:
//! `REDQUORUM_MASTERS=redis://h1:6379,redis://h2:6379,redis://h3:6379 cargo run --example quickstart`.
//!
//! What it shows: four workers (each its own client, as if in four processes) take turns on
//! the resource `report`; each turn prints the fencing token, which only ever grows. A "store"
//! accepts a write only with a token at least as large as the last one it saw, which is how a
//! protected resource defends itself against a holder that was paused past its lease. Then one
//! master is frozen with SIGSTOP and the lock keeps working at the same speed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use redquorum::Redlock;

/// A resource that rejects writes carrying a fencing token older than one it has seen.
#[derive(Default)]
struct FencedStore {
    highest: AtomicU64,
}

impl FencedStore {
    fn write(&self, token: u64) -> bool {
        self.highest.fetch_max(token, Ordering::SeqCst) <= token
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (urls, cluster) = match std::env::var("REDQUORUM_MASTERS") {
        Ok(list) => (list.split(',').map(str::to_owned).collect(), None),
        Err(_) => {
            let cluster = testcluster::Cluster::start(5)
                .context("starting five redis-server masters (is redis-server installed?)")?;
            (cluster.urls(), Some(cluster))
        }
    };
    println!("masters: {}", urls.join(" "));

    let store = Arc::new(FencedStore::default());
    let mut workers = Vec::new();
    for id in 0..4 {
        let redlock = Redlock::builder().masters(urls.clone()).build().await?;
        let store = store.clone();
        workers.push(tokio::spawn(async move {
            for _ in 0..3 {
                let lock = redlock.acquire("report", Duration::from_secs(5)).await?;
                let token = lock.fencing_token().expect("fencing is on by default");
                let accepted = store.write(token);
                println!(
                    "worker {id} holds `report`  fencing token {token:>4}  validity left {:>4} ms  write {}",
                    lock.remaining().as_millis(),
                    if accepted { "accepted" } else { "REJECTED" }
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
                lock.release().await?;
            }
            anyhow::Ok(())
        }));
    }
    for w in workers {
        w.await??;
    }

    let redlock = Redlock::builder().masters(urls.clone()).build().await?;
    let timed = |label: &'static str| {
        let redlock = redlock.clone();
        async move {
            let mut times = Vec::new();
            for i in 0..200 {
                let t = Instant::now();
                let lock = redlock
                    .acquire(&format!("{label}-{i}"), Duration::from_secs(5))
                    .await?;
                lock.release().await?;
                times.push(t.elapsed());
            }
            times.sort();
            println!(
                "{label:>22}: lock+unlock p50 {:>6} us  p99 {:>6} us",
                times[times.len() / 2].as_micros(),
                times[times.len() * 99 / 100].as_micros()
            );
            anyhow::Ok(())
        }
    };
    timed("all masters healthy").await?;
    if let Some(cluster) = &cluster {
        cluster.pause(2)?;
        println!("master 2 frozen with SIGSTOP (its connection stays open and silent)");
        timed("one master paused").await?;
        cluster.resume(2)?;
    }
    println!("done");
    Ok(())
}
