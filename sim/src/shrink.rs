//! Shrinking a failing seed: the same seed with fewer faults, operations, tasks, late clients
//! and clients, for as long as it still fails, so that the trace printed is the shortest this
//! search finds. Each knob keeps a prefix of the same random choices (the fault injector and
//! every task draw from their own seeded streams), so a smaller plan replays a part of the
//! failing run, not another run.

use crate::run::{Outcome, Plan, run_plan};

/// The smallest plan found for `seed` that still fails (greedily, one knob at a time, halving
/// then stepping down), with its outcome. `budget` bounds the number of runs.
pub fn shrink(seed: u64, failing: Outcome, budget: usize) -> Outcome {
    let knobs: [Knob<Plan>; 5] = [
        (|p| &mut p.faults, 0),
        (|p| &mut p.ops, 0),
        (|p| &mut p.late_clients, 0),
        (|p| &mut p.tasks, 1),
        (|p| &mut p.clients, 1),
    ];
    greedy(
        failing,
        |o| o.plan.clone(),
        &knobs,
        budget,
        |plan| {
            let outcome = run_plan(seed, plan, false);
            (!outcome.violations.is_empty()).then_some(outcome)
        },
    )
}

/// A knob of a plan the search turns down, and its floor.
pub type Knob<P> = (fn(&mut P) -> &mut usize, usize);

/// The greedy search of [`shrink`] over any plan: `knobs` (each with its floor) are turned
/// down one at a time, halving then stepping down, for as long as `fails` (the run of a
/// smaller plan) returns a failing outcome; at most `budget` runs.
pub fn greedy<P: Clone, O>(
    failing: O,
    plan_of: impl Fn(&O) -> P,
    knobs: &[Knob<P>],
    budget: usize,
    mut fails: impl FnMut(P) -> Option<O>,
) -> O {
    let mut best = failing;
    let mut runs = 0;
    for &(knob, floor) in knobs {
        loop {
            let current = *knob(&mut plan_of(&best));
            if current <= floor || runs >= budget {
                break;
            }
            let mut found = false;
            for smaller in [floor.max(current / 2), current - 1] {
                if smaller >= current {
                    continue;
                }
                let mut plan = plan_of(&best);
                *knob(&mut plan) = smaller;
                runs += 1;
                if let Some(outcome) = fails(plan) {
                    best = outcome;
                    found = true;
                    break;
                }
            }
            if !found {
                break;
            }
        }
    }
    best
}

impl Plan {
    /// The overrides a replay of a shrunk plan needs, as environment variables.
    pub fn overrides(&self, original: &Plan) -> String {
        let mut out = Vec::new();
        for (name, small, big) in [
            ("SIM_FAULTS", self.faults, original.faults),
            ("SIM_OPS", self.ops, original.ops),
            ("SIM_LATE", self.late_clients, original.late_clients),
            ("SIM_TASKS", self.tasks, original.tasks),
            ("SIM_CLIENTS", self.clients, original.clients),
        ] {
            if small != big {
                out.push(format!("{name}={small}"));
            }
        }
        out.join(" ")
    }

    /// This plan with the overrides of [`overrides`](Self::overrides) read from the environment.
    pub fn with_env_overrides(mut self) -> Self {
        let get = |name: &str| std::env::var(name).ok().and_then(|v| v.parse().ok());
        if let Some(v) = get("SIM_FAULTS") {
            self.faults = v;
        }
        if let Some(v) = get("SIM_OPS") {
            self.ops = v;
        }
        if let Some(v) = get("SIM_LATE") {
            self.late_clients = v;
        }
        if let Some(v) = get("SIM_TASKS") {
            self.tasks = v;
        }
        if let Some(v) = get("SIM_CLIENTS") {
            self.clients = v;
        }
        self
    }
}
