//! Hand-off under faults in the simulator (`sim/src/handoff.rs`): seeded runs of an export,
//! a transit of random length and a resume by another client, against a rival and paused
//! masters. `SIM_HANDOFF_SEEDS` (default 150) seeds; `SIM_HANDOFF_SEED=n` replays one with its
//! trace.

use redquorum_sim::handoff::run_handoff;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn handoff_keeps_exclusion() {
    if let Some(seed) = env_u64("SIM_HANDOFF_SEED") {
        let outcome = run_handoff(seed);
        println!("{}", outcome.trace.render());
        assert!(outcome.violations.is_empty(), "{:#?}", outcome.violations);
        return;
    }
    let count = env_u64("SIM_HANDOFF_SEEDS").unwrap_or(150);
    let mut totals = (0, 0, 0);
    for seed in 0..count {
        let outcome = run_handoff(seed);
        if !outcome.violations.is_empty() {
            panic!(
                "hand-off seed {seed}: {:#?}\nreplay: SIM_HANDOFF_SEED={seed} cargo test --release \
                 -p redquorum-sim --test handoff -- --nocapture\n{}",
                outcome.violations,
                outcome.trace.render()
            );
        }
        totals.0 += outcome.resumes.0;
        totals.1 += outcome.resumes.1;
        totals.2 += outcome.resumes.2;
    }
    eprintln!(
        "hand-off: {count} seeds, resumes: {} succeeded, {} not held, {} failed otherwise",
        totals.0, totals.1, totals.2
    );
    // The runs must exercise both sides of the hand-off, or they check nothing.
    assert!(totals.0 > 0 && totals.1 > 0, "{totals:?}");
}
