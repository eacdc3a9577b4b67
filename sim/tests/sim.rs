//! The deterministic simulation of the whole protocol: the real library, our real Lua scripts
//! on simulated masters, a simulated network and virtual time, thousands of seeded runs.
//!
//! - `cargo test -p redquorum-sim --test sim`: the CI budget (`SIM_SEEDS`, default 1000 seeds
//!   from `SIM_FIRST`, default 0).
//! - `SIM_SEEDS=100000 cargo test --release -p redquorum-sim --test sim`: a long run.
//! - `SIM_SEED=n cargo test -p redquorum-sim --test sim -- --nocapture`: replays seed `n`
//!   and prints its whole trace.
//!
//! A failing seed prints itself, its plan, its violations and the tail of its trace.

use redquorum_sim::run::run;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn seeds() {
    if let Some(seed) = env_u64("SIM_SEED") {
        let outcome = run(seed, true);
        println!("{}", outcome.trace.render());
        println!("plan: {:?}", outcome.plan);
        println!("(acquired, refused, errors): {:?}", outcome.counts);
        assert!(
            outcome.violations.is_empty(),
            "seed {seed}: {:#?}",
            outcome.violations
        );
        return;
    }
    let first = env_u64("SIM_FIRST").unwrap_or(0);
    let count = env_u64("SIM_SEEDS").unwrap_or(1000);
    let started = std::time::Instant::now();
    let mut totals = (0, 0, 0);
    for seed in first..first + count {
        let outcome = run(seed, false);
        totals.0 += outcome.counts.0;
        totals.1 += outcome.counts.1;
        totals.2 += outcome.counts.2;
        if !outcome.violations.is_empty() {
            panic!(
                "seed {seed} failed (replay: SIM_SEED={seed} cargo test -p redquorum-sim --test sim \
                 -- --nocapture)\nplan: {:?}\nviolations: {:#?}\ntrace tail:\n{}",
                outcome.plan,
                outcome.violations,
                outcome.trace.render()
            );
        }
    }
    println!(
        "{count} seeds in {:?}: {} acquisitions, {} refused, {} errors",
        started.elapsed(),
        totals.0,
        totals.1,
        totals.2
    );
}
