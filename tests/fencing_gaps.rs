//! Gaps of the fencing guarantee found by an adversarial review of the seal protocol, each as a
//! probe that broke it, kept as regression tests once closed (fencing.rs, "Why tokens strictly
//! increase").

mod support;

use std::time::Duration;

use redquorum::Redlock;
use support::{TEST_MASTER_TIMEOUT, direct};
use testcluster::Cluster;

const TTL: Duration = Duration::from_secs(5);
const FENCE_KEY: &str = "redquorum:fence";
/// An address nobody listens on: a client partitioned from that master.
const NOWHERE: &str = "redis://127.0.0.1:1";

async fn client_over(urls: Vec<String>) -> Redlock {
    Redlock::builder()
        .masters(urls)
        .master_timeout(TEST_MASTER_TIMEOUT)
        .build()
        .await
        .expect("build")
}

async fn token(client: &Redlock) -> u64 {
    let lock = client
        .acquire(
            "fenced",
            redquorum::LockOptions::new(TTL).wait(Duration::from_secs(3)),
        )
        .await
        .expect("acquire");
    let t = lock.fencing_token().expect("fencing on");
    lock.release().await.expect("release");
    t
}

/// Master `i`'s fencing hash: counter and seal generation.
async fn state(cluster: &Cluster, i: usize) -> (Option<u64>, Option<String>) {
    let mut c = direct(cluster, i).await;
    redis::cmd("HMGET")
        .arg(FENCE_KEY)
        .arg("n")
        .arg("gen")
        .query_async(&mut c)
        .await
        .unwrap()
}

async fn flush(cluster: &Cluster, i: usize) {
    let mut c = direct(cluster, i).await;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut c).await.unwrap();
}

/// A seal write is sent with `Master::run` (may land late), computed from an old seed. If it
/// lands after the master was sealed properly, voted, and was flushed, it re-seals the master
/// for its (unchanged) run_id with the old seed: a master of K is back in S below the last
/// token. Faults: two FLUSHALLs of master 0, latency on the path A -> 0, clients partitioned
/// from one master each. At every moment a majority holds its counter. Failed before the seal
/// generation: "TOKENS WENT BACKWARDS: D got 2 after 6". Now a seal is only accepted for the
/// claim it was computed after, which the flushes removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn late_seal_write_after_a_flush_reseals_with_a_stale_seed() {
    let cluster = Cluster::builder()
        .masters(3)
        .proxy(true)
        .build()
        .expect("cluster");
    let d: Vec<String> = (0..3).map(|i| cluster.direct_url(i)).collect();
    // C: direct to all three; bootstraps the namespace.
    let c = client_over(d.clone()).await;
    let t1 = token(&c).await;
    println!(
        "bootstrap token {t1}, states {:?}",
        [
            state(&cluster, 0).await,
            state(&cluster, 1).await,
            state(&cluster, 2).await
        ]
    );
    // Master 0 loses its counter (FLUSHALL #1).
    flush(&cluster, 0).await;
    // The path to master 0 becomes slow (3 s each way); A (through the proxies) is built now:
    // 0 is unsealed for it, and its build-time seal write FENCE_SEAL(seed 1, run_id of 0)
    // times out at A after 100 ms but is still in flight, landing ~3 s later.
    cluster.set_latency(0, Duration::from_millis(3000)).unwrap();
    let _a = Redlock::builder()
        .masters(cluster.urls())
        .master_timeout(TEST_MASTER_TIMEOUT)
        .connect_timeout(Duration::from_secs(30))
        .build()
        .await
        .expect("build A");
    let t0 = std::time::Instant::now();
    println!("A built; 0's state now {:?}", state(&cluster, 0).await);
    // C3, direct to all (a client built after flush #1): seals 0 properly from {1, 2}.
    let c3 = client_over(d.clone()).await;
    println!(
        "C3 built at {:?}; 0's state now {:?}",
        t0.elapsed(),
        state(&cluster, 0).await
    );
    drop(c3);
    // C2, partitioned from master 2: takes tokens on {0, 1} (K = {0, 1}; 2 stays at 1).
    println!("C2 build at {:?}", t0.elapsed());
    let c2 = client_over(vec![d[0].clone(), d[1].clone(), NOWHERE.into()]).await;
    let mut last = 0;
    for _ in 0..5 {
        last = token(&c2).await;
    }
    println!(
        "C2 took tokens up to {last}; states {:?}",
        [
            state(&cluster, 0).await,
            state(&cluster, 1).await,
            state(&cluster, 2).await
        ]
    );
    println!("C2 done at {:?}", t0.elapsed());
    // FLUSHALL #2 on master 0 (1 still holds the last token, 2 holds its counter).
    flush(&cluster, 0).await;
    // A's late seal write lands.
    for _ in 0..45 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let st = state(&cluster, 0).await;
        if st.0.is_some() {
            println!("{:?} 0: {:?}", t0.elapsed(), st);
            break;
        }
    }
    cluster.set_latency(0, Duration::ZERO).unwrap();
    println!(
        "after A's late seal: states {:?}",
        [
            state(&cluster, 0).await,
            state(&cluster, 1).await,
            state(&cluster, 2).await
        ]
    );
    // D, partitioned from master 1 (the only one that knows `last`), built now.
    let dcl = client_over(vec![d[0].clone(), NOWHERE.into(), d[2].clone()]).await;
    match dcl
        .acquire(
            "fenced",
            redquorum::LockOptions::new(TTL).wait(Duration::from_secs(2)),
        )
        .await
    {
        Ok(lock) => {
            let t = lock.fencing_token().unwrap();
            println!("D got token {t} after {last}");
            assert!(t > last, "TOKENS WENT BACKWARDS: D got {t} after {last}");
        }
        Err(e) => println!("D refused: {e}"),
    }
}

/// The seal step itself delayed, on a real master, by running the library's scripts in the
/// order a slow link would deliver them: A claims master 0 and reads the others (seed 1);
/// another client adopts the claim and seals 0 properly (seed 5); 0 votes up to 6; 0 is
/// flushed; a third client claims it again; flushed once more. A's seal (seed 1) lands only
/// now, after either flush: refused, nothing created, no generation for anyone to trust.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seal_delivered_after_a_second_flush_is_refused() {
    let cluster = Cluster::start(1).expect("cluster");
    let mut c = direct(&cluster, 0).await;
    let script = |name: &str| {
        let (_, source) = redquorum::script_sources()
            .into_iter()
            .find(|(n, _)| *n == name)
            .unwrap();
        redis::Script::new(source)
    };
    let (claim, seal, acquire) = (
        script("fence_claim"),
        script("fence_seal"),
        script("acquire"),
    );
    let run: String = {
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut c)
            .await
            .unwrap();
        let line = info.lines().find(|l| l.starts_with("run_id:")).unwrap();
        line["run_id:".len()..].trim().to_owned()
    };
    let flush = |mut c: redis::aio::MultiplexedConnection| async move {
        let () = redis::cmd("FLUSHALL").query_async(&mut c).await.unwrap();
    };
    flush(c.clone()).await; // flush #1: 0 lost its counter
    // A claims; its seal (seed 1) is now "in flight".
    let (_, _, a_claim): (Option<u64>, Option<String>, Option<String>) = claim
        .key(FENCE_KEY)
        .arg(&run)
        .arg("a")
        .invoke_async(&mut c)
        .await
        .unwrap();
    let a_claim = a_claim.expect("A's claim");
    // Another client adopts the pending claim and seals properly from a quorum (seed 5).
    let (_, _, b_claim): (Option<u64>, Option<String>, Option<String>) = claim
        .key(FENCE_KEY)
        .arg(&run)
        .arg("b")
        .invoke_async(&mut c)
        .await
        .unwrap();
    assert_eq!(b_claim.as_deref(), Some(a_claim.as_str()), "adopted");
    let sealed: i64 = seal
        .key(FENCE_KEY)
        .arg(5)
        .arg(&a_claim)
        .arg(format!("{run}:good"))
        .invoke_async(&mut c)
        .await
        .unwrap();
    assert_eq!(sealed, 5);
    let granted: (u64, String) = acquire
        .key("redquorum:lock:x")
        .key(FENCE_KEY)
        .arg("o1")
        .arg(30_000)
        .arg("1")
        .invoke_async(&mut c)
        .await
        .unwrap();
    assert_eq!(granted, (6, format!("{run}:good")));
    flush(c.clone()).await; // flush #2
    let _: (Option<u64>, Option<String>, Option<String>) = claim
        .key(FENCE_KEY)
        .arg(&run)
        .arg("c")
        .invoke_async(&mut c)
        .await
        .unwrap();
    for round in ["after a re-claim", "after a third flush"] {
        let late: i64 = seal
            .key(FENCE_KEY)
            .arg(1)
            .arg(&a_claim)
            .arg(format!("{run}:stale"))
            .invoke_async(&mut c)
            .await
            .unwrap();
        assert_eq!(late, -1, "a late seal was accepted {round}");
        let generation: Option<String> = redis::cmd("HGET")
            .arg(FENCE_KEY)
            .arg("gen")
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(generation, None, "{round}: the master looks sealed");
        flush(c.clone()).await;
    }
    let exists: i64 = redis::cmd("EXISTS")
        .arg(FENCE_KEY)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(exists, 0, "a late seal created the counter");
}
