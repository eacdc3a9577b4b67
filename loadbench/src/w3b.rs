//! W3b: two client processes x 8 tasks contending for one key. Release wake-ups and any
//! in-process hand-off only help waiters of the same process, so this is where fairness across
//! processes shows.
//!
//! The second process is this binary again, started as a worker (`--worker LABEL`, hidden
//! flags). A worker connects its own subject, warms it up on keys of its own, prints `ready`,
//! waits for one `go` line on stdin, runs W3's loop on the shared key for one slot and prints
//! one JSON line: acquisitions per task, errors, and its own CPU time. The parent starts both
//! workers, says `go` to both once both are ready, and measures the masters around the slot.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::time::timeout;

use crate::probe::{Cost, Probe, client_cpu};
use crate::workloads::{Contention, PerSubject, contend, fairness, key, order};
use crate::{Args, TTL, subjects};

/// Worker processes in one slot.
pub const PROCESSES: usize = 2;
/// Contending tasks in each worker.
pub const TASKS_PER_PROCESS: usize = 8;
/// Time a worker has to connect and warm up before it says `ready`.
const READY_WITHIN: Duration = Duration::from_secs(60);
/// Time a worker has after its slot to print its result and exit.
const REPORT_WITHIN: Duration = Duration::from_secs(30);

/// One subject's W3b figures, summed over its slots.
#[derive(Clone, Debug, Default)]
pub struct Shared {
    /// `per_task` holds process 0's tasks, then process 1's; `cost.client_cpu` is the workers'.
    pub all: Contention,
    /// Acquisitions per process.
    pub per_process: Vec<u64>,
}

impl Shared {
    pub fn process_fairness(&self) -> Option<f64> {
        fairness(&self.per_process)
    }

    fn add(&mut self, one: Shared) {
        if self.per_process.is_empty() {
            self.per_process = one.per_process;
        } else {
            for (a, b) in self.per_process.iter_mut().zip(one.per_process) {
                *a += b;
            }
        }
        self.all.add(one.all);
    }
}

/// The worker flags, present when this process is a W3b worker.
pub struct WorkerArgs {
    pub label: String,
    pub urls: Vec<String>,
    pub key: String,
    pub tasks: usize,
}

/// A worker's whole life (see the module docs). Its result goes to stdout as one JSON line.
pub async fn worker(w: &WorkerArgs, args: &Args) -> Result<()> {
    let s = subjects::build(&w.label, &w.urls, args).await?;
    // Keys of this process only: the other worker warms up at the same time.
    let pid = std::process::id();
    for i in 0..200 {
        s.subject.pair(&format!("w3b-warm:{pid}:{i}"), TTL).await?;
    }
    println!("ready");
    let mut line = String::new();
    let mut stdin = BufReader::new(tokio::io::stdin());
    timeout(READY_WITHIN, stdin.read_line(&mut line))
        .await
        .context("no `go` from the parent")??;
    if line.trim() != "go" {
        bail!("expected `go` from the parent, got {line:?}");
    }
    let cpu0 = client_cpu();
    let slot = Duration::from_secs_f64(args.secs);
    let run = contend(&s, w.key.clone(), w.tasks, slot).await?;
    let cpu_us = client_cpu().saturating_sub(cpu0).as_micros() as u64;
    let out = json!({ "per_task": run.per_task, "errors": run.errors, "cpu_us": cpu_us });
    println!("{out}");
    Ok(())
}

/// A started worker and its stdout.
struct Worker {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Worker {
    fn start(label: &str, urls: &[String], key: &str, tasks: usize, args: &Args) -> Result<Self> {
        let exe = std::env::current_exe().context("finding the loadbench binary")?;
        let mut child = Command::new(exe)
            .args(["--worker", label, "--worker-urls", &urls.join(",")])
            .args(["--worker-key", key, "--worker-tasks", &tasks.to_string()])
            .args(["--secs", &args.secs.to_string()])
            .args(["--rslock-retry-ms", &args.rslock_retry_ms.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting a W3b worker process")?;
        let stdout = child.stdout.take().expect("stdout is piped");
        Ok(Self {
            child,
            lines: BufReader::new(stdout).lines(),
        })
    }

    /// The worker's next stdout line, within `within`.
    async fn line(&mut self, within: Duration) -> Result<String> {
        match timeout(within, self.lines.next_line()).await {
            Ok(Ok(Some(l))) => Ok(l),
            Ok(Ok(None)) => bail!("W3b worker exited early (its stderr is above)"),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => bail!("W3b worker silent for {within:?}"),
        }
    }

    async fn go(&mut self) -> Result<()> {
        let stdin = self.child.stdin.as_mut().expect("stdin is piped");
        stdin.write_all(b"go\n").await?;
        stdin.flush().await?;
        Ok(())
    }
}

/// What one worker reported: acquisitions per task, errors, CPU.
fn parse_result(line: &str) -> Result<(Vec<u64>, u64, Duration)> {
    let v: Value = serde_json::from_str(line).with_context(|| format!("worker said {line:?}"))?;
    let per_task = v["per_task"]
        .as_array()
        .context("no per_task")?
        .iter()
        .map(|n| n.as_u64().context("per_task entry"))
        .collect::<Result<Vec<_>>>()?;
    let errors = v["errors"].as_u64().context("no errors")?;
    let cpu = Duration::from_micros(v["cpu_us"].as_u64().context("no cpu_us")?);
    Ok((per_task, errors, cpu))
}

/// One slot: both workers on `resource`. Only the slot itself is measured (not the workers'
/// start and warm-up); the client CPU is the workers' own.
async fn slot(
    label: &str,
    urls: &[String],
    resource: &str,
    args: &Args,
    probe: &Probe,
) -> Result<Shared> {
    let mut workers = (0..PROCESSES)
        .map(|_| Worker::start(label, urls, resource, TASKS_PER_PROCESS, args))
        .collect::<Result<Vec<_>>>()?;
    for w in &mut workers {
        let l = w.line(READY_WITHIN).await?;
        if l != "ready" {
            bail!("W3b worker said {l:?} instead of ready");
        }
    }
    let slot = Duration::from_secs_f64(args.secs);
    let (results, cost) = probe
        .measure(async {
            for w in workers.iter_mut() {
                w.go().await?;
            }
            let mut lines = Vec::new();
            for w in workers.iter_mut() {
                lines.push(w.line(slot + REPORT_WITHIN).await?);
            }
            anyhow::Ok(lines)
        })
        .await;
    let mut out = Shared::default();
    out.all.cost = Cost {
        client_cpu: Duration::ZERO,
        ..cost
    };
    for line in results? {
        let (per_task, errors, cpu) = parse_result(&line)?;
        out.per_process.push(per_task.iter().sum());
        out.all.acquisitions += per_task.iter().sum::<u64>();
        out.all.per_task.extend(per_task);
        out.all.errors += errors;
        out.all.cost.client_cpu += cpu;
    }
    for w in &mut workers {
        timeout(REPORT_WITHIN, w.child.wait()).await??;
    }
    out.all.elapsed = slot;
    Ok(out)
}

/// W3b over `labels`, `rounds` slots each, order alternating between rounds.
pub async fn w3b(
    labels: &[&'static str],
    urls: &[String],
    args: &Args,
    probe: &Probe,
) -> Result<PerSubject<Shared>> {
    let mut out: PerSubject<Shared> = BTreeMap::new();
    for r in 0..args.rounds {
        for i in order(labels.len(), r) {
            let label = labels[i];
            let resource = key(label, "w3b", r, 0);
            let one = slot(label, urls, &resource, args, probe)
                .await
                .with_context(|| format!("W3b, {label}"))?;
            out.entry(label).or_default().add(one);
        }
    }
    Ok(out)
}
