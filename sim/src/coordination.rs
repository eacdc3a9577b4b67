//! The workload's election and lock-delay operations.
//!
//! - **Election**: a candidate campaigns (with a wait), leads for a while under the lease
//!   watchdog (following its extensions, stopping when `lost` fires), then resigns or drops the
//!   leadership. Each leadership is recorded as a mutex holding of `elect:<name>` with its term
//!   as the token: the checker's overlap and token checks then say "one leader at a time" and
//!   "terms strictly increase". A `leader()` read while leading must not name another leader.
//! - **Lock-delay**: a basic lock taken with a lock-delay is released, or abandoned (forgotten:
//!   no release, no extension, as a crashed holder). An abandoned one is recorded as held until
//!   its validity plus the delay, so any grant of the same resource (basic, multi, with_lock,
//!   other delayed locks: the resource names are shared) inside the delay is an overlap.

use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;
use redquorum::{LockOptions, Redlock};
use tokio::time::Instant;

use crate::history::{Holding, Kind};
use crate::run::World;

/// One election operation of task `who`.
pub(crate) async fn election(
    world: &World,
    client: &Redlock,
    who: &str,
    rng: &mut StdRng,
    name: String,
) {
    let ttl = world.plan.ttl;
    let election = client.election(name.as_str());
    let wait = Duration::from_millis(rng.random_range(0..400));
    let started = Instant::now();
    let leadership = match election
        .campaign(who, LockOptions::new(ttl).wait(wait))
        .await
    {
        Ok(l) => l,
        Err(e) => {
            world.net.log(format!("{who}: campaign for {name}: {e}"));
            world.history.refused(!e.is_contended());
            return;
        }
    };
    let acquired = Instant::now();
    let mut valid_until = acquired + leadership.remaining();
    let uncovered = world.uncovered.load(std::sync::atomic::Ordering::Relaxed);
    let index = world.history.hold(Holding {
        who: who.to_owned(),
        resource: format!("elect:{name}"),
        kind: Kind::Mutex,
        started,
        acquired,
        valid_until,
        released: None,
        token: Some(leadership.term()),
        uncovered,
    });
    world.net.log(format!(
        "{who}: leads {name} in term {} until +{:?}",
        leadership.term(),
        leadership.remaining()
    ));
    if rng.random_bool(0.3)
        && !uncovered
        && let Ok(Some(read)) = election.leader().await
        && !world.uncovered.load(std::sync::atomic::Ordering::Relaxed)
        && leadership.is_valid()
        && read.term > leadership.term()
    {
        world.history.violation(format!(
            "{who}: leader() shows term {} while {who} leads {name} in term {}",
            read.term,
            leadership.term()
        ));
    }
    let work = ttl.mul_f64(rng.random_range(0.0..2.5));
    let until = acquired + work;
    let step = (ttl / 10).max(Duration::from_millis(1));
    loop {
        let now = Instant::now();
        if now >= until {
            break;
        }
        tokio::select! {
            biased;
            _ = leadership.lost() => {
                world.net.log(format!("{who}: lost leadership of {name}"));
                break;
            }
            _ = tokio::time::sleep(step.min(until - now)) => {}
        }
        let remaining = leadership.remaining();
        if !remaining.is_zero() && Instant::now() + remaining > valid_until {
            valid_until = Instant::now() + remaining;
            world.history.extended(index, valid_until);
        }
    }
    world.history.released(index, Instant::now());
    if rng.random_bool(0.7) {
        match leadership.resign().await {
            Ok(r) => world.net.log(format!("{who}: resigned {name}: {r}")),
            Err(e) => world
                .net
                .log(format!("{who}: resign of {name} failed: {e}")),
        }
    } else {
        drop(leadership);
    }
}

/// One lock-delay operation of task `who` on the basic lock's `resource`.
pub(crate) async fn lock_delay(
    world: &World,
    client: &Redlock,
    who: &str,
    rng: &mut StdRng,
    resource: String,
    quiet: bool,
) {
    let ttl = world.plan.ttl;
    let delay = ttl.mul_f64(rng.random_range(0.2..1.5));
    let options = LockOptions::new(ttl)
        .lock_delay(delay)
        .wait(Duration::from_millis(rng.random_range(0..400)));
    let started = Instant::now();
    let guard = match client.acquire(&resource, &options).await {
        Ok(g) => g,
        Err(e) => {
            world
                .net
                .log(format!("{who}: delayed {resource} not acquired: {e}"));
            world.history.refused(!e.is_contended());
            return;
        }
    };
    let uncovered = world.uncovered.load(std::sync::atomic::Ordering::Relaxed);
    // Not in the quiet phase, whose keys must all be gone at the end.
    let abandon = !quiet && rng.random_bool(0.5);
    // Abandoned: nobody may hold it until the key's expiry, which is later than the client's
    // validity plus the delay (validity counts from before the round, minus drift).
    let valid_until = if abandon {
        guard.valid_until() + delay
    } else {
        guard.valid_until()
    };
    let index = world.history.hold(Holding {
        who: who.to_owned(),
        resource: resource.clone(),
        kind: Kind::Mutex,
        started,
        acquired: Instant::now(),
        valid_until,
        released: None,
        token: guard.fencing_token(),
        uncovered,
    });
    world.net.log(format!(
        "{who}: holds {resource} with lock-delay {delay:?} until +{:?}, abandon: {abandon}",
        guard.remaining()
    ));
    let nap = guard.remaining().mul_f64(rng.random_range(0.0..0.8));
    tokio::time::sleep(nap).await;
    if abandon {
        // A crashed holder: nothing is sent, the keys stay for ttl + delay.
        std::mem::forget(guard);
        return;
    }
    world.history.released(index, Instant::now());
    if let Err(e) = guard.release().await {
        world
            .net
            .log(format!("{who}: release of delayed {resource} failed: {e}"));
    }
}
