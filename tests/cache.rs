//! The distributed cache against real masters: placement, batching, failures as misses,
//! stampede protection across clients, compare-and-set, and what a computing process's death
//! costs.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use redquorum::{Cache, CasOutcome, ComputeError, Error, HashRing, RingNode, WriteOutcome};
use support::direct;
use testcluster::{Cluster, DataOnRestart};
use tokio::sync::Barrier;

/// Generous for a loaded 2-core machine, so that a healthy node never looks dead; still far
/// below the default fill lock TTL (which must be at least 10 of these).
const NODE_TIMEOUT: Duration = Duration::from_millis(250);
const TTL: Duration = Duration::from_secs(60);

async fn cache(cluster: &Cluster) -> Cache {
    Cache::builder()
        .nodes(cluster.urls())
        .node_timeout(NODE_TIMEOUT)
        .build()
        .await
        .unwrap_or_else(|e| panic!("cache build failed: {e}\n{}", cluster.logs()))
}

/// The ring a ketama client in another language would build from the same server list.
fn reference_ring(cluster: &Cluster) -> HashRing {
    HashRing::from_nodes((0..cluster.len()).map(|i| {
        let url = cluster.url(i);
        let port = url.rsplit_once(':').unwrap().1.parse().unwrap();
        RingNode::new("127.0.0.1", port)
    }))
}

fn data_key(key: &str) -> String {
    format!("{}{key}", redquorum::defaults::DEFAULT_CACHE_KEY_PREFIX)
}

async fn raw_get(cluster: &Cluster, node: usize, key: &str) -> Option<Vec<u8>> {
    let mut c = direct(cluster, node).await;
    redis::cmd("GET")
        .arg(key)
        .query_async(&mut c)
        .await
        .unwrap()
}

fn b(s: &str) -> Option<Bytes> {
    Some(Bytes::copy_from_slice(s.as_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_set_delete_and_ttl() -> anyhow::Result<()> {
    let cluster = Cluster::start(3)?;
    let cache = cache(&cluster).await;

    assert_eq!(cache.get("absent").await?, None);
    assert_eq!(cache.set("k", "v1", TTL).await?, WriteOutcome::Written);
    assert_eq!(cache.get("k").await?, b("v1"));
    cache.set("k", "v2", TTL).await?;
    assert_eq!(cache.get("k").await?, b("v2"));
    assert!(cache.delete("k").await?.is_written());
    assert_eq!(cache.get("k").await?, None);
    // Deleting an absent key is a confirmed write too.
    assert!(cache.delete("k").await?.is_written());

    // Values are bytes, any bytes.
    let binary = vec![0u8, 255, 10, 13, 0];
    cache.set("bin", &binary, TTL).await?;
    assert_eq!(cache.get("bin").await?.as_deref(), Some(&binary[..]));
    cache.set("empty", b"", TTL).await?;
    assert_eq!(cache.get("empty").await?, Some(Bytes::new()));

    // The TTL lands on the node as a PX expiry, and the entry is gone after it.
    let ring = reference_ring(&cluster);
    cache.set("short", "x", Duration::from_millis(400)).await?;
    let node = ring.node_index_for("short").unwrap();
    let mut c = direct(&cluster, node).await;
    let pttl: i64 = redis::cmd("PTTL")
        .arg(data_key("short"))
        .query_async(&mut c)
        .await?;
    assert!(pttl > 0 && pttl <= 400, "pttl {pttl}");
    assert_eq!(cache.get("short").await?, b("x"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(cache.get("short").await?, None);

    let err = cache.set("k", "v", Duration::ZERO).await.unwrap_err();
    assert!(matches!(err, Error::InvalidTtl { .. }), "{err}");

    let stats = cache.stats();
    assert_eq!(stats.hits, 5, "{stats:?}");
    assert_eq!(stats.misses, 3, "{stats:?}");
    assert_eq!(stats.write_drops, 0, "{stats:?}");
    assert_eq!(stats.node_errors, 0, "{stats:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_live_on_the_node_the_ring_names() -> anyhow::Result<()> {
    let cluster = Cluster::start(5)?;
    let cache = cache(&cluster).await;
    let ring = reference_ring(&cluster);
    assert_eq!(cache.ring().nodes(), ring.nodes());

    let keys: Vec<String> = (0..200).map(|i| format!("user:{i}")).collect();
    let report = cache
        .set_many(keys.iter().map(|k| (k.as_str(), k.as_bytes())), TTL)
        .await?;
    assert!(report.is_complete(), "{report:?}");

    let mut per_node = vec![0usize; cluster.len()];
    for key in &keys {
        let expected = ring.node_index_for(key).unwrap();
        assert_eq!(cache.node_for(key), &ring.nodes()[expected]);
        per_node[expected] += 1;
        for node in 0..cluster.len() {
            let found = raw_get(&cluster, node, &data_key(key)).await;
            if node == expected {
                assert_eq!(found.as_deref(), Some(key.as_bytes()), "{key} on {node}");
            } else {
                assert_eq!(found, None, "{key} must not be on node {node}");
            }
        }
    }
    assert!(per_node.iter().all(|&n| n > 10), "{per_node:?}");

    // With hash_with_prefix the ring places the full key, as twemproxy does.
    let prefixed = Cache::builder()
        .nodes(cluster.urls())
        .node_timeout(NODE_TIMEOUT)
        .key_prefix("app:")
        .hash_with_prefix(true)
        .build()
        .await?;
    let mut moved = 0;
    for key in keys.iter().take(50) {
        prefixed.set(key, "p", TTL).await?;
        let node = ring.node_index_for(format!("app:{key}")).unwrap();
        assert_eq!(prefixed.node_for(key), &ring.nodes()[node]);
        let found = raw_get(&cluster, node, &format!("app:{key}")).await;
        assert_eq!(found.as_deref(), Some(&b"p"[..]));
        moved += usize::from(node != ring.node_index_for(key).unwrap());
    }
    assert!(moved > 0, "hashing the prefix must change some placements");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_many_and_set_many_keep_input_order_across_nodes() -> anyhow::Result<()> {
    let cluster = Cluster::start(5)?;
    let cache = cache(&cluster).await;
    let keys: Vec<String> = (0..60).map(|i| format!("item:{i}")).collect();
    let nodes: HashSet<_> = keys.iter().map(|k| cache.node_for(k).clone()).collect();
    assert!(nodes.len() >= 4, "the keys must span nodes: {nodes:?}");

    // Only the even keys are written, in an order unlike any node's.
    let items: Vec<(String, String)> = keys
        .iter()
        .step_by(2)
        .rev()
        .map(|k| (k.clone(), format!("value of {k}")))
        .collect();
    let report = cache.set_many(items.clone(), TTL).await?;
    assert_eq!(report.written(), 30);
    assert_eq!(report.dropped(), 0);
    assert_eq!(report.outcomes().len(), 30);

    // Reversed, with misses interleaved and a duplicate.
    let mut asked: Vec<&str> = keys.iter().rev().map(String::as_str).collect();
    asked.push("item:0");
    let got = cache.get_many(&asked).await?;
    assert_eq!(got.len(), asked.len());
    for (key, value) in asked.iter().zip(&got) {
        let n: usize = key["item:".len()..].parse()?;
        let expected = n.is_multiple_of(2).then(|| format!("value of {key}"));
        assert_eq!(
            value.as_deref(),
            expected.as_deref().map(str::as_bytes),
            "{key}"
        );
    }
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses), (31, 30), "{stats:?}");

    let none: [&str; 0] = [];
    assert!(cache.get_many(none).await?.is_empty());
    let nothing: Vec<(&str, &[u8])> = Vec::new();
    assert!(cache.set_many(nothing, TTL).await?.is_complete());
    Ok(())
}

/// Dozens of callers on several clients (separate connections, like separate processes) ask
/// for one cold key at once: the slow computation runs exactly once and everyone gets its value.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stampede_computes_once_across_clients() -> anyhow::Result<()> {
    const CLIENTS: usize = 6;
    const CALLERS: usize = 8;
    let cluster = Cluster::start(5)?;
    let computations = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(CLIENTS * CALLERS));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(cache(&cluster).await);
    }
    let mut tasks = Vec::new();
    for client in &clients {
        for caller in 0..CALLERS {
            let (client, computations, barrier) =
                (client.clone(), computations.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                client
                    .get_or_compute("report", TTL, || async move {
                        computations.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        Ok::<_, std::io::Error>(format!("computed for {caller}").into_bytes())
                    })
                    .await
            }));
        }
    }
    let mut values = HashSet::new();
    for task in tasks {
        values.insert(task.await??);
    }
    assert_eq!(
        computations.load(Ordering::SeqCst),
        1,
        "computed more than once"
    );
    assert_eq!(values.len(), 1, "everyone gets the one value: {values:?}");
    let value = values.into_iter().next().unwrap();
    assert!(value.starts_with(b"computed for "));

    // Warm: all hits, no computation.
    for client in &clients {
        let got = client
            .get_or_compute("report", TTL, || async {
                Ok::<_, std::io::Error>(b"again".to_vec())
            })
            .await?;
        assert_eq!(got, value);
    }
    assert_eq!(computations.load(Ordering::SeqCst), 1);
    let hits: u64 = clients.iter().map(|c| c.stats().hits).sum();
    let misses: u64 = clients.iter().map(|c| c.stats().misses).sum();
    assert_eq!(hits, CLIENTS as u64);
    assert_eq!(misses, (CLIENTS * CALLERS) as u64);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_set_lets_one_of_two_writers_win() -> anyhow::Result<()> {
    let cluster = Cluster::start(3)?;
    let (a, b2) = (cache(&cluster).await, cache(&cluster).await);

    // None = only if absent.
    let v1 = match a.compare_and_set("doc", None, "v1", TTL).await? {
        CasOutcome::Written { version } => version,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        b2.compare_and_set("doc", None, "other", TTL).await?,
        CasOutcome::Conflict { current: Some(v1) }
    );
    assert_eq!(a.get_versioned("doc").await?, Some((v1, b("v1").unwrap())));
    // The value is a plain string for plain reads.
    assert_eq!(b2.get("doc").await?, b("v1"));

    // Two writers with the same expected version, many times: exactly one wins each round.
    let mut version = v1;
    for round in 0..20 {
        let (ra, rb) = tokio::join!(
            a.compare_and_set("doc", Some(version), format!("a{round}"), TTL),
            b2.compare_and_set("doc", Some(version), format!("b{round}"), TTL),
        );
        let (ra, rb) = (ra?, rb?);
        let (winner, loser, value) = match (ra, rb) {
            (CasOutcome::Written { version }, other) => (version, other, format!("a{round}")),
            (other, CasOutcome::Written { version }) => (version, other, format!("b{round}")),
            both => panic!("round {round}: nobody won: {both:?}"),
        };
        assert_eq!(
            loser,
            CasOutcome::Conflict {
                current: Some(winner)
            }
        );
        assert!(winner > version);
        assert_eq!(
            a.get_versioned("doc").await?,
            Some((winner, b(&value).unwrap()))
        );
        version = winner;
    }

    // A plain set counts as a change: the old version conflicts.
    b2.set("doc", "plain", TTL).await?;
    let (after_set, value) = a.get_versioned("doc").await?.unwrap();
    assert_eq!(value, b("plain").unwrap());
    assert!(after_set > version);
    assert!(
        a.compare_and_set("doc", Some(version), "stale", TTL)
            .await?
            .is_conflict()
    );

    // Delete and recreate: versions never repeat (no ABA).
    a.delete("doc").await?;
    assert_eq!(
        a.compare_and_set("doc", Some(after_set), "x", TTL).await?,
        CasOutcome::Conflict { current: None }
    );
    let recreated = a.compare_and_set("doc", None, "new", TTL).await?;
    assert!(recreated.version().unwrap() > after_set);

    // After SCRIPT FLUSH (or a restart) the script is sent again with EVAL.
    for i in 0..cluster.len() {
        let mut c = direct(&cluster, i).await;
        let _: () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(&mut c)
            .await?;
    }
    let v = recreated.version().unwrap();
    assert!(
        a.compare_and_set("doc", Some(v), "y", TTL)
            .await?
            .is_written()
    );
    assert_eq!(a.stats().write_drops, 0);
    Ok(())
}

/// Read-modify-CAS loops from several clients on one counter lose no increment.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compare_and_set_loses_no_update_under_contention() -> anyhow::Result<()> {
    const WRITERS: usize = 6;
    const INCREMENTS: usize = 15;
    let cluster = Cluster::start(3)?;
    let first = cache(&cluster).await;
    assert!(
        first
            .compare_and_set("n", None, "0", TTL)
            .await?
            .is_written()
    );
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        let client = cache(&cluster).await;
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0;
            for _ in 0..INCREMENTS {
                loop {
                    let (version, value) = client.get_versioned("n").await?.expect("present");
                    let n: usize = std::str::from_utf8(&value)?.parse()?;
                    let next = (n + 1).to_string();
                    match client
                        .compare_and_set("n", Some(version), next, TTL)
                        .await?
                    {
                        CasOutcome::Written { .. } => break,
                        CasOutcome::Conflict { .. } => conflicts += 1,
                        other => anyhow::bail!("unexpected {other:?}"),
                    }
                }
            }
            anyhow::Ok(conflicts)
        }));
    }
    let mut conflicts = 0;
    for task in tasks {
        conflicts += task.await??;
    }
    let total = first.get("n").await?.unwrap();
    assert_eq!(total, b(&(WRITERS * INCREMENTS).to_string()).unwrap());
    assert!(conflicts > 0, "the writers should have contended");
    Ok(())
}

/// A node killed while calls are running: its keys become misses and its writes counted drops,
/// the other nodes are unaffected, and no call fails. When it comes back with its data, its
/// keys are served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_node_turns_its_keys_into_misses_and_drops() -> anyhow::Result<()> {
    const VICTIM: usize = 2;
    let cluster = Arc::new(Cluster::start(5)?);
    let cache = cache(&cluster).await;
    let keys: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
    let on_victim: HashSet<&str> = keys
        .iter()
        .filter(|k| cache.ring().node_index_for(k.as_str()) == Some(VICTIM))
        .map(String::as_str)
        .collect();
    assert!(!on_victim.is_empty());
    let items = || keys.iter().map(|k| (k.clone(), k.clone()));
    assert!(cache.set_many(items(), TTL).await?.is_complete());

    // Load from another task while the node dies: no call may fail.
    let load = {
        let (cache, keys) = (cache.clone(), keys.clone());
        tokio::spawn(async move {
            let until = Instant::now() + Duration::from_millis(800);
            let mut calls = 0;
            while Instant::now() < until {
                cache.get_many(&keys).await?;
                cache
                    .set_many(keys.iter().map(|k| (k.as_str(), k.as_bytes())), TTL)
                    .await?;
                calls += 1;
            }
            Ok::<_, Error>(calls)
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let killer = cluster.clone();
    tokio::task::spawn_blocking(move || killer.kill(VICTIM)).await??;
    assert!(load.await?? > 0);

    let before = cache.stats();
    let started = Instant::now();
    let got = cache.get_many(&keys).await?;
    assert!(
        started.elapsed() < NODE_TIMEOUT * 2,
        "{:?}",
        started.elapsed()
    );
    for (key, value) in keys.iter().zip(&got) {
        if on_victim.contains(key.as_str()) {
            assert_eq!(value, &None, "{key} lives on the dead node");
        } else {
            assert_eq!(value.as_deref(), Some(key.as_bytes()), "{key}");
        }
    }
    let report = cache.set_many(items(), TTL).await?;
    assert_eq!(report.dropped(), on_victim.len());
    assert_eq!(report.written(), keys.len() - on_victim.len());
    for (key, outcome) in keys.iter().zip(report.outcomes()) {
        assert_eq!(
            outcome.is_dropped(),
            on_victim.contains(key.as_str()),
            "{key}"
        );
    }
    let victim_key = *on_victim.iter().next().unwrap();
    assert_eq!(cache.get(victim_key).await?, None);
    assert!(cache.set(victim_key, "x", TTL).await?.is_dropped());
    assert!(cache.delete(victim_key).await?.is_dropped());
    assert_eq!(
        cache.compare_and_set(victim_key, None, "x", TTL).await?,
        CasOutcome::Dropped
    );

    let after = cache.stats();
    let dead = on_victim.len() as u64;
    assert_eq!(after.misses - before.misses, dead + 1);
    assert_eq!(after.hits - before.hits, keys.len() as u64 - dead);
    assert_eq!(after.write_drops - before.write_drops, dead + 3);
    assert!(after.node_errors - before.node_errors >= 6, "{after:?}");

    // Back with its data (AOF): the background reconnect brings its keys back.
    let restarter = cluster.clone();
    tokio::task::spawn_blocking(move || restarter.restart(VICTIM, DataOnRestart::Keep)).await??;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = cache.get_many(&keys).await?;
        if got.iter().all(Option::is_some) {
            break;
        }
        assert!(Instant::now() < deadline, "node {VICTIM} never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// A paused node (SIGSTOP: connections open, no answers) costs one node timeout, not more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_node_costs_one_timeout() -> anyhow::Result<()> {
    const VICTIM: usize = 0;
    let cluster = Cluster::start(3)?;
    let cache = cache(&cluster).await;
    let keys: Vec<String> = (0..30).map(|i| format!("p{i}")).collect();
    cache
        .set_many(keys.iter().map(|k| (k.as_str(), "v")), TTL)
        .await?;
    cluster.pause(VICTIM)?;
    let started = Instant::now();
    let got = cache.get_many(&keys).await;
    let elapsed = started.elapsed();
    cluster.resume(VICTIM)?;
    let got = got?;
    assert!(elapsed >= NODE_TIMEOUT, "{elapsed:?}");
    assert!(elapsed < NODE_TIMEOUT * 3, "{elapsed:?}");
    for (key, value) in keys.iter().zip(&got) {
        let paused = cache.ring().node_index_for(key.as_str()) == Some(VICTIM);
        assert_eq!(value.is_none(), paused, "{key}");
    }
    assert_eq!(cache.stats().node_errors, 1);
    Ok(())
}

#[derive(Debug, PartialEq)]
struct Boom;

impl std::fmt::Display for Boom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("boom")
    }
}

impl std::error::Error for Boom {}

/// The computation's error goes to the caller that ran it; callers waiting on it (in this
/// process and in another) do not fail with it, they compute themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_computation_reaches_its_caller_and_waiters_compute() -> anyhow::Result<()> {
    let cluster = Cluster::start(3)?;
    let cache = cache(&cluster).await;

    let err = cache
        .get_or_compute("k", TTL, || async { Err::<Vec<u8>, _>(Boom) })
        .await
        .unwrap_err();
    assert!(err.is_compute());
    assert_eq!(err.into_compute(), Some(Boom));
    assert_eq!(cache.get("k").await?, None, "nothing cached after an error");

    // A failing leader, then waiters in this process and on another client.
    let other = self::cache(&cluster).await;
    let computed = Arc::new(AtomicUsize::new(0));
    let leader = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .get_or_compute("cold", TTL, || async {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    Err::<Vec<u8>, _>(Boom)
                })
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut waiters = Vec::new();
    for client in [&cache, &cache, &cache, &other, &other] {
        let (client, computed) = (client.clone(), computed.clone());
        waiters.push(tokio::spawn(async move {
            client
                .get_or_compute("cold", TTL, || async move {
                    computed.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok::<_, Boom>(b"fine".to_vec())
                })
                .await
        }));
    }
    match leader.await? {
        Err(ComputeError::Compute(Boom)) => {}
        other => panic!("the leader must get its own error: {other:?}"),
    }
    for waiter in waiters {
        assert_eq!(
            waiter.await?.expect("waiters do not fail"),
            b("fine").unwrap()
        );
    }
    assert_eq!(computed.load(Ordering::SeqCst), 1, "one waiter took over");
    Ok(())
}

/// A process that dies while computing (no release, no more extensions) holds the others up
/// for at most the fill lock TTL; then one of them computes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_computing_process_is_replaced_after_the_lock_ttl() -> anyhow::Result<()> {
    const LOCK_TTL: Duration = Duration::from_secs(3);
    let cluster = Cluster::start(3)?;
    let urls = cluster.urls();

    // The doomed "process": its own runtime, killed without any cleanup running.
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let (die_tx, die_rx) = std::sync::mpsc::channel::<()>();
    let doomed = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let cache = rt.block_on(
            Cache::builder()
                .nodes(urls)
                .node_timeout(NODE_TIMEOUT)
                .fill_lock_ttl(LOCK_TTL)
                .build(),
        );
        let cache = cache.unwrap();
        rt.spawn(async move {
            cache
                .get_or_compute("slow", TTL, || async move {
                    started_tx.send(()).unwrap();
                    std::future::pending::<Result<Vec<u8>, Boom>>().await
                })
                .await
        });
        let _ = die_rx.recv();
        rt.shutdown_background();
    });
    started_rx.recv_timeout(Duration::from_secs(10))?;
    die_tx.send(())?;
    doomed.join().unwrap();
    let died = Instant::now();

    let survivor = Cache::builder()
        .nodes(cluster.urls())
        .node_timeout(NODE_TIMEOUT)
        .fill_lock_ttl(LOCK_TTL)
        .fill_wait(Duration::from_secs(10))
        .build()
        .await?;
    let value = survivor
        .get_or_compute("slow", TTL, || async { Ok::<_, Boom>(b"done".to_vec()) })
        .await?;
    let waited = died.elapsed();
    assert_eq!(value, b("done").unwrap());
    assert!(
        waited >= Duration::from_secs(1),
        "the dead holder's lock must have held the survivor up: {waited:?}"
    );
    assert!(waited < LOCK_TTL + Duration::from_secs(2), "{waited:?}");
    Ok(())
}

/// What the test above relies on: a lock guard dropped while its runtime shuts down (its
/// background release can no longer be spawned) is simply left to expire. It used to spawn a
/// release holding another guard, which the closed runtime dropped at once, recursing until
/// the stack overflowed.
#[test]
fn a_guard_dropped_by_runtime_shutdown_is_left_to_expire() -> anyhow::Result<()> {
    let cluster = Cluster::start(3)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let redlock = rt.block_on(support::client(&cluster));
    let guard = rt.block_on(redlock.acquire("shutdown", Duration::from_secs(5)))?;
    rt.spawn(async move {
        let _held = guard;
        std::future::pending::<()>().await
    });
    rt.shutdown_background();
    Ok(())
}

/// A cache built from a Redlock shares its masters; builder input is checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_redlock_shares_the_masters_and_build_checks_input() -> anyhow::Result<()> {
    let cluster = Cluster::start(3)?;
    let redlock = support::client(&cluster).await;
    let cache = Cache::from_redlock(&redlock)
        .node_timeout(NODE_TIMEOUT)
        .build()
        .await?;
    assert_eq!(cache.redlock().masters(), 3);
    assert_eq!(cache.ring().nodes(), reference_ring(&cluster).nodes());
    cache.set("shared", "yes", TTL).await?;
    assert_eq!(cache.get("shared").await?, b("yes"));
    let value = cache
        .get_or_compute("fill", TTL, || async { Ok::<_, Boom>(b"v".to_vec()) })
        .await?;
    assert_eq!(value, b("v").unwrap());

    let err = Cache::from_redlock(&redlock)
        .nodes(cluster.urls())
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidConfig(redquorum::invalid::ConfigReason::NodesAndRedlock)
        ),
        "{err}"
    );
    // The lock's per-master timeout is 100 ms: a 500 ms fill lock is below 10 of them.
    let err = Cache::from_redlock(&redlock)
        .fill_lock_ttl(Duration::from_millis(500))
        .build()
        .await
        .unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
    let err = Cache::builder()
        .nodes(["redis://127.0.0.1:1"])
        .connect_timeout(Duration::from_millis(200))
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::QuorumUnreachable { reachable: 0, .. }),
        "{err}"
    );
    Ok(())
}

#[cfg(feature = "serde")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_values_round_trip() -> anyhow::Result<()> {
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct User {
        id: u32,
        name: String,
    }
    let cluster = Cluster::start(3)?;
    let cache = cache(&cluster).await;
    let ada = User {
        id: 1,
        name: "Ada".into(),
    };
    cache.set_json("user:1", &ada, TTL).await?;
    assert_eq!(cache.get_json::<User>("user:1").await?, Some(ada));
    assert_eq!(cache.get("user:1").await?, b(r#"{"id":1,"name":"Ada"}"#));
    cache.set("user:2", "not json", TTL).await?;
    assert!(
        cache
            .get_json::<User>("user:2")
            .await
            .unwrap_err()
            .is_codec()
    );

    let grace = cache
        .get_or_compute_json("user:3", TTL, || async {
            Ok::<_, Boom>(User {
                id: 3,
                name: "Grace".into(),
            })
        })
        .await?;
    assert_eq!(grace.name, "Grace");
    assert_eq!(cache.get_json::<User>("user:3").await?, Some(grace));
    Ok(())
}

/// One master behind a fault proxy, and a cache whose node timeout leaves room to lose a reply
/// and reset the connection before the call gives up.
async fn proxied_cache() -> anyhow::Result<(Cluster, Cache)> {
    let cluster = Cluster::builder().masters(1).proxy(true).build()?;
    let cache = Cache::builder()
        .nodes(cluster.urls())
        .node_timeout(Duration::from_secs(2))
        .fill_lock_ttl(Duration::from_secs(30))
        .build()
        .await?;
    Ok((cluster, cache))
}

/// Runs `write` with the master's replies swallowed; once `key` holds `landed` on the server
/// (the write ran), calls `meanwhile` (another writer, say), then turns replies back on, which
/// resets the connection that lost the reply: the writer's connection breaks after its write
/// landed. Returns what `write` returned.
async fn lose_the_reply<T: Send + 'static>(
    cluster: &Cluster,
    key: &str,
    landed: &str,
    write: impl Future<Output = T> + Send + 'static,
    meanwhile: impl AsyncFnOnce(&mut redis::aio::MultiplexedConnection),
) -> anyhow::Result<T> {
    cluster.drop_replies(0, true)?;
    let write = tokio::spawn(write);
    let mut c = direct(cluster, 0).await;
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let now: Option<String> = redis::cmd("GET").arg(key).query_async(&mut c).await?;
        if now.as_deref() == Some(landed) {
            break;
        }
        assert!(Instant::now() < deadline, "the write never landed: {now:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The write is visible before the proxy has read (and swallowed) its reply: give the
    // proxy time to, or turning replies back on would forward it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    meanwhile(&mut c).await;
    cluster.drop_replies(0, false)?;
    Ok(write.await?)
}

/// Lost reply on compare-and-set: the script ran, its reply was lost and the connection reset.
/// The call must not be re-sent on a new connection (it would find its own version and report a
/// conflict with itself): the caller learns the outcome is unknown, and the value is its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_set_with_a_lost_reply_is_not_resent() -> anyhow::Result<()> {
    let (cluster, cache) = proxied_cache().await?;
    let v0 = cache
        .compare_and_set("doc", None, "v0", TTL)
        .await?
        .version()
        .expect("written");
    let writer = cache.clone();
    let outcome = lose_the_reply(
        &cluster,
        &data_key("doc"),
        "mine",
        async move { writer.compare_and_set("doc", Some(v0), "mine", TTL).await },
        async |_| {},
    )
    .await?;
    assert!(
        !matches!(outcome, Ok(CasOutcome::Conflict { .. })),
        "told of a conflict with its own write: {outcome:?}"
    );
    let err = outcome.unwrap_err();
    assert!(err.is_outcome_unknown(), "{err}");
    assert!(
        matches!(&err, Error::OutcomeUnknown { key, .. } if key == "doc"),
        "{err:?}"
    );
    let (version, value) = cache.get_versioned("doc").await?.expect("present");
    assert_eq!(value, b("mine").unwrap());
    assert_eq!(version, v0 + 1, "written exactly once");
    assert_eq!(cache.stats().write_drops, 1);
    Ok(())
}

/// Writes "newer" under `key` on a direct connection: the writer that comes after a lost reply.
async fn write_newer(c: &mut redis::aio::MultiplexedConnection) {
    let _: () = redis::cmd("SET")
        .arg(data_key("k"))
        .arg("newer")
        .query_async(c)
        .await
        .unwrap();
}

/// The value of cache key `k` on the proxied master, as text.
async fn value_of_k(cluster: &Cluster) -> Option<String> {
    let raw = raw_get(cluster, 0, &data_key("k")).await;
    raw.map(|v| String::from_utf8_lossy(&v).into_owned())
}

/// Lost reply on a plain set, then a newer write: the set landed, its reply was lost, another
/// writer wrote a newer value, and the connection reset. Re-sending the set on a new connection
/// would put the old value back over the newer one; it must not be re-sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_with_a_lost_reply_is_not_applied_twice() -> anyhow::Result<()> {
    let (cluster, cache) = proxied_cache().await?;
    let writer = cache.clone();
    let outcome = lose_the_reply(
        &cluster,
        &data_key("k"),
        "old",
        async move { writer.set("k", "old", TTL).await },
        write_newer,
    )
    .await?;
    let now = value_of_k(&cluster).await;
    assert_eq!(now.as_deref(), Some("newer"), "the set was applied twice");
    assert!(outcome?.is_dropped(), "an unconfirmed set is a drop");
    Ok(())
}

/// The same as above with `set_many` (a `MULTI`/`EXEC` pipeline): not applied twice either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_many_with_a_lost_reply_is_not_applied_twice() -> anyhow::Result<()> {
    let (cluster, cache) = proxied_cache().await?;
    let writer = cache.clone();
    let report = lose_the_reply(
        &cluster,
        &data_key("k"),
        "old",
        async move { writer.set_many([("k", "old")], TTL).await },
        write_newer,
    )
    .await?;
    let now = value_of_k(&cluster).await;
    assert_eq!(now.as_deref(), Some("newer"), "set_many was applied twice");
    assert_eq!(report?.dropped(), 1);
    Ok(())
}

/// A cache whose fill lock is short (1 s, extended every third of that), so a test can make a
/// computing caller lose it within a second.
async fn short_fill_lock_cache(cluster: &Cluster) -> Cache {
    Cache::builder()
        .nodes(cluster.urls())
        .node_timeout(support::TEST_MASTER_TIMEOUT)
        .fill_lock_ttl(Duration::from_secs(1))
        .build()
        .await
        .unwrap_or_else(|e| panic!("cache build failed: {e}\n{}", cluster.logs()))
}

/// Deletes the fill lock of `key` on every master, as an expiry or an eviction would.
async fn drop_fill_lock(cluster: &Cluster, key: &str) -> anyhow::Result<()> {
    let lock = support::lock_key(&format!("cache-fill:{}", data_key(key)));
    for i in 0..cluster.len() {
        let mut c = direct(cluster, i).await;
        let _: i64 = redis::cmd("DEL").arg(&lock).query_async(&mut c).await?;
    }
    Ok(())
}

/// A `get_or_compute` running in its own task, whose computation the test controls.
struct SlowFill {
    /// Fires when the computation starts (the caller holds the fill lock then).
    started: tokio::sync::oneshot::Receiver<()>,
    /// Lets the computation return its value.
    finish: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<Bytes, ComputeError<Boom>>>,
}

/// Starts a `get_or_compute` of `key` that computes `value` once `finish` fires.
fn slow_fill(cache: &Cache, key: &'static str, value: &'static str) -> SlowFill {
    let (started_tx, started) = tokio::sync::oneshot::channel();
    let (finish, finish_rx) = tokio::sync::oneshot::channel::<()>();
    let cache = cache.clone();
    let task = tokio::spawn(async move {
        cache
            .get_or_compute(key, TTL, || async move {
                let _ = started_tx.send(());
                let _ = finish_rx.await;
                Ok::<_, Boom>(value.as_bytes().to_vec())
            })
            .await
    });
    SlowFill {
        started,
        finish,
        task,
    }
}

/// Lost fill lock: A takes the fill lock and computes past its validity (here the lock is
/// taken from it while it computes), B takes over, computes and writes. A's late, stale value
/// must not replace B's: A learned it lost the lock, so it writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_that_lost_its_lock_does_not_overwrite_the_takeover() -> anyhow::Result<()> {
    let cluster = Cluster::start(3)?;
    let (a, b2) = (
        short_fill_lock_cache(&cluster).await,
        short_fill_lock_cache(&cluster).await,
    );
    let slow = slow_fill(&a, "report", "stale from A");
    slow.started.await?;
    drop_fill_lock(&cluster, "report").await?;
    let fresh = b2
        .get_or_compute("report", TTL, || async {
            Ok::<_, Boom>(b"fresh from B".to_vec())
        })
        .await?;
    assert_eq!(fresh, b("fresh from B").unwrap());
    // Two extension periods: A's watchdog has found the lock gone by now.
    tokio::time::sleep(Duration::from_millis(800)).await;
    slow.finish.send(()).ok();
    // A's caller still gets what it computed; the cache keeps B's value.
    assert_eq!(slow.task.await??, b("stale from A").unwrap());
    assert_eq!(a.get("report").await?, b("fresh from B"));
    Ok(())
}

/// A user's plain `set` while a fill computes (the fill lock still held): the late fill must
/// not replace it, because a fill only writes a key that is still absent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_fill_does_not_overwrite_a_set_made_meanwhile() -> anyhow::Result<()> {
    let cluster = Cluster::start(3)?;
    let cache = short_fill_lock_cache(&cluster).await;
    let user = short_fill_lock_cache(&cluster).await;
    let slow = slow_fill(&cache, "profile", "computed");
    slow.started.await?;
    assert!(user.set("profile", "set by user", TTL).await?.is_written());
    slow.finish.send(()).ok();
    assert_eq!(slow.task.await??, b("computed").unwrap());
    assert_eq!(cache.get("profile").await?, b("set by user"));
    Ok(())
}

/// Lost fill lock, takeover still computing: A loses its fill lock while computing and B takes
/// over; A finishes first, with the key still absent. A knows its lock is gone, so it writes
/// nothing (it would otherwise fill the key and B's fresher fill would find it taken); B's
/// value is the one cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_that_lost_its_lock_leaves_the_key_to_the_takeover() -> anyhow::Result<()> {
    let cluster = Cluster::start(3)?;
    let (a, b2) = (
        short_fill_lock_cache(&cluster).await,
        short_fill_lock_cache(&cluster).await,
    );
    let a_fill = slow_fill(&a, "report", "stale from A");
    a_fill.started.await?;
    drop_fill_lock(&cluster, "report").await?;
    let b_fill = slow_fill(&b2, "report", "fresh from B");
    b_fill.started.await?;
    // Two extension periods: A's watchdog has found the lock taken by now.
    tokio::time::sleep(Duration::from_millis(800)).await;
    a_fill.finish.send(()).ok();
    assert_eq!(a_fill.task.await??, b("stale from A").unwrap());
    assert_eq!(
        a.get("report").await?,
        None,
        "A wrote after losing its lock"
    );
    b_fill.finish.send(()).ok();
    assert_eq!(b_fill.task.await??, b("fresh from B").unwrap());
    assert_eq!(a.get("report").await?, b("fresh from B"));
    Ok(())
}

/// Versions and foreign writers, as documented on `compare_and_set`: another client's plain
/// `SET` over a key that has a version keeps that version, so it is not seen as a change (a
/// compare-and-set holding the version overwrites it); over a key without a version (last
/// written by `set`) it gets a fresh version and an older one conflicts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_set_is_a_change_only_over_an_unversioned_key() -> anyhow::Result<()> {
    let cluster = Cluster::start(1)?;
    let cache = cache(&cluster).await;
    let mut other = direct(&cluster, 0).await;
    let foreign_set = async |c: &mut redis::aio::MultiplexedConnection, value: &str| {
        let _: () = redis::cmd("SET")
            .arg(data_key("doc"))
            .arg(value)
            .query_async(c)
            .await
            .unwrap();
    };

    let v1 = cache.compare_and_set("doc", None, "v1", TTL).await?;
    foreign_set(&mut other, "foreign").await;
    let (version, value) = cache.get_versioned("doc").await?.unwrap();
    assert_eq!(
        (version, value),
        (v1.version().unwrap(), b("foreign").unwrap())
    );
    let over = cache
        .compare_and_set("doc", Some(version), "v2", TTL)
        .await?;
    assert!(over.is_written(), "{over:?}");

    // After the crate's own set the key has no version: a foreign value then gets a fresh
    // one, and the version held from before conflicts.
    let v2 = over.version().unwrap();
    cache.set("doc", "plain", TTL).await?;
    foreign_set(&mut other, "foreign again").await;
    let (fresh, value) = cache.get_versioned("doc").await?.unwrap();
    assert!(fresh > v2, "{fresh} after {v2}");
    assert_eq!(value, b("foreign again").unwrap());
    let stale = cache.compare_and_set("doc", Some(v2), "v3", TTL).await?;
    assert_eq!(
        stale,
        CasOutcome::Conflict {
            current: Some(fresh)
        }
    );
    Ok(())
}

/// The messages of the `WARN` events the crate logs while it is the thread's subscriber.
#[derive(Clone, Default)]
struct Warnings(Arc<std::sync::Mutex<Vec<String>>>);

impl Warnings {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl tracing::Subscriber for Warnings {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let meta = event.metadata();
        if *meta.level() != tracing::Level::WARN || !meta.target().starts_with("redquorum") {
            return;
        }
        let mut text = String::new();
        event.record(
            &mut |field: &tracing::field::Field, value: &dyn std::fmt::Debug| {
                text.push_str(&format!("{}={value:?} ", field.name()));
            },
        );
        self.0.lock().unwrap().push(text);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Lock masters that may evict, shared with a cache: under an evicting `maxmemory-policy`, cache
/// pressure can evict a lock key or the fencing counter (a double grant nothing detects), so a
/// cache built from a Redlock whose masters evict warns once at build; with `noeviction`
/// everywhere it stays quiet.
#[tokio::test]
async fn from_redlock_warns_when_a_shared_master_may_evict() -> anyhow::Result<()> {
    let cluster = Cluster::start(3)?;
    let redlock = support::client(&cluster).await;
    let warnings = Warnings::default();
    let _subscriber = tracing::dispatcher::set_default(&tracing::Dispatch::new(warnings.clone()));

    Cache::from_redlock(&redlock).build().await?;
    assert_eq!(warnings.take(), Vec::<String>::new(), "noeviction is safe");

    let mut c = direct(&cluster, 1).await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("allkeys-lru")
        .query_async(&mut c)
        .await?;
    Cache::from_redlock(&redlock).build().await?;
    let warned = warnings.take();
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(warned[0].contains("allkeys-lru"), "{warned:?}");
    Ok(())
}

/// Only the key's node is paused; the fill lock still has its quorum on the other four. The
/// callers of four clients ask for the key at once: ONE computation runs, and every caller
/// gets its value without a `FillTimeout` (the wait, 4 s, is shorter than the computations
/// one after the other would take). A read that fails is not a miss: a lock winner that
/// cannot read the node looks for the value another winner parked with the fill lock before
/// computing again. (Each winner used to take the failed read for a miss and compute.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_computation_when_the_keys_node_is_down() -> anyhow::Result<()> {
    const CLIENTS: usize = 4;
    let cluster = Cluster::start(5)?;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(
            Cache::builder()
                .nodes(cluster.urls())
                .node_timeout(NODE_TIMEOUT)
                .fill_wait(Duration::from_secs(4))
                .build()
                .await?,
        );
    }
    let key = "report-of-a-paused-node";
    let node = clients[0].ring().node_index_for(key).unwrap();
    cluster.pause(node)?;
    let computations = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let mut tasks = Vec::new();
    for client in &clients {
        let (client, computations, barrier) =
            (client.clone(), computations.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            client
                .get_or_compute(key, TTL, || async move {
                    let n = computations.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                    Ok::<_, std::io::Error>(format!("computation {n}").into_bytes())
                })
                .await
        }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await?);
    }
    cluster.resume(node)?;
    let failed: Vec<String> = outcomes
        .iter()
        .filter_map(|o| o.as_ref().err().map(|e| e.to_string()))
        .collect();
    assert!(failed.is_empty(), "callers failed: {failed:?}");
    assert_eq!(
        computations.load(Ordering::SeqCst),
        1,
        "computed more than once with the key's node paused"
    );
    let values: HashSet<Bytes> = outcomes.into_iter().map(|o| o.unwrap()).collect();
    assert_eq!(values.len(), 1, "everyone gets the one value: {values:?}");
    Ok(())
}
