//! The lock under real master faults: killed, paused (SIGSTOP), scripts flushed; and the
//! automatic extension of `with_lock` with its lost-lock signal.

mod support;

use std::time::Duration;

use redquorum::{Error, MasterReply};
use support::{client, direct, median};
use testcluster::Cluster;
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_of_five_killed_still_grants_three_killed_fails_fast() -> anyhow::Result<()> {
    let cluster = Cluster::start(5)?;
    let redlock = client(&cluster).await;
    cluster.kill(0)?;
    cluster.kill(1)?;
    let lock = redlock.acquire("k", Duration::from_secs(5)).await?;
    assert!(lock.release().await?);

    cluster.kill(2)?;
    let started = Instant::now();
    let err = redlock
        .acquire("k", Duration::from_secs(5))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(err.is_unavailable(), "{err}");
    let Error::Unavailable {
        failed,
        masters,
        replies,
    } = &err
    else {
        panic!("expected Unavailable, got {err}");
    };
    assert_eq!((*failed, *masters), (3, 5), "{err}");
    for i in 0..3 {
        assert!(
            matches!(
                replies.as_slice()[i],
                MasterReply::Unavailable(_) | MasterReply::TimedOut
            ),
            "master {i}: {err}"
        );
    }
    let text = err.to_string();
    for i in 0..3 {
        assert!(text.contains(&format!("master {i}: ")), "{text}");
    }
    // Fails fast: no retrying for the whole 10 s acquire wait.
    assert!(took < Duration::from_secs(1), "took {took:?}");

    // The masters come back: the client reconnects by itself.
    for i in 0..3 {
        cluster.restart(i, testcluster::DataOnRestart::Keep)?;
    }
    let mut ok = false;
    for _ in 0..50 {
        match redlock.try_acquire("k", Duration::from_secs(5)).await {
            Ok(Some(lock)) => {
                lock.release().await?;
                ok = true;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert!(
        ok,
        "did not recover after the masters came back\n{}",
        cluster.logs()
    );
    Ok(())
}

/// One master stopped with SIGSTOP: its TCP connection stays open and silent, the worst case
/// for a client without timeouts. Lock + unlock must cost about the healthy time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_paused_master_does_not_slow_lock_and_unlock() -> anyhow::Result<()> {
    let cluster = Cluster::start(5)?;
    let redlock = client(&cluster).await;
    let mut healthy = Vec::new();
    for i in 0..20 {
        let t = Instant::now();
        let lock = redlock
            .acquire(&format!("p{i}"), Duration::from_secs(5))
            .await?;
        lock.release().await?;
        healthy.push(t.elapsed());
    }
    cluster.pause(0)?;
    let mut paused = Vec::new();
    for i in 0..20 {
        let t = Instant::now();
        let lock = redlock
            .acquire(&format!("q{i}"), Duration::from_secs(5))
            .await?;
        assert!(lock.is_valid());
        lock.release().await?;
        paused.push(t.elapsed());
    }
    cluster.resume(0)?;
    let (healthy, paused) = (median(healthy), median(paused));
    // Generous bound for a loaded CI machine; the real figure is in the benchmark.
    assert!(
        paused < Duration::from_millis(200),
        "median lock+unlock with a paused master {paused:?} (healthy {healthy:?})"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn script_flush_between_operations_is_recovered() -> anyhow::Result<()> {
    let cluster = Cluster::start(5)?;
    let redlock = client(&cluster).await;
    let flush = || async {
        for i in 0..5 {
            let mut c = direct(&cluster, i).await;
            let _: () = redis::cmd("SCRIPT")
                .arg("FLUSH")
                .query_async(&mut c)
                .await
                .unwrap();
        }
    };
    flush().await;
    let mut lock = redlock.acquire("flushed", Duration::from_secs(5)).await?;
    flush().await;
    lock.extend(Duration::from_secs(5)).await?;
    flush().await;
    assert!(lock.release().await?);
    // Release returns at quorum; the other masters finish in the background (each needs
    // EVALSHA, NOSCRIPT, EVAL here). Give them up to a second, then every key must be gone.
    let key = support::lock_key("flushed");
    let mut values = Vec::new();
    for _ in 0..20 {
        values = support::values_everywhere(&cluster, &key).await;
        if values == vec![None; 5] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(values, vec![None; 5]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_lock_extends_automatically_and_releases_after() -> anyhow::Result<()> {
    let cluster = Cluster::start(5)?;
    let redlock = client(&cluster).await;
    let other = client(&cluster).await;
    let ttl = Duration::from_secs(1);
    let out = redlock
        .with_lock("long", ttl, |ctx| {
            let other = other.clone();
            async move {
                assert!(ctx.fencing_token().is_some());
                // Work for 2.5 TTLs; the lease must be renewed meanwhile.
                for _ in 0..5 {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    assert!(!ctx.is_lost());
                    assert!(ctx.remaining() > Duration::ZERO);
                    assert!(other.try_acquire("long", ttl).await.unwrap().is_none());
                }
                42
            }
        })
        .await?;
    assert_eq!(out, 42);
    assert!(other.try_acquire("long", ttl).await?.is_some());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_lock_signals_loss_when_the_lease_cannot_be_renewed() -> anyhow::Result<()> {
    let cluster = Cluster::start(5)?;
    let redlock = client(&cluster).await;
    let ttl = Duration::from_secs(1);
    let cluster = &cluster;
    let result = redlock
        .with_lock("fragile", ttl, |ctx| async move {
            let lost_at = Instant::now();
            // A majority of masters stops answering: no extension can succeed.
            for i in 0..3 {
                cluster.pause(i).unwrap();
            }
            tokio::select! {
                _ = ctx.lost() => {}
                _ = tokio::time::sleep(Duration::from_secs(5)) => panic!("loss never signalled"),
            }
            assert!(ctx.is_lost());
            // Signalled no later than the validity end (plus scheduling slack).
            assert!(lost_at.elapsed() < ttl + Duration::from_millis(300));
        })
        .await;
    for i in 0..3 {
        cluster.resume(i)?;
    }
    assert!(matches!(result, Err(Error::LockLost { .. })), "{result:?}");
    Ok(())
}

/// Masters answering `BUSY` (a script that runs past the busy threshold; `LOADING` is classified
/// the same way) are waited out: an acquire against a quorum of busy masters retries within its
/// wait and succeeds once they serve again, instead of failing at once as if they were down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_masters_are_waited_out_within_the_acquire_wait() -> anyhow::Result<()> {
    const BUSY_FOR: Duration = Duration::from_millis(700);
    let cluster = Cluster::start(3)?;
    let redlock = client(&cluster).await;
    // Opened before the scripts start: a busy server answers BUSY to a connection handshake.
    let (mut killers, mut probes) = (Vec::new(), Vec::new());
    for i in [0, 1] {
        probes.push(direct(&cluster, i).await);
        let mut side = direct(&cluster, i).await;
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("lua-time-limit")
            .arg(10)
            .query_async(&mut side)
            .await?;
        let mut looping = direct(&cluster, i).await;
        tokio::spawn(async move {
            // Ends with an error when the script is killed (or the server goes away).
            let _: redis::RedisResult<redis::Value> = redis::cmd("EVAL")
                .arg("while true do end")
                .arg(0)
                .query_async(&mut looping)
                .await;
        });
        killers.push(side);
    }
    // Killed from the side after BUSY_FOR, whatever happens to the acquire meanwhile.
    let kill = tokio::spawn(async move {
        tokio::time::sleep(BUSY_FOR).await;
        for side in &mut killers {
            script_kill(side).await;
        }
    });
    let result = async {
        for probe in &mut probes {
            wait_until_busy(probe).await;
        }
        let busy_since = Instant::now();
        // One round shows what the masters answer: busy, not an error reply.
        let err = redlock
            .try_acquire("busy", Duration::from_secs(5))
            .await
            .unwrap_err();
        let replies = err.replies().expect("replies").as_slice().to_vec();
        for reply in &replies[..2] {
            assert!(
                matches!(reply, MasterReply::Busy(m) if m.contains("BUSY")),
                "{err}"
            );
            assert!(reply.is_transient());
        }
        let lock = redlock
            .acquire_with_wait("busy", Duration::from_secs(5), Duration::from_secs(5))
            .await?;
        let waited = busy_since.elapsed();
        assert!(lock.release().await?);
        anyhow::Ok(waited)
    }
    .await;
    kill.await?;
    let waited = result?;
    // It did wait for the scripts to end (less the time spent checking they were running).
    assert!(waited >= BUSY_FOR / 2, "waited only {waited:?}");
    Ok(())
}

/// `SCRIPT KILL`, until the server says no script runs (the script may not have started yet).
async fn script_kill(side: &mut redis::aio::MultiplexedConnection) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let killed: redis::RedisResult<()> =
            redis::cmd("SCRIPT").arg("KILL").query_async(side).await;
        match killed {
            Ok(()) => return,
            Err(e) if e.code() == Some("NOTBUSY") => return,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Waits (at most 5 s) until the master behind `probe` answers `BUSY`.
async fn wait_until_busy(probe: &mut redis::aio::MultiplexedConnection) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pong: redis::RedisResult<String> = redis::cmd("PING").query_async(probe).await;
        if matches!(&pong, Err(e) if e.code() == Some("BUSY")) {
            return;
        }
        assert!(Instant::now() < deadline, "master never busy: {pong:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
