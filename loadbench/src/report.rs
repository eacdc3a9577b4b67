//! The table, the JSON and the chart: the same rows, ratios of redquorum against rslock, the
//! floor and the ceiling, and the targets of issue 11 with whether this run met them.

mod rows;
mod targets;

use std::fmt::Write;
use std::path::Path;

use anyhow::Result;
use serde_json::{Value, json};

use crate::cache::CacheRun;
use crate::w3b::Shared;
use crate::w7::Sweep;
use crate::workloads::{Contention, PerSubject, Serial, Throughput};
use crate::{Args, CEILING, FLOOR, OURS, RSLOCK};

pub struct Report {
    args: Args,
    /// Lock subjects in column order (redquorum variants first, then rslock if built).
    locks: Vec<&'static str>,
    pub w1: PerSubject<Serial>,
    pub w2: PerSubject<Throughput>,
    pub w3: PerSubject<Contention>,
    pub w3b: PerSubject<Shared>,
    pub w4: PerSubject<Serial>,
    pub w6: PerSubject<CacheRun>,
    pub w7: Sweep,
}

/// The columns every row's redquorum value is divided by.
const RATIOS: [&str; 3] = [RSLOCK, FLOOR, CEILING];

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn fmt(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.2}"),
        None => "-".into(),
    }
}

impl Report {
    pub fn new(args: &Args, locks: Vec<&'static str>) -> Self {
        Self {
            args: args.clone(),
            locks,
            w1: Default::default(),
            w2: Default::default(),
            w3: Default::default(),
            w3b: Default::default(),
            w4: Default::default(),
            w6: Default::default(),
            w7: Default::default(),
        }
    }

    fn columns(&self) -> Vec<&'static str> {
        let mut c = self.locks.clone();
        if !c.contains(&RSLOCK) {
            c.push(RSLOCK);
        }
        c.extend([FLOOR, CEILING]);
        c
    }

    /// redquorum's value over each of [`RATIOS`]' columns, in `row`.
    fn ratios(&self, values: &[Option<f64>]) -> Vec<Option<f64>> {
        let cols = self.columns();
        let at = |name: &str| cols.iter().position(|c| *c == name).and_then(|i| values[i]);
        RATIOS.iter().map(|c| ratio(at(OURS), at(c))).collect()
    }

    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "loadbench: 5 masters ({}), {} rounds x {:.1} s slots (W7 {:.1} s), ttl 10 s; \
             ratios are {OURS} / other",
            self.args.persistence.name(),
            self.args.rounds,
            self.args.secs,
            self.args.w7_secs,
        );
        let _ = write!(s, "{:<4} {:<34}", "", "metric");
        for c in self.columns() {
            let _ = write!(s, " {c:>11}");
        }
        for c in RATIOS {
            let _ = write!(s, " {:>9}", format!("x {c}"));
        }
        s.push('\n');
        for row in self.rows() {
            let _ = write!(s, "{:<4} {:<34}", row.workload, row.metric);
            for v in &row.values {
                let _ = write!(s, " {:>11}", fmt(*v));
            }
            for v in self.ratios(&row.values) {
                let _ = write!(s, " {:>9}", fmt(v));
            }
            s.push('\n');
        }
        self.notes(&mut s);
        let _ = writeln!(s, "\ntargets (issue 11):");
        for t in self.targets() {
            let met = match t.met() {
                Some(true) => "met",
                Some(false) => "NOT met",
                None => "n/a",
            };
            let _ = writeln!(
                s,
                "  {:<32} {:<9} measured {:>8}  {met}",
                t.name,
                t.goal_text(),
                fmt(t.measured)
            );
        }
        s
    }

    fn notes(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "\nfloor = SET NX PX to every master + compare-and-delete script, each step \
             returning at a majority (no fencing, no PUBLISH, no timeouts).\n\
             W5 (ceiling) = the W1 and W2 rows of column `{CEILING}` (redquorum's own scripts \
             sent raw to all 5 masters).\n\
             Cost rows: client CPU = this process (W3b: both worker processes); masters' CPU \
             and commands = INFO deltas over the slots (`-` if a master's INFO could not be \
             read around one of the slots)."
        );
        let _ = writeln!(
            s,
            "W6: {} keys pre-filled, {}% get / {}% set of {}-byte values; column `{OURS}` is \
             Cache, `{CEILING}` plain GET/SET to the ring's node (no MULTI, no version DEL).",
            crate::cache::KEYS,
            crate::cache::GET_PERCENT,
            100 - crate::cache::GET_PERCENT,
            crate::cache::VALUE_BYTES
        );
        for (label, t) in &self.w2 {
            if let Some(e) = &t.first_error {
                let _ = writeln!(s, "W2 {label}: {} errors, first: {e}", t.errors);
            }
        }
        if let Some(w4) = self.w4.get(RSLOCK)
            && w4.cut_at_deadline
        {
            let _ = writeln!(
                s,
                "W4 rslock: cut at its {:.1} s deadline (no network timeouts in rslock)",
                w4.elapsed.as_secs_f64()
            );
        }
        if !self.locks.contains(&RSLOCK) {
            let _ = writeln!(
                s,
                "rslock: not built (run with --features rslock to measure it)"
            );
        }
    }

    /// Draws W7 into `path` (PNG).
    pub fn chart(&self, path: &Path, font: &Path) -> Result<()> {
        let labels: Vec<&str> = self
            .columns()
            .into_iter()
            .filter(|c| self.w7.values().any(|level| level.contains_key(c)))
            .collect();
        let title = format!(
            "W7: lock + unlock pairs/s against tasks, higher is better (5 local masters, {} x {:.1} s slots)",
            self.args.rounds, self.args.w7_secs
        );
        crate::chart::draw(&self.w7, &labels, path, font, &title)
    }

    pub fn json(&self) -> Value {
        let cols = self.columns();
        let rows: Vec<Value> = self
            .rows()
            .into_iter()
            .map(|r| {
                let values: serde_json::Map<String, Value> = cols
                    .iter()
                    .zip(&r.values)
                    .map(|(c, v)| (c.to_string(), json!(v)))
                    .collect();
                let ratios: serde_json::Map<String, Value> = RATIOS
                    .iter()
                    .zip(self.ratios(&r.values))
                    .map(|(c, v)| (format!("vs_{c}"), json!(v)))
                    .collect();
                json!({
                    "workload": r.workload,
                    "metric": r.metric,
                    "values": values,
                    "ratios": ratios,
                })
            })
            .collect();
        let targets: Vec<Value> = self
            .targets()
            .into_iter()
            .map(|t| {
                json!({
                    "name": t.name, "goal": t.goal_text(), "measured": t.measured, "met": t.met()
                })
            })
            .collect();
        json!({
            "masters": crate::MASTERS,
            "persistence": self.args.persistence.name(),
            "rounds": self.args.rounds,
            "slot_secs": self.args.secs,
            "w7_slot_secs": self.args.w7_secs,
            "w7_levels": self.w7.keys().collect::<Vec<_>>(),
            "ttl_ms": crate::TTL.as_millis() as u64,
            "rslock_retry_ms": self.args.rslock_retry_ms,
            "rslock_w4_cut": self.w4.get(RSLOCK).map(|s| s.cut_at_deadline),
            "w3_per_task": self.w3.iter().map(|(k, v)| (k.to_string(), json!(v.per_task)))
                .collect::<serde_json::Map<_, _>>(),
            "w3b": self.w3b.iter().map(|(k, v)| {
                (k.to_string(), json!({"per_process": v.per_process, "per_task": v.all.per_task}))
            }).collect::<serde_json::Map<_, _>>(),
            "w2_errors": self.w2.iter().map(|(k, v)| {
                (k.to_string(), json!({"count": v.errors, "first": v.first_error}))
            }).collect::<serde_json::Map<_, _>>(),
            "w6": self.w6.iter().map(|(k, v)| {
                (k.to_string(), json!({
                    "ops": v.ops(), "gets": v.gets.len(), "sets": v.sets.len(),
                    "hits": v.hits, "misses": v.misses, "errors": v.errors,
                    "secs": v.elapsed.as_secs_f64(),
                }))
            }).collect::<serde_json::Map<_, _>>(),
            "w6_setup": json!({
                "tasks": 64, "keys": crate::cache::KEYS,
                "get_percent": crate::cache::GET_PERCENT,
                "value_bytes": crate::cache::VALUE_BYTES,
            }),
            "rows": rows,
            "targets": targets,
        })
    }
}
