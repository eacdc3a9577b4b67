//! Sharded locks in the simulator under the full fault model, with group changes, several
//! administrators, stale and late clients (see `sim/src/sharded/mod.rs`).
//!
//! - `cargo test --release -p redquorum-sim --test sharded`: the CI budget
//!   (`SIM_SHARDED_SEEDS`, default 1000 seeds from `SIM_FIRST`, default 0), on up to 4 threads.
//! - `SIM_SHARDED_SEED=n cargo test --release -p redquorum-sim --test sharded -- --nocapture`:
//!   replays seed `n` and prints its whole trace (with `SIM_FAULTS`, `SIM_OPS`, `SIM_LATE`,
//!   `SIM_STALE`, `SIM_CHANGES`, `SIM_ADMINS`, `SIM_TASKS`, `SIM_CLIENTS`, `SIM_SCENARIO` for a
//!   shrunk plan, or to force a scenario).
//!
//! A failing seed is shrunk and prints itself, the replay command, its violations and the
//! tail of the shrunk run's trace.

use std::collections::BTreeMap;

use redquorum_sim::sharded::{ShardedPlan, run_sharded, run_sharded_plan, shrink_sharded};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Counts by kind.
type Counts = BTreeMap<&'static str, u64>;

/// A worker's first failing seed with its report, its (acquired, refused, errors), the events
/// documented non-guarantees allowed, by kind, and the scenarios run, by kind.
type WorkerResult = (Option<(u64, String)>, (u64, u64, u64), Counts, Counts);

#[test]
fn sharded_seeds() {
    if let Some(seed) = env_u64("SIM_SHARDED_SEED") {
        let plan = ShardedPlan::draw(seed).with_env_overrides();
        let outcome = run_sharded_plan(seed, plan, true);
        println!("{}", outcome.trace.render());
        println!("plan: {:?}", outcome.plan);
        println!("(acquired, refused, errors): {:?}", outcome.counts);
        println!(
            "allowed by documented non-guarantees: {:?}",
            outcome.non_guarantees
        );
        println!("scenarios: {:?}", outcome.events);
        assert!(
            outcome.violations.is_empty(),
            "sharded seed {seed}: {:#?}",
            outcome.violations
        );
        return;
    }
    let first = env_u64("SIM_FIRST").unwrap_or(0);
    let count = env_u64("SIM_SHARDED_SEEDS").unwrap_or(1000);
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(4)) as u64;
    let started = std::time::Instant::now();
    let lowest = std::sync::atomic::AtomicU64::new(u64::MAX);
    let lowest = &lowest;
    let results: Vec<WorkerResult> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                scope.spawn(move || {
                    let mut totals = (0, 0, 0);
                    let mut allowed = Counts::new();
                    let mut events = Counts::new();
                    for seed in (first + w..first + count).step_by(workers as usize) {
                        if seed > lowest.load(std::sync::atomic::Ordering::Relaxed) {
                            break;
                        }
                        let outcome = run_sharded(seed, false);
                        totals.0 += outcome.counts.0;
                        totals.1 += outcome.counts.1;
                        totals.2 += outcome.counts.2;
                        for (kind, n) in &outcome.non_guarantees {
                            *allowed.entry(kind).or_default() += n;
                        }
                        for (kind, n) in &outcome.events {
                            *events.entry(kind).or_default() += n;
                        }
                        if !outcome.violations.is_empty() {
                            lowest.fetch_min(seed, std::sync::atomic::Ordering::Relaxed);
                            let original = outcome.plan.clone();
                            let small = shrink_sharded(seed, outcome, 30);
                            let report = format!(
                                "replay: SIM_SHARDED_SEED={seed} {}{} cargo test --release -p \
                                 redquorum-sim --test sharded -- --nocapture\nplan (shrunk): \
                                 {:?}\nviolations: {:#?}\ntrace tail:\n{}",
                                if redquorum_sim::sharded::timing_faults_on() {
                                    "SIM_TIMING=1 "
                                } else {
                                    ""
                                },
                                small.plan.overrides(&original),
                                small.plan,
                                small.violations,
                                small.trace.render()
                            );
                            return (Some((seed, report)), totals, allowed, events);
                        }
                    }
                    (None, totals, allowed, events)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a simulation worker panicked"))
            .collect()
    });
    let totals = results.iter().fold((0, 0, 0), |t, (_, c, _, _)| {
        (t.0 + c.0, t.1 + c.1, t.2 + c.2)
    });
    let (mut allowed, mut events) = (Counts::new(), Counts::new());
    for (_, _, a, e) in &results {
        for (kind, n) in a {
            *allowed.entry(kind).or_default() += n;
        }
        for (kind, n) in e {
            *events.entry(kind).or_default() += n;
        }
    }
    if let Some((seed, report)) = results
        .into_iter()
        .filter_map(|(failure, _, _, _)| failure)
        .min_by_key(|(seed, _)| *seed)
    {
        panic!("sharded seed {seed} failed\n{report}");
    }
    println!(
        "{count} sharded seeds on {workers} threads in {:?}: {} acquisitions, {} refused, {} \
         errors\nallowed by documented non-guarantees: {allowed:?}\nscenarios: {events:#?}",
        started.elapsed(),
        totals.0,
        totals.1,
        totals.2
    );
    assert!(totals.0 > count, "the runs took locks: {}", totals.0);
}
