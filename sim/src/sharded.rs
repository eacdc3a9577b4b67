//! Sharded locks over the simulator: three groups of three simulated masters, clients taking
//! sharded locks on a few resources while an administrator changes the groups (removes the
//! first, adds the third) and a fault injector pauses, crashes (restarting with data) and
//! resumes at most one master per group at a time. Checks: no two holders of a resource
//! (`history::overlaps`), and per resource, no fencing token at or below one handed out
//! before the acquire started (`history::tokens_backwards`, per resource: sharded tokens are
//! ordered per resource only).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redquorum::{Redlock, ShardedRedlock};
use tokio::time::Instant;

use crate::history::{History, Holding, Kind, overlaps, tokens_backwards};
use crate::net::{Links, Net};
use crate::trace::Trace;

const GROUP: usize = 3;
const MASTER_TIMEOUT: Duration = Duration::from_millis(20);

/// What one sharded run found: violations, the trace, (acquired, refused-or-failed).
pub struct ShardedOutcome {
    /// Every invariant broken.
    pub violations: Vec<String>,
    /// The trace's tail (all of it when asked for).
    pub trace: Trace,
    /// Holdings granted, and acquires that ended without one.
    pub counts: (usize, usize),
}

/// Runs sharded seed `seed`.
pub fn run_sharded(seed: u64, full_trace: bool) -> ShardedOutcome {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    let trace = Trace::keeping(if full_trace { 0 } else { 400 });
    let (violations, counts) = runtime.block_on(body(seed, trace.clone()));
    redquorum::sim::unseed_rng();
    ShardedOutcome {
        violations,
        trace,
        counts,
    }
}

/// One group's configuration over the simulated network.
fn group(net: &Net, g: usize) -> redquorum::Builder {
    settings(net).masters(net.urls()[g * GROUP..(g + 1) * GROUP].to_vec())
}

fn settings(net: &Net) -> redquorum::Builder {
    Redlock::builder()
        .sim_network(Arc::new(net.clone()))
        .master_timeout(MASTER_TIMEOUT)
        .connect_timeout(MASTER_TIMEOUT * 4)
        .retry_delay(Duration::from_millis(5))
        .retry_jitter(Duration::from_millis(10))
}

async fn client(net: &Net, max_ttl: Duration) -> redquorum::Result<ShardedRedlock> {
    ShardedRedlock::builder()
        .group("g0", 1, group(net, 0))
        .group("g1", 1, group(net, 1))
        .template(settings(net))
        .max_ttl(max_ttl)
        .build()
        .await
}

async fn body(seed: u64, trace: Trace) -> (Vec<String>, (usize, usize)) {
    let base = Instant::now();
    redquorum::sim::seed_rng(seed);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5a4d_ed00);
    let net = Net::new(GROUP * 3, seed, Links::default(), trace.clone());
    let max_ttl = Duration::from_millis(rng.random_range(300..=900));
    let ops = rng.random_range(4..=10);
    net.log(format!("sharded plan: max_ttl {max_ttl:?}, ops {ops}"));
    let history = History::default();
    let mut clients = Vec::new();
    for c in 0..3 {
        match client(&net, max_ttl).await {
            Ok(s) => clients.push(s),
            Err(e) => net.log(format!("sharded client {c} could not be built: {e}")),
        }
    }
    let Some(admin) = clients.first().cloned() else {
        return (Vec::new(), (0, 0));
    };
    let faults = tokio::spawn(inject(net.clone(), seed, rng.random_range(0..=6)));
    let change = {
        let (net, delay) = (net.clone(), rng.random_range(0..300));
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            let to = [("g1", 1, group(&net, 1)), ("g2", 1, group(&net, 2))];
            let result = admin.change_groups(to).await;
            net.log(format!("change: {result:?}"));
        })
    };
    let mut tasks = Vec::new();
    for (c, client) in clients.iter().enumerate() {
        for t in 0..2 {
            let rng = StdRng::seed_from_u64(seed ^ (((c * 16 + t) as u64 + 1) * 0x9e37_79b9));
            let who = format!("c{c}.t{t}");
            let args = (client.clone(), history.clone(), net.clone(), max_ttl);
            tasks.push(tokio::spawn(workload(args, who, rng, ops)));
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    let _ = change.await;
    let _ = faults.await;
    let holdings = history.holdings();
    let mut violations = overlaps(&holdings, base);
    let mut by_resource: BTreeMap<String, Vec<Holding>> = BTreeMap::new();
    for h in holdings.iter().cloned() {
        by_resource.entry(h.resource.clone()).or_default().push(h);
    }
    for hs in by_resource.values() {
        violations.extend(tokens_backwards(hs));
    }
    let counts = history.counts();
    (violations, (holdings.len(), (counts.1 + counts.2) as usize))
}

type Args = (ShardedRedlock, History, Net, Duration);

/// `ops` sharded acquires on `r0`..`r3` (sometimes two at once), each held a random while.
async fn workload(args: Args, who: String, mut rng: StdRng, ops: usize) {
    let (client, history, net, max_ttl) = args;
    for _ in 0..ops {
        let r = format!("r{}", rng.random_range(0..4));
        let two = rng
            .random_bool(0.3)
            .then(|| format!("r{}", rng.random_range(0..4)));
        let ttl = Duration::from_millis(rng.random_range(200..=max_ttl.as_millis() as u64));
        let names: Vec<String> = std::iter::once(r).chain(two).collect();
        let started = Instant::now();
        let wait = Duration::from_millis(300);
        let lock = match client.acquire_many_with_wait(&names, ttl, wait).await {
            Ok(lock) => lock,
            Err(e) => {
                history.refused(!e.is_contended());
                net.log(format!("{who}: acquire {names:?} failed: {e}"));
                continue;
            }
        };
        let acquired = Instant::now();
        net.log(format!("{who}: holds {lock:?}"));
        let mut held = Vec::new();
        for name in lock.resource().split(", ") {
            held.push(history.hold(Holding {
                who: who.clone(),
                resource: name.to_owned(),
                kind: Kind::Mutex,
                started,
                acquired,
                valid_until: lock.valid_until(),
                released: None,
                token: lock.fencing_token_of(name),
                uncovered: false,
            }));
        }
        tokio::time::sleep(Duration::from_millis(
            rng.random_range(0..=ttl.as_millis() as u64 / 2),
        ))
        .await;
        let at = Instant::now();
        let _ = lock.release().await;
        for i in held {
            history.released(i, at);
        }
    }
}

/// `faults` faults, at most one faulty master per group at a time: pause then resume, or
/// crash then restart with its data.
async fn inject(net: Net, seed: u64, faults: usize) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xfa17_5a4d);
    for _ in 0..faults {
        tokio::time::sleep(Duration::from_millis(rng.random_range(10..300))).await;
        let g = rng.random_range(0..3);
        let m = g * GROUP + rng.random_range(0..GROUP);
        let down = Duration::from_millis(rng.random_range(10..400));
        if rng.random_bool(0.5) {
            net.log(format!("fault: pause master {m} for {down:?}"));
            net.pause(m);
            tokio::time::sleep(down).await;
            net.resume(m);
        } else {
            net.log(format!(
                "fault: crash master {m}, restart with data after {down:?}"
            ));
            net.crash(m);
            tokio::time::sleep(down).await;
            net.restart(m, true);
        }
    }
}
