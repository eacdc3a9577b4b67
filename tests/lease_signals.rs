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
    let redlock = support::client_with_slow_renewals(&cluster, ttl).await;
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
        .with_lock("capped", &options, |ctx| async move {
            let mut states = ctx.states();
            let mut seen = vec![*states.borrow()];
            // Bounded: a cap ignored must fail the test, not hang it (the cap ends the lease
            // within `cap` plus a TTL).
            let give_up = Instant::now() + cap + ttl * 4;
            while *states.borrow() != LeaseState::Lost && Instant::now() < give_up {
                let _ = tokio::time::timeout_at(give_up, states.changed()).await;
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

    // The states on the way, seen by the watchdog of a guard that carries the cap it was
    // acquired with.
    let guard = redlock.acquire("capped-2", &options).await.unwrap();
    let (states, ended) = {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _ = guard
            .with_watchdog(ttl, |ctx| async move {
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

/// The cap is the options', whatever the primitive: a permit and a fair lock acquired with a
/// cap keep it through their `with_*` and through `with_watchdog` on the guard (Held, Capped,
/// Lost, no later than the cap), and another client gets them right after.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_guard_keeps_the_cap_it_was_acquired_with() {
    let cluster = Cluster::start(5).expect("cluster");
    let redlock = client(&cluster).await;
    let (ttl, cap) = (Duration::from_millis(1000), Duration::from_millis(2500));
    let options = LockOptions::new(ttl).max_lease(cap);
    // Bounded: a lease that ignored its cap would be kept for as long as the work runs.
    let until_lost = |ctx: redquorum::LockContext| async move {
        let mut states = ctx.states();
        let mut seen = vec![*states.borrow()];
        let deadline = tokio::time::sleep(cap * 3);
        tokio::pin!(deadline);
        while *states.borrow() != LeaseState::Lost {
            tokio::select! {
                changed = states.changed() => changed.unwrap(),
                _ = &mut deadline => break,
            }
            seen.push(*states.borrow());
        }
        seen
    };
    let started = Instant::now();
    let result = redlock
        .semaphore("capped-permit", 1)
        .with_permit(&options, until_lost)
        .await;
    let took = started.elapsed();
    assert!(
        matches!(result, Err(redquorum::Error::LockLost { .. })),
        "the capped permit was not lost: {result:?} after {took:?}"
    );
    assert!(
        took > ttl + ttl / 3,
        "not extended before the cap: {took:?}"
    );
    assert!(
        took <= cap + SCHEDULING_SLACK + Duration::from_millis(100),
        "held {took:?}, past the cap {cap:?}"
    );
    let other = client(&cluster).await;
    let permit = other.semaphore("capped-permit", 1).try_acquire(ttl).await;
    assert!(permit.unwrap().is_some(), "the capped permit was extended");

    let guard = redlock
        .fair_lock("capped-fair")
        .acquire(&options)
        .await
        .unwrap();
    let started = Instant::now();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let _ = guard
        .with_watchdog(ttl, |ctx| async move {
            let _ = tx.send((until_lost(ctx).await, Instant::now()));
        })
        .await;
    let (states, lost_at) = rx.await.unwrap();
    assert_eq!(
        states,
        vec![LeaseState::Held, LeaseState::Capped, LeaseState::Lost]
    );
    assert!(lost_at - started <= cap + SCHEDULING_SLACK + Duration::from_millis(100));
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
    let guard = holder.acquire("delay", &options).await.unwrap();
    assert!(guard.release().await.unwrap());
    let next = other.try_acquire("delay", ttl).await.unwrap();
    assert!(next.is_some(), "a released lock must be free at once");
    next.unwrap().release().await.unwrap();

    // Abandoned: the holder forgets its guard (a crash: nothing is sent).
    let sent_at = Instant::now();
    let guard = holder.acquire("delay", &options).await.unwrap();
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
    let mut guard = holder.acquire("delay-2", &options).await.unwrap();
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

/// A watchdog's first renewal comes in time for the validity the guard has left, not a third
/// of the watchdog's TTL from now: a 1 s guard under a 5 s watchdog, and a guard that was held
/// for most of its TTL before its watchdog started. Every master is healthy: neither may be
/// lost. (The first renewal used to be scheduled at now + ttl/3: the 1 s guard was lost at
/// ~990 ms with no renewal attempted.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_first_renewal_comes_in_time_for_the_guards_validity() {
    let cluster = Cluster::start(5).expect("cluster");
    let redlock = client(&cluster).await;
    let work = |ctx: redquorum::LockContext| async move {
        tokio::time::sleep(Duration::from_millis(2000)).await;
        ctx.state()
    };

    let short = redlock
        .acquire("short-guard", Duration::from_secs(1))
        .await
        .unwrap();
    let outcome = short.with_watchdog(Duration::from_secs(5), work).await;
    assert!(
        matches!(outcome, Ok(LeaseState::Held)),
        "a 1 s guard under a 5 s watchdog: {outcome:?}"
    );

    let ttl = Duration::from_millis(1500);
    let used = redlock.acquire("used-guard", ttl).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(used.is_valid());
    let outcome = used.with_watchdog(ttl, work).await;
    assert!(
        matches!(outcome, Ok(LeaseState::Held)),
        "a guard held 1 s of its 1.5 s before the watchdog: {outcome:?}"
    );
}

/// Three of five masters answer every renewal after the per-master timeout, but the renewals
/// land: the key stays on all five masters, so the lease is held and `lost` must not fire (the
/// guide's "no `lost` while a quorum holds", `docs/coordination.md`). A renewal's late replies count while the
/// validity lasts: each proves the key was still this owner's and is extended from no earlier
/// than the renewal's start.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn late_renewal_replies_that_land_keep_the_lease() {
    let cluster = Cluster::builder()
        .masters(5)
        .proxy(true)
        .build()
        .expect("cluster");
    let timeout = Duration::from_millis(100);
    let redlock = builder(&cluster)
        .master_timeout(timeout)
        .build()
        .await
        .unwrap();
    let ttl = Duration::from_secs(2);
    let guard = redlock.acquire("late-replies", ttl).await.unwrap();
    // 80 ms each way: a renewal's reply comes after the 100 ms timeout, well inside the TTL.
    for i in 0..3 {
        cluster.set_latency(i, Duration::from_millis(80)).unwrap();
    }
    let masters = &cluster;
    let outcome = guard
        .with_watchdog(ttl, |ctx| async move {
            let mut lost = false;
            tokio::select! {
                _ = ctx.lost() => lost = true,
                _ = tokio::time::sleep(Duration::from_millis(4500)) => {}
            }
            let mut held_on = 0;
            for i in 0..5 {
                let mut c = support::direct(masters, i).await;
                let pttl: i64 = redis::cmd("PTTL")
                    .arg(support::lock_key("late-replies"))
                    .query_async(&mut c)
                    .await
                    .unwrap();
                held_on += usize::from(pttl > 0);
            }
            (lost, held_on)
        })
        .await;
    for i in 0..3 {
        cluster.set_latency(i, Duration::ZERO).unwrap();
    }
    match outcome {
        Ok((lost, held_on)) => {
            assert_eq!(held_on, 5, "the renewals did not land");
            assert!(!lost, "lost fired while the key was held on {held_on} of 5");
        }
        Err(e) => panic!("the lease was reported lost although it was held: {e}"),
    }
}
