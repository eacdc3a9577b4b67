//! Scenarios: schedules that random draws rarely produce, each one the schedule a real-master
//! test of `tests/sharded.rs` was written for, run after the fault phase (every fault healed,
//! the topology final) on fresh resource names, with the run's checks:
//!
//! 1. **A hold kept across a change**: holders keep resources under `with_lock` for several
//!    max TTLs while a group is added or replaced, and a client takes the same resources again
//!    and again. Their extends must be refused once the joint spec is stored (the lease then
//!    reports the lock lost by its deadline); a hold that kept extending would still be valid
//!    when the resource is granted on its new group.
//! 2. **Restarts without data one after another, then a stale view** (issue 18's second
//!    example): a client built at the start stays idle; a group of its view is removed; most of
//!    that group's masters restart without data one after another (no restart quarantine: the
//!    sealed topology covers restarts with or without it); the stale client then takes the
//!    resources its view places on that group while a current client takes them on their new
//!    groups. The restarted masters must not vote until sealed from the third one.
//! 3. **A change cut while storing its joint spec**: a partition of most of one group, timed to
//!    the change's first topology write and shorter than a per-master timeout, leaves the joint
//!    spec on a minority of that group (the change fails). A client built just before takes
//!    the resources its view places on that group; the next change resumes the interrupted one,
//!    which must store the joint spec again before its wait; once the final spec is stored, a
//!    current client takes the same resources.
//! 4. **Primitives through `group_for`** (item 7): a client that only uses the reentrant lock
//!    through `group_for` (never refused, so never reloading) and the administrator's client do
//!    the same across a change that moves resources. `group_for` must refuse
//!    (`Error::NotEpochChecked`) or the primitives must be epoch-checked: two owners of one
//!    reentrant lock are two holders.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redquorum::{Error, ShardedRedlock};
use tokio::time::Instant;

use crate::history::{Holding, Kind};
use crate::net::Cut;

use super::check::Side;
use super::workload::{self, record};
use super::{GROUP, World, faults, name, slot_of};

/// Scenarios drawn (plan field `scenario`; 0: none).
pub const SCENARIOS: usize = 4;

/// Names the scenarios contend for (apart from the workload's, so that no earlier holding
/// counts).
const NAMES: usize = 12;

fn names(prefix: &str) -> Vec<String> {
    (0..NAMES).map(|i| format!("{prefix}{i}")).collect()
}

/// The groups `client` routes by, as (slot, weight).
fn current(client: &ShardedRedlock) -> Vec<(usize, u32)> {
    client
        .groups()
        .into_iter()
        .filter_map(|(n, w)| Some((slot_of(&n)?, w)))
        .collect()
}

fn spec(world: &World, groups: &[(usize, u32)]) -> Vec<(String, u32, redquorum::Builder)> {
    groups
        .iter()
        .map(|&(slot, weight)| (name(slot), weight, world.group(slot)))
        .collect()
}

/// Runs the plan's scenario (if any). `admin` routes by the final topology; `idle` is the
/// client built at the start and idle since (scenario 2).
pub(crate) async fn run(
    world: &World,
    seed: u64,
    admin: &ShardedRedlock,
    idle: Option<ShardedRedlock>,
) {
    let rng = StdRng::seed_from_u64(seed ^ 0x5ce7_a410);
    match world.plan.scenario {
        1 => hold_across_change(world, admin, rng).await,
        2 => restarts_then_stale(world, admin, idle, rng).await,
        3 => cut_while_storing(world, admin, rng).await,
        4 => primitives_through_group_for(world, admin, rng).await,
        _ => {}
    }
}

/// A change that moves resources: a group added if a slot is free, else one replaced by a
/// free slot's masters, else one removed.
fn moving_change(world: &World, groups: &[(usize, u32)], rng: &mut StdRng) -> Vec<(usize, u32)> {
    let mut groups = groups.to_vec();
    let free: Vec<usize> = (0..world.plan.slots)
        .filter(|s| !groups.iter().any(|(g, _)| g == s))
        .collect();
    if !free.is_empty() && rng.random_bool(0.7) {
        groups.push((free[rng.random_range(0..free.len())], 1));
    } else if !free.is_empty() {
        let g = rng.random_range(0..groups.len());
        groups[g].0 = free[rng.random_range(0..free.len())];
    } else if groups.len() >= 2 {
        groups.remove(rng.random_range(0..groups.len()));
    }
    groups
}

async fn change(world: &World, admin: &ShardedRedlock, groups: &[(usize, u32)], who: &str) -> bool {
    world.net.log(format!("{who}: change to {groups:?}"));
    match admin.change_groups(spec(world, groups)).await {
        Ok(report) => {
            world.net.log(format!("{who}: change done: {report:?}"));
            true
        }
        Err(e) => {
            world.net.log(format!("{who}: change failed: {e}"));
            false
        }
    }
}

/// A TTL for a scenario lock: from ten per-master timeouts (a group's floor) to the max TTL.
fn ttl(world: &World, rng: &mut StdRng) -> Duration {
    let least = (world.plan.master_timeout * 10).max(Duration::from_millis(100));
    let most = world.plan.max_ttl.max(least);
    Duration::from_millis(rng.random_range(least.as_millis() as u64..=most.as_millis() as u64))
}

/// Takes `names` (all at once, or `single`: one of them at a time; one try each time) again
/// and again until `until`, holding each grant for part of its validity.
async fn poll(
    world: &World,
    client: &ShardedRedlock,
    who: &str,
    (names, single): (&[String], bool),
    until: Instant,
    mut rng: StdRng,
) {
    if names.is_empty() {
        return;
    }
    while Instant::now() < until {
        let ttl = ttl(world, &mut rng);
        let started = Instant::now();
        // One name at a time: a lock on all of them would be refused as a whole while any one
        // is held elsewhere (a name that did not move, still held on its group).
        let names = if single {
            vec![names[rng.random_range(0..names.len())].clone()]
        } else {
            names.to_vec()
        };
        match client.try_acquire_many(&names, ttl).await {
            Ok(Some(guard)) => {
                let index = record(world, who, &guard, started, false);
                let nap = guard.remaining().mul_f64(rng.random_range(0.3..0.9));
                tokio::time::sleep(nap).await;
                super::workload::release_recorded(world, who, guard, &index).await;
            }
            Ok(None) => world.history.refused(false),
            Err(e) => {
                world.history.refused(!e.is_contended());
                world.net.log(format!("{who}: {names:?} not acquired: {e}"));
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(1..15))).await;
    }
}

/// The names of `all` that `client` places on group slot `slot` alone.
fn placed_on(client: &ShardedRedlock, all: &[String], slot: usize) -> Vec<String> {
    all.iter()
        .filter(|r| client.placement(r) == [name(slot)])
        .cloned()
        .collect()
}

/// Scenario 1: holders keep resources under the lease across a change that moves some.
async fn hold_across_change(world: &World, admin: &ShardedRedlock, mut rng: StdRng) {
    world.side.event("scenario: a hold kept across a change");
    let first: Vec<(usize, u32)> = current(admin);
    let holder = match world.client(&first).await {
        Ok(c) => c,
        Err(e) => return world.net.log(format!("scenario 1: holder not built: {e}")),
    };
    let max_ttl = world.plan.max_ttl;
    let all = names("s");
    let held: Vec<String> = all[..3].to_vec();
    let mut tasks = Vec::new();
    for (h, r) in held.iter().enumerate() {
        let (world, holder, r) = (world.clone(), holder.clone(), r.clone());
        let mut rng = StdRng::seed_from_u64(rng.random());
        tasks.push(tokio::spawn(async move {
            let ttl = ttl(&world, &mut rng);
            let work = max_ttl.mul_f64(rng.random_range(3.0..5.0));
            let who = format!("long{h}");
            let args = (&world, &holder, who.as_str(), r.as_str());
            workload::with_lock(args, ttl, false, work).await;
        }));
    }
    let until = Instant::now() + max_ttl * 6;
    let poller = {
        let (world, admin, held) = (world.clone(), admin.clone(), held.clone());
        let rng = StdRng::seed_from_u64(rng.random());
        tokio::spawn(async move {
            let mut rng = rng;
            while Instant::now() < until {
                let r = held[rng.random_range(0..held.len())].clone();
                let next = StdRng::seed_from_u64(rng.random());
                let soon = Instant::now() + max_ttl / 4;
                poll(
                    &world,
                    &admin,
                    "poller",
                    (&[r], false),
                    soon.min(until),
                    next,
                )
                .await;
            }
        })
    };
    tokio::time::sleep(max_ttl.mul_f64(rng.random_range(0.2..0.6))).await;
    let target = moving_change(world, &first, &mut rng);
    change(world, admin, &target, "scenario 1").await;
    for t in tasks.into_iter().chain([poller]) {
        if let Err(e) = t.await {
            world
                .history
                .violation(format!("a scenario task panicked: {e}"));
        }
    }
}

/// Scenario 2: a group of the idle client's view removed, most of its masters restarted
/// without data one after another, then the idle client works on what its view places there.
async fn restarts_then_stale(
    world: &World,
    admin: &ShardedRedlock,
    idle: Option<ShardedRedlock>,
    mut rng: StdRng,
) {
    let Some(stale) = idle else {
        return world.net.log("scenario 2: no idle client");
    };
    let mut now = current(admin);
    let old: Vec<(usize, u32)> = current(&stale);
    let gone = old[rng.random_range(0..old.len())].0;
    // The group to remove must be there with another one: added back (same name, same
    // masters) first if needed.
    if now.len() < 2 || !now.iter().any(|&(s, _)| s == gone) {
        if !now.iter().any(|&(s, _)| s == gone) {
            now.push((gone, 1));
        }
        if now.len() < 2 {
            let other = (0..world.plan.slots).find(|&s| s != gone).unwrap_or(0);
            now.push((other, 1));
        }
        if !change(world, admin, &now, "scenario 2 (first)").await {
            return;
        }
    }
    let target: Vec<(usize, u32)> = now.iter().copied().filter(|&(s, _)| s != gone).collect();
    if !change(world, admin, &target, "scenario 2").await {
        return;
    }
    world
        .side
        .event("scenario: restarts one after another, then a stale view");
    // Most of the removed group, one after another (not at once), each some time after the
    // previous one.
    let masters: Vec<usize> = world.masters(gone).collect();
    let first = rng.random_range(0..GROUP);
    for k in 0..GROUP / 2 + 1 {
        let m = masters[(first + k) % GROUP];
        faults::lose_data(world, &[m], "fault: a restart without data (scenario 2)");
        tokio::time::sleep(Duration::from_millis(rng.random_range(5..300))).await;
    }
    let all = names("t");
    let targets = placed_on(&stale, &all, gone);
    world.net.log(format!(
        "scenario 2: stale client (epoch {}) wakes on {targets:?} of g{gone}",
        stale.epoch()
    ));
    let until = Instant::now() + world.plan.max_ttl * 3;
    let current_poll = {
        let (world, admin, targets) = (world.clone(), admin.clone(), targets.clone());
        let rng = StdRng::seed_from_u64(rng.random());
        tokio::spawn(
            async move { poll(&world, &admin, "current", (&targets, true), until, rng).await },
        )
    };
    let rng2 = StdRng::seed_from_u64(rng.random());
    poll(world, &stale, "stale", (&targets, false), until, rng2).await;
    if let Err(e) = current_poll.await {
        world
            .history
            .violation(format!("a scenario task panicked: {e}"));
    }
}

/// Scenario 3: a change cut while storing its joint spec (most of one group partitioned for
/// less than a per-master timeout, timed to the first topology write), then resumed.
async fn cut_while_storing(world: &World, admin: &ShardedRedlock, mut rng: StdRng) {
    let now = current(admin);
    let free: Vec<usize> = (0..world.plan.slots)
        .filter(|s| !now.iter().any(|(g, _)| g == s))
        .collect();
    if free.is_empty() || admin.is_joint() {
        return world.net.log("scenario 3: no free slot");
    }
    let mut target = now.clone();
    target.push((free[rng.random_range(0..free.len())], 1));
    let cut = now[rng.random_range(0..now.len())].0;
    // Built now, at the final topology; it works only on what its view places on `cut`.
    let fresh = match world.client(&now).await {
        Ok(c) => c,
        Err(e) => return world.net.log(format!("scenario 3: client not built: {e}")),
    };
    let targets = placed_on(&fresh, &names("u"), cut);
    if targets.is_empty() {
        return world
            .net
            .log("scenario 3: no resource on the partitioned group");
    }
    let blip = world.plan.master_timeout / 2;
    let fired = Arc::new(AtomicBool::new(false));
    let trap_masters: Vec<usize> = world.masters(cut).collect();
    let quorum = GROUP / 2 + 1;
    {
        let (net, fired) = (world.net.clone(), fired.clone());
        world
            .net
            .set_trap(Some(Arc::new(move |m: usize, args: &[Vec<u8>]| {
                // EVALSHA sha 2 <topology hash> <change lock> epoch spec digest token
                let write = args.len() == 9
                    && args[2] == b"2"
                    && args[3].ends_with(b"topology:state")
                    && args[4].ends_with(b"topology:change");
                let Some(start) = trap_masters.iter().position(|&x| x == m) else {
                    return;
                };
                if !write || fired.swap(true, Ordering::Relaxed) {
                    return;
                }
                // Most of the group, from the master this write reaches first.
                let most: Vec<usize> = (0..quorum)
                    .map(|k| trap_masters[(start + k) % GROUP])
                    .collect();
                net.log(format!(
                    "scenario 3: the change's first topology write to g{cut} reached {m}: most of \
                 the group partitioned for {blip:?}: {most:?}"
                ));
                for &x in &most {
                    net.cut(x, Some(Cut::BlackHole));
                }
                let net = net.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(blip).await;
                    for x in most {
                        net.cut(x, None);
                    }
                });
            })));
    }
    let interrupted = !change(world, admin, &target, "scenario 3").await;
    world.net.set_trap(None);
    if !fired.load(Ordering::Relaxed) {
        return world.net.log("scenario 3: no topology write was trapped");
    }
    world.side.event(if interrupted {
        "scenario: a change cut while storing its joint spec"
    } else {
        "scenario: a change partitioned while storing, done anyway"
    });
    let max_ttl = world.plan.max_ttl;
    // The interrupted joint spec's epoch (the newest any master saw): the final one is above.
    let joint = Side::newest_epoch(world);
    // The fresh client works on its group's resources from now until well after the final
    // spec is stored; the administrator's client takes them once it routes by that final.
    let done = Arc::new(AtomicBool::new(false));
    let worker = {
        let (world, fresh, targets, done) =
            (world.clone(), fresh.clone(), targets.clone(), done.clone());
        let mut rng = StdRng::seed_from_u64(rng.random());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                let next = StdRng::seed_from_u64(rng.random());
                let soon = Instant::now() + max_ttl;
                poll(&world, &fresh, "fresh", (&targets, false), soon, next).await;
            }
        })
    };
    let watcher = {
        let (world, admin, targets) = (world.clone(), admin.clone(), targets.clone());
        let rng = StdRng::seed_from_u64(rng.random());
        tokio::spawn(async move {
            let give_up = Instant::now() + max_ttl * 6 + Duration::from_secs(15);
            while Instant::now() < give_up && Side::newest_spec_epoch(&world) <= joint {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            world.net.log(format!(
                "scenario 3: a spec above epoch {joint} is stored; the administrator's client \
                 takes {targets:?}"
            ));
            let until = Instant::now() + max_ttl * 2;
            poll(&world, &admin, "current", (&targets, true), until, rng).await;
        })
    };
    tokio::time::sleep(max_ttl.mul_f64(rng.random_range(0.1..1.0))).await;
    // Resumed by the next change (to the same groups); a partition's change lock may have to
    // run out first.
    for _ in 0..3 {
        if change(world, admin, &target, "scenario 3 (resume)").await {
            break;
        }
        tokio::time::sleep(max_ttl * 3 + Duration::from_secs(10)).await;
    }
    if let Err(e) = watcher.await {
        world
            .history
            .violation(format!("a scenario task panicked: {e}"));
    }
    done.store(true, Ordering::Relaxed);
    if let Err(e) = worker.await {
        world
            .history
            .violation(format!("a scenario task panicked: {e}"));
    }
}

/// Scenario 4: reentrant locks through `group_for` from a client that never reloads and from
/// the administrator's, across a change.
async fn primitives_through_group_for(world: &World, admin: &ShardedRedlock, mut rng: StdRng) {
    world.side.event("scenario: primitives through group_for");
    let now = current(admin);
    let user = match world.client(&now).await {
        Ok(c) => c,
        Err(e) => return world.net.log(format!("scenario 4: client not built: {e}")),
    };
    let max_ttl = world.plan.max_ttl;
    let until = Instant::now() + max_ttl * 4;
    let mut tasks = Vec::new();
    for (who, client) in [("prim.user", user), ("prim.admin", admin.clone())] {
        let world = world.clone();
        let mut rng = StdRng::seed_from_u64(rng.random());
        tasks.push(tokio::spawn(async move {
            let all = names("p");
            while Instant::now() < until {
                let r = all[rng.random_range(0..4)].clone();
                let group = match client.group_for(&r) {
                    Ok(group) => group,
                    Err(Error::NotEpochChecked { .. }) => {
                        world.side.event("group_for refused (not epoch-checked)");
                        return;
                    }
                    Err(e) => {
                        world.history.violation(format!(
                            "{who}: group_for({r}) failed with {e}, not NotEpochChecked"
                        ));
                        return;
                    }
                };
                let owner = client.owner(&r);
                let ttl = ttl(&world, &mut rng);
                let started = Instant::now();
                let lock = group.reentrant(who);
                match lock.try_acquire(&r, ttl).await {
                    Ok(Some(mut guard)) => {
                        let index = world.history.hold(Holding {
                            who: who.to_owned(),
                            resource: format!("reentrant:{r}"),
                            kind: Kind::Reentrant {
                                owner: who.to_owned(),
                            },
                            started,
                            acquired: Instant::now(),
                            valid_until: guard.valid_until(),
                            released: None,
                            token: None,
                            uncovered: false,
                        });
                        world.side.held(index, vec![owner], client.epoch());
                        world
                            .net
                            .log(format!("{who}: holds reentrant {r} on its owner group"));
                        for _ in 0..rng.random_range(0..3) {
                            let nap = guard.remaining().mul_f64(rng.random_range(0.3..0.7));
                            tokio::time::sleep(nap).await;
                            if guard.extend(ttl).await.is_ok() {
                                world.history.extended(index, guard.valid_until());
                            } else {
                                break;
                            }
                        }
                        let nap = guard.remaining().mul_f64(rng.random_range(0.3..0.9));
                        tokio::time::sleep(nap).await;
                        let at = Instant::now();
                        let _ = guard.release().await;
                        world.history.released(index, at);
                    }
                    Ok(None) => world.history.refused(false),
                    Err(e) => world.history.refused(!e.is_contended()),
                }
                tokio::time::sleep(Duration::from_millis(rng.random_range(1..15))).await;
            }
        }));
    }
    tokio::time::sleep(max_ttl.mul_f64(rng.random_range(0.2..0.6))).await;
    let target = moving_change(world, &now, &mut rng);
    change(world, admin, &target, "scenario 4").await;
    for t in tasks {
        if let Err(e) = t.await {
            world
                .history
                .violation(format!("a scenario task panicked: {e}"));
        }
    }
}
