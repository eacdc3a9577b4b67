//! Sharded locks in the simulator: group changes interleaved with faults (see
//! `sim/src/sharded.rs`). `SIM_SHARDED_SEEDS` seeds (default 100) from `SIM_FIRST`;
//! `SIM_SHARDED_SEED=n` replays one with its whole trace.

use redquorum_sim::sharded::run_sharded;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn sharded_seeds() {
    if let Some(seed) = env_u64("SIM_SHARDED_SEED") {
        let outcome = run_sharded(seed, true);
        println!("{}", outcome.trace.render());
        println!("(held, not granted): {:?}", outcome.counts);
        assert!(outcome.violations.is_empty(), "{:#?}", outcome.violations);
        return;
    }
    let first = env_u64("SIM_FIRST").unwrap_or(0);
    let count = env_u64("SIM_SHARDED_SEEDS").unwrap_or(100);
    let started = std::time::Instant::now();
    let (mut held, mut not_granted) = (0, 0);
    for seed in first..first + count {
        let outcome = run_sharded(seed, false);
        held += outcome.counts.0;
        not_granted += outcome.counts.1;
        assert!(
            outcome.violations.is_empty(),
            "sharded seed {seed} (replay: SIM_SHARDED_SEED={seed} cargo test --release -p \
             redquorum-sim --test sharded -- --nocapture): {:#?}\n{}",
            outcome.violations,
            outcome.trace.render()
        );
    }
    println!(
        "{count} sharded seeds in {:?}: {held} holdings, {not_granted} acquires not granted",
        started.elapsed()
    );
    assert!(held > count as usize, "the runs took locks: {held}");
}
