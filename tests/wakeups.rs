//! Release wake-ups: a waiting acquirer learns of a release through pub/sub and tries at once,
//! instead of sleeping out its retry delay; local waiters are served in arrival order.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use testcluster::Cluster;
use tokio::time::Instant;

/// A retry delay so long that only a wake-up can explain a quick hand-off.
const SLOW_RETRY: Duration = Duration::from_secs(3);
const TTL: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiter_in_another_client_is_woken_by_the_release() -> anyhow::Result<()> {
    let cluster = Cluster::start(5)?;
    let holder = support::client(&cluster).await;
    let waiter = support::builder(&cluster)
        .retry_delay(SLOW_RETRY)
        .retry_jitter(Duration::ZERO)
        .build()
        .await?;
    let guard = holder.acquire("wake", TTL).await?;
    let waiting = tokio::spawn(async move {
        let got = waiter.acquire("wake", TTL).await;
        (got, Instant::now())
    });
    // Let the waiter fail its rounds, subscribe and settle into its (long) retry delay.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let released_at = Instant::now();
    assert!(guard.release().await?, "release must succeed");
    let (got, acquired_at) = waiting.await?;
    let got = got.unwrap_or_else(|e| panic!("waiter failed: {e}\n{}", cluster.logs()));
    let handoff = acquired_at - released_at;
    assert!(
        handoff < Duration::from_secs(1),
        "the waiter took {handoff:?} after the release: it was not woken (retry delay {SLOW_RETRY:?})"
    );
    got.release().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_wake_ups_the_waiter_polls() -> anyhow::Result<()> {
    let cluster = Cluster::start(5)?;
    let holder = support::client(&cluster).await;
    let waiter = support::builder(&cluster)
        .retry_delay(Duration::from_millis(1500))
        .retry_jitter(Duration::ZERO)
        .wake_ups(false)
        .build()
        .await?;
    let guard = holder.acquire("poll", TTL).await?;
    let started = Instant::now();
    let waiting = tokio::spawn(async move { waiter.acquire("poll", TTL).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    guard.release().await?;
    let got = waiting.await??;
    // The first retry comes one full delay after the first (failed) round.
    assert!(started.elapsed() >= Duration::from_millis(1500));
    got.release().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_waiters_are_served_in_arrival_order() -> anyhow::Result<()> {
    let cluster = Cluster::start(5)?;
    let client = support::builder(&cluster)
        .retry_delay(SLOW_RETRY)
        .retry_jitter(Duration::ZERO)
        .build()
        .await?;
    let first = client.acquire("fifo", TTL).await?;
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..4 {
        let (client, order) = (client.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let guard = client.acquire("fifo", TTL).await?;
            order.lock().unwrap().push(i);
            guard.release().await?;
            anyhow::Ok(())
        }));
        // Arrive one after the other.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let started = Instant::now();
    first.release().await?;
    for t in tasks {
        t.await??;
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3]);
    // Four hand-offs, each woken by the previous release, none waiting out a retry delay.
    assert!(
        started.elapsed() < SLOW_RETRY,
        "hand-offs took {:?}",
        started.elapsed()
    );
    Ok(())
}
