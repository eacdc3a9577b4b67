//! Lease signals against real masters: jeopardy then lost when a majority is paused, with
//! `lost` no later than the local validity deadline even while a renewal is still in flight;
//! the extension cap; lock-delay after an abandoned lock and not after a release.

mod support;

use std::time::Duration;

use redquorum::{LeaseState, LockOptions};
use support::{builder, client};
use testcluster::Cluster;
use tokio::time::Instant;

/// How late a signal may fire after its deadline on a loaded 2-core machine (scheduling only).
const SCHEDULING_SLACK: Duration = Duration::from_millis(60);

/// A majority paused (SIGSTOP): every renewal then takes a whole per-master timeout. Several
/// locks with TTLs a little apart put renewals in flight at their validity deadlines (one
/// timeout each, ttl/10, retried every ttl/20). Each must signal jeopardy while still valid,
/// then lost no later than its deadline (plus scheduling), not when the renewal gives up.
/// Without the race against the deadline, lost fired up to one per-master timeout late.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jeopardy_then_lost_by_the_deadline_while_renewals_hang() {
    let cluster = Cluster::start(5).expect("cluster");
    // The largest timeout the TTL allows: renewals hang as long as they can.
    let ttl = Duration::from_secs(2);
    let redlock = builder(&cluster)
        .master_timeout(ttl / 10)
        .build()
        .await
        .unwrap();
    let mut late = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..6u64 {
        let redlock = redlock.clone();
        let ttl = ttl + Duration::from_millis(37 * i);
        let guard = redlock.acquire(&format!("again-{i}"), ttl).await.unwrap();
        tasks.push(tokio::spawn(async move {
            let (lease_tx, lease_rx) = tokio::sync::oneshot::channel();
            let run = guard.with_watchdog(ttl, |ctx| async move {
                let _ = lease_tx.send(ctx.clone());
                ctx.lost().await;
            });
            let watch = async move {
                let ctx = lease_rx.await.unwrap();
                ctx.jeopardy().await;
                let jeopardy_at = Instant::now();
                let valid_at_jeopardy = ctx.valid_until();
                ctx.lost().await;
                (
                    jeopardy_at,
                    valid_at_jeopardy,
                    Instant::now(),
                    ctx.valid_until(),
                )
            };
            let (outcome, seen) = tokio::join!(run, watch);
            assert!(
                matches!(outcome, Err(redquorum::Error::LockLost { .. })),
                "{outcome:?}"
            );
            seen
        }));
    }
    tokio::time::sleep(Duration::from_millis(900)).await;
    for i in 0..3 {
        cluster.pause(i).unwrap();
    }
    for task in tasks {
        let (jeopardy_at, valid_at_jeopardy, lost_at, valid_until) = task.await.unwrap();
        assert!(
            jeopardy_at < valid_at_jeopardy,
            "jeopardy came after the validity ended"
        );
        assert!(jeopardy_at < lost_at);
        assert!(
            lost_at <= valid_until + SCHEDULING_SLACK,
            "lost {:?} after the validity deadline",
            lost_at - valid_until
        );
        late.push(lost_at.saturating_duration_since(valid_until));
    }
    println!("lost after the validity deadline by: {late:?}");
    for i in 0..3 {
        cluster.resume(i).unwrap();
    }
}

/// With a cap, the watchdog extends until one more extension would pass the cap, signals
/// Capped, and the lock is lost at its validity deadline, no later than the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn extension_cap_ends_the_lease() {
    let cluster = Cluster::start(5).expect("cluster");
    let redlock = client(&cluster).await;
    let (ttl, cap) = (Duration::from_millis(1000), Duration::from_millis(2500));
    let options = LockOptions::new(ttl).max_lease(cap);
    let started = Instant::now();
    let result = redlock
        .with_lock_options("capped", &options, |ctx| async move {
            let mut states = ctx.states();
            let mut seen = vec![*states.borrow()];
            while *states.borrow() != LeaseState::Lost {
                states.changed().await.unwrap();
                seen.push(*states.borrow());
            }
            (seen, Instant::now())
        })
        .await;
    let Err(redquorum::Error::LockLost { .. }) = result else {
        panic!("the capped lease was not lost: {result:?}");
    };
    let took = started.elapsed();
    assert!(
        took > ttl + ttl / 3,
        "not extended before the cap: {took:?}"
    );
    assert!(
        took <= cap + SCHEDULING_SLACK + Duration::from_millis(100),
        "held {took:?}, past the cap {cap:?}"
    );
    // Another client gets it right after: it was really not extended.
    let other = client(&cluster).await;
    assert!(other.try_acquire("capped", ttl).await.unwrap().is_some());

    // The states on the way, seen by a guard's watchdog with a per-lock cap.
    let guard = redlock.acquire("capped-2", ttl).await.unwrap();
    let (states, ended) = {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _ = guard
            .with_watchdog_capped(ttl, Some(cap), |ctx| async move {
                let mut states = ctx.states();
                let mut seen = vec![*states.borrow()];
                while *states.borrow() != LeaseState::Lost {
                    states.changed().await.unwrap();
                    seen.push(*states.borrow());
                }
                let _ = tx.send((seen, Instant::now()));
            })
            .await;
        rx.await.unwrap()
    };
    assert_eq!(
        states,
        vec![LeaseState::Held, LeaseState::Capped, LeaseState::Lost]
    );
    assert!(ended > started);
}

/// A lock taken with a lock-delay and abandoned (its holder vanished: no release, no
/// extension) stays unavailable until its TTL plus the delay; one that was released is free at
/// once; an extension moves the delay window too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lock_delay_after_abandon_not_after_release() {
    let cluster = Cluster::start(5).expect("cluster");
    let (holder, other) = (client(&cluster).await, client(&cluster).await);
    let (ttl, delay) = (Duration::from_millis(1000), Duration::from_millis(1200));
    let options = LockOptions::new(ttl).lock_delay(delay);

    // Released: free at once, with or without the option on the next taker.
    let guard = holder
        .acquire_with_options("delay", &options)
        .await
        .unwrap();
    assert!(guard.release().await.unwrap());
    let next = other.try_acquire("delay", ttl).await.unwrap();
    assert!(next.is_some(), "a released lock must be free at once");
    next.unwrap().release().await.unwrap();

    // Abandoned: the holder forgets its guard (a crash: nothing is sent).
    let sent_at = Instant::now();
    let guard = holder
        .acquire_with_options("delay", &options)
        .await
        .unwrap();
    std::mem::forget(guard);
    let free_at = wait_until_free(&other, "delay", ttl).await;
    assert!(
        free_at >= sent_at + ttl + delay,
        "taken {:?} before ttl + delay",
        (sent_at + ttl + delay) - free_at
    );
    assert!(
        free_at < sent_at + ttl + delay + Duration::from_millis(500),
        "free only {:?} after ttl + delay",
        free_at - (sent_at + ttl + delay)
    );

    // Extended, then abandoned: the window moves with the extension.
    let mut guard = holder
        .acquire_with_options("delay-2", &options)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let extended_at = Instant::now();
    guard.extend(ttl).await.unwrap();
    std::mem::forget(guard);
    let free_at = wait_until_free(&other, "delay-2", ttl).await;
    assert!(
        free_at >= extended_at + ttl + delay,
        "taken {:?} before the extended ttl + delay",
        (extended_at + ttl + delay) - free_at
    );
}

/// Polls with single rounds until `resource` is granted; when it was.
async fn wait_until_free(redlock: &redquorum::Redlock, resource: &str, ttl: Duration) -> Instant {
    let give_up = Instant::now() + Duration::from_secs(10);
    while Instant::now() < give_up {
        if let Some(lock) = redlock.try_acquire(resource, ttl).await.unwrap() {
            let at = Instant::now();
            lock.release().await.unwrap();
            return at;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{resource} never became free");
}
