//! Lock semantics against five real masters: mutual exclusion, ownership, rollback, fencing.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redquorum::{Error, MasterReply};
use support::{client, direct, lock_key, values_everywhere};
use testcluster::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acquire_then_release_leaves_nothing_behind() -> anyhow::Result<()> {
    let cluster = Cluster::start(5)?;
    let redlock = client(&cluster).await;
    let lock = redlock.acquire("basic", Duration::from_secs(5)).await?;
    assert_eq!(lock.resource(), "basic");
    assert!(lock.is_valid());
    assert!(lock.remaining() > Duration::from_secs(4));
    assert!(lock.remaining() <= Duration::from_secs(5));
    assert!(lock.fencing_token().is_some());
    let held = values_everywhere(&cluster, &lock_key("basic")).await;
    assert!(
        held.iter().filter(|v| v.is_some()).count() >= 3,
        "a quorum must hold the key: {held:?}"
    );
    assert!(lock.release().await?);
    // Release returns at quorum; give the stragglers a moment.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        values_everywhere(&cluster, &lock_key("basic")).await,
        vec![None; 5]
    );
    Ok(())
}

/// Many tasks, one resource, a read-modify-write counter on a separate key with a deliberate
/// gap between read and write: any overlap of two holders loses an update.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mutual_exclusion_under_contention_loses_no_update() -> anyhow::Result<()> {
    const TASKS: usize = 12;
    const ROUNDS: usize = 10;
    let cluster = Cluster::start(5)?;
    let counter_url = cluster.direct_url(0);
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        // A separate client per task: separate connections, like separate processes.
        let redlock = support::builder(&cluster)
            .acquire_wait(Duration::from_secs(30))
            .build()
            .await?;
        let counter_url = counter_url.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = redis::Client::open(counter_url)?
                .get_multiplexed_async_connection()
                .await?;
            for _ in 0..ROUNDS {
                let lock = redlock.acquire("counter", Duration::from_secs(5)).await?;
                let v: i64 = redis::cmd("GET")
                    .arg("plain-counter")
                    .query_async::<Option<i64>>(&mut conn)
                    .await?
                    .unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(1)).await;
                let _: () = redis::cmd("SET")
                    .arg("plain-counter")
                    .arg(v + 1)
                    .query_async(&mut conn)
                    .await?;
                assert!(lock.is_valid(), "held the lock past its validity");
                lock.release().await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let mut conn = direct(&cluster, 0).await;
    let v: i64 = redis::cmd("GET")
        .arg("plain-counter")
        .query_async(&mut conn)
        .await?;
    assert_eq!(v, (TASKS * ROUNDS) as i64);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn try_acquire_on_a_held_lock_returns_none_and_leaves_no_key() -> anyhow::Result<()> {
    let cluster = Cluster::start(5)?;
    let a = client(&cluster).await;
    let b = client(&cluster).await;
    let held = a.acquire("busy", Duration::from_secs(5)).await?;
    assert!(
        b.try_acquire("busy", Duration::from_secs(5))
            .await?
            .is_none()
    );
    let err = b
        .acquire(
            "busy",
            redquorum::LockOptions::new(Duration::from_secs(5)).wait(Duration::from_millis(200)),
        )
        .await
        .unwrap_err();
    assert!(err.is_contended(), "{err}");
    assert!(
        err.replies()
            .unwrap()
            .as_slice()
            .contains(&MasterReply::Refused)
    );
    // Only a's token is on the masters: b's rounds left nothing.
    let values = values_everywhere(&cluster, &lock_key("busy")).await;
    let first = values.iter().flatten().next().cloned();
    assert!(values.iter().flatten().all(|v| Some(v) == first.as_ref()));
    held.release().await?;
    Ok(())
}

/// Someone else holds the key on 3 of 5 masters: our round gets 2 grants, loses, and must
/// delete its keys from those 2 (the rollback the peers forget).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_round_is_rolled_back_on_every_master() -> anyhow::Result<()> {
    let cluster = Cluster::start(5)?;
    let redlock = client(&cluster).await;
    let key = lock_key("partial");
    for i in 0..3 {
        let mut c = direct(&cluster, i).await;
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg("someone-else")
            .arg("PX")
            .arg(10_000)
            .query_async(&mut c)
            .await?;
    }
    assert!(
        redlock
            .try_acquire("partial", Duration::from_secs(5))
            .await?
            .is_none()
    );
    let values = values_everywhere(&cluster, &key).await;
    assert_eq!(
        values,
        vec![
            Some("someone-else".into()),
            Some("someone-else".into()),
            Some("someone-else".into()),
            None,
            None
        ]
    );
    // With the foreign key on a minority only, the lock is granted.
    let mut c = direct(&cluster, 0).await;
    let _: () = redis::cmd("DEL").arg(&key).query_async(&mut c).await?;
    let mut c = direct(&cluster, 1).await;
    let _: () = redis::cmd("DEL").arg(&key).query_async(&mut c).await?;
    let lock = redlock
        .try_acquire("partial", Duration::from_secs(5))
        .await?;
    assert!(lock.is_some());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_the_owner_can_release_or_extend() -> anyhow::Result<()> {
    let cluster = Cluster::start(5)?;
    let a = client(&cluster).await;
    let b = client(&cluster).await;
    let mut first = a.acquire("owned", Duration::from_millis(1000)).await?;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(!first.is_valid());
    let second = b.acquire("owned", Duration::from_secs(5)).await?;
    // The expired holder can neither extend nor release the new holder's lock.
    let err = first.extend(Duration::from_secs(5)).await.unwrap_err();
    assert!(err.is_lost(), "{err}");
    assert!(!first.release().await?, "released someone else's lock");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let values = values_everywhere(&cluster, &lock_key("owned")).await;
    assert!(
        values.iter().filter(|v| v.is_some()).count() >= 3,
        "{values:?}"
    );
    assert!(
        b.try_acquire("owned", Duration::from_secs(5))
            .await?
            .is_none()
    );
    assert!(second.release().await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn extend_prolongs_and_extend_after_expiry_never_recreates() -> anyhow::Result<()> {
    let cluster = Cluster::start(5)?;
    let redlock = client(&cluster).await;
    let mut lock = redlock.acquire("ext", Duration::from_secs(1)).await?;
    lock.extend(Duration::from_secs(5)).await?;
    assert!(lock.remaining() > Duration::from_secs(4));
    let mut c = direct(&cluster, 0).await;
    let pttl: i64 = redis::cmd("PTTL")
        .arg(lock_key("ext"))
        .query_async(&mut c)
        .await?;
    assert!(pttl > 4_000, "pttl {pttl}");
    lock.release().await?;

    let mut short = redlock.acquire("ext2", Duration::from_millis(1000)).await?;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let err = short.extend(Duration::from_secs(5)).await.unwrap_err();
    assert!(matches!(err, Error::NotHeld { .. }), "{err}");
    assert_eq!(
        values_everywhere(&cluster, &lock_key("ext2")).await,
        vec![None; 5]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fencing_tokens_strictly_increase_across_clients() -> anyhow::Result<()> {
    let cluster = Cluster::start(5)?;
    let clients = [
        client(&cluster).await,
        client(&cluster).await,
        client(&cluster).await,
    ];
    let mut last = 0;
    for i in 0..30 {
        let lock = clients[i % 3]
            .acquire("fenced", Duration::from_secs(5))
            .await?;
        let token = lock.fencing_token().unwrap();
        assert!(token > last, "token {token} after {last}");
        last = token;
        lock.release().await?;
    }
    Ok(())
}

/// The write-back step: counters out of step on the masters (one far ahead) still give a token
/// larger than every earlier one, and a majority learns it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fencing_write_back_raises_lagging_counters() -> anyhow::Result<()> {
    let cluster = Cluster::start(5)?;
    let redlock = client(&cluster).await;
    let fence = format!("{}fence", redquorum::defaults::DEFAULT_KEY_PREFIX);
    let mut c = direct(&cluster, 4).await;
    let _: () = redis::cmd("HSET")
        .arg(&fence)
        .arg("n")
        .arg(1000)
        .query_async(&mut c)
        .await?;
    let lock = redlock.acquire("wb", Duration::from_secs(5)).await?;
    let token = lock.fencing_token().unwrap();
    let counters: Vec<Option<String>> = support::counters_everywhere(&cluster, &fence).await;
    let at_least = counters
        .iter()
        .filter(|v| {
            v.as_deref()
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0)
                >= token
        })
        .count();
    assert!(at_least >= 3, "token {token}, counters {counters:?}");
    lock.release().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dropped_guard_releases_in_the_background() -> anyhow::Result<()> {
    let cluster = Cluster::start(5)?;
    let redlock = client(&cluster).await;
    {
        let _lock = redlock.acquire("dropped", Duration::from_secs(30)).await?;
    }
    let freed = Arc::new(AtomicUsize::new(0));
    for _ in 0..50 {
        if values_everywhere(&cluster, &lock_key("dropped")).await == vec![None; 5] {
            freed.fetch_add(1, Ordering::Relaxed);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        freed.load(Ordering::Relaxed),
        1,
        "dropped guard was not released"
    );
    assert!(
        redlock
            .try_acquire("dropped", Duration::from_secs(5))
            .await?
            .is_some()
    );
    Ok(())
}
