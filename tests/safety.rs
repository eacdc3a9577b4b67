//! The safety suite: real faults on real masters, with a mutual-exclusion checker and a fenced
//! store, asserting what must hold in each scenario (and reporting where Redlock is known to be
//! unsafe).
//!
//! Backend: `TESTCLUSTER_BACKEND=process|docker|auto` (default `process`; CI runs `docker`).
//! Chaos length: `REDQUORUM_CHAOS_SECS` (default 6). Each scenario prints its figures; run
//! with `cargo test --test safety -- --nocapture --test-threads 1` to see them.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use rand::Rng;
use redquorum::Redlock;
use support::holding;
use testcluster::checker::{Checker, FencedStore, Overlap};
use testcluster::{Backend, Cluster, Cut, DataOnRestart};
use tokio::time::Instant;

fn backend() -> Backend {
    std::env::var("TESTCLUSTER_BACKEND")
        .ok()
        .map(|b| b.parse().expect("TESTCLUSTER_BACKEND"))
        .unwrap_or(Backend::Process)
}

fn start(faketime: bool) -> Cluster {
    Cluster::builder()
        .masters(5)
        .backend(backend())
        .proxy(true)
        .faketime(faketime)
        .build()
        .expect("starting the cluster")
}

/// What a load run saw.
#[derive(Debug, Default)]
struct Run {
    acquisitions: usize,
    failures: usize,
    latencies: Vec<Duration>,
}

impl Run {
    fn percentile(&self, p: usize) -> Duration {
        let mut xs = self.latencies.clone();
        if xs.is_empty() {
            return Duration::ZERO;
        }
        xs.sort();
        xs[(xs.len() * p / 100).min(xs.len() - 1)]
    }

    fn summary(&self) -> String {
        format!(
            "{} acquisitions, {} failed acquires, acquire p50 {:?} p99 {:?}",
            self.acquisitions,
            self.failures,
            self.percentile(50),
            self.percentile(99)
        )
    }
}

/// `clients` clients (separate connections, like separate processes) take turns on
/// `resources` for `duration`; every holding and every fenced write goes to the checker.
async fn run_clients(
    clients: &[Redlock],
    resources: usize,
    duration: Duration,
    checker: &Arc<Checker>,
    store: &Arc<FencedStore>,
) -> Run {
    let stop = Instant::now() + duration;
    let mut tasks = Vec::new();
    for (id, redlock) in clients.iter().cloned().enumerate() {
        let (checker, store) = (checker.clone(), store.clone());
        tasks.push(tokio::spawn(async move {
            let mut run = Run::default();
            let mut i = id;
            while Instant::now() < stop {
                i += 1;
                let resource = format!("res{}", i % resources);
                let t = Instant::now();
                match redlock
                    .acquire(
                        &resource,
                        redquorum::LockOptions::new(Duration::from_secs(2))
                            .wait(Duration::from_millis(500)),
                    )
                    .await
                {
                    Ok(lock) => {
                        let acquired_at = Instant::now();
                        run.latencies.push(acquired_at - t);
                        run.acquisitions += 1;
                        let token = lock.fencing_token().expect("fencing on");
                        store.write(&checker, id, &resource, token);
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        checker.record(
                            holding(id, &lock, acquired_at).released(Instant::now().into_std()),
                        );
                        let _ = lock.release().await;
                    }
                    Err(_) => {
                        run.failures += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            run
        }));
    }
    let mut total = Run::default();
    for t in tasks {
        let run = t.await.expect("client task");
        total.acquisitions += run.acquisitions;
        total.failures += run.failures;
        total.latencies.extend(run.latencies);
    }
    total
}

async fn clients(cluster: &Cluster, n: usize, quarantine: Option<Duration>) -> Vec<Redlock> {
    let mut out = Vec::new();
    for _ in 0..n {
        let mut b = support::builder(cluster);
        if let Some(q) = quarantine {
            b = b.restart_quarantine(q);
        }
        out.push(b.build().await.expect("client"));
    }
    out
}

#[derive(Clone, Copy, Debug)]
enum MinorityFault {
    Pause,
    Kill,
    BlackHole,
    Reset,
    Latency,
}

fn inject(cluster: &Cluster, i: usize, fault: MinorityFault) {
    match fault {
        MinorityFault::Pause => cluster.pause(i),
        MinorityFault::Kill => cluster.kill(i),
        MinorityFault::BlackHole => cluster.cut_off(i, Cut::BlackHole),
        MinorityFault::Reset => cluster.cut_off(i, Cut::Reset),
        MinorityFault::Latency => cluster.set_latency(i, Duration::from_millis(30)),
    }
    .unwrap_or_else(|e| panic!("{fault:?} on master {i}: {e}"));
}

fn undo(cluster: &Cluster, i: usize, fault: MinorityFault) {
    match fault {
        MinorityFault::Pause => cluster.resume(i),
        MinorityFault::Kill => cluster.restart(i, DataOnRestart::Keep),
        MinorityFault::BlackHole | MinorityFault::Reset | MinorityFault::Latency => cluster.heal(i),
    }
    .unwrap_or_else(|e| panic!("undo {fault:?} on master {i}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn minority_faults_keep_locks_granted_without_overlap() {
    let cluster = start(false);
    let redlock_clients = clients(&cluster, 4, None).await;
    for fault in [
        MinorityFault::Pause,
        MinorityFault::Kill,
        MinorityFault::BlackHole,
        MinorityFault::Reset,
        MinorityFault::Latency,
    ] {
        let (checker, store) = (Arc::new(Checker::new()), Arc::new(FencedStore::new()));
        inject(&cluster, 0, fault);
        inject(&cluster, 1, fault);
        let run = run_clients(
            &redlock_clients,
            2,
            Duration::from_millis(1500),
            &checker,
            &store,
        )
        .await;
        undo(&cluster, 0, fault);
        undo(&cluster, 1, fault);
        println!(
            "minority {fault:?}: {}, overlaps {}",
            run.summary(),
            checker.overlaps().len()
        );
        assert!(
            run.acquisitions > 10,
            "{fault:?}: {}\n{}",
            run.summary(),
            cluster.logs()
        );
        assert!(
            checker.overlaps().is_empty(),
            "{fault:?}: {:?}",
            checker.overlaps()
        );
        assert!(checker.stale_writes_accepted().is_empty());
        // Let reconnects settle before the next fault.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn majority_unavailable_fails_within_the_wait_and_leaves_no_key() {
    let cluster = start(false);
    let redlock = support::client(&cluster).await;
    for i in 0..3 {
        cluster.pause(i).unwrap();
    }
    let wait = Duration::from_millis(500);
    let started = Instant::now();
    let mut errors = 0;
    for r in 0..5 {
        let err = redlock
            .acquire(
                &format!("maj{r}"),
                redquorum::LockOptions::new(Duration::from_secs(5)).wait(wait),
            )
            .await
            .expect_err("no majority");
        assert!(err.is_unavailable() || err.is_timeout(), "{err}");
        errors += 1;
    }
    let took = started.elapsed();
    println!("majority paused: {errors} acquires failed in {took:?} (wait {wait:?} each)");
    assert!(took < wait * 5 + Duration::from_secs(1), "took {took:?}");
    // The paused masters still have our SETs in their socket buffers: on resume they run them,
    // followed by the rollbacks queued behind them on the same connections.
    for i in 0..3 {
        cluster.resume(i).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for r in 0..5 {
        let values =
            support::values_everywhere(&cluster, &support::lock_key(&format!("maj{r}"))).await;
        assert_eq!(values, vec![None; 5], "key left behind for maj{r}");
    }
}

/// A holder stops (GC pause, SIGSTOP) past its validity, then writes. The library cannot stop
/// it; the checker sees the two holders overlap in time, and the fenced store rejects the
/// stale write.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paused_holder_is_seen_by_the_checker_and_stopped_by_fencing() {
    let cluster = start(false);
    let a = support::client(&cluster).await;
    let b = support::client(&cluster).await;
    let (checker, store) = (Checker::new(), FencedStore::new());
    let ttl = Duration::from_secs(1);
    let t = Instant::now();
    let lock_a = a.acquire("account", ttl).await.unwrap();
    let token_a = lock_a.fencing_token().unwrap();
    // The holder is paused here (it does not run, so it neither extends nor notices expiry).
    tokio::time::sleep(ttl + Duration::from_millis(300)).await;
    let t_b = Instant::now();
    let lock_b = b.acquire("account", ttl).await.unwrap();
    let token_b = lock_b.fencing_token().unwrap();
    assert!(store.write(&checker, 2, "account", token_b));
    // A wakes up and writes, believing it still holds the lock.
    let a_wrote = store.write(&checker, 1, "account", token_a);
    // What A believed: it held the lock from acquisition until it woke and wrote.
    let mut believed = holding(1, &lock_a, t);
    believed.valid_until = Instant::now().into_std();
    checker.record(believed);
    checker.record(holding(2, &lock_b, t_b));
    let overlaps = checker.overlaps();
    report("paused holder", &overlaps, a_wrote);
    assert_eq!(overlaps.len(), 1, "the checker must see the pause overlap");
    assert!(
        !a_wrote,
        "fencing must reject the stale write ({token_a} < {token_b})"
    );
    assert!(checker.stale_writes_accepted().is_empty());
    // What the library told A: its validity had ended before B acquired. No overlap there.
    assert!(!lock_a.is_valid());
    assert!(lock_a.valid_until() <= t_b);
}

/// Prints what a scenario with a stale holder saw: the overlaps, and whether its write got in.
fn report(scenario: &str, overlaps: &[Overlap], stale_write_accepted: bool) {
    println!(
        "{scenario}: {} overlap(s) seen ({}), stale write {}",
        overlaps.len(),
        overlaps
            .first()
            .map(ToString::to_string)
            .unwrap_or_default(),
        if stale_write_accepted {
            "ACCEPTED"
        } else {
            "rejected"
        }
    );
}

/// One master's clock jumps forward past the TTL: it expires the lock early, a second client
/// wins a majority while the first is still inside its validity. A documented limit of Redlock:
/// the checker reports the overlap and fencing stops the stale write.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clock_jump_overlap_is_reported_and_fencing_stops_the_stale_write() {
    let cluster = start(true);
    let a = support::client(&cluster).await;
    let (checker, store) = (Checker::new(), FencedStore::new());
    let ttl = Duration::from_secs(10);
    // A's lock lands on masters 0, 1, 2 only.
    cluster.kill(3).unwrap();
    cluster.kill(4).unwrap();
    let t_a = Instant::now();
    let lock_a = a.acquire("ledger", ttl).await.unwrap();
    checker.record(holding(1, &lock_a, t_a));
    cluster.restart(3, DataOnRestart::Keep).unwrap();
    cluster.restart(4, DataOnRestart::Keep).unwrap();
    // Master 2 jumps 20 s ahead: A's key there expires now.
    cluster.jump_clock(2, 20).unwrap();
    let b = support::client(&cluster).await;
    let t_b = Instant::now();
    let lock_b = b
        .acquire(
            "ledger",
            redquorum::LockOptions::new(ttl).wait(Duration::from_secs(3)),
        )
        .await
        .expect("the jump lets a second client in");
    checker.record(holding(2, &lock_b, t_b));
    assert!(lock_a.is_valid(), "A is still inside its validity");
    let overlaps = checker.overlaps();
    let (token_a, token_b) = (
        lock_a.fencing_token().unwrap(),
        lock_b.fencing_token().unwrap(),
    );
    assert!(store.write(&checker, 2, "ledger", token_b));
    let a_wrote = store.write(&checker, 1, "ledger", token_a);
    report(
        &format!("clock jump, tokens A {token_a} B {token_b}"),
        &overlaps,
        a_wrote,
    );
    assert_eq!(overlaps.len(), 1, "the checker must report the overlap");
    assert!(!a_wrote, "fencing must stop A's stale write");
    cluster.jump_clock(2, 0).unwrap();
}

/// The SET lands but its reply is lost (on a majority, so the round fails): the rollback,
/// sent to every master that did not answer, must delete the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lost_replies_do_not_leave_a_key_behind() {
    let cluster = start(false);
    let redlock = support::client(&cluster).await;
    for i in 0..3 {
        cluster.drop_replies(i, true).unwrap();
    }
    let err = redlock
        .acquire(
            "lost-reply",
            redquorum::LockOptions::new(Duration::from_secs(30)).wait(Duration::from_millis(300)),
        )
        .await
        .expect_err("no replies from a majority");
    assert!(err.is_unavailable() || err.is_timeout(), "{err}");
    let values = support::values_everywhere(&cluster, &support::lock_key("lost-reply")).await;
    println!("lost replies on a majority: {err}\n  keys after rollback: {values:?}");
    assert_eq!(values, vec![None; 5], "a key outlived the rollback");
    for i in 0..3 {
        cluster.heal(i).unwrap();
    }
    // With the reply lost on one master only, the lock is granted and its release (whose
    // reply is lost too) still deletes the key there.
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.drop_replies(0, true).unwrap();
    let lock = redlock
        .acquire("lost-reply", Duration::from_secs(30))
        .await
        .unwrap();
    assert!(lock.release().await.unwrap());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let values = support::values_everywhere(&cluster, &support::lock_key("lost-reply")).await;
    assert_eq!(values, vec![None; 5]);
    cluster.heal(0).unwrap();
}

/// 16 clients, random faults on a random minority, for a bounded time. With the protections on
/// (AOF-backed restarts, restart quarantine), no two holders may overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_minority_faults_zero_overlaps() {
    let secs: u64 = std::env::var("REDQUORUM_CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    let cluster = Arc::new(start(false));
    let quarantine = Duration::from_secs(2);
    // Masters younger than the quarantine do not vote: let them age first.
    tokio::time::sleep(quarantine + Duration::from_millis(1100)).await;
    let redlock_clients = clients(&cluster, 16, Some(quarantine)).await;
    let (checker, store) = (Arc::new(Checker::new()), Arc::new(FencedStore::new()));
    let faults = Arc::new(std::sync::Mutex::new(BTreeMap::<String, usize>::new()));
    let done = Arc::new(AtomicBool::new(false));
    let injector = {
        let (cluster, faults, done) = (cluster.clone(), faults.clone(), done.clone());
        std::thread::spawn(move || {
            let mut rng = rand::rng();
            let injected = AtomicUsize::new(0);
            for _ in 0..(secs * 1000 / 400) {
                if done.load(Ordering::Relaxed) {
                    break;
                }
                let victims: Vec<usize> = {
                    let first = rng.random_range(0..5);
                    if rng.random_bool(0.5) {
                        vec![first]
                    } else {
                        vec![first, (first + 1 + rng.random_range(0..4)) % 5]
                    }
                };
                let kind = rng.random_range(0..6);
                let name = [
                    "pause",
                    "kill+restart",
                    "blackhole",
                    "reset",
                    "latency",
                    "restart-lose",
                ][kind];
                for &v in &victims {
                    match kind {
                        0 => cluster.pause(v).unwrap(),
                        1 => cluster.kill(v).unwrap(),
                        2 => cluster.cut_off(v, Cut::BlackHole).unwrap(),
                        3 => cluster.cut_off(v, Cut::Reset).unwrap(),
                        4 => cluster.set_latency(v, Duration::from_millis(20)).unwrap(),
                        _ => cluster.restart(v, DataOnRestart::Lose).unwrap(),
                    }
                }
                injected.fetch_add(1, Ordering::Relaxed);
                *faults.lock().unwrap().entry(name.to_owned()).or_default() += victims.len();
                std::thread::sleep(Duration::from_millis(300));
                for &v in &victims {
                    match kind {
                        0 => cluster.resume(v).unwrap(),
                        1 => cluster.restart(v, DataOnRestart::Keep).unwrap(),
                        5 => {}
                        _ => cluster.heal(v).unwrap(),
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let run = run_clients(
        &redlock_clients,
        4,
        Duration::from_secs(secs),
        &checker,
        &store,
    )
    .await;
    done.store(true, Ordering::Relaxed);
    injector.join().expect("fault injector");
    let overlaps = checker.overlaps();
    println!(
        "chaos {secs} s, 16 clients, 4 resources: faults {:?}; {}; overlaps {}; stale writes accepted {}; writes rejected {}",
        faults.lock().unwrap(),
        run.summary(),
        overlaps.len(),
        checker.stale_writes_accepted().len(),
        checker.writes_rejected()
    );
    assert!(
        overlaps.is_empty(),
        "{}",
        overlaps
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(checker.stale_writes_accepted().is_empty());
    assert!(run.acquisitions > 0, "{}", run.summary());
}
