//! The metrics of a known sequence of operations against five real masters, counted exactly
//! by a recording recorder.
//!
//! The recorder is the process-wide one (a thread-local recorder would miss what spawned tasks
//! and other runtime threads record), so this binary holds a single test, run in phases; each
//! snapshot drains the counters, so each phase asserts exactly what it did.
#![cfg(feature = "metrics")]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use redquorum::metrics as m;
use redquorum::{Cache, Error, Redlock};
use support::direct;
use testcluster::Cluster;

const TTL: Duration = Duration::from_secs(5);

/// One drained snapshot: counters and gauges by `name{label=value,...}`, histograms as their
/// recorded values.
#[derive(Debug, Default)]
struct Seen {
    values: BTreeMap<String, f64>,
    histograms: BTreeMap<String, Vec<f64>>,
}

impl Seen {
    fn take(snapshotter: &Snapshotter) -> Self {
        let mut seen = Seen::default();
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let key = key.key();
            let mut labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            labels.sort();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            match value {
                DebugValue::Counter(n) => {
                    seen.values.insert(name, n as f64);
                }
                DebugValue::Gauge(g) => {
                    seen.values.insert(name, g.into_inner());
                }
                DebugValue::Histogram(h) => {
                    seen.histograms
                        .insert(name, h.into_iter().map(|v| v.into_inner()).collect());
                }
            }
        }
        seen
    }

    /// A counter or gauge; 0 when it was not recorded.
    fn get(&self, name: &str, labels: &str) -> f64 {
        self.values
            .get(&format!("{name}{{{labels}}}"))
            .copied()
            .unwrap_or(0.0)
    }

    /// The sum of a counter over all its label sets.
    fn total(&self, name: &str) -> f64 {
        self.values
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{name}{{")))
            .map(|(_, v)| v)
            .sum()
    }

    fn histogram(&self, name: &str, labels: &str) -> Vec<f64> {
        self.histograms
            .get(&format!("{name}{{{labels}}}"))
            .cloned()
            .unwrap_or_default()
    }
}

/// One try per acquire call and no wake-ups: every round is counted in advance. A generous
/// per-master timeout, so that on a loaded machine only the paused master times out.
async fn one_round_client(cluster: &Cluster) -> Redlock {
    support::builder(cluster)
        .master_timeout(Duration::from_millis(300))
        .retry_count(1)
        .wake_ups(false)
        .build()
        .await
        .unwrap_or_else(|e| panic!("build failed: {e}\n{}", cluster.logs()))
}

async fn delete_everywhere(cluster: &Cluster, key: &str) {
    for i in 0..cluster.len() {
        let mut c = direct(cluster, i).await;
        let _: i64 = redis::cmd("DEL")
            .arg(key)
            .query_async(&mut c)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_known_sequence_gives_exact_counts() -> anyhow::Result<()> {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this binary");
    let cluster = Cluster::start(5)?;
    let a = one_round_client(&cluster).await;
    let b = one_round_client(&cluster).await;
    Seen::take(&snapshotter);

    locks_extends_and_releases(&cluster, &a, &b, &snapshotter).await?;
    single_round_acquires(&a, &b, &snapshotter).await?;
    a_lost_lock(&cluster, &a, &snapshotter).await?;
    a_wake_up(&cluster, &a, &snapshotter).await?;
    the_cache(&a, &snapshotter).await?;
    quarantined_masters(&cluster, &snapshotter).await?;
    a_paused_master(&cluster, &a, &snapshotter).await?;
    Ok(())
}

/// 3 acquires (one contended), 1 release, 1 failed extend.
async fn locks_extends_and_releases(
    cluster: &Cluster,
    a: &Redlock,
    b: &Redlock,
    snapshotter: &Snapshotter,
) -> anyhow::Result<()> {
    let r = a.acquire("r", TTL).await?;
    assert!(b.acquire("r", TTL).await.unwrap_err().is_contended());
    let mut s = a.acquire("s", TTL).await?;
    assert!(r.release().await?);
    delete_everywhere(cluster, &support::lock_key("s")).await;
    assert!(matches!(s.extend(TTL).await, Err(Error::NotHeld { .. })));
    assert!(!s.release().await?);

    let seen = Seen::take(snapshotter);
    assert_eq!(seen.get(m::ACQUIRES, "outcome=acquired"), 2.0, "{seen:#?}");
    assert_eq!(seen.get(m::ACQUIRES, "outcome=contended"), 1.0, "{seen:#?}");
    assert_eq!(seen.total(m::ACQUIRES), 3.0, "{seen:#?}");
    assert_eq!(seen.get(m::ROUNDS, "outcome=acquired"), 2.0, "{seen:#?}");
    assert_eq!(seen.get(m::ROUNDS, "outcome=contended"), 1.0, "{seen:#?}");
    assert_eq!(seen.total(m::ROUNDS), 3.0, "{seen:#?}");
    assert_eq!(
        seen.histogram(m::ACQUIRE_ATTEMPTS, "outcome=acquired"),
        vec![1.0, 1.0]
    );
    assert_eq!(
        seen.histogram(m::ACQUIRE_ATTEMPTS, "outcome=contended"),
        vec![1.0]
    );
    let took = seen.histogram(m::ACQUIRE_DURATION, "outcome=acquired");
    assert_eq!(took.len(), 2);
    assert!(took.iter().all(|&t| t > 0.0 && t < 5.0), "{took:?}");
    // One reply per master per round, whatever each was.
    assert_eq!(seen.total(m::MASTER_REPLIES), 15.0, "{seen:#?}");
    assert_eq!(seen.get(m::RELEASES, "outcome=released"), 1.0);
    assert_eq!(seen.get(m::RELEASES, "outcome=not_held"), 1.0);
    assert_eq!(seen.get(m::EXTEND_FAILURES, "reason=not_held"), 1.0);
    assert_eq!(seen.total(m::EXTEND_FAILURES), 1.0);
    assert_eq!(seen.total(m::LOCKS_LOST), 0.0);
    Ok(())
}

/// `try_acquire` is an acquire path too: one acquired, one contended (it used to count in
/// rounds only, not in `acquires_total`).
async fn single_round_acquires(
    a: &Redlock,
    b: &Redlock,
    snapshotter: &Snapshotter,
) -> anyhow::Result<()> {
    let held = a.try_acquire("t", TTL).await?.expect("free");
    assert!(b.try_acquire("t", TTL).await?.is_none());
    held.release().await?;
    let seen = Seen::take(snapshotter);
    assert_eq!(seen.get(m::ACQUIRES, "outcome=acquired"), 1.0, "{seen:#?}");
    assert_eq!(seen.get(m::ACQUIRES, "outcome=contended"), 1.0, "{seen:#?}");
    assert_eq!(seen.total(m::ACQUIRES), 2.0, "{seen:#?}");
    assert_eq!(seen.total(m::ROUNDS), 2.0, "{seen:#?}");
    assert_eq!(
        seen.histogram(m::ACQUIRE_ATTEMPTS, "outcome=contended"),
        vec![1.0]
    );
    Ok(())
}

/// A watchdog finds its lock gone: one lock lost, one failed extend.
async fn a_lost_lock(
    cluster: &Cluster,
    a: &Redlock,
    snapshotter: &Snapshotter,
) -> anyhow::Result<()> {
    let ttl = Duration::from_secs(3);
    let outcome = a
        .with_lock("v", ttl, |lock| async move {
            delete_everywhere(cluster, &support::lock_key("v")).await;
            tokio::time::timeout(Duration::from_secs(5), lock.lost()).await
        })
        .await;
    assert!(
        matches!(outcome, Err(Error::LockLost { .. })),
        "{outcome:?}"
    );
    let seen = Seen::take(snapshotter);
    assert_eq!(seen.get(m::LOCKS_LOST, ""), 1.0, "{seen:#?}");
    assert_eq!(
        seen.get(m::EXTEND_FAILURES, "reason=not_held"),
        1.0,
        "{seen:#?}"
    );
    assert_eq!(seen.get(m::ACQUIRES, "outcome=acquired"), 1.0, "{seen:#?}");
    Ok(())
}

/// A waiter (retry delay far longer than the hold) is woken by the release message.
async fn a_wake_up(
    cluster: &Cluster,
    a: &Redlock,
    snapshotter: &Snapshotter,
) -> anyhow::Result<()> {
    let waiter = support::builder(cluster)
        .retry_delay(Duration::from_secs(20))
        .retry_jitter(Duration::ZERO)
        .acquire_wait(Duration::from_secs(30))
        .build()
        .await?;
    let held = a.acquire("w", TTL).await?;
    let waiting = tokio::spawn(async move {
        let lock = waiter.acquire("w", TTL).await?;
        lock.release().await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    held.release().await?;
    let waited = tokio::time::timeout(Duration::from_secs(10), waiting).await;
    assert!(waited.expect("woken long before its retry delay")??);
    let seen = Seen::take(snapshotter);
    assert_eq!(seen.get(m::WAKEUPS, ""), 1.0, "{seen:#?}");
    assert_eq!(seen.get(m::ACQUIRES, "outcome=acquired"), 2.0, "{seen:#?}");
    Ok(())
}

/// 1 hit, 4 misses, 2 fills, 1 stampede avoided (two callers, one computation).
async fn the_cache(a: &Redlock, snapshotter: &Snapshotter) -> anyhow::Result<()> {
    let cache = Cache::from_redlock(a).build().await?;
    cache.set("k", b"v", TTL).await?;
    assert!(cache.get("k").await?.is_some());
    assert!(cache.get("absent").await?.is_none());
    cache
        .get_or_compute("x", TTL, || async {
            Ok::<_, std::io::Error>(b"x".to_vec())
        })
        .await?;
    let slow = || async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok::<_, std::io::Error>(b"y".to_vec())
    };
    let (y1, y2) = tokio::join!(
        cache.get_or_compute("y", TTL, slow),
        cache.get_or_compute("y", TTL, slow)
    );
    assert_eq!((&y1?[..], &y2?[..]), (&b"y"[..], &b"y"[..]));
    let seen = Seen::take(snapshotter);
    assert_eq!(seen.get(m::CACHE_HITS, ""), 1.0, "{seen:#?}");
    assert_eq!(seen.get(m::CACHE_MISSES, ""), 4.0, "{seen:#?}");
    assert_eq!(seen.get(m::CACHE_FILLS, ""), 2.0, "{seen:#?}");
    assert_eq!(
        seen.get(m::CACHE_STAMPEDES_AVOIDED, "how=shared"),
        1.0,
        "{seen:#?}"
    );
    Ok(())
}

/// Masters that all just started, under a long restart quarantine: none votes.
async fn quarantined_masters(cluster: &Cluster, snapshotter: &Snapshotter) -> anyhow::Result<()> {
    let q = support::builder(cluster)
        .restart_quarantine(Duration::from_secs(3600))
        .build()
        .await?;
    let err = q.try_acquire("q", TTL).await.unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    let seen = Seen::take(snapshotter);
    assert_eq!(seen.get(m::MASTERS_QUARANTINED, ""), 5.0, "{seen:#?}");
    assert_eq!(seen.total(m::MASTER_REPLIES), 5.0, "{seen:#?}");
    for i in 0..5 {
        assert_eq!(
            seen.get(m::MASTER_REPLIES, &format!("master={i},reply=quarantined")),
            1.0
        );
    }
    assert_eq!(seen.get(m::ROUNDS, "outcome=unavailable"), 1.0, "{seen:#?}");
    Ok(())
}

/// Two masters hold a foreign value, master 4 is paused: the round needs master 4's answer,
/// which times out (the only timeout), and ends contended.
async fn a_paused_master(
    cluster: &Cluster,
    a: &Redlock,
    snapshotter: &Snapshotter,
) -> anyhow::Result<()> {
    let key = support::lock_key("u");
    for i in [0, 1] {
        let mut c = direct(cluster, i).await;
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg("other")
            .query_async(&mut c)
            .await?;
    }
    cluster.pause(4)?;
    let err = a.acquire("u", TTL).await.unwrap_err();
    cluster.resume(4)?;
    assert!(err.is_contended(), "{err}");
    let seen = Seen::take(snapshotter);
    let replies: Vec<String> = (0..5)
        .map(|i| {
            ["refused", "granted", "timed_out", "no_answer"]
                .into_iter()
                .filter(|r| seen.get(m::MASTER_REPLIES, &format!("master={i},reply={r}")) > 0.0)
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    assert_eq!(
        replies,
        ["refused", "refused", "granted", "granted", "timed_out"],
        "{seen:#?}"
    );
    assert_eq!(seen.total(m::MASTER_REPLIES), 5.0);
    assert_eq!(seen.get(m::ACQUIRES, "outcome=contended"), 1.0);
    Ok(())
}
