//! Ownership hand-off between processes: a lock acquired here is exported as JSON, passed to a
//! second process (this example run again with `resume`), which resumes it, extends it and
//! releases it, with the same fencing token.
//!
//! How to run: `cargo run --example handoff --features serde` starts five local `redis-server`
//! masters itself (stopped when the example ends). To use masters of your own instead:
//! `REDQUORUM_MASTERS=redis://h1:6379,redis://h2:6379,redis://h3:6379 cargo run --example
//! handoff --features serde`.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use redquorum::{LockHandle, Redlock};

const TTL: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("resume") {
        return resume().await;
    }
    let (urls, _cluster) = common::masters()?;
    let redlock = Redlock::builder().masters(urls.clone()).build().await?;
    let guard = redlock.acquire("nightly-export", TTL).await?;
    println!(
        "parent: acquired, fencing token {:?}",
        guard.fencing_token()
    );
    let handle = guard
        .export()
        .map_err(|_| anyhow::anyhow!("not a basic lock"))?;

    let mut child = Command::new(std::env::current_exe()?)
        .arg("resume")
        .env("REDQUORUM_MASTERS", urls.join(","))
        .stdin(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().expect("piped");
    stdin.write_all(serde_json::to_string(&handle)?.as_bytes())?;
    drop(stdin);
    anyhow::ensure!(child.wait()?.success(), "the resuming process failed");

    // Released by the other process: free again here.
    let again = redlock.try_acquire("nightly-export", TTL).await?;
    println!(
        "parent: lock free again after the hand-off: {}",
        again.is_some()
    );
    Ok(())
}

/// The second process: reads the handle from stdin and takes the lock over.
async fn resume() -> anyhow::Result<()> {
    let urls = std::env::var("REDQUORUM_MASTERS")?;
    let redlock = Redlock::builder().masters(urls.split(',')).build().await?;
    let mut json = String::new();
    std::io::stdin().read_to_string(&mut json)?;
    let handle: LockHandle = serde_json::from_str(&json)?;
    let mut guard = redlock.resume(handle, TTL).await?;
    println!(
        "child: resumed, fencing token {:?}, {:?} left",
        guard.fencing_token(),
        guard.remaining()
    );
    guard.extend(TTL).await?;
    println!("child: extended; released: {}", guard.release().await?);
    Ok(())
}
