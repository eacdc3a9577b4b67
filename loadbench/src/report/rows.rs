//! The table's rows: one metric each, a value per column. Every workload ends with its cost
//! rows (client CPU, masters' CPU and commands on the masters per operation).

use crate::cache::CacheRun;
use crate::probe::PerOp;
use crate::w3b::Shared;
use crate::workloads::{Contention, PerSubject, Serial, Throughput};

use super::Report;

/// One metric row: a value per column.
pub struct Row {
    pub workload: &'static str,
    pub metric: String,
    pub values: Vec<Option<f64>>,
}

/// Builds rows over a fixed list of columns.
struct Rows<'a> {
    cols: &'a [&'static str],
    out: Vec<Row>,
}

impl Rows<'_> {
    fn add(
        &mut self,
        workload: &'static str,
        metric: impl Into<String>,
        f: impl Fn(&str) -> Option<f64>,
    ) {
        let values = self.cols.iter().map(|c| f(c)).collect();
        self.out.push(Row {
            workload,
            metric: metric.into(),
            values,
        });
    }

    /// The three cost rows, per `unit` (pair, acq, op).
    fn costs(&mut self, workload: &'static str, unit: &str, f: impl Fn(&str) -> Option<PerOp>) {
        self.add(workload, format!("client CPU us/{unit}"), |c| {
            f(c).map(|p| p.client_us)
        });
        self.add(workload, format!("masters' CPU us/{unit}"), |c| {
            f(c).map(|p| p.server_us)
        });
        self.add(workload, format!("commands on masters/{unit}"), |c| {
            f(c).map(|p| p.commands)
        });
    }
}

fn pct(m: &PerSubject<Serial>, c: &str, p: f64) -> Option<f64> {
    m.get(c).and_then(|s| s.lat.pct(p))
}

fn min_max(v: &[u64]) -> (Option<f64>, Option<f64>) {
    (
        v.iter().min().map(|&n| n as f64),
        v.iter().max().map(|&n| n as f64),
    )
}

impl Report {
    pub(super) fn rows(&self) -> Vec<Row> {
        let cols = self.columns();
        let mut r = Rows {
            cols: &cols,
            out: Vec::new(),
        };
        self.serial_rows(&mut r);
        self.w2_rows(&mut r);
        self.w3_rows(&mut r);
        self.w3b_rows(&mut r);
        self.w4_rows(&mut r);
        self.w6_rows(&mut r);
        self.w7_rows(&mut r);
        r.out
    }

    fn serial_rows(&self, r: &mut Rows) {
        let w1 = &self.w1;
        r.add("W1", "1 task lock+unlock p50 (us)", |c| pct(w1, c, 50.0));
        r.add("W1", "1 task lock+unlock p99 (us)", |c| pct(w1, c, 99.0));
        r.add("W1", "allocations/pair", |c| {
            w1.get(c)?.allocations_per_pair()
        });
        r.costs("W1", "pair", |c| w1.get(c)?.per_pair());
    }

    fn w2_rows(&self, r: &mut Rows) {
        let w2 = &self.w2;
        r.add("W2", "64 tasks pairs/s", |c| w2.get(c)?.rate());
        r.add("W2", "64 tasks pair p50 (us)", |c| w2.get(c)?.lat.pct(50.0));
        r.costs("W2", "pair", |c| w2.get(c)?.per_pair());
        r.add("W2", "64 tasks errors", |c| {
            w2.get(c).map(|t| t.errors as f64)
        });
    }

    fn w3_rows(&self, r: &mut Rows) {
        let w3 = &self.w3;
        r.add("W3", "16 tasks 1 key acq/s", |c| w3.get(c)?.rate());
        r.add("W3", "hand-off p50 (us)", |c| w3.get(c)?.handoff.pct(50.0));
        r.add("W3", "hand-off p99 (us)", |c| w3.get(c)?.handoff.pct(99.0));
        r.add("W3", "per task min", |c| min_max(&w3.get(c)?.per_task).0);
        r.add("W3", "per task max", |c| min_max(&w3.get(c)?.per_task).1);
        r.add("W3", "fairness min/max (1 = even)", |c| {
            w3.get(c)?.task_fairness()
        });
        r.costs("W3", "acq", |c| w3.get(c)?.per_acquisition());
        r.add("W3", "errors", |c| w3.get(c).map(|t| t.errors as f64));
    }

    fn w3b_rows(&self, r: &mut Rows) {
        let w3b = &self.w3b;
        let all = |c: &str| w3b.get(c).map(|s: &Shared| &s.all);
        r.add("W3b", "2 procs x 8 tasks acq/s", |c| all(c)?.rate());
        r.add("W3b", "process min/max (1 = even)", |c| {
            w3b.get(c)?.process_fairness()
        });
        r.add("W3b", "task min/max (1 = even)", |c| {
            all(c)?.task_fairness()
        });
        r.add("W3b", "per process min", |c| {
            min_max(&w3b.get(c)?.per_process).0
        });
        r.add("W3b", "per process max", |c| {
            min_max(&w3b.get(c)?.per_process).1
        });
        r.costs("W3b", "acq", |c| all(c)?.per_acquisition());
        r.add("W3b", "errors", |c| {
            all(c).map(|t: &Contention| t.errors as f64)
        });
    }

    fn w4_rows(&self, r: &mut Rows) {
        let w4 = &self.w4;
        r.add("W4", "1 paused: p50 (us)", |c| pct(w4, c, 50.0));
        r.add("W4", "1 paused: p99 (us)", |c| pct(w4, c, 99.0));
        r.add("W4", "1 paused: pairs done", |c| {
            w4.get(c).map(|s| s.lat.len() as f64)
        });
        r.costs("W4", "pair", |c| w4.get(c)?.per_pair());
        // The paused master is not measured (it cannot answer INFO).
        let n = r.out.len();
        for row in &mut r.out[n - 2..] {
            row.metric = row.metric.replace("masters", "running masters");
        }
    }

    fn w6_rows(&self, r: &mut Rows) {
        let w6 = &self.w6;
        r.add("W6", "cache 64 tasks ops/s", |c| w6.get(c)?.rate());
        r.add("W6", "get p50 (us)", |c| w6.get(c)?.gets.pct(50.0));
        r.add("W6", "get p99 (us)", |c| w6.get(c)?.gets.pct(99.0));
        r.add("W6", "set p50 (us)", |c| w6.get(c)?.sets.pct(50.0));
        r.add("W6", "set p99 (us)", |c| w6.get(c)?.sets.pct(99.0));
        r.add("W6", "hit ratio", |c| w6.get(c)?.hit_ratio());
        r.costs("W6", "op", |c| {
            let run: &CacheRun = w6.get(c)?;
            run.cost.per(run.ops())
        });
        r.add("W6", "errors (dropped/failed ops)", |c| {
            w6.get(c).map(|r| r.errors as f64)
        });
    }

    fn w7_rows(&self, r: &mut Rows) {
        for (tasks, level) in &self.w7 {
            let t = |c: &str| level.get(c).map(|t: &Throughput| t);
            r.add("W7", format!("{tasks} tasks pairs/s"), |c| t(c)?.rate());
            r.costs("W7", "pair", |c| t(c)?.per_pair());
            let last = r.out.len();
            for row in &mut r.out[last - 3..] {
                row.metric = format!("{tasks} tasks {}", row.metric);
            }
        }
    }
}
