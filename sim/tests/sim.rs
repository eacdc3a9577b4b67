//! The deterministic simulation of the whole protocol: the real library, our real Lua scripts
//! on simulated masters, a simulated network and virtual time, thousands of seeded runs.
//!
//! - `cargo test --release -p redquorum-sim --test sim`: the CI budget (`SIM_SEEDS`, default
//!   2000 seeds from `SIM_FIRST`, default 0), on up to 4 threads.
//! - `SIM_SEEDS=100000 cargo test --release -p redquorum-sim --test sim`: a long run.
//! - `SIM_SEED=n cargo test --release -p redquorum-sim --test sim -- --nocapture`: replays
//!   seed `n` and prints its whole trace.
//! - `SIM_TIMING=0 ...`: the same seeds without the timing faults (slow messages, slow scripts,
//!   clock rates, client stalls), which are on by default and in CI for four seeds in five
//!   (`seed % 5 == 4` runs without them): to tell whether a failure needs them.
//!
//! A failing seed is shrunk (the same seed with fewer faults, operations, tasks, clients while
//! it still fails) and prints itself, the replay command (with `SIM_FAULTS`, `SIM_OPS`,
//! `SIM_LATE`, `SIM_TASKS`, `SIM_CLIENTS` for the shrunk plan), its violations and the tail of
//! the shrunk run's trace.

use std::collections::BTreeMap;

use redquorum_sim::run::{Plan, run, run_plan};
use redquorum_sim::shrink::shrink;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// A worker's first failing seed with its report, if any, its (acquired, refused, errors), and
/// the events documented non-guarantees allowed, by kind.
type WorkerResult = (
    Option<(u64, String)>,
    (u64, u64, u64),
    BTreeMap<&'static str, u64>,
);

#[test]
fn seeds() {
    if let Some(seed) = env_u64("SIM_SEED") {
        let outcome = run_plan(seed, Plan::draw(seed).with_env_overrides(), true);
        println!("{}", outcome.trace.render());
        println!("plan: {:?}", outcome.plan);
        println!("(acquired, refused, errors): {:?}", outcome.counts);
        println!(
            "allowed by documented non-guarantees: {:?}",
            outcome.non_guarantees
        );
        assert!(
            outcome.violations.is_empty(),
            "seed {seed}: {:#?}",
            outcome.violations
        );
        return;
    }
    let first = env_u64("SIM_FIRST").unwrap_or(0);
    let count = env_u64("SIM_SEEDS").unwrap_or(2000);
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(4)) as u64;
    let started = std::time::Instant::now();
    // The lowest failing seed so far: a worker past it stops (it cannot find a lower one).
    let lowest = std::sync::atomic::AtomicU64::new(u64::MAX);
    let lowest = &lowest;
    // Seeds are independent (a runtime and a seeded random source each, on their own thread):
    // worker w runs first + w, first + w + workers, ...; the lowest failing seed is reported.
    let results: Vec<WorkerResult> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                scope.spawn(move || {
                    let mut totals = (0, 0, 0);
                    let mut allowed: BTreeMap<&'static str, u64> = BTreeMap::new();
                    for seed in (first + w..first + count).step_by(workers as usize) {
                        if seed > lowest.load(std::sync::atomic::Ordering::Relaxed) {
                            break;
                        }
                        let outcome = run(seed, false);
                        totals.0 += outcome.counts.0;
                        totals.1 += outcome.counts.1;
                        totals.2 += outcome.counts.2;
                        for (kind, n) in &outcome.non_guarantees {
                            *allowed.entry(kind).or_default() += n;
                        }
                        if !outcome.violations.is_empty() {
                            lowest.fetch_min(seed, std::sync::atomic::Ordering::Relaxed);
                            let original = outcome.plan.clone();
                            let small = shrink(seed, outcome, 40);
                            let report = format!(
                                "replay: SIM_SEED={seed} {}{} cargo test --release -p \
                                 redquorum-sim --test sim -- --nocapture\nplan (shrunk): {:?}\n\
                                 violations: {:#?}\ntrace tail:\n{}",
                                if redquorum_sim::run::timing_faults_on() {
                                    ""
                                } else {
                                    "SIM_TIMING=0 "
                                },
                                small.plan.overrides(&original),
                                small.plan,
                                small.violations,
                                small.trace.render()
                            );
                            return (Some((seed, report)), totals, allowed);
                        }
                    }
                    (None, totals, allowed)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a simulation worker panicked"))
            .collect()
    });
    let totals = results
        .iter()
        .fold((0, 0, 0), |t, (_, c, _)| (t.0 + c.0, t.1 + c.1, t.2 + c.2));
    let mut allowed: BTreeMap<&'static str, u64> = BTreeMap::new();
    for (_, _, a) in &results {
        for (kind, n) in a {
            *allowed.entry(kind).or_default() += n;
        }
    }
    if let Some((seed, report)) = results
        .into_iter()
        .filter_map(|(failure, _, _)| failure)
        .min_by_key(|(seed, _)| *seed)
    {
        panic!("seed {seed} failed\n{report}");
    }
    println!(
        "{count} seeds on {workers} threads in {:?}: {} acquisitions, {} refused, {} errors\n\
         allowed by documented non-guarantees (a client stalled or paused past its validity): \
         {allowed:?}",
        started.elapsed(),
        totals.0,
        totals.1,
        totals.2
    );
}
