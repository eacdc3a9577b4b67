//! The table and the JSON: the same rows, ratios against rslock and against the ceiling, and
//! the targets of the issue with whether this run met them.

use std::fmt::Write;

use serde_json::{Value, json};

use crate::Args;
use crate::cache::CacheRun;
use crate::workloads::{Contention, PerSubject, Serial, Throughput};

pub struct Report {
    args: Args,
    /// Lock subjects in column order (redquorum variants first, then rslock if built).
    locks: Vec<&'static str>,
    pub w1: PerSubject<Serial>,
    pub w2: PerSubject<Throughput>,
    pub w3: PerSubject<Contention>,
    pub w4: PerSubject<Serial>,
    pub w6: PerSubject<CacheRun>,
}

/// One metric row: a value per column (locks..., ceiling).
struct Row {
    workload: &'static str,
    metric: &'static str,
    values: Vec<Option<f64>>,
}

struct Target {
    name: &'static str,
    goal: &'static str,
    measured: Option<f64>,
    /// `measured <= bound` when true, `>=` when false.
    at_most: bool,
    bound: f64,
}

impl Target {
    fn met(&self) -> Option<bool> {
        let m = self.measured?;
        Some(if self.at_most {
            m <= self.bound
        } else {
            m >= self.bound
        })
    }
}

const OURS: &str = "redquorum";
const RSLOCK: &str = "rslock";
const CEILING: &str = "ceiling";

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
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
            w4: Default::default(),
            w6: Default::default(),
        }
    }

    fn columns(&self) -> Vec<&'static str> {
        let mut c = self.locks.clone();
        if !c.contains(&RSLOCK) {
            c.push(RSLOCK);
        }
        c.push(CEILING);
        c
    }

    fn rows(&self) -> Vec<Row> {
        let cols = self.columns();
        let by = |f: &dyn Fn(&str) -> Option<f64>| cols.iter().map(|c| f(c)).collect();
        let pct = |m: &PerSubject<Serial>, c: &str, p: f64| m.get(c).and_then(|s| s.lat.pct(p));
        vec![
            Row {
                workload: "W1",
                metric: "1 task lock+unlock p50 (us)",
                values: by(&|c| pct(&self.w1, c, 50.0)),
            },
            Row {
                workload: "W1",
                metric: "1 task lock+unlock p99 (us)",
                values: by(&|c| pct(&self.w1, c, 99.0)),
            },
            Row {
                workload: "W1",
                metric: "allocations/pair",
                values: by(&|c| self.w1.get(c).and_then(Serial::allocations_per_pair)),
            },
            Row {
                workload: "W2",
                metric: "64 tasks pairs/s",
                values: by(&|c| self.w2.get(c).and_then(Throughput::rate)),
            },
            Row {
                workload: "W2",
                metric: "64 tasks pair p50 (us)",
                values: by(&|c| self.w2.get(c).and_then(|t| t.lat.pct(50.0))),
            },
            Row {
                workload: "W2",
                metric: "client CPU us/pair",
                values: by(&|c| self.w2.get(c).and_then(Throughput::client_us_per_pair)),
            },
            Row {
                workload: "W2",
                metric: "masters' CPU us/pair",
                values: by(&|c| self.w2.get(c).and_then(Throughput::server_us_per_pair)),
            },
            Row {
                workload: "W2",
                metric: "commands on masters/pair",
                values: by(&|c| self.w2.get(c).and_then(Throughput::commands_per_pair)),
            },
            Row {
                workload: "W2",
                metric: "64 tasks errors",
                values: by(&|c| self.w2.get(c).map(|t| t.errors as f64)),
            },
            Row {
                workload: "W3",
                metric: "16 tasks 1 key acq/s",
                values: by(&|c| self.w3.get(c).and_then(Contention::rate)),
            },
            Row {
                workload: "W3",
                metric: "hand-off p50 (us)",
                values: by(&|c| self.w3.get(c).and_then(|t| t.handoff.pct(50.0))),
            },
            Row {
                workload: "W3",
                metric: "hand-off p99 (us)",
                values: by(&|c| self.w3.get(c).and_then(|t| t.handoff.pct(99.0))),
            },
            Row {
                workload: "W3",
                metric: "per task min",
                values: by(&|c| {
                    self.w3
                        .get(c)
                        .and_then(|t| t.per_task.iter().min().map(|&v| v as f64))
                }),
            },
            Row {
                workload: "W3",
                metric: "per task max",
                values: by(&|c| {
                    self.w3
                        .get(c)
                        .and_then(|t| t.per_task.iter().max().map(|&v| v as f64))
                }),
            },
            Row {
                workload: "W3",
                metric: "fairness min/max (1 = even)",
                values: by(&|c| {
                    let t = self.w3.get(c)?;
                    let (min, max) = (t.per_task.iter().min()?, t.per_task.iter().max()?);
                    (*max > 0).then(|| *min as f64 / *max as f64)
                }),
            },
            Row {
                workload: "W3",
                metric: "client CPU us/acq",
                values: by(&|c| self.w3.get(c).and_then(Contention::costs).map(|c| c.0)),
            },
            Row {
                workload: "W3",
                metric: "masters' CPU us/acq",
                values: by(&|c| self.w3.get(c).and_then(Contention::costs).map(|c| c.1)),
            },
            Row {
                workload: "W3",
                metric: "commands on masters/acq",
                values: by(&|c| self.w3.get(c).and_then(Contention::costs).map(|c| c.2)),
            },
            Row {
                workload: "W3",
                metric: "errors",
                values: by(&|c| self.w3.get(c).map(|t| t.errors as f64)),
            },
            Row {
                workload: "W4",
                metric: "1 paused: p50 (us)",
                values: by(&|c| pct(&self.w4, c, 50.0)),
            },
            Row {
                workload: "W4",
                metric: "1 paused: p99 (us)",
                values: by(&|c| pct(&self.w4, c, 99.0)),
            },
            Row {
                workload: "W4",
                metric: "1 paused: pairs done",
                values: by(&|c| self.w4.get(c).map(|s| s.lat.len() as f64)),
            },
            Row {
                workload: "W6",
                metric: "cache 64 tasks ops/s",
                values: by(&|c| self.w6.get(c).and_then(CacheRun::rate)),
            },
            Row {
                workload: "W6",
                metric: "get p50 (us)",
                values: by(&|c| self.w6.get(c).and_then(|r| r.gets.pct(50.0))),
            },
            Row {
                workload: "W6",
                metric: "get p99 (us)",
                values: by(&|c| self.w6.get(c).and_then(|r| r.gets.pct(99.0))),
            },
            Row {
                workload: "W6",
                metric: "set p50 (us)",
                values: by(&|c| self.w6.get(c).and_then(|r| r.sets.pct(50.0))),
            },
            Row {
                workload: "W6",
                metric: "set p99 (us)",
                values: by(&|c| self.w6.get(c).and_then(|r| r.sets.pct(99.0))),
            },
            Row {
                workload: "W6",
                metric: "hit ratio",
                values: by(&|c| self.w6.get(c).and_then(CacheRun::hit_ratio)),
            },
            Row {
                workload: "W6",
                metric: "errors (dropped/failed ops)",
                values: by(&|c| self.w6.get(c).map(|r| r.errors as f64)),
            },
        ]
    }

    fn targets(&self) -> Vec<Target> {
        let p50 = |m: &PerSubject<Serial>, c: &str| m.get(c).and_then(|s| s.lat.pct(50.0));
        let w2 = |c: &str| self.w2.get(c).and_then(Throughput::rate);
        let w3 = |c: &str| self.w3.get(c).and_then(Contention::rate);
        vec![
            Target {
                name: "W1 p50 vs rslock",
                goal: "<= 0.5x",
                measured: ratio(p50(&self.w1, OURS), p50(&self.w1, RSLOCK)),
                at_most: true,
                bound: 0.5,
            },
            Target {
                name: "W2 pairs/s vs rslock",
                goal: ">= 3x",
                measured: ratio(w2(OURS), w2(RSLOCK)),
                at_most: false,
                bound: 3.0,
            },
            Target {
                name: "W3 acq/s vs rslock",
                goal: ">= 2x",
                measured: ratio(w3(OURS), w3(RSLOCK)),
                at_most: false,
                bound: 2.0,
            },
            Target {
                name: "W3 hand-off p50 (us)",
                goal: "< 1000 us",
                measured: self.w3.get(OURS).and_then(|t| t.handoff.pct(50.0)),
                at_most: true,
                bound: 999.999,
            },
            Target {
                name: "W4 p50 vs own W1 p50",
                goal: "<= 1.5x",
                measured: ratio(p50(&self.w4, OURS), p50(&self.w1, OURS)),
                at_most: true,
                bound: 1.5,
            },
            Target {
                name: "W2 vs ceiling (W5)",
                goal: ">= 0.6x",
                measured: ratio(w2(OURS), w2(CEILING)),
                at_most: false,
                bound: 0.6,
            },
        ]
    }

    pub fn table(&self) -> String {
        let cols = self.columns();
        let mut s = String::new();
        let _ = writeln!(
            s,
            "loadbench: 5 masters ({}), {} rounds x {:.1} s slots, ttl 10 s; ratios are {OURS} / other",
            self.args.persistence.name(),
            self.args.rounds,
            self.args.secs
        );
        let _ = write!(s, "{:<4} {:<28}", "", "metric");
        for c in &cols {
            let _ = write!(s, " {c:>15}");
        }
        let _ = writeln!(s, " {:>10} {:>10}", "x rslock", "x ceiling");
        let fmt = |v: Option<f64>| match v {
            Some(v) if v >= 100.0 => format!("{v:.0}"),
            Some(v) => format!("{v:.2}"),
            None => "-".into(),
        };
        for row in self.rows() {
            let _ = write!(s, "{:<4} {:<28}", row.workload, row.metric);
            for v in &row.values {
                let _ = write!(s, " {:>15}", fmt(*v));
            }
            let ours = row.values[0];
            let col = |name: &str| cols.iter().position(|c| *c == name).map(|i| row.values[i]);
            let _ = writeln!(
                s,
                " {:>10} {:>10}",
                fmt(ratio(ours, col(RSLOCK).flatten())),
                fmt(ratio(ours, col(CEILING).flatten()))
            );
        }
        let _ = writeln!(
            s,
            "\nW5 (ceiling) = the W1 and W2 rows of column `{CEILING}`."
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
        let _ = writeln!(s, "\ntargets:");
        for t in self.targets() {
            let met = match t.met() {
                Some(true) => "met",
                Some(false) => "NOT met",
                None => "n/a",
            };
            let _ = writeln!(
                s,
                "  {:<24} {:<10} measured {:>10}  {met}",
                t.name,
                t.goal,
                fmt(t.measured)
            );
        }
        s
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
                let ours = r.values[0];
                let at = |name: &str| {
                    cols.iter()
                        .position(|c| *c == name)
                        .and_then(|i| r.values[i])
                };
                json!({
                    "workload": r.workload,
                    "metric": r.metric,
                    "values": values,
                    "ratio_vs_rslock": ratio(ours, at(RSLOCK)),
                    "ratio_vs_ceiling": ratio(ours, at(CEILING)),
                })
            })
            .collect();
        let targets: Vec<Value> = self
            .targets()
            .into_iter()
            .map(|t| {
                json!({
                    "name": t.name, "goal": t.goal, "measured": t.measured, "met": t.met()
                })
            })
            .collect();
        json!({
            "masters": crate::MASTERS,
            "persistence": self.args.persistence.name(),
            "rounds": self.args.rounds,
            "slot_secs": self.args.secs,
            "ttl_ms": crate::TTL.as_millis() as u64,
            "rslock_retry_ms": self.args.rslock_retry_ms,
            "rslock_w4_cut": self.w4.get(RSLOCK).map(|s| s.cut_at_deadline),
            "w3_per_task": self.w3.iter().map(|(k, v)| (k.to_string(), json!(v.per_task)))
                .collect::<serde_json::Map<_, _>>(),
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
