//! The sharded run's clients: the first ones (maybe racing for the first topology), clients
//! with a stale view, clients built mid-run, and their tasks.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redquorum::{ShardedGuard, ShardedRedlock};
use tokio::time::Instant;

use crate::history::{Holding, Kind};

use super::World;

/// The first clients: one after another with the first groups, or (racing bootstrap) all at
/// the same moment, every other one with one group more. Every client built must route by the
/// same first topology (each adopts the stored one or gets a typed error).
pub(crate) async fn first_clients(
    world: &World,
    first: &[(usize, u32)],
    rng: &mut StdRng,
) -> Vec<ShardedRedlock> {
    let plan = &world.plan;
    let lists: Vec<Vec<(usize, u32)>> = (0..plan.clients)
        .map(|c| {
            let mut groups = first.to_vec();
            if plan.racing_bootstrap && c % 2 == 1 {
                groups.push((plan.groups, rng.random_range(1..=2)));
            }
            groups
        })
        .collect();
    let built: Vec<_> = if plan.racing_bootstrap {
        futures::future::join_all(lists.iter().map(|g| world.first_client(g))).await
    } else {
        let mut built = Vec::new();
        for g in &lists {
            built.push(world.first_client(g).await);
        }
        built
    };
    let mut clients = Vec::new();
    for (c, result) in built.into_iter().enumerate() {
        match result {
            Ok(client) => clients.push(client),
            Err(e) => world.net.log(format!("client {c} could not be built: {e}")),
        }
    }
    if plan.racing_bootstrap {
        world.side.event("racing first topologies");
    }
    let routes: Vec<_> = clients.iter().map(|c| (c.epoch(), c.groups())).collect();
    if routes.windows(2).any(|w| w[0] != w[1]) {
        world.history.violation(format!(
            "the first clients route by different topologies: {routes:?}"
        ));
    }
    clients
}

/// One task: a client, its name, its random stream, and whether its holdings are covered.
pub(crate) type Task = (World, ShardedRedlock, String, StdRng);

/// `ops` sharded operations on `prefix`-named resources.
pub(crate) async fn run(task: Task, ops: usize, prefix: &'static str, quiet: bool) {
    run_covered(task, ops, prefix, quiet, false).await;
}

/// A client built at the start that stays idle while the groups change, then works.
pub(crate) async fn stale(task: Task, ops: usize) {
    let wait = task.0.plan.max_ttl * (2 * task.0.plan.changes as u32 + 1);
    let mut rng = StdRng::seed_from_u64(task.3.clone().random());
    tokio::time::sleep(wait.mul_f64(rng.random_range(0.8..1.5))).await;
    task.0
        .net
        .log(format!("{}: wakes at epoch {}", task.2, task.1.epoch()));
    task.0.side.event("stale client woke");
    run(task, ops, "r", false).await;
}

/// A client built at a random moment of the fault phase with the first group list: it adopts
/// what the masters store (or gets a typed error), works a little, and is dropped.
pub(crate) async fn late(world: World, who: String, mut rng: StdRng, first: Vec<(usize, u32)>) {
    tokio::time::sleep(Duration::from_millis(rng.random_range(0..2_500))).await;
    let built = Instant::now();
    let client = match world.client(&first).await {
        Ok(client) => client,
        Err(e) => {
            world.net.log(format!("{who}: could not be built: {e}"));
            return;
        }
    };
    world.side.event("late client built");
    world.net.log(format!(
        "{who}: built, routes by epoch {} {:?}",
        client.epoch(),
        client.groups()
    ));
    // A takeover shortly before: the newcomer's quarantine can only go by its uptime.
    let after_takeover = world
        .last_takeover
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .is_some_and(|at| built.duration_since(at) < world.plan.max_ttl * 3);
    if after_takeover {
        world
            .net
            .log(format!("{who}: built right after a takeover (not covered)"));
    }
    let ops = rng.random_range(1..=4);
    run_covered((world, client, who, rng), ops, "r", false, after_takeover).await;
}

async fn run_covered(task: Task, ops: usize, prefix: &'static str, quiet: bool, uncovered: bool) {
    let (world, client, who, mut rng) = task;
    let max_ttl = world.plan.max_ttl;
    for _ in 0..ops {
        let pick =
            |rng: &mut StdRng| format!("{prefix}{}", rng.random_range(0..world.plan.resources));
        let mut names = vec![pick(&mut rng)];
        if rng.random_bool(0.35) {
            names.push(pick(&mut rng));
        }
        // Now and then a short TTL: a lock over two groups must not come back expired.
        // (A group refuses a TTL under ten per-master timeouts.)
        let ms = max_ttl.as_millis() as u64;
        let least = world.plan.master_timeout.as_millis() as u64 * 10;
        let ttl = Duration::from_millis(if rng.random_bool(0.2) {
            rng.random_range(least..=least + 100)
        } else {
            rng.random_range(least.max(100)..=ms)
        });
        let wait = Duration::from_millis(rng.random_range(0..400));
        let started = Instant::now();
        let attempt = match rng.random_range(0..10) {
            0..=5 => client
                .acquire_many(&names, redquorum::LockOptions::new(ttl).wait(wait))
                .await
                .map(Some),
            6..=7 => client.try_acquire_many(&names, ttl).await,
            8 => {
                let work =
                    Duration::from_millis(rng.random_range(0..=(ttl.as_millis() as u64) * 4));
                let args = (&world, &client, who.as_str(), names[0].as_str());
                with_lock(args, ttl, uncovered, work).await;
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..30))).await;
                continue;
            }
            _ => {
                // Cancelled part-way: what was taken must be given back.
                let cut = Duration::from_micros(rng.random_range(0..3_000));
                let acquire =
                    client.acquire_many(&names, redquorum::LockOptions::new(ttl).wait(wait));
                match tokio::time::timeout(cut, acquire).await {
                    Ok(result) => result.map(Some),
                    Err(_) => {
                        world
                            .net
                            .log(format!("{who}: acquire of {names:?} cancelled"));
                        continue;
                    }
                }
            }
        };
        match attempt {
            Ok(Some(guard)) => {
                let args = (&world, who.as_str(), &mut rng, ttl, started);
                hold(args, guard, quiet, uncovered).await;
            }
            Ok(None) => {
                world.history.refused(false);
                world.net.log(format!("{who}: {names:?} held elsewhere"));
            }
            Err(e) => {
                world.history.refused(!e.is_contended());
                world.net.log(format!("{who}: {names:?} not acquired: {e}"));
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..30))).await;
    }
}

/// Records a holding of every resource of `guard`; returns their indexes.
pub(crate) fn record(
    world: &World,
    who: &str,
    guard: &ShardedGuard,
    started: Instant,
    uncovered: bool,
) -> Vec<usize> {
    let acquired = Instant::now();
    let groups: Vec<String> = guard.groups().into_iter().map(str::to_owned).collect();
    if groups.len() > 1 {
        world.side.event("hold over two groups");
    }
    world.net.log(format!(
        "{who}: holds {guard:?} until +{:?}",
        guard.remaining()
    ));
    guard
        .resource()
        .split(", ")
        .map(|name| {
            let index = world.history.hold(Holding {
                who: who.to_owned(),
                resource: name.to_owned(),
                kind: Kind::Mutex,
                started,
                acquired,
                valid_until: guard.valid_until(),
                released: None,
                token: guard.fencing_token_of(name),
                uncovered,
            });
            world.side.held(index, groups.clone(), guard.epoch());
            index
        })
        .collect()
}

type HoldArgs<'a> = (&'a World, &'a str, &'a mut StdRng, Duration, Instant);

/// Holds a sharded lock for a while (sometimes past its validity), maybe extends it, releases.
async fn hold(args: HoldArgs<'_>, mut guard: ShardedGuard, quiet: bool, uncovered: bool) {
    let (world, who, rng, ttl, started) = args;
    let index = record(world, who, &guard, started, uncovered);
    let remaining = guard.remaining();
    let nap = if quiet {
        Duration::from_micros(rng.random_range(0..500))
    } else {
        match rng.random_range(0..10) {
            0 => remaining + Duration::from_millis(50),
            1..=4 => Duration::from_micros(rng.random_range(0..500)),
            _ => remaining.mul_f64(rng.random_range(0.0..0.6)),
        }
    };
    let nap = nap + world.stalls.draw("holder.work", "").unwrap_or_default();
    tokio::time::sleep(nap).await;
    // Sometimes extended, up to four times in a row: a hold kept across a group change.
    let mut extends = 0;
    while guard.is_valid() && extends < 4 && rng.random_bool(if extends == 0 { 0.35 } else { 0.6 })
    {
        extends += 1;
        match guard.extend(ttl).await {
            Ok(()) => {
                for &i in &index {
                    world.history.extended(i, guard.valid_until());
                }
                world
                    .net
                    .log(format!("{who}: extended to +{:?}", guard.remaining()));
            }
            Err(e) => {
                world.side.event("extend refused or failed");
                world.net.log(format!("{who}: extend failed: {e}"));
                break;
            }
        }
        let nap = guard.remaining().mul_f64(rng.random_range(0.2..0.7));
        tokio::time::sleep(nap).await;
    }
    release_recorded(world, who, guard, &index).await;
}

/// Releases `guard` and ends its recorded holds (`index`, from [`record`]) at the moment the
/// release began: from then on another may be granted.
pub(crate) async fn release_recorded(
    world: &World,
    who: &str,
    guard: ShardedGuard,
    index: &[usize],
) {
    let at = Instant::now();
    let result = guard.release().await;
    for &i in index {
        world.history.released(i, at);
    }
    if let Err(e) = result {
        world.net.log(format!("{who}: release failed: {e}"));
    }
}

/// `ShardedRedlock::with_lock` (the core's lease): the holding follows the validity the
/// context reports; `lost` must fire by the deadline and the validity must never pass the
/// extension cap.
pub(crate) async fn with_lock(
    (world, client, who, resource): (&World, &ShardedRedlock, &str, &str),
    ttl: Duration,
    uncovered: bool,
    work: Duration,
) {
    let started = Instant::now();
    let (groups, epoch) = (client.placement(resource), client.epoch());
    let mut options = redquorum::LockOptions::new(ttl);
    if let Some(cap) = world.plan.max_lease {
        options = options.max_lease(cap);
    }
    let result = client
        .with_lock(resource, options, |ctx| async move {
            let acquired = Instant::now();
            let mut valid_until = ctx.valid_until();
            let index = world.history.hold(Holding {
                who: who.to_owned(),
                resource: resource.to_owned(),
                kind: Kind::Mutex,
                started,
                acquired,
                valid_until,
                released: None,
                token: ctx.fencing_token(),
                uncovered,
            });
            world.side.held(index, groups, epoch);
            world.net.log(format!(
                "{who}: holds {resource} under the lease, token {:?} until +{:?}, working {work:?}",
                ctx.fencing_token(),
                ctx.remaining()
            ));
            let until = acquired + work;
            let step = (ttl / 10).max(Duration::from_millis(1));
            loop {
                let now = Instant::now();
                if now >= until {
                    world.history.released(index, now);
                    return;
                }
                tokio::select! {
                    biased;
                    _ = ctx.lost() => {
                        let at = Instant::now();
                        world.history.lost_signalled(who, None, ctx.valid_until(), at);
                        world.history.released(index, at);
                        world.net.log(format!("{who}: lost {resource} under the lease"));
                        world.side.event("lease lost");
                        return;
                    }
                    _ = tokio::time::sleep(step.min(until - now)) => {}
                }
                let now = Instant::now();
                if ctx.valid_until() > valid_until && ctx.valid_until() > now {
                    valid_until = ctx.valid_until();
                    world.history.extended(index, valid_until);
                    if let Some(cap) = world.plan.max_lease
                        && valid_until > acquired + cap + Duration::from_millis(1)
                    {
                        world.history.violation(format!(
                            "{who}: {resource} kept by the lease until +{:?} after its grant, \
                             past the extension cap {cap:?}",
                            valid_until - acquired
                        ));
                    }
                }
            }
        })
        .await;
    match result {
        Ok(()) => {}
        Err(e) if e.is_lost() => world.net.log(format!("{who}: with_lock: {e}")),
        Err(e) => {
            world.history.refused(!e.is_contended());
            world.net.log(format!("{who}: with_lock not acquired: {e}"));
        }
    }
}
