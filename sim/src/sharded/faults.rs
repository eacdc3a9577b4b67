//! The sharded run's fault injector: the main run's faults (`run.rs`, `inject_faults`) over
//! the group slots, and faults of most of one group (at once, or one master after another).

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use crate::net::Cut;
use crate::run::sealed;

use super::check::{Side, State};
use super::{GROUP, World};

/// Injects the plan's faults, one every 10 to 400 ms.
pub(crate) async fn inject(world: World, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xfa17_5a4d);
    let quorum = GROUP / 2 + 1;
    for _ in 0..world.plan.faults {
        tokio::time::sleep(Duration::from_millis(rng.random_range(10..400))).await;
        let slot = rng.random_range(0..world.plan.slots);
        let masters: Vec<usize> = world.masters(slot).collect();
        let i = masters[rng.random_range(0..GROUP)];
        // Most of the group: `quorum` masters from `i` on, wrapping.
        let most: Vec<usize> = (0..quorum)
            .map(|k| masters[(i - masters[0] + k) % GROUP])
            .collect();
        match rng.random_range(0..15) {
            0 => pause(&world, &[i], rng.random_range(5..300)),
            1 => crash(&world, &[i], rng.random_range(5..300)),
            2 => lose_data(&world, &[i], "fault: a restart without data"),
            3 => {
                let uptime = Duration::from_secs(rng.random_range(1..100_000));
                if lose_data_allowed(&world, &[i]) {
                    let before = Before::read(&world, slot);
                    world.net.take_over(i, uptime);
                    world.side.event("fault: a takeover");
                    lost(&world, &[i], before, "a takeover");
                    *world
                        .last_takeover
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                }
            }
            4 | 5 => cut(&world, &[i], rng.random_bool(0.5), rng.random_range(5..500)),
            6 => world.net.flush_scripts(i),
            7 if world.plan.uncovered_faults => {
                let by = rng.random_range(-5_000..5_000);
                world.net.jump_clock(i, by);
                world.side.event("fault: a clock jump");
                world.side.uncovered(&world, "a master's clock jumped");
            }
            8 => lose_data(
                &world,
                &most,
                "fault: most of a group restarted without data at once",
            ),
            9 => {
                // One after another, each once the previous one's quarantine has passed.
                let gap = world.plan.max_ttl.mul_f64(2.5) + Duration::from_millis(50);
                let world = world.clone();
                tokio::spawn(async move {
                    for m in most {
                        let what = "fault: a restart without data (most of a group, one by one)";
                        lose_data(&world, &[m], what);
                        tokio::time::sleep(gap).await;
                    }
                });
            }
            10 => {
                world.side.event("fault: most of a group cut off");
                cut(
                    &world,
                    &most,
                    rng.random_bool(0.5),
                    rng.random_range(50..800),
                );
            }
            11 => {
                world.side.event("fault: most of a group paused");
                pause(&world, &most, rng.random_range(50..500));
            }
            12 => {
                world
                    .side
                    .event("fault: most of a group crashed (restarted with data)");
                crash(&world, &most, rng.random_range(50..500));
            }
            13 => {
                world
                    .side
                    .event("fault: a whole group crashed (restarted with data)");
                crash(&world, &masters, rng.random_range(50..500));
            }
            14 => {
                // Every master of the group at once: its fencing counter may go backwards
                // (README "Fencing counters"), which the checks count, not overlook.
                world
                    .side
                    .event("fault: a whole group restarted without data at once");
                let before = Before::read(&world, slot);
                for &m in &masters {
                    world.net.restart(m, false);
                }
                lost(
                    &world,
                    &masters,
                    before,
                    "a whole group restarted without data",
                );
            }
            _ => {}
        }
    }
}

fn pause(world: &World, masters: &[usize], ms: u64) {
    for &m in masters {
        world.net.pause(m);
    }
    let (net, masters) = (world.net.clone(), masters.to_vec());
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        for m in masters {
            net.resume(m);
        }
    });
}

/// Crashes `masters`, restarting them with their data `ms` later.
fn crash(world: &World, masters: &[usize], ms: u64) {
    for &m in masters {
        world.net.crash(m);
    }
    let (net, masters) = (world.net.clone(), masters.to_vec());
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        for m in masters {
            net.restart(m, true);
        }
    });
}

fn cut(world: &World, masters: &[usize], black_hole: bool, ms: u64) {
    let how = if black_hole {
        Cut::BlackHole
    } else {
        Cut::Refuse
    };
    for &m in masters {
        world.net.cut(m, Some(how));
    }
    let (net, masters) = (world.net.clone(), masters.to_vec());
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        for m in masters {
            net.cut(m, None);
        }
    });
}

/// Whether `masters` (of one group) may lose their data now: at least one master of their
/// group keeps a sealed fencing counter (if every master lost it, tokens may go backwards, a
/// documented limit the run does not draw), or the group never counted a token.
fn lose_data_allowed(world: &World, masters: &[usize]) -> bool {
    let slot = masters[0] / GROUP;
    let counted = |m: usize| {
        let key = format!("{}fence", redquorum::defaults::DEFAULT_KEY_PREFIX);
        let args = [b"HGET".to_vec(), key.into_bytes(), b"n".to_vec()];
        matches!(world.net.exec_now(m, &args), crate::value::Value::Bulk(_))
    };
    // A group that never counted a token has no counter to lose.
    !world.masters(slot).any(counted)
        || world
            .masters(slot)
            .any(|m| !masters.contains(&m) && sealed(&world.net, m))
}

/// Restarts `masters` (of one group) without their data, at once.
pub(crate) fn lose_data(world: &World, masters: &[usize], what: &'static str) {
    if !lose_data_allowed(world, masters) {
        return;
    }
    world.side.event(what);
    let before = Before::read(world, masters[0] / GROUP);
    for &m in masters {
        world.net.restart(m, false);
    }
    lost(world, masters, before, "a restart without data");
}

/// A group's topology state just before some of its masters lose their data.
pub(crate) struct Before {
    /// The newest spec epoch the group stored.
    need: u64,
    /// Each master's state.
    states: Vec<(usize, State)>,
}

impl Before {
    pub(crate) fn read(world: &World, slot: usize) -> Self {
        Self {
            need: Side::spec_epoch(world, slot),
            states: Side::states(world, slot),
        }
    }
}

/// `masters` (of one group) just lost their data (locks, fencing counter, topology); the
/// group's topology state was `before`.
pub(crate) fn lost(world: &World, masters: &[usize], before: Before, what: &str) {
    let slot = masters[0] / GROUP;
    world
        .side
        .topology_lost(world, slot, masters, &before.states, before.need);
    if !world.plan.quarantine {
        let why = format!("{what} without the restart quarantine");
        world.side.uncovered_holds(world, slot, &why);
    }
    let unsealed = world
        .masters(slot)
        .filter(|&m| !sealed(&world.net, m))
        .count();
    if unsealed > GROUP / 2 {
        world.side.fence_lost_at(world, slot);
    }
}

/// Ends every fault still in force.
pub(crate) fn heal_everything(world: &World) {
    crate::run::heal_everything(&world.net);
}
