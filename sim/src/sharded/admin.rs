//! The administrators: group changes drawn per seed (adds, removes, re-weights, a group's
//! masters replaced under a new name, and under the same name, which must be refused), some
//! cut part-way (the future dropped: an interrupted change), and a second administrator at the
//! same time as the first when the plan says so.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redquorum::{Error, ShardedRedlock};
use tokio::task::JoinHandle;

use super::{World, name, slot_of};

/// Starts the plan's administrators: the first changes the groups through `clients[0]`, a
/// second (if any) through a client of its own, built now.
pub(crate) async fn spawn(
    world: &World,
    seed: u64,
    clients: &[ShardedRedlock],
) -> Vec<JoinHandle<()>> {
    let mut handles = Vec::new();
    for a in 0..world.plan.admins {
        let client = if a == 0 {
            clients[0].clone()
        } else {
            let first: Vec<(usize, u32)> = (0..world.plan.groups).map(|s| (s, 1)).collect();
            match world.client(&first).await {
                Ok(c) => c,
                Err(e) => {
                    world.net.log(format!("admin{a} could not be built: {e}"));
                    continue;
                }
            }
        };
        let rng = StdRng::seed_from_u64(seed ^ ((a as u64 + 7) * 0xad31_7e55));
        handles.push(tokio::spawn(changes(
            world.clone(),
            format!("admin{a}"),
            client,
            rng,
        )));
    }
    handles
}

/// The groups `client` routes by, as (slot, weight).
fn current(client: &ShardedRedlock) -> Vec<(usize, u32)> {
    client
        .groups()
        .into_iter()
        .filter_map(|(n, w)| Some((slot_of(&n)?, w)))
        .collect()
}

async fn changes(world: World, who: String, client: ShardedRedlock, mut rng: StdRng) {
    tokio::time::sleep(Duration::from_millis(rng.random_range(0..400))).await;
    let max_ttl = world.plan.max_ttl;
    // Whether the last change finished (then nothing interrupted is pending: with one
    // administrator, the view is what the masters store, and a group of it kept under its name
    // with other masters must be refused; otherwise the name may be gone by the time the
    // change checks it, and re-adding it with other masters is a new group).
    let mut finished = true;
    for _ in 0..world.plan.changes {
        let mut groups = current(&client);
        let free: Vec<usize> = (0..world.plan.slots)
            .filter(|s| !groups.iter().any(|(g, _)| g == s))
            .collect();
        // A group kept under its name with another slot's masters: must be refused.
        let mut same_name = None;
        let what = match rng.random_range(0..5) {
            0 if !free.is_empty() => {
                groups.push((
                    free[rng.random_range(0..free.len())],
                    rng.random_range(1..=3),
                ));
                "add a group"
            }
            1 if groups.len() >= 2 => {
                groups.remove(rng.random_range(0..groups.len()));
                "remove a group"
            }
            2 => {
                let g = rng.random_range(0..groups.len());
                groups[g].1 = groups[g].1 % 3 + 1;
                "re-weight a group"
            }
            3 if !free.is_empty() => {
                let g = rng.random_range(0..groups.len());
                groups[g].0 = free[rng.random_range(0..free.len())];
                "replace a group's masters (a new name)"
            }
            4 if !free.is_empty() && finished && world.plan.admins == 1 => {
                let g = rng.random_range(0..groups.len());
                same_name = Some((g, free[rng.random_range(0..free.len())]));
                "replace a group's masters under its name"
            }
            _ => "change nothing (a joint phase all the same)",
        };
        let spec: Vec<(String, u32, redquorum::Builder)> = groups
            .iter()
            .enumerate()
            .map(|(g, &(slot, weight))| match same_name {
                Some((at, other)) if at == g => (name(slot), weight, world.group(other)),
                _ => (name(slot), weight, world.group(slot)),
            })
            .collect();
        let cut = rng
            .random_bool(0.3)
            .then(|| max_ttl.mul_f64(rng.random_range(0.0..1.5)));
        world.net.log(format!(
            "{who}: {what}: {groups:?}{}",
            cut.map(|c| format!(", cut after {c:?}"))
                .unwrap_or_default()
        ));
        world.side.admin(true, max_ttl * 2);
        let entered = tokio::time::Instant::now();
        let change = client.change_groups(spec);
        let result = match cut {
            Some(cut) => tokio::time::timeout(cut, change).await.ok(),
            None => Some(change.await),
        };
        // Not when a master lost its data meanwhile: its change-lock key went with it (the
        // lock's exclusion is the basic lock's, voided by data lost on a majority).
        let data_lost = (0..world.net.len()).any(|m| world.net.lost_data_since(m, entered));
        let concurrent = world.side.other_admin_since(entered) && !data_lost;
        world.side.admin(false, max_ttl * 2);
        finished = matches!(result, Some(Ok(_)));
        // Concurrent administrators are serialised (issue 18 item 5): a change waits for the
        // other one's change lock (or gets `Contended`) and then works from what it left; it
        // never fails because the other's topology writes got in first.
        if let Some(Err(e @ Error::StaleTopology { .. })) = &result
            && concurrent
        {
            if e.to_string().contains("TOPOLOGYBUSY") {
                // Refused by the other administrator's change lock where it lingers (its
                // change was cut and the release missed that master): serialised, not
                // interleaved; counted, as the guide's non-guarantees say.
                world
                    .history
                    .non_guarantee(crate::history::allowed::CHANGE_LOCK_LINGERS);
            } else {
                world.history.violation(format!(
                    "{who}: change_groups failed with {e} while another administrator changed \
                 the groups (concurrent administrators not serialised)"
                ));
            }
        }
        world.side.event(match (&result, same_name) {
            (None, _) => "change: cut part-way",
            (Some(Err(Error::TopologyMismatch { .. })), Some(_)) => {
                "change: same name, other masters: refused"
            }
            (Some(Err(_)), _) => "change: failed",
            (Some(Ok(_)), _) => "change: done",
        });
        match result {
            None => world.net.log(format!("{who}: change cut part-way")),
            Some(Ok(report)) => {
                world.net.log(format!("{who}: change done: {report:?}"));
                if let Some((g, other)) = same_name {
                    world.history.violation(format!(
                        "{who}: change_groups accepted group {} with the masters of slot \
                         {other} (group identity: name and masters)",
                        name(groups[g].0)
                    ));
                }
            }
            Some(Err(e)) => {
                world.net.log(format!("{who}: change failed: {e}"));
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..500))).await;
    }
}

/// After every fault is healed: an interrupted change must be finishable. Changes to the
/// current groups (which first finishes an interrupted change), up to four tries (another
/// change may have got there first, a cut change's lock may have to run out once).
pub(crate) async fn finish(world: &World, client: &ShardedRedlock) {
    let mut errors = Vec::new();
    let mut waited_out = false;
    for _ in 0..4 {
        if let Err(e) = client.reload().await {
            errors.push(format!("reload: {e}"));
            continue;
        }
        let spec: Vec<(String, u32, redquorum::Builder)> = current(client)
            .into_iter()
            .map(|(slot, weight)| (name(slot), weight, world.group(slot)))
            .collect();
        match client.change_groups(spec).await {
            Ok(report) => {
                world.net.log(format!("final change done: {report:?}"));
                return;
            }
            Err(e) => {
                world.net.log(format!("final change failed: {e}"));
                let retry = matches!(e, Error::StaleTopology { .. });
                errors.push(e.to_string());
                if matches!(e, Error::Contended { .. }) && !waited_out {
                    // A change cut part-way (its future dropped) gives its change lock back in
                    // the background, which a partition can stop: then the lock lives its TTL
                    // (two max TTLs and 10 s, src/sharded/change.rs), and changes wait it out.
                    waited_out = true;
                    world
                        .side
                        .event("final change waited out a cut change's lock");
                    tokio::time::sleep(world.plan.max_ttl * 3 + Duration::from_secs(10)).await;
                } else if !retry {
                    tokio::time::sleep(world.plan.max_ttl).await;
                }
            }
        }
    }
    world.history.violation(format!(
        "no change could be finished after every fault was healed: {errors:?}"
    ));
}
