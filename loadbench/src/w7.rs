//! W7: throughput against concurrency. W2's loop (lock + unlock on distinct keys) at each of
//! several task counts, for every uncontended subject, with the cost per pair at each level.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;

use crate::Named;
use crate::probe::Probe;
use crate::workloads::{PerSubject, Throughput, w2};

/// The default levels of concurrency.
pub const LEVELS: [usize; 5] = [1, 4, 16, 64, 256];

/// Figures per level (task count), then per subject.
pub type Sweep = BTreeMap<usize, PerSubject<Throughput>>;

pub async fn w7(
    subjects: &[Named],
    levels: &[usize],
    rounds: usize,
    slot: Duration,
    probe: &Probe,
) -> Result<Sweep> {
    let mut out = Sweep::new();
    for &tasks in levels {
        out.insert(tasks, w2(subjects, rounds, slot, tasks, probe).await?);
    }
    Ok(out)
}
