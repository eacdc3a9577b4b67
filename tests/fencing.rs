//! Fencing tokens under the faults that break a naive counter: masters that lose their counter
//! (restart without data, flush), that come back behind, and addresses taken over by another
//! server, each with the client built *after* the fault, which remembers nothing.

mod support;

use std::time::Duration;

use redquorum::{Error, MasterReply, Redlock};
use support::{builder, direct};
use testcluster::{Cluster, Cut, DataOnRestart};

const TTL: Duration = Duration::from_secs(5);
const FENCE_KEY: &str = "redquorum:fence";

fn proxied(n: usize) -> Cluster {
    Cluster::builder()
        .masters(n)
        .proxy(true)
        .build()
        .expect("cluster")
}

/// Takes `rounds` locks one after the other and returns the last fencing token.
async fn take_tokens(client: &Redlock, rounds: usize) -> anyhow::Result<u64> {
    let mut last = 0;
    for _ in 0..rounds {
        let lock = client.acquire("fenced", TTL).await?;
        let token = lock.fencing_token().expect("fencing is on");
        assert!(
            token > last,
            "tokens of one client went from {last} to {token}"
        );
        last = token;
        lock.release().await?;
    }
    Ok(last)
}

/// What a client built now gets within `wait`: its token, or the error.
async fn token_within(client: &Redlock, wait: Duration) -> Result<u64, Error> {
    let lock = client
        .acquire("fenced", redquorum::LockOptions::new(TTL).wait(wait))
        .await?;
    let token = lock.fencing_token().expect("fencing is on");
    lock.release().await?;
    Ok(token)
}

/// The counter of master `i`, read behind the client's back.
async fn counter(cluster: &Cluster, i: usize) -> Option<u64> {
    let mut c = direct(cluster, i).await;
    redis::cmd("HGET")
        .arg(FENCE_KEY)
        .arg("n")
        .query_async(&mut c)
        .await
        .unwrap()
}

/// The review's scenario: masters 3 and 4 are down while client A takes tokens 1..5 on
/// {0, 1, 2}; 3 and 4 come back without their counters, master 2 restarts without data; a
/// client B built now (so it saw no restart) must not win a round on {2, 3, 4} while 0 and 1
/// (the only masters that still know token 5) do not answer: that round would hand out a
/// token at most 1. Once 0 and 1 answer, B's token exceeds A's. Failed before the seal: B got
/// token 1 after 5.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_built_after_a_restart_without_data_never_gets_a_smaller_token()
-> anyhow::Result<()> {
    let cluster = proxied(5);
    let quarantine = Duration::from_secs(2);
    // Let the masters' uptime pass the quarantine so the first lock can be had at all.
    tokio::time::sleep(quarantine + Duration::from_millis(1100)).await;
    let a = builder(&cluster)
        .restart_quarantine(quarantine)
        .build()
        .await?;
    cluster.kill(3)?;
    cluster.kill(4)?;
    let last = take_tokens(&a, 5).await?;
    cluster.restart(3, DataOnRestart::Lose)?;
    cluster.restart(4, DataOnRestart::Lose)?;
    cluster.restart(2, DataOnRestart::Lose)?;
    tokio::time::sleep(quarantine + Duration::from_millis(1100)).await;
    cluster.cut_off(0, Cut::BlackHole)?;
    cluster.cut_off(1, Cut::BlackHole)?;
    let b = builder(&cluster)
        .restart_quarantine(quarantine)
        .build()
        .await?;
    match token_within(&b, Duration::from_millis(1500)).await {
        Ok(token) => panic!("B won a round on 2, 3, 4 with token {token} after {last}"),
        Err(e) => {
            assert!(e.is_unavailable(), "{e}");
            println!("while 0 and 1 are cut off: {e}");
        }
    }
    cluster.heal(0)?;
    cluster.heal(1)?;
    let token = token_within(&b, Duration::from_secs(5)).await?;
    assert!(token > last, "B's token {token} after A's {last}");
    Ok(())
}

/// Counters deleted on a majority of masters whose processes (and so the clients'
/// connections) survive: an operator's `FLUSHALL`, or eviction. The masters that still know the
/// last token answer slowly, so a client that trusted the flushed masters would decide on them
/// alone and count from zero. Every client must notice the missing counter (the acquire
/// scripts check it) and seal those masters from the others first. Failed before: token 1
/// after 6.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counters_flushed_on_a_majority_are_sealed_again_before_they_vote() -> anyhow::Result<()> {
    let cluster = proxied(5);
    let a = support::client(&cluster).await;
    let last = take_tokens(&a, 6).await?;
    for i in 0..3 {
        let mut c = direct(&cluster, i).await;
        let _: () = redis::cmd("FLUSHALL").query_async(&mut c).await?;
    }
    cluster.set_latency(3, Duration::from_millis(20))?;
    cluster.set_latency(4, Duration::from_millis(20))?;
    let token = token_within(&a, Duration::from_secs(5)).await?;
    assert!(token > last, "token {token} after {last}");
    for i in 0..5 {
        assert!(counter(&cluster, i).await >= Some(last), "master {i}");
    }
    Ok(())
}

/// Address takeover by a server that has been running for long and carries a stale counter
/// (a promoted replica, a standby behind a VIP): master 2's address now reaches it. Masters
/// 3 and 4 were cut off (not restarted) while tokens advanced on {0, 1, 2}, so they are
/// sealed but behind. A client built after the takeover must not let the newcomer vote before
/// it is sealed from a quorum of sealed masters, which needs 0 or 1. Failed before: the
/// newcomer's `run_id` was the new client's baseline, and {2, 3, 4} handed out token 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_address_taken_over_by_a_stale_server_is_sealed_before_it_votes() -> anyhow::Result<()> {
    let cluster = proxied(5);
    let standby = Cluster::start(1)?;
    {
        // The standby knows token 1 of this namespace, as a lagging replica would.
        let mut c = direct(&standby, 0).await;
        let _: () = redis::cmd("SET")
            .arg(FENCE_KEY)
            .arg(1)
            .query_async(&mut c)
            .await?;
    }
    let a = support::client(&cluster).await;
    take_tokens(&a, 1).await?;
    cluster.cut_off(3, Cut::BlackHole)?;
    cluster.cut_off(4, Cut::BlackHole)?;
    let last = take_tokens(&a, 4).await?;
    cluster.heal(3)?;
    cluster.heal(4)?;
    support::take_over(&cluster, 2, &standby)?;
    cluster.cut_off(0, Cut::BlackHole)?;
    cluster.cut_off(1, Cut::BlackHole)?;
    let b = support::client(&cluster).await;
    match token_within(&b, Duration::from_millis(1500)).await {
        Ok(token) => panic!("B won on 2, 3, 4 with token {token} after {last}"),
        Err(e) => {
            let unsealed = e
                .replies()
                .is_some_and(|r| r.as_slice()[2] == MasterReply::Unsealed);
            assert!(unsealed, "the newcomer must wait for its seal: {e}");
        }
    }
    cluster.heal(0)?;
    cluster.heal(1)?;
    let token = token_within(&b, Duration::from_secs(5)).await?;
    assert!(token > last, "token {token} after {last}");
    Ok(())
}

/// A brand-new namespace on a cluster with two of five masters down: nobody can tell whether
/// the two hold the counter, so the first seal needs every master once. Until then acquires
/// report the masters as unsealed (and keep trying within their wait); after, two masters down
/// are tolerated as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_namespace_needs_every_master_once() -> anyhow::Result<()> {
    let cluster = Cluster::start(5)?;
    cluster.kill(3)?;
    cluster.kill(4)?;
    let a = support::client(&cluster).await;
    let err = token_within(&a, Duration::from_millis(500))
        .await
        .expect_err("no seal without every master");
    let replies = err.replies().expect("replies");
    assert_eq!(
        &replies.as_slice()[..3],
        &[const { MasterReply::Unsealed }; 3],
        "{err}"
    );
    cluster.restart(3, DataOnRestart::Keep)?;
    cluster.restart(4, DataOnRestart::Keep)?;
    let first = token_within(&a, Duration::from_secs(5)).await?;
    cluster.kill(3)?;
    cluster.kill(4)?;
    let b = support::client(&cluster).await;
    let second = token_within(&b, Duration::from_secs(5)).await?;
    assert!(second > first, "{second} after {first}");
    Ok(())
}

/// The exact token claim (README, "Fencing tokens increase"): a grant whose round started after another
/// grant completed (of any resource) gets a larger token. Grants whose rounds overlap are not
/// ordered by the proof: concurrent grants of different resources may share a token, and a
/// waiter's round already in flight when the previous holder's grant completed is not ordered
/// against it either (both counted and printed, not forbidden). Eight tasks on four resources,
/// 40 grants each, with the start and end of every acquire.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_grant_started_after_another_completed_gets_a_larger_token() -> anyhow::Result<()> {
    let cluster = Cluster::start(5)?;
    let client = support::client(&cluster).await;
    let epoch = std::time::Instant::now();
    let tasks = (0..8).map(|t| {
        let client = client.clone();
        tokio::spawn(async move {
            let resource = format!("r{}", t % 4);
            let mut grants = Vec::new();
            for _ in 0..40 {
                let started = epoch.elapsed();
                let lock = client
                    .acquire(
                        &resource,
                        redquorum::LockOptions::new(TTL).wait(Duration::from_secs(20)),
                    )
                    .await
                    .expect("acquire");
                let done = epoch.elapsed();
                let token = lock.fencing_token().expect("fencing on");
                grants.push((resource.clone(), started, done, token));
                lock.release().await.expect("release");
            }
            grants
        })
    });
    let mut grants = Vec::new();
    for task in futures::future::join_all(tasks).await {
        grants.extend(task?);
    }
    // One resource, in grant order: inversions only where the rounds overlapped.
    let mut inversions = 0;
    for r in 0..4 {
        let mut of: Vec<_> = grants.iter().filter(|g| g.0 == format!("r{r}")).collect();
        of.sort_by_key(|g| g.2);
        inversions += of.windows(2).filter(|w| w[1].3 <= w[0].3).count();
    }
    // Any two grants where one completed before the other started.
    for a in &grants {
        for b in &grants {
            if a.2 < b.1 {
                assert!(
                    b.3 > a.3,
                    "{b:?} started after {a:?} completed, with a token not larger"
                );
            }
        }
    }
    let mut tokens: Vec<u64> = grants.iter().map(|g| g.3).collect();
    tokens.sort_unstable();
    let total = tokens.len();
    tokens.dedup();
    println!(
        "{total} grants: {} tokens shared between concurrent grants of different resources, \
         {inversions} tokens of one resource not above the previous holder's (overlapping rounds)",
        total - tokens.len()
    );
    Ok(())
}
