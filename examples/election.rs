//! Leader election: three candidates, one leader at a time, hand-over by resignation and by
//! a crash, followers watching.
//!
//! How to run: `cargo run --example election` starts five local `redis-server` masters itself
//! (stopped when the example ends). To use masters of your own instead:
//! `REDQUORUM_MASTERS=redis://h1:6379,redis://h2:6379,redis://h3:6379 cargo run --example election`.
//!
//! What it shows: an observer prints every leadership change; three candidates campaign; the
//! leader works while `lost()` has not fired, passing its term (a fencing token) along, then
//! resigns, and the next candidate takes over within milliseconds; the last leader never
//! resigns, but its extension cap (`max_lease`) ends its leadership: `Capped`, then lost at
//! its validity deadline.

mod common;

use std::time::Duration;

use futures::StreamExt;
use redquorum::{LockOptions, Redlock};
use tokio::time::Instant;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (urls, _cluster) = common::masters()?;
    println!("masters: {}", urls.join(" "));
    let ttl = Duration::from_secs(2);

    let watcher = Redlock::builder().masters(urls.clone()).build().await?;
    let observed = watcher.election("scheduler");
    let observer = tokio::spawn(async move {
        let mut changes = Box::pin(observed.observe().expect("a positive observe interval"));
        while let Some(change) = changes.next().await {
            match change {
                Some(leader) => {
                    println!("  observer: leader {} (term {})", leader.value, leader.term)
                }
                None => println!("  observer: no leader"),
            }
        }
    });

    let mut candidates: Vec<tokio::task::JoinHandle<redquorum::Result<()>>> = Vec::new();
    for id in 0..3 {
        let redlock = Redlock::builder().masters(urls.clone()).build().await?;
        candidates.push(tokio::spawn(async move {
            let mut options = LockOptions::new(ttl);
            if id == 2 {
                // A runaway leader: the cap ends its leadership even though it never resigns.
                options = options.max_lease(Duration::from_secs(3));
            }
            let election = redlock.election("scheduler");
            let leadership = election.campaign(format!("node-{id}"), options).await?;
            let since = Instant::now();
            println!("node-{id} leads, term {}", leadership.term());
            if id == 2 {
                leadership.jeopardy().await;
                println!(
                    "node-{id}: {:?} after {:?}",
                    leadership.state(),
                    since.elapsed()
                );
                leadership.lost().await;
                println!("node-{id}: lost after {:?}", since.elapsed());
                return Ok(());
            }
            tokio::select! {
                _ = leadership.lost() => println!("node-{id} lost the leadership"),
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            let resigned = Instant::now();
            leadership.resign().await?;
            println!("node-{id} resigned ({:?} to resign)", resigned.elapsed());
            Ok(())
        }));
        // Start the candidates in order so that the hand-overs are easy to follow.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for c in candidates {
        c.await??;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    match watcher.election("scheduler").leader().await? {
        Some(l) => println!("leader now: {} (term {})", l.value, l.term),
        None => println!("no leader now"),
    }
    observer.abort();
    Ok(())
}
