//! The cache workload: a few tasks per run call `get_or_compute`, `set`, `get_versioned` +
//! `compare_and_set`, `get` and `delete` on a small key pool, through two `Cache` handles (two
//! "processes", so the fill lock is contended across processes too), and check what the cache
//! docs promise.
//!
//! Every value written is unique (`<task>#<counter>/<kind>`), so a value found on a node names
//! the one call that wrote it.
//!
//! Checks:
//! - (a) *A fill never overwrites* (`Cache::get_or_compute`): in the quiet phase only (no
//!   faults, so no node loses data and no write is lost; TTLs are an hour, so nothing expires),
//!   a key's value on its node is never the value of a fill whose computation finished after a
//!   `set` or `compare_and_set` on that key had completed `Written`, unless a `delete` of the
//!   key may have landed in between. The fill's "only if absent" write is sent after its
//!   computation, when the key held that write's value (or a later one), so it must not land.
//! - (b) `compare_and_set` never reports `Conflict` (or `Dropped`: "nothing was written") while
//!   its own value is on the node: checked by reading the node right after the reply, before
//!   any other task runs. Our values are unique, so finding ours means our write landed; a
//!   conflict with the version our own write produced is the false conflict of a write sent
//!   twice. Sound in the fault phase too: only `OutcomeUnknown` may have landed unseen.
//! - (c) no panic: the tasks are joined by the run, which reports a panic as a violation.
//! - (d) *A write runs at most once* ("sent once, never re-sent on a new connection"): the
//!   network records every plain `SET` of a cache key as it runs on a master
//!   ([`Net::watch_sets`](crate::net::Net::watch_sets)); only `set` writes one (fills and
//!   `compare_and_set` go through the versioned script), and its value is unique, so a value
//!   that runs twice is one call's write sent twice. Reported with what the second copy
//!   replaced: when that is another value, or nothing where the first copy was deleted, the
//!   second copy undid a newer write. Sound in the fault phase too: a lost request or reply
//!   never runs a command twice, a restart with data keeps the first copy, not a second.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;
use redquorum::{Cache, CasOutcome, WriteOutcome};
use tokio::time::Instant;

use crate::run::{World, get};

/// The cache's key prefix: not the lock prefix, so the run's leftover check of quiet-phase lock
/// keys never sees cache data (which stays for its TTL by design).
pub(crate) const PREFIX: &str = "simcache:";
/// Keys per phase: few, so that fills race with sets and with each other.
const KEYS: usize = 3;
/// Long enough that nothing expires during a run: expiry would make an absent key, which a
/// fill may legitimately fill, and check (a) assumes none.
const TTL: Duration = Duration::from_secs(3600);

/// What the cache tasks of a run did, for check (a).
#[derive(Clone)]
pub(crate) struct Log {
    /// Time 0 of the trace, so that reports give times as the trace does.
    base: Instant,
    inner: Arc<Mutex<Entries>>,
}

#[derive(Default)]
struct Entries {
    /// Fills already reported by check (a): every later check of the key would find it again.
    reported: std::collections::HashSet<String>,
    /// Per key: (started, completed) of every `set` and `compare_and_set` that reported Written.
    written: HashMap<String, Vec<(Instant, Instant)>>,
    /// Per key: (started, completed if it did) of every `delete`, whatever it reported: a
    /// dropped delete may have landed.
    deletes: HashMap<String, Vec<(Instant, Option<Instant>)>>,
    /// Per fill value: when its computation finished (its write is sent after).
    fills: HashMap<String, Instant>,
}

impl Log {
    /// An empty log whose reports count time from `base`.
    pub(crate) fn new(base: Instant) -> Self {
        Self {
            base,
            inner: Arc::default(),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Builds one cache handle over the run's network, with timeouts scaled like the lock clients'.
pub(crate) async fn build(world: &World) -> redquorum::Result<Cache> {
    let plan = &world.plan;
    Cache::builder()
        .nodes(world.net.urls())
        .sim_network(Arc::new(world.net.clone()))
        .node_timeout(plan.master_timeout)
        .connect_timeout(plan.master_timeout * 4)
        .key_prefix(PREFIX)
        // At least 10 per-master timeouts, as the lock client requires of any TTL.
        .fill_lock_ttl(plan.ttl.max(plan.master_timeout * 10))
        .fill_wait(Duration::from_secs(2))
        .build()
        .await
}

/// The value of `key` on whichever node holds it (a cache key lives on one node only).
fn on_node(world: &World, key: &str) -> Option<String> {
    let data_key = format!("{PREFIX}{key}");
    (0..world.net.len()).find_map(|i| get(&world.net, i, &data_key))
}

/// One cache task: `ops` operations on keys `<keys>0..`; `quiet` turns check (a) on.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn workload(
    world: World,
    cache: Cache,
    log: Log,
    who: String,
    mut rng: StdRng,
    ops: usize,
    keys: &'static str,
    quiet: bool,
) {
    let mut counter = 0u64;
    for _ in 0..ops {
        let key = format!("{keys}{}", rng.random_range(0..KEYS));
        counter += 1;
        let started = Instant::now();
        match rng.random_range(0..10) {
            0..=3 => {
                let value = format!("{who}#{counter}/fill");
                // Sometimes longer than the fill lock TTL, so that the lease must extend it
                // (or lose it) while a set or another process's fill lands meanwhile.
                let took = Duration::from_millis(
                    rng.random_range(0..=world.plan.ttl.as_millis() as u64 * 3 / 2),
                );
                let (log2, value2) = (log.clone(), value.clone());
                let compute = move || async move {
                    tokio::time::sleep(took).await;
                    log2.entries().fills.insert(value2.clone(), Instant::now());
                    Ok::<_, Infallible>(value2.into_bytes())
                };
                match cache.get_or_compute(&key, TTL, compute).await {
                    Ok(got) => world.net.log(format!(
                        "{who}: get_or_compute {key} = {}",
                        String::from_utf8_lossy(&got)
                    )),
                    Err(e) => world
                        .net
                        .log(format!("{who}: get_or_compute {key} failed: {e}")),
                }
            }
            4..=5 => {
                let value = format!("{who}#{counter}/set");
                match cache.set(&key, &value, TTL).await {
                    Ok(WriteOutcome::Written) => {
                        log.entries()
                            .written
                            .entry(key.clone())
                            .or_default()
                            .push((started, Instant::now()));
                        world.net.log(format!("{who}: set {key} = {value}"));
                    }
                    other => world
                        .net
                        .log(format!("{who}: set {key} = {value}: {other:?}")),
                }
            }
            6..=7 => {
                let value = format!("{who}#{counter}/cas");
                let expected = match cache.get_versioned(&key).await {
                    Ok(found) => found.map(|(v, _)| v),
                    Err(_) => None,
                };
                // A pause between read and write, so that others write meanwhile.
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..20))).await;
                let cas_started = Instant::now();
                let outcome = cache.compare_and_set(&key, expected, &value, TTL).await;
                // Check (b), before anything else runs: a conflict or drop means this call
                // wrote nothing, so its unique value must not be on the node.
                let found = on_node(&world, &key);
                match &outcome {
                    Ok(CasOutcome::Written { .. }) => {
                        log.entries()
                            .written
                            .entry(key.clone())
                            .or_default()
                            .push((cas_started, Instant::now()));
                    }
                    Ok(o @ (CasOutcome::Conflict { .. } | CasOutcome::Dropped))
                        if found.as_deref() == Some(value.as_str()) =>
                    {
                        let version = (0..world.net.len()).find_map(|i| {
                            get(&world.net, i, &format!("redquorum:version:{PREFIX}{key}"))
                        });
                        world.history.violation(format!(
                            "{who}: compare_and_set {key} (expected {expected:?}) reported \
                             {o:?}, yet its own value {value} is on the node at version \
                             {version:?}"
                        ));
                    }
                    _ => {}
                }
                world.net.log(format!(
                    "{who}: compare_and_set {key} {expected:?} -> {value}: {outcome:?}"
                ));
            }
            8 => {
                let got = cache.get(&key).await;
                world.net.log(format!("{who}: get {key} = {got:?}"));
            }
            _ => {
                // Deletes make keys absent again, so fills keep happening all run long.
                let index = {
                    let mut entries = log.entries();
                    let deletes = entries.deletes.entry(key.clone()).or_default();
                    deletes.push((started, None));
                    deletes.len() - 1
                };
                let outcome = cache.delete(&key).await;
                if let Some(d) = log.entries().deletes.get_mut(&key) {
                    d[index].1 = Some(Instant::now());
                }
                world.net.log(format!("{who}: delete {key}: {outcome:?}"));
            }
        }
        if quiet {
            check_fill_not_stale(&world, &log, &who, &key);
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..30))).await;
    }
}

/// Check (d): no `set` value ran twice on a master (see the module docs); one line per value
/// that did.
pub(crate) fn applied_twice(net: &crate::net::Net, base: Instant) -> Vec<String> {
    let applied = net.applied_sets();
    let mut first: HashMap<&str, &crate::net::AppliedSet> = HashMap::new();
    let mut out = Vec::new();
    let mut reported = std::collections::HashSet::new();
    for set in &applied {
        let Some(earlier) = first.get(set.value.as_str()) else {
            first.insert(&set.value, set);
            continue;
        };
        if !reported.insert(set.value.as_str()) {
            continue;
        }
        let undid = match &set.before {
            Some(before) if *before == set.value => "over itself".to_owned(),
            Some(before) => format!("undoing the newer value {before}"),
            None => "over an absent key (the first copy deleted or lost since)".to_owned(),
        };
        out.push(format!(
            "the cache write {} = {} ran twice: on master {} (conn {}) at {:?} and on master \
             {} (conn {}) at {:?}, {undid} (a write sent again on a new connection)",
            set.key,
            set.value,
            earlier.node,
            earlier.conn,
            earlier.at - base,
            set.node,
            set.conn,
            set.at - base,
        ));
    }
    out
}

/// A writer of the fault phase: `ops` `set`s of keys `<keys>0..` with unique values, a few
/// milliseconds apart, so that cache writes meet the network's faults (a connection killed
/// after a write ran, check (d)) and race with the other tasks' writes often enough.
pub(crate) async fn writer(
    world: World,
    cache: Cache,
    log: Log,
    who: String,
    mut rng: StdRng,
    ops: usize,
    keys: &'static str,
) {
    for counter in 1..=ops {
        let key = format!("{keys}{}", rng.random_range(0..KEYS));
        let value = format!("{who}#{counter}/set");
        let started = Instant::now();
        match cache.set(&key, &value, TTL).await {
            Ok(WriteOutcome::Written) => {
                log.entries()
                    .written
                    .entry(key.clone())
                    .or_default()
                    .push((started, Instant::now()));
                world.net.log(format!("{who}: set {key} = {value}"));
            }
            other => world
                .net
                .log(format!("{who}: set {key} = {value}: {other:?}")),
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..10))).await;
    }
}

/// Check (a): the value of `key` on its node is not a fill computed after a completed write
/// of the key with no delete that may have landed since that write began.
fn check_fill_not_stale(world: &World, log: &Log, who: &str, key: &str) {
    let Some(value) = on_node(world, key) else {
        return;
    };
    let now = Instant::now();
    let mut entries = log.entries();
    let Some(&done) = entries.fills.get(&value) else {
        return;
    };
    if entries.reported.contains(&value) {
        return;
    }
    let deletes = entries.deletes.get(key).map(Vec::as_slice).unwrap_or(&[]);
    for &(began, completed) in entries.written.get(key).map(Vec::as_slice).unwrap_or(&[]) {
        // The write was on the node before the fill's write was sent...
        if completed >= done {
            continue;
        }
        // ...and no delete could have landed after it and before now (which would have made
        // the key absent, and the fill legitimate).
        let deleted_since = deletes
            .iter()
            .any(|&(d_began, d_done)| d_began < now && d_done.is_none_or(|d| d > began));
        if !deleted_since {
            world.history.violation(format!(
                "{who}: {key} holds the fill {value}, computed at {:?}, over a write \
                 completed at {:?} (a fill overwrote a newer value)",
                done - log.base,
                completed - log.base,
            ));
            entries.reported.insert(value);
            return;
        }
    }
}
