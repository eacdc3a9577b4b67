//! Leader election against real masters: one leader at a time while masters are paused,
//! killed and restarted and candidates crash; terms strictly increase; resign and failover
//! hand-over times; `leader()` and `observe()`; lock-delay after a crashed leader.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use rand::Rng;
use redquorum::{Leadership, LockOptions, Redlock};
use support::{TEST_MASTER_TIMEOUT, builder, client, median};
use testcluster::checker::{Checker, Holding};
use testcluster::{Cluster, DataOnRestart};
use tokio::time::Instant;

/// The leadership TTL of the tests that do not need another (the suggested default).
const TTL: Duration = redquorum::defaults::DEFAULT_ELECTION_TTL;

/// A candidate in a runtime of its own, standing for a process: `crash` kills it (its runtime
/// and connections vanish, nothing is sent: no resignation, no release).
struct Process {
    runtime: Option<tokio::runtime::Runtime>,
    redlock: Redlock,
}

impl Process {
    fn start(urls: Vec<String>) -> Process {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let redlock = runtime
            .block_on(
                Redlock::builder()
                    .masters(urls)
                    .master_timeout(TEST_MASTER_TIMEOUT)
                    .build(),
            )
            .expect("candidate client");
        Process {
            runtime: Some(runtime),
            redlock,
        }
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.as_ref().unwrap().block_on(f)
    }

    /// Dies holding whatever it holds.
    fn crash(mut self, leadership: Option<Leadership>) {
        self.runtime.take().unwrap().shutdown_background();
        // Forgotten, not dropped: a drop resigns in the background on whatever runtime is
        // current, and the caller's (`spawn_blocking`) is: that would sometimes send the
        // resignation, which is no crash (CI saw a successor elected 2.48 s before the
        // lock-delay ended that way).
        std::mem::forget(leadership);
    }
}

/// A leadership as the checker sees it: from campaign's return to resign (or crash), valid
/// until its last extension's deadline.
fn holding(client: usize, leadership: &Leadership, acquired_at: Instant) -> Holding {
    Holding::new(
        client,
        leadership.election(),
        acquired_at.into_std(),
        (Instant::now() + leadership.remaining()).into_std(),
        Some(leadership.term()),
    )
}

/// Candidates in their own runtimes campaign, lead for a random while, then resign or crash
/// (no resignation: the next leader waits out the lease), while a minority of masters is paused,
/// killed (restarted with their data) or restarted. The checker must find no two leaders at
/// once, and the terms must strictly increase from leader to leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_leader_at_a_time_under_faults_and_crashes() {
    let cluster = Arc::new(Cluster::start(5).expect("cluster"));
    let checker = Arc::new(Checker::new());
    let ttl = Duration::from_secs(1);
    let run_for = Duration::from_secs(12);
    let started = std::time::Instant::now();
    let crashes = Arc::new(Mutex::new(0usize));
    let mut candidates = Vec::new();
    for id in 0..4 {
        let (urls, checker, crashes) = (cluster.urls(), checker.clone(), crashes.clone());
        candidates.push(tokio::task::spawn_blocking(move || {
            while started.elapsed() < run_for {
                let process = Process::start(urls.clone());
                let election = process.redlock.election("leader");
                let won = process.block_on(election.campaign(
                    format!("candidate-{id}"),
                    LockOptions::new(ttl).wait(Duration::from_secs(3)),
                ));
                let Ok(leadership) = won else {
                    process.crash(None);
                    continue;
                };
                let acquired_at = Instant::now();
                let hold = Duration::from_millis(rand::rng().random_range(50..700));
                process.block_on(async {
                    tokio::select! {
                        _ = tokio::time::sleep(hold) => {}
                        _ = leadership.lost() => {}
                    }
                });
                let mut held = holding(id, &leadership, acquired_at);
                if rand::rng().random_bool(0.3) {
                    *crashes.lock().unwrap() += 1;
                    checker.record(held);
                    process.crash(Some(leadership));
                } else {
                    held.released_at = Some(std::time::Instant::now());
                    checker.record(held);
                    let _ = process.block_on(leadership.resign());
                    process.crash(None);
                }
            }
        }));
    }
    let faults = {
        let cluster = cluster.clone();
        tokio::task::spawn_blocking(move || {
            let mut round = 0usize;
            while started.elapsed() < run_for {
                let i = round % 5;
                match round % 3 {
                    0 => {
                        cluster.pause(i).unwrap();
                        std::thread::sleep(Duration::from_millis(600));
                        cluster.resume(i).unwrap();
                    }
                    1 => {
                        cluster.kill(i).unwrap();
                        std::thread::sleep(Duration::from_millis(400));
                        cluster.restart(i, DataOnRestart::Keep).unwrap();
                    }
                    _ => cluster.restart(i, DataOnRestart::Keep).unwrap(),
                }
                std::thread::sleep(Duration::from_millis(300));
                round += 1;
            }
        })
    };
    for c in candidates {
        c.await.unwrap();
    }
    faults.await.unwrap();
    let mut leaders = checker.holdings();
    leaders.sort_by_key(|h| h.acquired_at);
    println!(
        "election under faults: {} leaderships, {} crashed",
        leaders.len(),
        crashes.lock().unwrap()
    );
    assert!(leaders.len() >= 8, "too few leaderships: {leaders:?}");
    assert!(
        checker.overlaps().is_empty(),
        "two leaders at once: {:?}",
        checker.overlaps()
    );
    for pair in leaders.windows(2) {
        assert!(
            pair[1].fencing_token > pair[0].fencing_token,
            "terms did not increase: {:?} then {:?}",
            pair[0],
            pair[1]
        );
    }
}

/// A waiting candidate takes over within milliseconds of a resignation (release message), not
/// a retry delay or a TTL: median over 20 hand-overs, alternating between two clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resign_hands_over_within_milliseconds() {
    let cluster = Cluster::start(5).expect("cluster");
    // A slow retry (the fallback when no message arrives) makes the message path visible.
    let slow_retry = |c: &Cluster| {
        builder(c)
            .retry_delay(Duration::from_millis(500))
            .retry_jitter(Duration::from_millis(100))
    };
    let a = slow_retry(&cluster).build().await.unwrap();
    let b = slow_retry(&cluster).build().await.unwrap();
    let ttl = Duration::from_secs(5);
    let (ea, eb) = (a.election("resign"), b.election("resign"));
    let mut leader = ea.campaign("a", ttl).await.unwrap();
    let mut times = Vec::new();
    for round in 0..20 {
        let next = if round % 2 == 0 {
            eb.clone()
        } else {
            ea.clone()
        };
        let waiting = tokio::spawn(async move {
            let l = next.campaign("next", ttl).await.unwrap();
            (Instant::now(), l)
        });
        // Let the waiter fail its first round and subscribe.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let old_term = leader.term();
        let resigned_at = Instant::now();
        assert!(leader.resign().await.unwrap());
        let (won_at, new_leader) = waiting.await.unwrap();
        assert!(new_leader.term() > old_term);
        times.push(won_at - resigned_at);
        leader = new_leader;
    }
    let m = median(times.clone());
    println!("resign hand-over: median {m:?} over 20 (all: {times:?})");
    // The fallback retry is 500-600 ms; a message hand-over is a round trip or two.
    assert!(m < Duration::from_millis(150), "median {m:?}: {times:?}");
}

/// A leader that crashes (no resignation) is replaced within one TTL of its crash: median over
/// 20, TTL 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crashed_leader_is_replaced_within_one_ttl() {
    let cluster = Cluster::start(5).expect("cluster");
    let ttl = Duration::from_secs(1);
    let follower = client(&cluster).await.election("failover");
    let mut times = Vec::new();
    for _ in 0..20 {
        let urls = cluster.urls();
        let (process, leadership) = tokio::task::spawn_blocking(move || {
            let process = Process::start(urls);
            let election = process.redlock.election("failover");
            let l = process.block_on(election.campaign("doomed", ttl)).unwrap();
            (process, l)
        })
        .await
        .unwrap();
        let old_term = leadership.term();
        let waiting = {
            let follower = follower.clone();
            tokio::spawn(async move {
                let l = follower.campaign("next", ttl).await.unwrap();
                (l, Instant::now())
            })
        };
        // Crash at a random point of the extension cycle.
        let wait = rand::rng().random_range(0..400);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let crashed_at = Instant::now();
        tokio::task::spawn_blocking(move || process.crash(Some(leadership)))
            .await
            .unwrap();
        let (next, won_at) = waiting.await.unwrap();
        assert!(next.term() > old_term);
        let took = won_at - crashed_at;
        assert!(
            took < ttl + Duration::from_millis(300),
            "replaced after {took:?}"
        );
        times.push(took);
        next.resign().await.unwrap();
    }
    let m = median(times.clone());
    println!(
        "failover after a crashed leader (ttl {ttl:?}): median {m:?} over 20 (all: {times:?})"
    );
}

/// `leader()` reads the leader's value and term; `observe()` reports each change.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_and_observe_follow_the_leadership() {
    let cluster = Cluster::start(5).expect("cluster");
    let redlock = client(&cluster).await;
    let ttl = Duration::from_secs(5);
    let election = redlock
        .election("observed")
        .observe_interval(Duration::from_millis(20));
    assert_eq!(election.leader().await.unwrap(), None);
    let mut changes = Box::pin(election.observe().unwrap());
    assert_eq!(changes.next().await.unwrap(), None);

    let first = election.campaign("host-a:80", ttl).await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(2), changes.next())
        .await
        .unwrap()
        .unwrap()
        .expect("a leader");
    assert_eq!(
        (seen.value.as_str(), seen.term),
        ("host-a:80", first.term())
    );
    let read = election.leader().await.unwrap().unwrap();
    assert_eq!(
        (read.value.as_str(), read.term),
        ("host-a:80", first.term())
    );

    first.resign().await.unwrap();
    let second = election.campaign("host-b:80", ttl).await.unwrap();
    // Between the two, observe may or may not catch the gap (None); it must end on "b".
    let mut last = None;
    while last.as_ref().map(|l: &redquorum::Leader| l.value.as_str()) != Some("host-b:80") {
        last = tokio::time::timeout(Duration::from_secs(2), changes.next())
            .await
            .expect("observe saw the new leader")
            .unwrap();
    }
    assert_eq!(last.unwrap().term, second.term());
    assert!(second.term() > seen.term);

    // With a majority of masters down the leader is unknown, not absent.
    cluster.kill(0).unwrap();
    cluster.kill(1).unwrap();
    cluster.kill(2).unwrap();
    assert!(election.leader().await.is_err());
}

/// With a lock-delay, a crashed leader's successor is elected no earlier than the lease plus
/// the delay; a resignation hands over at once all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lock_delay_holds_the_election_after_a_crash_only() {
    let cluster = Cluster::start(5).expect("cluster");
    let (ttl, delay) = (Duration::from_secs(1), Duration::from_millis(1500));
    let options = LockOptions::new(ttl).lock_delay(delay);
    let follower = client(&cluster).await.election("delayed");

    let urls = cluster.urls();
    let leader_options = options.clone();
    let (process, leadership) = tokio::task::spawn_blocking(move || {
        let process = Process::start(urls);
        let election = process.redlock.election("delayed");
        let l = process
            .block_on(election.campaign("doomed", leader_options))
            .unwrap();
        (process, l)
    })
    .await
    .unwrap();
    // The lease runs at most one TTL past the crash; the delay follows it.
    let lease_end_at_least = Instant::now() + leadership.remaining();
    tokio::task::spawn_blocking(move || process.crash(Some(leadership)))
        .await
        .unwrap();
    let next = follower.campaign("next", &options).await.unwrap();
    let won_at = Instant::now();
    assert!(
        won_at >= lease_end_at_least + delay,
        "elected {:?} before the lock-delay ended",
        (lease_end_at_least + delay) - won_at
    );

    let resigned_at = Instant::now();
    next.resign().await.unwrap();
    let again = follower.campaign("again", &options).await.unwrap();
    assert!(resigned_at.elapsed() < Duration::from_millis(500));
    again.resign().await.unwrap();
}

/// Bad input gets typed errors, before anything is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_typed_errors() {
    let cluster = Cluster::start(3).expect("cluster");
    let redlock = client(&cluster).await;
    use redquorum::invalid::ArgumentReason;
    let invalid =
        |r: redquorum::Result<Leadership>| matches!(r, Err(redquorum::Error::InvalidArgument(_)));
    assert!(matches!(
        redlock.election("").campaign("v", TTL).await,
        Err(redquorum::Error::InvalidArgument(
            ArgumentReason::EmptyElectionName
        ))
    ));
    let huge = "x".repeat(redquorum::defaults::MAX_VALUE_LEN + 1);
    assert!(matches!(
        redlock.election("e").campaign(huge, TTL).await,
        Err(redquorum::Error::InvalidArgument(
            ArgumentReason::CandidateValueTooLong { len, max }
        )) if len == max + 1
    ));
    let forever = Duration::from_secs(3 * 24 * 60 * 60);
    assert!(invalid(
        redlock
            .election("e")
            .campaign("v", LockOptions::new(TTL).lock_delay(forever))
            .await
    ));
    assert!(matches!(
        redlock
            .election("e")
            .campaign("v", LockOptions::new(TTL).max_lease(Duration::ZERO))
            .await,
        Err(redquorum::Error::InvalidArgument(
            ArgumentReason::ZeroMaxLease
        ))
    ));
    assert!(matches!(
        redlock.election("e").campaign("v", Duration::ZERO).await,
        Err(redquorum::Error::InvalidTtl { .. })
    ));
    let unfenced = builder(&cluster).fencing(false).build().await.unwrap();
    assert!(matches!(
        unfenced.election("e").campaign("v", TTL).await,
        Err(redquorum::Error::InvalidArgument(
            ArgumentReason::ElectionWithoutFencing
        ))
    ));
    let options = redquorum::LockOptions::new(Duration::from_secs(5)).lock_delay(forever);
    assert!(matches!(
        redlock.acquire("r", &options).await,
        Err(redquorum::Error::InvalidArgument(_))
    ));
    // The one place a cap is set refuses zero for every call that takes options.
    let zero_cap = LockOptions::new(Duration::from_secs(5)).max_lease(Duration::ZERO);
    assert!(matches!(
        redlock.acquire("r", &zero_cap).await,
        Err(redquorum::Error::InvalidArgument(
            ArgumentReason::ZeroMaxLease
        ))
    ));
    // Nothing was left on the masters by the refused calls.
    assert_eq!(election_keys(&cluster).await, 0);
}

async fn election_keys(cluster: &Cluster) -> usize {
    let mut n = 0;
    for i in 0..cluster.len() {
        let mut c = support::direct(cluster, i).await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("*election*")
            .query_async(&mut c)
            .await
            .unwrap();
        n += keys.len();
    }
    n
}

/// A resignation is seen by observers through its release message, long before their (here
/// deliberately slow) read interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_is_woken_by_a_resignation() {
    let cluster = Cluster::start(5).expect("cluster");
    let redlock = client(&cluster).await;
    let election = redlock
        .election("announced")
        .observe_interval(Duration::from_secs(5));
    let leadership = election.campaign("a", TTL).await.unwrap();
    let mut changes = Box::pin(election.observe().unwrap());
    let first = changes.next().await.unwrap().expect("a leader");
    assert_eq!(first.term, leadership.term());
    // Let the listeners subscribe (they start with the stream's first read).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let resigned_at = Instant::now();
    leadership.resign().await.unwrap();
    let change = tokio::time::timeout(Duration::from_secs(2), changes.next())
        .await
        .expect("the resignation was not seen before the 5 s interval");
    assert_eq!(change.unwrap(), None);
    println!(
        "observer saw the resignation after {:?}",
        resigned_at.elapsed()
    );
}

/// A leader whose majority of masters stops answering hears jeopardy while still valid, then
/// lost no later than its validity deadline (renewals hang a whole per-master timeout); a
/// capped leadership ends by the cap although it never resigns, and another candidate takes
/// over.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leadership_signals_jeopardy_lost_and_cap() {
    let cluster = Cluster::start(5).expect("cluster");
    let ttl = Duration::from_secs(2);
    let redlock = support::client_with_slow_renewals(&cluster, ttl).await;
    let leadership = redlock
        .election("signals")
        .campaign("a", ttl)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(900)).await;
    for i in 0..3 {
        cluster.pause(i).unwrap();
    }
    leadership.jeopardy().await;
    assert!(
        leadership.is_valid(),
        "jeopardy came after the validity ended"
    );
    let deadline = Instant::now() + leadership.remaining();
    leadership.lost().await;
    let late = Instant::now().saturating_duration_since(deadline);
    assert!(
        late < Duration::from_millis(60),
        "lost {late:?} after the deadline"
    );
    assert!(!leadership.is_valid());
    drop(leadership);
    for i in 0..3 {
        cluster.resume(i).unwrap();
    }

    let cap = Duration::from_millis(2500);
    let runaway = client(&cluster).await.election("capped");
    let started = Instant::now();
    let leadership = runaway
        .campaign(
            "runaway",
            LockOptions::new(Duration::from_secs(1)).max_lease(cap),
        )
        .await
        .unwrap();
    leadership.lost().await;
    assert!(started.elapsed() <= cap + Duration::from_millis(100));
    let next = client(&cluster).await.election("capped");
    let successor = next.campaign("next", Duration::from_secs(1)).await.unwrap();
    assert!(successor.term() > leadership.term());
    assert!(
        started.elapsed() < cap + Duration::from_secs(1) + Duration::from_millis(300),
        "the capped leader was not replaced within one ttl of its cap"
    );
}

/// The extension cap counts from the win, not from after the term is recorded. Every master
/// answers 100 ms late each way, so recording the term takes at least 200 ms after the win;
/// the cap is set so that counting it from the campaign's return allows one more extension,
/// and counting it from the win does not. No validity may ever reach past win + cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cap_counts_from_the_win() {
    let cluster = Cluster::builder()
        .masters(5)
        .proxy(true)
        .build()
        .expect("cluster");
    let ttl = Duration::from_secs(4);
    let redlock = support::client_with_slow_renewals(&cluster, ttl).await;
    let one_way = Duration::from_millis(100);
    for i in 0..5 {
        cluster.set_latency(i, one_way).unwrap();
    }
    // First check at return + ttl/3: from the return, return + ttl/3 + ttl = return + 5333 ms
    // fits under the cap (an extension); from the win (200 ms or more before), it does not.
    let cap = Duration::from_millis(5433);
    let election = redlock.election("capped-from-win");
    let leadership = election
        .campaign("a", LockOptions::new(ttl).max_lease(cap))
        .await
        .unwrap();
    let returned = Instant::now();
    // The win came at least one round trip (the term's write) before the return.
    let won_by = returned - 2 * one_way;
    tokio::time::timeout(Duration::from_secs(8), leadership.lost())
        .await
        .expect("the capped leadership was never lost");
    let last_deadline = *leadership.deadlines().borrow();
    for i in 0..5 {
        cluster.set_latency(i, Duration::ZERO).unwrap();
    }
    assert!(
        last_deadline <= won_by + cap,
        "validity reached {:?} past win + cap",
        last_deadline - (won_by + cap)
    );
}

/// A leader holds exactly 3 of 5 masters and one of the three is paused: the answering
/// masters show it on 2 only, but the silent one may hold it too, so the leader is unknown:
/// `leader()` says `Unavailable`, never "no leader", and `observe()` says nothing. With no
/// leader on any master, one paused master cannot make a quorum for anyone: `Ok(None)`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_is_unknown_not_absent_when_silent_masters_could_complete_a_quorum() {
    let cluster = Cluster::start(5).expect("cluster");
    let redlock = client(&cluster).await;
    let election = redlock
        .election("honest")
        .observe_interval(Duration::from_millis(50));
    let leadership = election
        .campaign("a", Duration::from_secs(20))
        .await
        .unwrap();
    let key = format!("{}election:honest", redquorum::defaults::DEFAULT_KEY_PREFIX);
    for i in [3, 4] {
        let mut c = support::direct(&cluster, i).await;
        let _: i64 = redis::cmd("DEL")
            .arg(&key)
            .query_async(&mut c)
            .await
            .unwrap();
    }
    assert_eq!(
        election.leader().await.unwrap().map(|l| l.term),
        Some(leadership.term())
    );
    cluster.pause(0).unwrap();
    let mut answers = Vec::new();
    for _ in 0..5 {
        answers.push(election.leader().await);
    }
    let mut changes = Box::pin(election.observe().unwrap());
    let observed = tokio::time::timeout(Duration::from_millis(1000), changes.next()).await;
    cluster.resume(0).unwrap();
    for answer in &answers {
        assert!(
            matches!(answer, Err(e) if e.is_unavailable()),
            "leader() with the leader on 2 answering masters and 1 paused: {answer:?}"
        );
    }
    assert!(
        !matches!(observed, Ok(Some(None))),
        "observe() said no leader while one may hold a quorum"
    );
    let seen = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            if let Some(Some(leader)) = changes.next().await {
                return leader;
            }
        }
    })
    .await
    .expect("observe() never showed the leader once the master answered");
    assert_eq!(seen.term, leadership.term());

    // No leader anywhere, one master paused: nobody can hold a quorum.
    leadership.resign().await.unwrap();
    cluster.pause(0).unwrap();
    let answer = election.leader().await;
    cluster.resume(0).unwrap();
    assert_eq!(answer.unwrap(), None);
}

/// `observe_interval(0)` is refused with a typed error, as `campaign` refuses it (it used to
/// poll the masters in a tight loop: 275 script calls in 500 ms on one master).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_observe_interval_is_refused() {
    let cluster = Cluster::start(3).expect("cluster");
    let redlock = client(&cluster).await;
    let observed = redlock
        .election("spin")
        .observe_interval(Duration::ZERO)
        .observe();
    assert!(matches!(
        observed.map(|_| ()),
        Err(redquorum::Error::InvalidArgument(
            redquorum::invalid::ArgumentReason::ZeroObserveInterval
        ))
    ));
    assert!(redlock.election("spin").observe().is_ok());
}
