//! Hand-off under faults: a holder exports its lock, the handle travels for a random time
//! (sometimes past the lock's validity) and another client resumes it, while a rival keeps
//! trying to take the same lock and masters pause. Checked: no two holders overlap, counting a
//! handed-off hold as one holding from the exporter's acquire to the resumer's release (a
//! resume succeeds only while a quorum still has the exporter's keys, so nobody can have held
//! the lock in between); a resume that says "not held" leaves no quorum holding the keys; the
//! fencing token is kept. Separate from `run` so that its seeds keep replaying as before.

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redquorum::{Error, LockGuard, Redlock};
use tokio::time::Instant;

use crate::history::{History, Holding, Kind, overlaps, tokens_backwards};
use crate::net::{Links, Net};
use crate::run::get;
use crate::trace::Trace;

const RESOURCE: &str = "handed";

/// What a hand-off seed found: its violations and its trace's tail.
pub struct HandoffOutcome {
    /// Every invariant broken.
    pub violations: Vec<String>,
    /// The trace (its tail).
    pub trace: Trace,
    /// (resumed, refused as not held, failed otherwise).
    pub resumes: (u32, u32, u32),
}

/// Runs hand-off seed `seed`.
pub fn run_handoff(seed: u64) -> HandoffOutcome {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    let trace = Trace::keeping(400);
    let (violations, resumes) = runtime.block_on(body(seed, trace.clone()));
    redquorum::sim::unseed_rng();
    HandoffOutcome {
        violations,
        trace,
        resumes,
    }
}

#[derive(Clone)]
struct Setup {
    net: Net,
    history: History,
    ttl: Duration,
    master_timeout: Duration,
}

async fn body(seed: u64, trace: Trace) -> (Vec<String>, (u32, u32, u32)) {
    let base = Instant::now();
    redquorum::sim::seed_rng(seed);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x4a4d_0ff5);
    let masters = [3, 5][rng.random_range(0..2)];
    let net = Net::new(masters, seed, Links::default(), trace);
    let setup = Setup {
        net: net.clone(),
        history: History::default(),
        ttl: Duration::from_millis(rng.random_range(300..=1000)),
        master_timeout: Duration::from_millis(rng.random_range(10..=30)),
    };
    net.log(format!(
        "handoff: {masters} masters, ttl {:?}, timeout {:?}",
        setup.ttl, setup.master_timeout
    ));
    let (Ok(exporter), Ok(importer), Ok(rival)) = (
        client(&setup).await,
        client(&setup).await,
        client(&setup).await,
    ) else {
        net.log("a client could not be built");
        return (Vec::new(), (0, 0, 0));
    };
    if rng.random_bool(0.3) {
        net.set_links(Links {
            loss: 0.02,
            ..Links::default()
        });
    }
    let passes = rng.random_range(3..=8);
    let passer = tokio::spawn(pass_around(
        setup.clone(),
        exporter,
        importer,
        StdRng::seed_from_u64(seed ^ 0x11),
        passes,
    ));
    let rival = tokio::spawn(compete(
        setup.clone(),
        rival,
        StdRng::seed_from_u64(seed ^ 0x22),
        passes * 2,
    ));
    let faults = tokio::spawn(pause_minorities(
        setup.clone(),
        StdRng::seed_from_u64(seed ^ 0x33),
    ));
    let mut violations = Vec::new();
    let resumes = passer.await.unwrap_or_else(|e| {
        violations.push(format!("the hand-off task panicked: {e}"));
        (0, 0, 0)
    });
    if let Err(e) = rival.await {
        violations.push(format!("the rival task panicked: {e}"));
    }
    faults.abort();
    for i in 0..net.len() {
        net.resume(i);
    }
    violations.extend(setup.history.violations());
    let holdings = setup.history.holdings();
    violations.extend(overlaps(&holdings, base));
    violations.extend(tokens_backwards(&holdings));
    (violations, resumes)
}

async fn client(setup: &Setup) -> redquorum::Result<Redlock> {
    Redlock::builder()
        .masters(setup.net.urls())
        .sim_network(Arc::new(setup.net.clone()))
        .master_timeout(setup.master_timeout)
        .connect_timeout(setup.master_timeout * 4)
        .retry_delay(Duration::from_millis(5))
        .retry_jitter(Duration::from_millis(10))
        .build()
        .await
}

/// Acquire with `exporter`, export, wait, resume with `importer`, hold, release.
async fn pass_around(
    setup: Setup,
    exporter: Redlock,
    importer: Redlock,
    mut rng: StdRng,
    passes: u32,
) -> (u32, u32, u32) {
    let mut counts = (0, 0, 0);
    for pass in 0..passes {
        let who = format!("pass{pass}");
        let started = Instant::now();
        let wait = Duration::from_millis(rng.random_range(0..400));
        let Ok(lock) = exporter
            .acquire(RESOURCE, redquorum::LockOptions::new(setup.ttl).wait(wait))
            .await
        else {
            continue;
        };
        let index = record(&setup, &who, &lock, started);
        let (token, valid_until) = (lock.fencing_token(), lock.valid_until());
        let owner = lock.owner_token().to_owned();
        let handle = lock.export().expect("a basic lock exports");
        // In transit: usually within the validity, sometimes well past it.
        let remaining = valid_until.saturating_duration_since(Instant::now());
        let transit = if rng.random_bool(0.25) {
            remaining + Duration::from_millis(rng.random_range(0..400))
        } else {
            remaining.mul_f64(rng.random_range(0.0..0.7))
        };
        tokio::time::sleep(transit).await;
        match importer.resume(handle, setup.ttl).await {
            Ok(resumed) => {
                counts.0 += 1;
                if resumed.fencing_token() != token {
                    setup.history.violation(format!(
                        "{who}: resumed with token {:?}, exported {token:?}",
                        resumed.fencing_token()
                    ));
                }
                setup.history.extended(index, resumed.valid_until());
                setup.net.log(format!("{who}: resumed after {transit:?}"));
                finish(&setup, index, resumed, &mut rng).await;
            }
            Err(e) => {
                setup
                    .net
                    .log(format!("{who}: resume after {transit:?} failed: {e}"));
                setup.history.released(index, Instant::now());
                if matches!(e, Error::NotHeld { .. }) {
                    counts.1 += 1;
                    check_no_quorum_holds(&setup, &owner, &who);
                } else {
                    counts.2 += 1;
                }
            }
        }
    }
    counts
}

/// Holds a resumed lock a little (maybe extending it) and releases it.
async fn finish(setup: &Setup, index: usize, mut lock: LockGuard, rng: &mut StdRng) {
    tokio::time::sleep(lock.remaining().mul_f64(rng.random_range(0.0..0.5))).await;
    if lock.is_valid() && rng.random_bool(0.4) && lock.extend(setup.ttl).await.is_ok() {
        setup.history.extended(index, lock.valid_until());
    }
    let at = Instant::now();
    let _ = lock.release().await;
    setup.history.released(index, at);
}

/// The rival: plain acquire, short hold, release.
async fn compete(setup: Setup, rival: Redlock, mut rng: StdRng, ops: u32) {
    for op in 0..ops {
        let started = Instant::now();
        let wait = Duration::from_millis(rng.random_range(0..600));
        if let Ok(lock) = rival
            .acquire(RESOURCE, redquorum::LockOptions::new(setup.ttl).wait(wait))
            .await
        {
            let index = record(&setup, &format!("rival{op}"), &lock, started);
            tokio::time::sleep(lock.remaining().mul_f64(rng.random_range(0.0..0.3))).await;
            let at = Instant::now();
            let _ = lock.release().await;
            setup.history.released(index, at);
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..50))).await;
    }
}

/// Pauses a random minority of masters now and then (covered: a paused master only delays).
async fn pause_minorities(setup: Setup, mut rng: StdRng) {
    let n = setup.net.len();
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..300))).await;
        let count = rng.random_range(0..=(n - 1) / 2);
        let paused: Vec<usize> = (0..count).map(|_| rng.random_range(0..n)).collect();
        for &i in &paused {
            setup.net.pause(i);
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(10..400))).await;
        for &i in &paused {
            setup.net.resume(i);
        }
    }
}

fn record(setup: &Setup, who: &str, lock: &LockGuard, started: Instant) -> usize {
    setup.history.hold(Holding {
        who: who.to_owned(),
        resource: RESOURCE.to_owned(),
        kind: Kind::Mutex,
        started,
        acquired: Instant::now(),
        valid_until: lock.valid_until(),
        released: None,
        token: lock.fencing_token(),
        uncovered: false,
    })
}

/// A resume that says "not held" must mean no quorum still has the exporter's keys.
fn check_no_quorum_holds(setup: &Setup, owner: &str, who: &str) {
    let key = format!("{}lock:{RESOURCE}", redquorum::defaults::DEFAULT_KEY_PREFIX);
    let holders = (0..setup.net.len())
        .filter(|&i| get(&setup.net, i, &key).as_deref() == Some(owner))
        .count();
    if holders > setup.net.len() / 2 {
        setup.history.violation(format!(
            "{who}: resume said not held while {holders} masters held it"
        ));
    }
}
