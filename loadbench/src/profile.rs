//! The W2 profile (opt-in, `--only profile`): where the masters' CPU goes per lock + unlock.
//!
//! Every subject runs the same fixed number of W2 pairs (64 tasks, distinct keys), in
//! alternating order over the rounds, and each run reports per pair:
//! - client CPU and the five masters' CPU (`INFO`), as W2 does;
//! - commands on the five masters (`total_commands_processed`, which counts the calls a script
//!   makes) and, of those, script calls (`EVALSHA` / `EVAL` in `INFO commandstats`);
//! - the masters' socket reads and writes (`total_reads_processed`, `total_writes_processed`:
//!   one `read(2)` per read event, one write pass per reply flush);
//! - with `--perf`, the system calls master 0 made (`perf stat` on its syscall tracepoints),
//!   which counts what `INFO` does not (`epoll_wait`, and the writes of every flush).
//!
//! A second, shorter pass per subject watches master 0 with `MONITOR` and splits what it ran
//! into top-level commands and calls made from inside scripts (`MONITOR` tags those `lua`);
//! it runs apart from the timed pass because `MONITOR` costs the master CPU of its own. With
//! batching its counts per pair came out lower than the timed pass's (presumably `MONITOR`
//! makes master 0 the slowest, and acquires still queued for it when the round has its
//! quorum elsewhere are dropped); the commandstats rows of the timed pass are the exact ones.
//! Counts, not timings, are what a loaded machine does not distort.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::time::Instant;

use crate::probe::client_cpu;
use crate::workloads::{key, order};
use crate::{Named, TTL};

/// Concurrency of the profiled loop (W2's).
const TASKS: usize = 64;
/// The syscall tracepoints counted on master 0 with `--perf`.
const TRACEPOINTS: [&str; 4] = [
    "raw_syscalls:sys_enter",
    "syscalls:sys_enter_read",
    "syscalls:sys_enter_write",
    "syscalls:sys_enter_epoll_wait",
];

/// The commands counted one by one (`INFO commandstats`, scripts' calls included).
const COMMANDS: [&str; 8] = [
    "evalsha", "eval", "set", "hget", "hincrby", "get", "del", "publish",
];

/// Counters of the five masters (and this process) at one moment.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    per_command: [u64; COMMANDS.len()],
    client_cpu: Duration,
    server_cpu: f64,
    commands: u64,
    script_calls: u64,
    reads: u64,
    writes: u64,
}

impl Sample {
    fn since(&self, o: &Sample) -> Sample {
        Sample {
            per_command: std::array::from_fn(|i| self.per_command[i] - o.per_command[i]),
            client_cpu: self.client_cpu.saturating_sub(o.client_cpu),
            server_cpu: self.server_cpu - o.server_cpu,
            commands: self.commands - o.commands,
            script_calls: self.script_calls - o.script_calls,
            reads: self.reads - o.reads,
            writes: self.writes - o.writes,
        }
    }

    fn add(&mut self, o: &Sample) {
        for (mine, theirs) in self.per_command.iter_mut().zip(o.per_command) {
            *mine += theirs;
        }
        self.client_cpu += o.client_cpu;
        self.server_cpu += o.server_cpu;
        self.commands += o.commands;
        self.script_calls += o.script_calls;
        self.reads += o.reads;
        self.writes += o.writes;
    }
}

/// One subject's totals over its runs.
#[derive(Clone, Debug, Default)]
pub struct Profile {
    pub pairs: u64,
    pub errors: u64,
    cost: Sample,
    /// Master 0's syscalls per tracepoint (`--perf`), over `pairs`.
    syscalls: BTreeMap<String, u64>,
    /// From the `MONITOR` pass on master 0: pairs, top-level commands, calls from scripts.
    monitored: (u64, u64, u64),
}

impl Profile {
    /// The rows, per pair: (metric, value).
    pub fn rows(&self) -> Vec<(String, Option<f64>)> {
        let n = self.pairs as f64;
        let per = |v: f64| (self.pairs > 0).then_some(v / n);
        let c = &self.cost;
        let mut out = vec![
            (
                "client CPU us".into(),
                per(c.client_cpu.as_secs_f64() * 1e6),
            ),
            ("masters' CPU us (5)".into(), per(c.server_cpu * 1e6)),
            (
                "commands (5, scripts' calls incl.)".into(),
                per(c.commands as f64),
            ),
            (
                "script calls EVALSHA/EVAL (5)".into(),
                per(c.script_calls as f64),
            ),
            ("socket reads (5, INFO)".into(), per(c.reads as f64)),
            ("socket write passes (5, INFO)".into(), per(c.writes as f64)),
        ];
        for (name, calls) in COMMANDS.iter().zip(c.per_command) {
            out.push((
                format!("  of which {} (5)", name.to_uppercase()),
                per(calls as f64),
            ));
        }
        for tp in TRACEPOINTS {
            let v = self.syscalls.get(tp).map(|&v| v as f64);
            let name = tp.rsplit(':').next().unwrap_or(tp);
            out.push((format!("master 0 syscalls {name}"), v.and_then(per)));
        }
        let (mp, top, lua) = self.monitored;
        let mper = |v: u64| (mp > 0).then(|| v as f64 / mp as f64);
        out.push(("master 0 top-level cmds (MONITOR)".into(), mper(top)));
        out.push(("master 0 calls in scripts (MONITOR)".into(), mper(lua)));
        out
    }
}

/// Runs the profile for every subject: `rounds` timed runs of `pairs` pairs each, then one
/// `MONITOR` pass of `pairs / 10` pairs.
pub async fn profile(
    subjects: &[Named],
    urls: &[String],
    rounds: usize,
    pairs: u64,
    perf: bool,
) -> Result<BTreeMap<&'static str, Profile>> {
    let masters = connect(urls).await?;
    let pid0 = server_pid(&masters[0]).await?;
    let mut out: BTreeMap<&'static str, Profile> = BTreeMap::new();
    for r in 0..rounds {
        for i in order(subjects.len(), r) {
            let s = &subjects[i];
            let before = sample(&masters).await?;
            let counter = if perf {
                Some(PerfStat::start(pid0).await?)
            } else {
                None
            };
            let (done, errors) = run_pairs(s, pairs).await;
            let syscalls = match counter {
                Some(c) => c.stop().await?,
                None => BTreeMap::new(),
            };
            let after = sample(&masters).await?;
            let p = out.entry(s.label).or_default();
            p.pairs += done;
            p.errors += errors;
            p.cost.add(&after.since(&before));
            for (k, v) in syscalls {
                *p.syscalls.entry(k).or_default() += v;
            }
        }
    }
    for s in subjects {
        let monitor = Monitor::start(&urls[0]).await?;
        let (done, _) = run_pairs(s, (pairs / 10).max(100)).await;
        let (top, lua) = monitor.finish().await;
        out.entry(s.label).or_default().monitored = (done, top, lua);
    }
    Ok(out)
}

/// `TASKS` tasks taking turns from one counter until `pairs` pairs were started.
async fn run_pairs(s: &Named, pairs: u64) -> (u64, u64) {
    let next = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..TASKS)
        .map(|t| {
            let (s, next) = (s.clone(), next.clone());
            tokio::spawn(async move {
                let (mut ok, mut errors) = (0u64, 0u64);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= pairs {
                        return (ok, errors);
                    }
                    match s.subject.pair(&key(s.label, "profile", t, i), TTL).await {
                        Ok(()) => ok += 1,
                        Err(_) => errors += 1,
                    }
                }
            })
        })
        .collect();
    let (mut ok, mut errors) = (0, 0);
    for h in handles {
        let (o, e) = h.await.unwrap_or((0, 1));
        ok += o;
        errors += e;
    }
    (ok, errors)
}

async fn connect(urls: &[String]) -> Result<Vec<redis::aio::MultiplexedConnection>> {
    let mut out = Vec::new();
    for url in urls {
        let client = redis::Client::open(url.as_str())?;
        out.push(client.get_multiplexed_async_connection().await?);
    }
    Ok(out)
}

async fn server_pid(m: &redis::aio::MultiplexedConnection) -> Result<u32> {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut m.clone())
        .await?;
    field(&info, "process_id:").context("INFO server has no process_id")
}

fn field<T: std::str::FromStr>(info: &str, prefix: &str) -> Option<T> {
    info.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// `calls=` of `cmdstat_<name>` (0 when never called).
fn calls(info: &str, name: &str) -> u64 {
    let prefix = format!("cmdstat_{name}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|r| r.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

async fn sample(masters: &[redis::aio::MultiplexedConnection]) -> Result<Sample> {
    let mut s = Sample {
        client_cpu: client_cpu(),
        ..Sample::default()
    };
    for m in masters {
        let info: String = redis::cmd("INFO")
            .arg("everything")
            .query_async(&mut m.clone())
            .await?;
        let num = |p: &str| field::<u64>(&info, p).with_context(|| format!("INFO has no {p}"));
        s.server_cpu += field::<f64>(&info, "used_cpu_sys:").unwrap_or(0.0)
            + field::<f64>(&info, "used_cpu_user:").unwrap_or(0.0);
        s.commands += num("total_commands_processed:")?;
        s.reads += num("total_reads_processed:")?;
        s.writes += num("total_writes_processed:")?;
        s.script_calls += calls(&info, "evalsha") + calls(&info, "eval");
        for (n, name) in s.per_command.iter_mut().zip(COMMANDS) {
            *n += calls(&info, name);
        }
    }
    Ok(s)
}

/// `perf stat` counting syscall tracepoints of one process until stopped.
struct PerfStat {
    child: tokio::process::Child,
    out: std::path::PathBuf,
}

impl PerfStat {
    async fn start(pid: u32) -> Result<Self> {
        let out = std::env::temp_dir().join(format!("loadbench-perf-{}.csv", std::process::id()));
        let child = tokio::process::Command::new("perf")
            .args(["stat", "-x,", "-e", &TRACEPOINTS.join(","), "-p"])
            .arg(pid.to_string())
            .arg("-o")
            .arg(&out)
            .kill_on_drop(true)
            .spawn()
            .context("starting `perf stat` (install linux-perf, or leave out --perf)")?;
        // perf attaches asynchronously: give it a moment before the measured pairs start.
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(Self { child, out })
    }

    /// SIGINT (perf then writes its counts), and the counts per tracepoint.
    async fn stop(mut self) -> Result<BTreeMap<String, u64>> {
        let pid = self.child.id().context("perf exited early")?;
        let status = tokio::process::Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .await?;
        if !status.success() {
            bail!("could not stop perf ({status})");
        }
        tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .context("perf did not exit")??;
        let text = std::fs::read_to_string(&self.out)?;
        let mut counts = BTreeMap::new();
        for line in text.lines() {
            let cols: Vec<&str> = line.split(',').collect();
            if let (Some(v), Some(name)) = (cols.first(), cols.get(2))
                && let Ok(v) = v.parse::<u64>()
            {
                counts.insert((*name).to_owned(), v);
            }
        }
        if counts.is_empty() {
            bail!("perf wrote no counts:\n{text}");
        }
        Ok(counts)
    }
}

/// A `MONITOR` connection to one master, counting top-level commands and calls from scripts.
struct Monitor {
    task: tokio::task::JoinHandle<()>,
    /// Lines seen so far: top-level, from scripts.
    counts: Arc<(AtomicU64, AtomicU64)>,
}

impl Monitor {
    async fn start(url: &str) -> Result<Self> {
        let addr = url.trim_start_matches("redis://").trim_end_matches('/');
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(b"MONITOR\r\n").await?;
        let mut lines = BufReader::new(stream).lines();
        if lines.next_line().await?.as_deref() != Some("+OK") {
            bail!("MONITOR refused");
        }
        let counts = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
        let seen = counts.clone();
        let task = tokio::spawn(async move {
            while let Ok(Some(l)) = lines.next_line().await {
                let counter = if l.contains(" lua] ") {
                    &seen.1
                } else {
                    &seen.0
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });
        Ok(Self { task, counts })
    }

    /// Waits until no line came for 500 ms (MONITOR's output trails the replies, by seconds
    /// on a loaded machine; at most 60 s), then stops: (top-level, from scripts).
    async fn finish(self) -> (u64, u64) {
        let total =
            || self.counts.0.load(Ordering::Relaxed) + self.counts.1.load(Ordering::Relaxed);
        let until = Instant::now() + Duration::from_secs(60);
        let mut last = total();
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = total();
            if now == last {
                break;
            }
            last = now;
        }
        self.task.abort();
        (
            self.counts.0.load(Ordering::Relaxed),
            self.counts.1.load(Ordering::Relaxed),
        )
    }
}

/// The profile as a table: a row per metric, a column per subject.
pub fn table(profiles: &BTreeMap<&'static str, Profile>, order: &[&'static str]) -> String {
    use std::fmt::Write;
    let cols: Vec<&&str> = order.iter().filter(|c| profiles.contains_key(*c)).collect();
    let mut s = String::from("profile: W2 loop (64 tasks), per lock + unlock pair\n");
    let _ = write!(s, "{:<38}", "metric");
    for c in &cols {
        let _ = write!(s, " {c:>12}");
    }
    s.push('\n');
    let rows: Vec<Vec<(String, Option<f64>)>> = cols.iter().map(|c| profiles[**c].rows()).collect();
    let mut lines = vec![(
        "pairs".to_owned(),
        cols.iter()
            .map(|c| Some(profiles[**c].pairs as f64))
            .collect::<Vec<_>>(),
    )];
    lines.push((
        "errors".to_owned(),
        cols.iter()
            .map(|c| Some(profiles[**c].errors as f64))
            .collect(),
    ));
    if let Some(first) = rows.first() {
        for (i, (name, _)) in first.iter().enumerate() {
            lines.push((name.clone(), rows.iter().map(|r| r[i].1).collect()));
        }
    }
    for (name, values) in lines {
        let _ = write!(s, "{name:<38}");
        for v in values {
            let _ = match v {
                Some(v) => write!(s, " {v:>12.2}"),
                None => write!(s, " {:>12}", "-"),
            };
        }
        s.push('\n');
    }
    s
}
