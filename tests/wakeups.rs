//! Release wake-ups: a waiting acquirer learns of a release through pub/sub and tries at once,
//! instead of sleeping out its retry delay; local waiters are served in arrival order.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redquorum::LockGuard;
use testcluster::Cluster;
use tokio::time::Instant;

/// A retry delay so long that only a wake-up can explain a quick hand-off.
const SLOW_RETRY: Duration = Duration::from_secs(3);
const TTL: Duration = Duration::from_secs(30);

/// A client whose waiters, between wake-ups, poll only every `delay` (no jitter): a hand-off
/// much faster than `delay` can only come from a release message.
fn polling_every(cluster: &Cluster, delay: Duration) -> redquorum::Builder {
    support::builder(cluster)
        .retry_delay(delay)
        .retry_jitter(Duration::ZERO)
}

/// What a spawned waiter got, and when.
type Waiting = tokio::task::JoinHandle<(redquorum::Result<LockGuard>, Instant)>;

/// Lets `waiting` settle for `settle`, releases `guard`, and returns the waiter's lock and how
/// long after the release it got it.
async fn release_to(
    cluster: &Cluster,
    guard: LockGuard,
    waiting: Waiting,
    settle: Duration,
) -> anyhow::Result<(LockGuard, Duration)> {
    tokio::time::sleep(settle).await;
    let released_at = Instant::now();
    assert!(guard.release().await?, "release must succeed");
    let (got, acquired_at) = waiting.await?;
    let got = got.unwrap_or_else(|e| panic!("waiter failed: {e}\n{}", cluster.logs()));
    Ok((got, acquired_at - released_at))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiter_in_another_client_is_woken_by_the_release() -> anyhow::Result<()> {
    let cluster = Cluster::start(5)?;
    let holder = support::client(&cluster).await;
    let waiter = polling_every(&cluster, SLOW_RETRY).build().await?;
    let guard = holder.acquire("wake", TTL).await?;
    let waiting = tokio::spawn(async move {
        let got = waiter.acquire("wake", TTL).await;
        (got, Instant::now())
    });
    // Let the waiter fail its rounds, subscribe and settle into its (long) retry delay.
    let (got, handoff) = release_to(&cluster, guard, waiting, Duration::from_millis(500)).await?;
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
    let waiter = polling_every(&cluster, Duration::from_millis(1500))
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
    let client = polling_every(&cluster, SLOW_RETRY).build().await?;
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

/// How many PUBLISH commands each master has run since its stats were reset (scripts' calls
/// included: `INFO commandstats` counts every command a script runs).
async fn publishes(cluster: &Cluster) -> Vec<u64> {
    let mut out = Vec::new();
    for i in 0..cluster.len() {
        let mut c = support::direct(cluster, i).await;
        let stats: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut c)
            .await
            .unwrap();
        let calls = stats
            .lines()
            .find_map(|l| l.strip_prefix("cmdstat_publish:calls="))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse().unwrap());
        out.push(calls);
    }
    out
}

async fn reset_stats(cluster: &Cluster) {
    for i in 0..cluster.len() {
        let mut c = support::direct(cluster, i).await;
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(&mut c)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_release_nobody_waits_for_publishes_nothing() -> anyhow::Result<()> {
    let cluster = Cluster::start(5)?;
    let client = support::client(&cluster).await;
    // Refused attempts that will not wait (try_acquire, a zero wait) must not mark either.
    let held = client.acquire("quiet", TTL).await?;
    assert!(client.try_acquire("quiet", TTL).await?.is_none());
    assert!(
        client
            .acquire(
                "quiet",
                redquorum::LockOptions::new(TTL).wait(Duration::ZERO)
            )
            .await
            .is_err()
    );
    reset_stats(&cluster).await;
    assert!(held.release().await?);
    for i in 0..20 {
        let guard = client.acquire(&format!("quiet-{}", i % 3), TTL).await?;
        assert!(guard.release().await?);
    }
    assert_eq!(publishes(&cluster).await, vec![0; 5], "a release published");
    // The same client, once someone waits, does publish (and the waiter is woken by it).
    let guard = client.acquire("quiet", TTL).await?;
    let waiter = polling_every(&cluster, SLOW_RETRY).build().await?;
    let waiting = tokio::spawn(async move { waiter.acquire("quiet", TTL).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let released_at = Instant::now();
    assert!(guard.release().await?);
    waiting.await??.release().await?;
    assert!(released_at.elapsed() < Duration::from_secs(1));
    let published: u64 = publishes(&cluster).await.iter().sum();
    assert!(published >= 1, "nobody was told of the release");
    Ok(())
}

/// The worst moment for a waiter in another client: its refused round (which marks it waiting)
/// lands on a master just before the release runs there. The release must still publish (the
/// mark is made atomically with the refusal), or the waiter sleeps out its whole retry delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waiter_that_marks_itself_just_before_the_release_is_woken() -> anyhow::Result<()> {
    let cluster = Cluster::start(5)?;
    let holder = support::client(&cluster).await;
    let mut direct = support::direct(&cluster, 0).await;
    for round in 0..8 {
        let resource = format!("edge-{round}");
        let marker = format!(
            "{}lock-waiting:{resource}",
            redquorum::defaults::DEFAULT_KEY_PREFIX
        );
        let waiter = polling_every(&cluster, SLOW_RETRY).build().await?;
        let guard = holder.acquire(&resource, TTL).await?;
        let waiting = tokio::spawn(async move { waiter.acquire(&resource, TTL).await });
        // Release as soon as the waiter's first refusal shows on master 0: the release then
        // races its subscription and its immediate second round.
        let seen = Instant::now();
        loop {
            let exists: bool = redis::cmd("EXISTS")
                .arg(&marker)
                .query_async(&mut direct)
                .await?;
            if exists {
                break;
            }
            assert!(
                seen.elapsed() < Duration::from_secs(5),
                "no marker appeared"
            );
        }
        let released_at = Instant::now();
        assert!(guard.release().await?);
        let got = waiting.await??;
        let handoff = released_at.elapsed();
        assert!(
            handoff < SLOW_RETRY / 2,
            "round {round}: the waiter took {handoff:?}: it was not woken"
        );
        got.release().await?;
    }
    Ok(())
}

/// The waiter marker must outlive the HOLDER's lock: a waiter with a short TTL waits on a holder
/// with a long one, past the waiter's TTL, with a retry delay so long that only a wake-up can
/// explain a quick hand-off. A marker set for the waiter's TTL only would be gone by the
/// release, which would then publish nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_short_ttl_waiter_on_a_long_held_lock_is_woken() -> anyhow::Result<()> {
    const SHORT_TTL: Duration = Duration::from_secs(1);
    const LONG_RETRY: Duration = Duration::from_secs(10);
    let cluster = Cluster::start(5)?;
    let holder = support::client(&cluster).await;
    let waiter = polling_every(&cluster, LONG_RETRY).build().await?;
    let guard = holder.acquire("long-held", TTL).await?;
    let waiting = tokio::spawn(async move {
        let got = waiter
            .acquire(
                "long-held",
                redquorum::LockOptions::new(SHORT_TTL).wait(Duration::from_secs(25)),
            )
            .await;
        (got, Instant::now())
    });
    // Twice the waiter's TTL: a marker that lived for SHORT_TTL has expired by now.
    let settle = SHORT_TTL * 2 + Duration::from_millis(500);
    let (got, handoff) = release_to(&cluster, guard, waiting, settle).await?;
    assert!(
        handoff < Duration::from_secs(3),
        "the waiter took {handoff:?} after the release: it was not woken (retry delay \
         {LONG_RETRY:?}, its marker expired with its own {SHORT_TTL:?} ttl)"
    );
    got.release().await?;
    Ok(())
}

/// A waiter that acquires with `LockOptions` marks itself like any other waiter: the release
/// of a plain holder publishes and wakes it long before its retry delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waiter_with_lock_options_is_woken() -> anyhow::Result<()> {
    const LONG_RETRY: Duration = Duration::from_secs(10);
    let cluster = Cluster::start(5)?;
    let holder = support::client(&cluster).await;
    let waiter = polling_every(&cluster, LONG_RETRY).build().await?;
    let guard = holder.acquire("options-held", TTL).await?;
    let waiting = tokio::spawn(async move {
        let options = redquorum::LockOptions::new(TTL)
            .lock_delay(Duration::from_secs(1))
            .wait(Duration::from_secs(25));
        let got = waiter.acquire("options-held", &options).await;
        (got, Instant::now())
    });
    let (got, handoff) = release_to(&cluster, guard, waiting, Duration::from_millis(800)).await?;
    assert!(
        handoff < Duration::from_secs(3),
        "the options waiter took {handoff:?} after the release: not woken (retry delay \
         {LONG_RETRY:?})"
    );
    // A lock taken with a lock-delay is not exported: the handle would not carry the delay.
    let got = match got.export() {
        Ok(handle) => panic!("a lock-delay lock was exported: {handle:?}"),
        Err(guard) => guard,
    };
    got.release().await?;
    Ok(())
}
