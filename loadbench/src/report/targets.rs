//! The targets of issue 11, computed from one run's figures.

use crate::workloads::{Contention, PerSubject, Serial, Throughput};
use crate::{CEILING, FLOOR, OURS, RSLOCK};

use super::{Report, ratio};

/// Which side of `bound` the measured value must be on.
#[derive(Clone, Copy)]
pub enum Goal {
    AtMost(f64),
    AtLeast(f64),
    Above(f64),
}

pub struct Target {
    pub name: String,
    pub goal: Goal,
    /// Printed after the bound ("x" for ratios, "" for plain values).
    pub unit: &'static str,
    pub measured: Option<f64>,
}

impl Target {
    pub fn met(&self) -> Option<bool> {
        let m = self.measured?;
        Some(match self.goal {
            Goal::AtMost(b) => m <= b,
            Goal::AtLeast(b) => m >= b,
            Goal::Above(b) => m > b,
        })
    }

    pub fn goal_text(&self) -> String {
        let (op, b) = match self.goal {
            Goal::AtMost(b) => ("<=", b),
            Goal::AtLeast(b) => (">=", b),
            Goal::Above(b) => (">", b),
        };
        format!("{op} {b}{}", self.unit)
    }
}

fn target(
    name: impl Into<String>,
    goal: Goal,
    unit: &'static str,
    measured: Option<f64>,
) -> Target {
    Target {
        name: name.into(),
        goal,
        unit,
        measured,
    }
}

fn p50(m: &PerSubject<Serial>, c: &str) -> Option<f64> {
    m.get(c).and_then(|s| s.lat.pct(50.0))
}

impl Report {
    pub(super) fn targets(&self) -> Vec<Target> {
        let w2 = |c: &str| self.w2.get(c).and_then(Throughput::rate);
        let w2_cpu = |c: &str| Some(self.w2.get(c)?.per_pair()?.server_us);
        let w3 = |c: &str| self.w3.get(c).and_then(Contention::rate);
        let mut t = vec![
            target(
                "W2 pairs/s vs rslock",
                Goal::AtLeast(2.0),
                "x",
                ratio(w2(OURS), w2(RSLOCK)),
            ),
            target(
                "W2 masters' CPU/pair vs rslock",
                Goal::AtMost(1.0),
                "x",
                ratio(w2_cpu(OURS), w2_cpu(RSLOCK)),
            ),
            target(
                "W3 acq/s vs rslock",
                Goal::AtLeast(2.0),
                "x",
                ratio(w3(OURS), w3(RSLOCK)),
            ),
            target(
                "W3 task fairness min/max",
                Goal::AtLeast(0.9),
                "",
                self.w3.get(OURS).and_then(Contention::task_fairness),
            ),
            target(
                "W3b process fairness",
                Goal::AtLeast(0.8),
                "",
                self.w3b.get(OURS).and_then(|s| s.process_fairness()),
            ),
            target(
                "W1 p50 vs floor",
                Goal::AtMost(1.05),
                "x",
                ratio(p50(&self.w1, OURS), p50(&self.w1, FLOOR)),
            ),
            target(
                "W4 p50 vs own W1 p50",
                Goal::AtMost(1.1),
                "x",
                ratio(p50(&self.w4, OURS), p50(&self.w1, OURS)),
            ),
        ];
        for (tasks, level) in self.w7.iter().filter(|(n, _)| **n >= 4) {
            let rate = |c: &str| level.get(c).and_then(Throughput::rate);
            t.push(target(
                format!("W7 {tasks} tasks vs rslock"),
                Goal::Above(1.0),
                "x",
                ratio(rate(OURS), rate(RSLOCK)),
            ));
        }
        // Kept from the earlier issue: the library against its own commands sent raw.
        t.push(target(
            "W2 vs ceiling (W5)",
            Goal::AtLeast(0.6),
            "x",
            ratio(w2(OURS), w2(CEILING)),
        ));
        t
    }
}
