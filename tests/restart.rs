//! A master restarted without its data, or replaced: the overlap it allows without
//! delayed-restart protection, its absence with the protection on (also for a replacement with
//! a long uptime), and the fencing seal.

mod support;

use std::time::Duration;

use redquorum::{LockGuard, Redlock};
use support::{builder, holding};
use testcluster::checker::Checker;
use testcluster::{Cluster, Cut, DataOnRestart};
use tokio::time::Instant;

/// A holds the lock on masters 0, 1, 2 only (3 and 4 were down). Master 2 then restarts
/// without its data, so only 0 and 1 still hold A's key, and masters 2, 3, 4 form a majority
/// that has never heard of A.
async fn lock_held_on_exactly_0_1_2(cluster: &Cluster, a: &Redlock) -> anyhow::Result<LockGuard> {
    cluster.kill(3)?;
    cluster.kill(4)?;
    let lock = a.acquire("precious", Duration::from_secs(10)).await?;
    cluster.restart(3, DataOnRestart::Keep)?;
    cluster.restart(4, DataOnRestart::Keep)?;
    cluster.restart(2, DataOnRestart::Lose)?;
    Ok(lock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_without_data_and_no_protection_allows_an_overlap_that_is_reported()
-> anyhow::Result<()> {
    let cluster = Cluster::start(5)?;
    let checker = Checker::new();
    let a = support::client(&cluster).await;
    let lock_a = lock_held_on_exactly_0_1_2(&cluster, &a).await?;
    checker.record(holding(1, &lock_a, Instant::now()));
    let b = builder(&cluster).build().await?;
    let lock_b = b
        .acquire(
            "precious",
            redquorum::LockOptions::new(Duration::from_secs(10)).wait(Duration::from_secs(3)),
        )
        .await
        .expect("without protection the second client gets the lock");
    checker.record(holding(2, &lock_b, Instant::now()));
    let overlaps = checker.overlaps();
    assert_eq!(overlaps.len(), 1, "{overlaps:?}");
    println!("reported: {}", overlaps[0]);
    // Fencing still orders the two: B's client, built after the restart, finds master 2
    // unsealed (new run_id, no counter) and seals it from the others before it votes, so B's
    // token exceeds A's and a fenced store rejects A's late writes.
    let (ta, tb) = (
        lock_a.fencing_token().unwrap(),
        lock_b.fencing_token().unwrap(),
    );
    assert!(tb > ta, "fencing tokens: A {ta}, B {tb}");
    assert!(checker.stale_writes_accepted().is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_quarantine_prevents_the_overlap() -> anyhow::Result<()> {
    let cluster = Cluster::start(5)?;
    let quarantine = Duration::from_secs(3);
    // Let the masters' uptime pass the quarantine so the first lock can be had at all.
    tokio::time::sleep(quarantine + Duration::from_millis(1100)).await;
    let checker = Checker::new();
    let a = quarantined(&cluster, quarantine).await?;
    let lock_a = lock_held_on_exactly_0_1_2(&cluster, &a).await?;
    checker.record(holding(1, &lock_a, Instant::now()));
    let b = quarantined(&cluster, quarantine).await?;
    b_is_refused_by_the_quarantine(&b, &checker, "the restarted masters").await;
    // Once the quarantine has passed (A's lock expired by then too), B gets the lock.
    drop(lock_a);
    tokio::time::sleep(quarantine).await;
    let lock_b = b
        .acquire(
            "precious",
            redquorum::LockOptions::new(Duration::from_secs(10)).wait(Duration::from_secs(8)),
        )
        .await?;
    assert!(lock_b.release().await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fencing_counters_are_reseeded_after_a_restart_without_data() -> anyhow::Result<()> {
    let cluster = Cluster::start(5)?;
    let redlock = support::client(&cluster).await;
    let mut last = 0;
    for _ in 0..5 {
        let lock = redlock.acquire("fenced", Duration::from_secs(5)).await?;
        last = lock.fencing_token().unwrap();
        lock.release().await?;
    }
    // A minority loses its counters.
    cluster.restart(0, DataOnRestart::Lose)?;
    cluster.restart(1, DataOnRestart::Lose)?;
    // The first call after the restart notices the broken connections; keep going until the
    // restarted masters are back in the vote, with a bounded number of tries.
    let fence = format!("{}fence", redquorum::defaults::DEFAULT_KEY_PREFIX);
    for _ in 0..40 {
        let lock = redlock.acquire("fenced", Duration::from_secs(5)).await?;
        let token = lock.fencing_token().unwrap();
        assert!(token > last, "token {token} after {last}");
        last = token;
        lock.release().await?;
        let counters = support::counters_everywhere(&cluster, &fence).await;
        let reseeded = counters[..2].iter().all(|c| {
            c.as_deref()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                >= 5
        });
        if reseeded {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("restarted masters were never re-seeded\n{}", cluster.logs());
}

/// Every master restarted (keeping its data, as after a planned cluster restart): the client
/// sees five new run_ids, none sealed for its process; with every master answering it seals
/// them all from the largest counter, and locks again with a larger token.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_whole_cluster_restart_with_data_does_not_block_locking() -> anyhow::Result<()> {
    let cluster = Cluster::start(5)?;
    let redlock = support::client(&cluster).await;
    let lock = redlock
        .acquire("after-restart", Duration::from_secs(5))
        .await?;
    let before = lock.fencing_token().unwrap();
    lock.release().await?;
    for i in 0..5 {
        cluster.restart(i, DataOnRestart::Keep)?;
    }
    let lock = redlock
        .acquire(
            "after-restart",
            redquorum::LockOptions::new(Duration::from_secs(5)).wait(Duration::from_secs(5)),
        )
        .await?;
    let after = lock.fencing_token().unwrap();
    assert!(after > before, "token {after} after {before}");
    assert!(lock.release().await?);
    Ok(())
}

/// The last token (100) is known to masters 0, 1, 2; masters 3, 4 lag at 95. Master 0 restarts
/// empty while 1 and 2 are paused. Sealing master 0 from the masters that answer (0, 3, 4)
/// would seed 95 and hand out 96: a token going backwards. It must wait for a quorum of sealed
/// masters (or every master) instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reseed_never_trusts_a_restarted_master_when_others_can_answer() -> anyhow::Result<()> {
    let cluster = Cluster::start(5)?;
    let fence = format!("{}fence", redquorum::defaults::DEFAULT_KEY_PREFIX);
    for (i, value) in [(0, 100), (1, 100), (2, 100), (3, 95), (4, 95)] {
        let mut c = support::direct(&cluster, i).await;
        let _: () = redis::cmd("SET")
            .arg(&fence)
            .arg(value)
            .query_async(&mut c)
            .await?;
    }
    let redlock = support::client(&cluster).await;
    cluster.pause(1)?;
    cluster.pause(2)?;
    cluster.restart(0, DataOnRestart::Lose)?;
    match redlock
        .acquire(
            "backwards",
            redquorum::LockOptions::new(Duration::from_secs(5)).wait(Duration::from_secs(1)),
        )
        .await
    {
        Ok(lock) => {
            let token = lock.fencing_token().unwrap();
            assert!(
                token > 100,
                "fencing token went backwards: {token} after 100"
            );
        }
        Err(e) => assert!(e.is_unavailable() || e.is_timeout(), "{e}"),
    }
    cluster.resume(1)?;
    cluster.resume(2)?;
    let lock = redlock
        .acquire(
            "backwards",
            redquorum::LockOptions::new(Duration::from_secs(5)).wait(Duration::from_secs(5)),
        )
        .await?;
    let token = lock.fencing_token().unwrap();
    assert!(
        token > 100,
        "fencing token went backwards: {token} after 100"
    );
    Ok(())
}

/// The takeover scenario: clients A and B (restart quarantine 3 s) both know the five masters;
/// A takes "precious" while 3 and 4 are cut off (so only 0, 1, 2 hold its key); then master
/// 2's address is taken over by a standby that has run for longer than the quarantine and
/// holds none of A's keys. A majority (2, 3, 4) has never heard of A's lock.
struct Takeover {
    cluster: Cluster,
    _standby: Cluster,
    checker: Checker,
    b: Redlock,
    _lock_a: LockGuard,
}

/// B tries for a second: it must not get the lock A holds (the checker sees no overlap), and
/// master 2 (restarted, or the replacement: `who`) must be what stopped it: quarantined.
async fn b_is_refused_by_the_quarantine(b: &Redlock, checker: &Checker, who: &str) {
    let attempt = b
        .acquire(
            "precious",
            redquorum::LockOptions::new(Duration::from_secs(10)).wait(Duration::from_secs(1)),
        )
        .await;
    if let Ok(lock_b) = &attempt {
        checker.record(holding(2, lock_b, Instant::now()));
    }
    assert!(checker.overlaps().is_empty(), "{:?}", checker.overlaps());
    let Err(err) = attempt else {
        panic!("{who} must not vote yet")
    };
    assert_eq!(
        err.replies().expect("replies").as_slice()[2],
        redquorum::MasterReply::Quarantined,
        "{err}"
    );
}

/// A client that does not count a master's votes for `quarantine` after it (re)started.
async fn quarantined(cluster: &Cluster, quarantine: Duration) -> redquorum::Result<Redlock> {
    builder(cluster)
        .restart_quarantine(quarantine)
        .build()
        .await
}

async fn takeover_of_master_2() -> anyhow::Result<Takeover> {
    let cluster = Cluster::builder().masters(5).proxy(true).build()?;
    let standby = Cluster::start(1)?;
    let quarantine = Duration::from_secs(3);
    tokio::time::sleep(quarantine + Duration::from_millis(1100)).await;
    let checker = Checker::new();
    let b = quarantined(&cluster, quarantine).await?;
    let a = quarantined(&cluster, quarantine).await?;
    cluster.cut_off(3, Cut::BlackHole)?;
    cluster.cut_off(4, Cut::BlackHole)?;
    let lock_a = a.acquire("precious", Duration::from_secs(10)).await?;
    checker.record(holding(1, &lock_a, Instant::now()));
    cluster.heal(3)?;
    cluster.heal(4)?;
    support::take_over(&cluster, 2, &standby)?;
    Ok(Takeover {
        cluster,
        _standby: standby,
        checker,
        b,
        _lock_a: lock_a,
    })
}

/// A replacement with a long uptime: master 2's address is taken over by a server that has
/// been running for longer than the quarantine (a promoted replica, a pre-started standby
/// behind a VIP) and holds none of A's keys. A client that knew the old process must
/// quarantine the new one from the moment it first sees its `run_id`, whatever its uptime:
/// otherwise it votes with 3 and 4 (cut off while A took the lock) and B gets a lock A holds.
/// Failed before: only `uptime_in_seconds` started the quarantine, and B got the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replacement_with_a_long_uptime_is_quarantined_from_when_it_is_seen() -> anyhow::Result<()>
{
    // Every part is bound (the masters and A's lock must live until the end).
    let Takeover {
        cluster: _cluster,
        _standby,
        checker,
        b,
        _lock_a,
    } = takeover_of_master_2().await?;
    b_is_refused_by_the_quarantine(&b, &checker, "the replacement").await;
    Ok(())
}

/// Found by the simulator (seed 112): after a replacement was first seen, a reconnect to the
/// same replacement (its connection was reset) recomputed its start from its long uptime and
/// dropped the quarantine the client had started for it. The quarantine must survive
/// reconnects to the same process. Failed before: B got the lock A held.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replacement_stays_quarantined_across_reconnects() -> anyhow::Result<()> {
    let Takeover {
        cluster,
        _standby,
        checker,
        b,
        _lock_a,
    } = takeover_of_master_2().await?;
    // B meets the replacement (and starts its quarantine), then its connection is reset.
    let first = b.try_acquire("precious", Duration::from_secs(10)).await;
    assert!(!matches!(first, Ok(Some(_))), "{first:?}");
    let err = b
        .acquire(
            "precious",
            redquorum::LockOptions::new(Duration::from_secs(10)).wait(Duration::from_millis(500)),
        )
        .await
        .expect_err("quarantined");
    assert_eq!(
        err.replies().expect("replies").as_slice()[2],
        redquorum::MasterReply::Quarantined,
        "{err}"
    );
    cluster.cut_off(2, Cut::Reset)?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    cluster.heal(2)?;
    b_is_refused_by_the_quarantine(&b, &checker, "the replacement").await;
    Ok(())
}
