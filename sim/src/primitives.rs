//! The workload's operations on the primitives beside the basic lock: multi-resource,
//! reentrant, fair, read-write and semaphore, plus `Redlock::with_lock` and
//! `LockGuard::with_watchdog`. Each operation acquires with one primitive, records a
//! [`Holding`] of the right [`Kind`] for every resource it excludes, naps, maybe extends, and
//! releases; or runs the nap under the watchdog and checks that the lost signal only fires
//! when no quorum holds the lock any more.
//!
//! Resource names: the multi-resource lock shares the basic lock's names (`r0`); the other
//! primitives have their own key spaces, so their holdings are named `fair:r0`, `rw:r0`,
//! `sem:r0`, `re:r0` for the checker.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::BoxFuture;
use rand::Rng;
use rand::rngs::StdRng;
use redquorum::{LockContext, LockGuard, Redlock};
use tokio::time::Instant;

use crate::history::{Holding, Kind};
use crate::net::Net;
use crate::run::{World, get};

/// One primitive, as an operation uses it.
enum Prim {
    /// Several basic-lock resources at once.
    Multi(Vec<String>),
    /// A reentrant lock held by `owner`.
    Reentrant {
        owner: String,
        resource: String,
    },
    Fair(String),
    Read(String),
    Write(String),
    Permit {
        resource: String,
        k: u32,
    },
}

impl Prim {
    /// For the trace.
    fn describe(&self) -> String {
        match self {
            Prim::Multi(names) => format!("multi {names:?}"),
            Prim::Reentrant { owner, resource } => format!("reentrant {resource} as {owner}"),
            Prim::Fair(r) => format!("fair {r}"),
            Prim::Read(r) => format!("read {r}"),
            Prim::Write(r) => format!("write {r}"),
            Prim::Permit { resource, k } => format!("permit of {resource} (k = {k})"),
        }
    }

    /// The holdings one grant makes, each a resource name for the checker and a kind.
    fn holdings(&self) -> Vec<(String, Kind)> {
        match self {
            Prim::Multi(names) => {
                // As the library does: sorted and deduplicated.
                let mut names = names.clone();
                names.sort_unstable();
                names.dedup();
                names.into_iter().map(|n| (n, Kind::Mutex)).collect()
            }
            Prim::Reentrant { owner, resource } => vec![(
                format!("re:{resource}"),
                Kind::Reentrant {
                    owner: owner.clone(),
                },
            )],
            Prim::Fair(r) => vec![(format!("fair:{r}"), Kind::Mutex)],
            Prim::Read(r) => vec![(format!("rw:{r}"), Kind::Read)],
            Prim::Write(r) => vec![(format!("rw:{r}"), Kind::Write)],
            Prim::Permit { resource, k } => {
                vec![(format!("sem:{resource}"), Kind::Permit { k: *k })]
            }
        }
    }

    /// How to tell, behind the clients' backs, which masters hold the hold of owner token
    /// `token` (the library's key layout, `src/*.rs` and `scripts/*.lua`).
    fn probe(&self, token: &str) -> Probe {
        let p = redquorum::defaults::DEFAULT_KEY_PREFIX;
        let token = token.to_owned();
        match self {
            Prim::Multi(names) => Probe::Keys {
                keys: names.iter().map(|n| format!("{p}lock:{n}")).collect(),
                token,
            },
            Prim::Reentrant { owner, resource } => Probe::Reentrant {
                key: format!("{p}reentrant:{resource}"),
                owner: owner.clone(),
                token,
            },
            Prim::Fair(r) => Probe::Keys {
                keys: vec![format!("{p}fair:{r}")],
                token,
            },
            Prim::Read(r) => Probe::Read {
                key: format!("{p}rw-readers:{r}"),
                token,
            },
            Prim::Write(r) => Probe::Keys {
                keys: vec![format!("{p}rw-writer:{r}")],
                token,
            },
            Prim::Permit { resource, .. } => Probe::Permit {
                key: format!("{p}semaphore:{resource}"),
                token,
            },
        }
    }

    /// One acquire call with a wait, boxed (the primitives' futures differ in type).
    fn acquire<'a>(
        &'a self,
        client: &'a Redlock,
        ttl: Duration,
        wait: Duration,
    ) -> BoxFuture<'a, redquorum::Result<LockGuard>> {
        match self {
            Prim::Multi(names) => {
                Box::pin(client.acquire_many(names, redquorum::LockOptions::new(ttl).wait(wait)))
            }
            Prim::Reentrant { owner, resource } => Box::pin(async move {
                client
                    .reentrant(owner.as_str())
                    .acquire(resource, redquorum::LockOptions::new(ttl).wait(wait))
                    .await
            }),
            Prim::Fair(r) => Box::pin(async move {
                client
                    .fair_lock(r.as_str())
                    .acquire(redquorum::LockOptions::new(ttl).wait(wait))
                    .await
            }),
            Prim::Read(r) => Box::pin(async move {
                client
                    .rw_lock(r.as_str())
                    .read(redquorum::LockOptions::new(ttl).wait(wait))
                    .await
            }),
            Prim::Write(r) => Box::pin(async move {
                client
                    .rw_lock(r.as_str())
                    .write(redquorum::LockOptions::new(ttl).wait(wait))
                    .await
            }),
            Prim::Permit { resource, k } => Box::pin(async move {
                client
                    .semaphore(resource.as_str(), *k)
                    .acquire(redquorum::LockOptions::new(ttl).wait(wait))
                    .await
            }),
        }
    }

    /// One round, without a wait: `Ok(None)` when refused.
    fn try_acquire<'a>(
        &'a self,
        client: &'a Redlock,
        ttl: Duration,
    ) -> BoxFuture<'a, redquorum::Result<Option<LockGuard>>> {
        match self {
            Prim::Multi(names) => Box::pin(client.try_acquire_many(names, ttl)),
            Prim::Reentrant { owner, resource } => Box::pin(async move {
                client
                    .reentrant(owner.as_str())
                    .try_acquire(resource, ttl)
                    .await
            }),
            Prim::Fair(r) => {
                Box::pin(async move { client.fair_lock(r.as_str()).try_acquire(ttl).await })
            }
            Prim::Read(r) => {
                Box::pin(async move { client.rw_lock(r.as_str()).try_read(ttl).await })
            }
            Prim::Write(r) => {
                Box::pin(async move { client.rw_lock(r.as_str()).try_write(ttl).await })
            }
            Prim::Permit { resource, k } => Box::pin(async move {
                client
                    .semaphore(resource.as_str(), *k)
                    .try_acquire(ttl)
                    .await
            }),
        }
    }
}

/// Which masters hold one hold, read from their keyspaces directly.
pub(crate) enum Probe {
    /// String keys that must all carry the owner token (basic, multi, fair, write).
    Keys { keys: Vec<String>, token: String },
    /// The reentrant hash: this owner, and this hold's field.
    Reentrant {
        key: String,
        owner: String,
        token: String,
    },
    /// A live read lease of this token (by the master's clock).
    Read { key: String, token: String },
    /// A live lease of this token on some slot (by the master's clock).
    Permit { key: String, token: String },
}

impl Probe {
    /// The owner token it looks for.
    pub(crate) fn token(&self) -> &str {
        match self {
            Probe::Keys { token, .. }
            | Probe::Reentrant { token, .. }
            | Probe::Read { token, .. }
            | Probe::Permit { token, .. } => token,
        }
    }

    /// How many masters hold it. For a permit, the most masters agreeing on one slot: a lease
    /// on another slot (a straggler of the acquire round) is no vote, as in the library.
    pub(crate) fn holders(&self, net: &Net) -> usize {
        let n = net.len();
        match self {
            Probe::Keys { keys, token } => (0..n)
                .filter(|&i| {
                    keys.iter()
                        .all(|k| get(net, i, k).as_deref() == Some(token.as_str()))
                })
                .count(),
            Probe::Reentrant { key, owner, token } => (0..n)
                .filter(|&i| {
                    hget(net, i, key, "owner").as_deref() == Some(owner.as_str())
                        && hget(net, i, key, &format!("hold:{token}")).is_some()
                })
                .count(),
            Probe::Read { key, token } => (0..n)
                .filter(|&i| {
                    let now = net.inspect(i, |m| m.now_ms()) as f64;
                    let score = net.exec_now(i, &cmd(&["ZSCORE", key, token]));
                    bulk(score)
                        .and_then(|s| s.parse::<f64>().ok())
                        .is_some_and(|expiry| expiry > now)
                })
                .count(),
            Probe::Permit { key, token } => {
                // Slot -> masters with a live lease of ours on it; BTreeMap for a stable order.
                let mut slots: BTreeMap<String, usize> = BTreeMap::new();
                for i in 0..n {
                    let now = net.inspect(i, |m| m.now_ms());
                    let crate::value::Value::Array(fields) =
                        net.exec_now(i, &cmd(&["HGETALL", key]))
                    else {
                        continue;
                    };
                    let fields: Vec<String> = fields.into_iter().filter_map(bulk).collect();
                    for pair in fields.chunks(2) {
                        let [slot, value] = pair else { continue };
                        let Some((expiry, owner)) = value.split_once(':') else {
                            continue;
                        };
                        if owner == token && expiry.parse::<u64>().is_ok_and(|e| e > now) {
                            *slots.entry(slot.clone()).or_default() += 1;
                        }
                    }
                }
                slots.values().copied().max().unwrap_or(0)
            }
        }
    }
}

fn cmd(args: &[&str]) -> Vec<Vec<u8>> {
    args.iter().map(|a| a.as_bytes().to_vec()).collect()
}

fn bulk(v: crate::value::Value) -> Option<String> {
    match v {
        crate::value::Value::Bulk(b) => Some(String::from_utf8_lossy(&b).into_owned()),
        _ => None,
    }
}

fn hget(net: &Net, i: usize, key: &str, field: &str) -> Option<String> {
    bulk(net.exec_now(i, &cmd(&["HGET", key, field])))
}

/// The validity a grant claims must be time a quorum of masters hold: its deadline
/// (`valid_until`, on the client's clock, which is virtual time) must not be later than the
/// instant at which fewer than a quorum of masters still hold the lock's keys with its token,
/// each master's key expiring by that master's own clock (at its own rate). Checked when a
/// grant or an extension is handed back (`what`), for the locks whose keys carry the owner
/// token as a plain string (`Probe::Keys`: basic, multi, fair, write; the others are skipped).
///
/// This is the precise form of "validity never outlives the keys": another client can win
/// once fewer than a quorum hold them, so any later deadline claims time nobody guarantees.
/// The drift allowance must cover the masters' clock rates and the whole milliseconds of
/// their clocks; counting validity from the round's start covers every delay after it.
/// Exempt: grants made under uncovered faults, and masters that lost their data since the
/// operation started at `since` (with the restart quarantine on, they vote for nobody until
/// the keys could have expired anyway, so they count as holding); without the quarantine
/// a data loss marks the run uncovered.
pub(crate) fn check_validity_held(
    world: &World,
    probe: &Probe,
    who: &str,
    what: &str,
    valid_until: Instant,
    since: Instant,
) {
    let Probe::Keys { keys, token } = probe else {
        return;
    };
    let now = Instant::now();
    // An expired grant claims no time (`History::hold` checks why it came back expired).
    if valid_until <= now || world.uncovered.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let n = world.net.len();
    let quorum = n / 2 + 1;
    let mut until: Vec<Instant> = (0..n)
        .filter_map(|i| {
            if world.net.lost_data_since(i, since) {
                return Some(valid_until);
            }
            keys.iter()
                .map(|k| world.net.holds_until(i, k, token))
                .collect::<Option<Vec<Instant>>>()?
                .into_iter()
                .min()
        })
        .collect();
    until.sort_unstable_by(|a, b| b.cmp(a));
    let held = until.get(quorum - 1).copied();
    if held.is_some_and(|t| valid_until <= t) {
        return;
    }
    let ms = |t: Instant| t.saturating_duration_since(now).as_secs_f64() * 1e3;
    let by = until.iter().map(|&t| ms(t)).collect::<Vec<_>>();
    world.history.violation(format!(
        "{who}: {what}: validity claimed until +{:.3} ms, but a quorum of masters holds {keys:?} \
         only until {} (per holding master, from now, ms: {by:.3?})",
        ms(valid_until),
        held.map_or("now (fewer than a quorum hold it)".to_owned(), |t| format!(
            "+{:.3} ms",
            ms(t)
        )),
    ));
}

/// "Not held" (`what`) must mean that no quorum holds the lock.
fn check_not_held(world: &World, probe: &Probe, who: &str, what: &str) {
    let holders = probe.holders(&world.net);
    let quorum = world.net.len() / 2 + 1;
    if holders >= quorum {
        world.history.violation(format!(
            "{who}: {what} while {holders} masters still held it"
        ));
    }
}

/// One operation of task `who` with a primitive other than the basic lock, on `prefix`-named
/// resources.
pub(crate) async fn op(world: &World, client: &Redlock, who: &str, rng: &mut StdRng, prefix: &str) {
    let quiet = prefix == "quiet";
    let pick = |rng: &mut StdRng| format!("{prefix}{}", rng.random_range(0..world.plan.resources));
    let prim = match rng.random_range(0..10) {
        0 => Prim::Multi(vec![pick(rng), pick(rng)]),
        1 => Prim::Reentrant {
            // Two owner ids shared by every task and client: the same owner meets itself.
            owner: format!("o{}", rng.random_range(0..2)),
            resource: pick(rng),
        },
        2 => Prim::Fair(pick(rng)),
        3 => Prim::Read(pick(rng)),
        4 => Prim::Write(pick(rng)),
        5 => Prim::Permit {
            resource: pick(rng),
            k: world.plan.permits,
        },
        6 => {
            let resource = pick(rng);
            return with_lock(world, client, who, rng, resource, quiet).await;
        }
        7 => return available(world, client, who, pick(rng)).await,
        8 => {
            let name = pick(rng);
            return crate::coordination::election(world, client, who, rng, name).await;
        }
        _ => {
            let resource = pick(rng);
            return crate::coordination::lock_delay(world, client, who, rng, resource, quiet).await;
        }
    };
    let ttl = world.plan.ttl;
    let started = Instant::now();
    let attempt = match rng.random_range(0..10) {
        0..=5 => {
            let wait = Duration::from_millis(rng.random_range(0..400));
            prim.acquire(client, ttl, wait).await.map(Some)
        }
        6..=7 => prim.try_acquire(client, ttl).await,
        _ => {
            // Cancelled part-way: the round is rolled back, a fair waiter or a writer's intent
            // leaves in the background.
            let cut = Duration::from_micros(rng.random_range(0..3_000));
            match tokio::time::timeout(cut, prim.acquire(client, ttl, ttl)).await {
                Ok(result) => result.map(Some),
                Err(_) => {
                    world
                        .net
                        .log(format!("{who}: {} cancelled", prim.describe()));
                    return;
                }
            }
        }
    };
    match attempt {
        Ok(Some(guard)) => {
            if matches!(prim, Prim::Reentrant { .. }) && rng.random_bool(0.4) {
                // Re-enter while holding: the same owner must be granted again; the inner hold
                // is released first, the outer one held on as usual.
                let outer = record(world, who, &prim, &guard, started);
                let again = Instant::now();
                match prim.try_acquire(client, ttl).await {
                    Ok(Some(inner)) => {
                        let index = record(world, &format!("{who}(inner)"), &prim, &inner, again);
                        let nap = Duration::from_micros(rng.random_range(0..2_000));
                        tokio::time::sleep(nap).await;
                        release(world, who, &prim, inner, &index).await;
                    }
                    Ok(None) => world.net.log(format!("{who}: re-entry refused")),
                    Err(e) => world.net.log(format!("{who}: re-entry failed: {e}")),
                }
                hold_recorded(world, who, rng, &prim, guard, outer).await;
            } else if rng.random_bool(0.35) {
                watched(world, who, rng, &prim, guard, started, quiet).await;
            } else {
                let index = record(world, who, &prim, &guard, started);
                hold_recorded(world, who, rng, &prim, guard, index).await;
            }
        }
        Ok(None) => {
            world.net.log(format!("{who}: {} refused", prim.describe()));
            world.history.refused(false);
        }
        Err(e) => {
            world
                .net
                .log(format!("{who}: {} not acquired: {e}", prim.describe()));
            world.history.refused(!e.is_contended());
        }
    }
}

/// Records the holdings of `guard`; returns their indices.
fn record(
    world: &World,
    who: &str,
    prim: &Prim,
    guard: &LockGuard,
    started: Instant,
) -> Vec<usize> {
    let uncovered = world.uncovered.load(std::sync::atomic::Ordering::Relaxed);
    world.net.log(format!(
        "{who}: holds {} token {:?} until +{:?}",
        prim.describe(),
        guard.fencing_token(),
        guard.remaining()
    ));
    let probe = prim.probe(guard.owner_token());
    check_validity_held(world, &probe, who, "granted", guard.valid_until(), started);
    prim.holdings()
        .into_iter()
        .map(|(resource, kind)| {
            world.history.hold(Holding {
                who: who.to_owned(),
                resource,
                kind,
                started,
                acquired: Instant::now(),
                valid_until: guard.valid_until(),
                released: None,
                token: guard.fencing_token(),
                uncovered,
            })
        })
        .collect()
}

/// Holds a recorded guard for a while (sometimes past its validity), maybe extends it,
/// releases it: as the basic lock's `hold` in run.rs.
async fn hold_recorded(
    world: &World,
    who: &str,
    rng: &mut StdRng,
    prim: &Prim,
    mut guard: LockGuard,
    index: Vec<usize>,
) {
    let remaining = guard.remaining();
    let nap = match rng.random_range(0..10) {
        0 => remaining + Duration::from_millis(50),
        1..=4 => Duration::from_micros(rng.random_range(0..500)),
        _ => remaining.mul_f64(rng.random_range(0.0..0.6)),
    };
    tokio::time::sleep(nap).await;
    if guard.is_valid() && rng.random_bool(0.3) {
        let since = Instant::now();
        match guard.extend(world.plan.ttl).await {
            Ok(()) => {
                for &i in &index {
                    world.history.extended(i, guard.valid_until());
                }
                let probe = prim.probe(guard.owner_token());
                check_validity_held(world, &probe, who, "extended", guard.valid_until(), since);
            }
            Err(e) => {
                if e.is_lost() {
                    let probe = prim.probe(guard.owner_token());
                    check_not_held(world, &probe, who, "extend said not held");
                }
                world.net.log(format!("{who}: extend failed: {e}"));
            }
        }
        let nap = guard.remaining().mul_f64(rng.random_range(0.0..0.5));
        tokio::time::sleep(nap).await;
    }
    release(world, who, prim, guard, &index).await;
}

async fn release(world: &World, who: &str, prim: &Prim, guard: LockGuard, index: &[usize]) {
    let at = Instant::now();
    for &i in index {
        world.history.released(i, at);
    }
    let probe = prim.probe(guard.owner_token());
    match guard.release().await {
        Ok(true) => {}
        Ok(false) => check_not_held(world, &probe, who, "release said not held"),
        Err(e) => world.net.log(format!("{who}: release failed: {e}")),
    }
}

/// How long the work under a watchdog runs: often longer than the TTL, so that the watchdog
/// must extend.
fn work_time(rng: &mut StdRng, ttl: Duration) -> Duration {
    match rng.random_range(0..3) {
        0 => Duration::from_micros(rng.random_range(0..2_000)),
        _ => ttl.mul_f64(rng.random_range(0.0..2.5)),
    }
}

/// Any primitive's guard under `LockGuard::with_watchdog`.
async fn watched(
    world: &World,
    who: &str,
    rng: &mut StdRng,
    prim: &Prim,
    guard: LockGuard,
    started: Instant,
    quiet: bool,
) {
    let work = work_time(rng, world.plan.ttl);
    let probe = prim.probe(guard.owner_token());
    let holdings = prim.holdings();
    let result = guard
        .with_watchdog(world.plan.ttl, |ctx| {
            under_watchdog(world, who, Some(probe), holdings, ctx, started, work, quiet)
        })
        .await;
    if let Err(e) = result {
        world
            .net
            .log(format!("{who}: {} under watchdog: {e}", prim.describe()));
    }
}

/// The basic lock under `Redlock::with_lock`.
async fn with_lock(
    world: &World,
    client: &Redlock,
    who: &str,
    rng: &mut StdRng,
    resource: String,
    quiet: bool,
) {
    let work = work_time(rng, world.plan.ttl);
    let started = Instant::now();
    let holdings = vec![(resource.clone(), Kind::Mutex)];
    let name = resource.clone();
    let result = client
        .with_lock(&name, world.plan.ttl, |ctx| async move {
            // The closure does not see the owner token: ours is the value a quorum of masters
            // has right now, just after the grant (no other owner can have a quorum now).
            let key = format!("{}lock:{resource}", redquorum::defaults::DEFAULT_KEY_PREFIX);
            let mut values: BTreeMap<String, usize> = BTreeMap::new();
            for i in 0..world.net.len() {
                if let Some(v) = get(&world.net, i, &key) {
                    *values.entry(v).or_default() += 1;
                }
            }
            let quorum = world.net.len() / 2 + 1;
            let probe = values
                .into_iter()
                .find(|(_, n)| *n >= quorum)
                .map(|(token, _)| Probe::Keys {
                    keys: vec![key.clone()],
                    token,
                });
            if probe.is_none() {
                world.net.log(format!(
                    "{who}: with_lock of {resource}: no quorum value to probe"
                ));
            }
            under_watchdog(world, who, probe, holdings, ctx, started, work, quiet).await
        })
        .await;
    match result {
        Ok(()) => {}
        Err(e) if e.is_lost() => world.net.log(format!("{who}: with_lock: {e}")),
        Err(e) => {
            world.net.log(format!("{who}: with_lock not acquired: {e}"));
            world.history.refused(!e.is_contended());
        }
    }
}

/// The work under a watchdog: records the holdings with the validity the context reports
/// (following the extensions), runs for `work`, and when the lost signal fires checks that
/// it had reason to: a loss signalled while the validity lasts (the masters said "not held"),
/// or any loss in the fault-free quiet phase, must not leave a quorum holding the lock.
#[allow(clippy::too_many_arguments)]
async fn under_watchdog(
    world: &World,
    who: &str,
    probe: Option<Probe>,
    holdings: Vec<(String, Kind)>,
    ctx: LockContext,
    started: Instant,
    work: Duration,
    quiet: bool,
) {
    let acquired = Instant::now();
    // The context's deadline itself: `acquired + remaining()` would move a deadline that has
    // already passed (a stall after the validity check) up to now.
    let mut valid_until = ctx.valid_until();
    if let Some(probe) = &probe {
        check_validity_held(world, probe, who, "granted", valid_until, started);
    }
    let uncovered = world.uncovered.load(std::sync::atomic::Ordering::Relaxed);
    let index: Vec<usize> = holdings
        .into_iter()
        .map(|(resource, kind)| {
            world.history.hold(Holding {
                who: who.to_owned(),
                resource,
                kind,
                started,
                acquired,
                valid_until,
                released: None,
                token: ctx.fencing_token(),
                uncovered,
            })
        })
        .collect();
    world.net.log(format!(
        "{who}: holds {} under watchdog, token {:?} until +{:?}, working {work:?}",
        ctx.resource(),
        ctx.fencing_token(),
        ctx.remaining()
    ));
    let until = acquired + work;
    // Looks at the validity often enough to see every extension while it is still valid
    // (`remaining` saturates at zero once it ran out).
    let step = (world.plan.ttl / 10).max(Duration::from_millis(1));
    loop {
        let now = Instant::now();
        if now >= until {
            for &i in &index {
                world.history.released(i, now);
            }
            return;
        }
        tokio::select! {
            // Biased: a seeded run must not depend on tokio's random branch order.
            biased;
            _ = ctx.lost() => {
                let at = Instant::now();
                // lost() fires by the validity deadline, even while a renewal hangs.
                let owner = probe.as_ref().map(Probe::token);
                world.history.lost_signalled(who, owner, ctx.valid_until(), at);
                for &i in &index {
                    world.history.released(i, at);
                }
                let remaining = ctx.remaining();
                let Some(probe) = &probe else { return };
                let holders = probe.holders(&world.net);
                world.net.log(format!(
                    "{who}: lost {} with {remaining:?} left, {holders} masters hold it",
                    ctx.resource()
                ));
                let quorum = world.net.len() / 2 + 1;
                if holders >= quorum && (!remaining.is_zero() || quiet) {
                    world.history.violation(format!(
                        "{who}: lost() fired on {} ({remaining:?} validity left, quiet phase: \
                         {quiet}) while {holders} masters still held it",
                        ctx.resource()
                    ));
                }
                return;
            }
            _ = tokio::time::sleep(step.min(until - now)) => {}
        }
        if !ctx.remaining().is_zero() && ctx.valid_until() > valid_until {
            valid_until = ctx.valid_until();
            for &i in &index {
                world.history.extended(i, valid_until);
            }
            if let Some(probe) = &probe {
                check_validity_held(world, probe, who, "extended", valid_until, started);
            }
        }
    }
}

/// `Semaphore::available`: a snapshot, but never more than the permits.
async fn available(world: &World, client: &Redlock, who: &str, resource: String) {
    let k = world.plan.permits;
    match client.semaphore(resource.as_str(), k).available().await {
        Ok(free) => {
            world
                .net
                .log(format!("{who}: {free} of {k} permits of {resource} free"));
            if free > k {
                world.history.violation(format!(
                    "{who}: {free} permits of {resource} available, more than {k}"
                ));
            }
        }
        Err(e) => world
            .net
            .log(format!("{who}: available of {resource} failed: {e}")),
    }
}
