//! Load driver for redquorum: starts five local masters with `testcluster` and measures, side
//! by side in one run, redquorum, rslock (with `--features rslock`) and the raw-command ceiling.
//!
//! How to run (from the workspace root; about two minutes):
//!
//! ```text
//! cargo run --release -p loadbench --features rslock -- \
//!     --json target/loadbench.json --chart target/w7.png
//! ```
//!
//! Workloads (each subject runs in short slots, alternating order between rounds, so that the
//! noise of a shared machine hits all of them alike; compare the ratios, not the raw figures):
//! - W1: one task, lock + unlock on distinct keys: p50, p99.
//! - W2: 64 tasks, lock + unlock on distinct keys: pairs per second.
//! - W3b: two client processes x 8 tasks contending for one key (this binary started again as
//!   a worker): acquisitions per second, fairness between the processes and between tasks.
//! - W3: 16 tasks contending for one key: acquisitions per second, hand-off latency (from the
//!   holder starting its release to the next holder's acquire returning), per-task min / max.
//!   Column `rq-no-wake` is redquorum with release wake-ups off (`wake_ups(false)`: polling).
//! - W4: W1 with one of the five masters paused (SIGSTOP): p50, p99. rslock has no network
//!   timeouts, so its run is cut at a deadline and reports what it managed.
//! - W5: the ceiling: the same scripts sent raw to all masters in parallel over the same kind of
//!   connection (one multiplexed connection per master), no lock logic: W1 and W2 shapes.
//! - W7: W2's loop at 1, 4, 16, 64 and 256 tasks, drawn as a PNG chart with `--chart`.
//! - Column `floor`: the fewest commands any Redlock client must send (`SET NX PX` to every
//!   master, a compare-and-delete script to release; each step returns at a majority).
//! - Every workload reports the masters' CPU and commands per operation (`INFO` deltas).
//! - W6: cache get/set throughput over the ring at 64 tasks (80% get / 20% set of 64-byte
//!   values over 10,000 pre-filled keys): ops/s, p50/p99 per op, hit ratio. Column `ceiling`
//!   sends plain GET / SET to the node the ring picks, over one multiplexed connection each.
//! - W8 (opt-in, `--only w8`, its own 3 groups of 3 masters): sharded locks; see `w8.rs`.
//! - Profile (opt-in, `--only profile`, `--perf` for master 0's system calls): W2's loop for a
//!   fixed number of pairs, with commands by name, socket reads and syscalls; see `profile.rs`.

mod alloc;
mod cache;
mod chart;
mod floor;
mod probe;
mod profile;
mod report;
mod subjects;
mod w3b;
mod w7;
mod w8;
mod workloads;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;

use probe::Probe;
use report::Report;
use subjects::Subject;

/// Command line.
#[derive(Parser, Debug, Clone)]
#[command(about = "redquorum load driver: redquorum vs rslock vs the raw ceiling")]
pub struct Args {
    /// Write the results as JSON here too.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Length of one measured slot, in seconds (each subject gets `rounds` slots per workload).
    #[arg(long, default_value_t = 1.5)]
    secs: f64,
    /// Slots per subject and workload; the order of the subjects alternates between rounds.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Most lock + unlock pairs in one W1 / W4 slot.
    #[arg(long, default_value_t = 3000)]
    max_ops: usize,
    /// rslock's retry delay in W3 (it sleeps uniform 0..this between tries). The default, 60 ms,
    /// has the same mean (30 ms) as redquorum's default retry (20 ms + 0..20 ms jitter).
    #[arg(long, default_value_t = 60)]
    rslock_retry_ms: u64,
    /// Deadline for rslock's W4 run (it has no timeouts, so a paused master stalls it).
    #[arg(long, default_value_t = 4.0)]
    rslock_w4_secs: f64,
    /// Persistence of the masters while measuring. testcluster starts them with
    /// `appendfsync always` (so that restarts keep data); that puts a disk flush into every
    /// write and makes the disk, not the clients, what is measured. `memory` (the default)
    /// turns the AOF off, like the setup of the figures in PEERS.md.
    #[arg(long, value_enum, default_value_t = Persistence::Memory)]
    persistence: Persistence,
    /// Run only these workloads (for profiling), e.g. `--only w1,w2`. Default: all.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Measure only these subjects (for profiling), e.g. `--subjects redquorum`. Default: all.
    #[arg(long, value_delimiter = ',')]
    subjects: Vec<String>,
    /// Draw W7 (pairs/s against tasks) as a PNG here.
    #[arg(long)]
    chart: Option<PathBuf>,
    /// TTF font for the chart's text.
    #[arg(
        long,
        default_value = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
    )]
    font: PathBuf,
    /// W7's task counts.
    #[arg(long, value_delimiter = ',', default_values_t = w7::LEVELS)]
    levels: Vec<usize>,
    /// Length of one W7 slot, in seconds (W7 has levels x subjects x rounds slots).
    #[arg(long, default_value_t = 1.0)]
    w7_secs: f64,
    /// Pairs per subject and round in the profile (`--only profile`).
    #[arg(long, default_value_t = 20_000)]
    profile_pairs: u64,
    /// In the profile, count master 0's system calls with `perf stat` (needs `perf` and
    /// permission to trace the server process).
    #[arg(long)]
    perf: bool,
    /// Internal: run as a W3b worker process measuring this subject.
    #[arg(long, hide = true)]
    worker: Option<String>,
    #[arg(long, hide = true, value_delimiter = ',')]
    worker_urls: Vec<String>,
    #[arg(long, hide = true, default_value = "")]
    worker_key: String,
    #[arg(long, hide = true, default_value_t = w3b::TASKS_PER_PROCESS)]
    worker_tasks: usize,
}

impl Args {
    fn wants(&self, w: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o.eq_ignore_ascii_case(w))
    }

    fn measures(&self, label: &str) -> bool {
        if OPT_IN.contains(&label) {
            return self.names(label);
        }
        self.subjects.is_empty() || self.names(label)
    }

    /// `label` is named in `--subjects`.
    fn names(&self, label: &str) -> bool {
        self.subjects.iter().any(|s| s == label)
    }
}

/// How the masters persist writes during the run (set with `CONFIG SET`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// No AOF.
    Memory,
    /// AOF, fsync once a second.
    Everysec,
    /// AOF, fsync before every reply (testcluster's own setting).
    Always,
}

impl Persistence {
    pub fn name(self) -> &'static str {
        match self {
            Persistence::Memory => "memory (appendonly no)",
            Persistence::Everysec => "aof, appendfsync everysec",
            Persistence::Always => "aof, appendfsync always",
        }
    }
}

/// Applies `--persistence` to every master.
pub(crate) async fn set_persistence(urls: &[String], p: Persistence) -> Result<()> {
    let settings: &[(&str, &str)] = match p {
        Persistence::Memory => &[("appendonly", "no")],
        Persistence::Everysec => &[("appendfsync", "everysec")],
        Persistence::Always => &[("appendfsync", "always")],
    };
    for url in urls {
        let mut conn = redis::Client::open(url.as_str())?
            .get_multiplexed_async_connection()
            .await?;
        for (k, v) in settings {
            let _: () = redis::cmd("CONFIG")
                .arg("SET")
                .arg(k)
                .arg(v)
                .query_async(&mut conn)
                .await?;
        }
    }
    Ok(())
}

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

const MASTERS: usize = 5;
/// Column names.
pub const OURS: &str = "redquorum";
/// Redquorum with release wake-ups off.
pub const NO_WAKE: &str = "rq-no-wake";
/// Redquorum with batched rounds on (`batching(true)`; off by default): opt-in, with
/// `--subjects`.
pub const BATCHED: &str = "rq-batched";
/// Redquorum with fencing tokens off (`fencing(false)`): opt-in, with `--subjects`.
pub const NO_FENCE: &str = "rq-no-fence";
/// Variants measured only when named in `--subjects` (for profiling), in W1, W2 and W7.
pub const OPT_IN: [&str; 2] = [BATCHED, NO_FENCE];
pub const RSLOCK: &str = "rslock";
pub const FLOOR: &str = "floor";
pub const CEILING: &str = "ceiling";
pub const TTL: Duration = Duration::from_secs(10);

/// A subject with the name it has in the table.
#[derive(Clone)]
pub struct Named {
    pub label: &'static str,
    pub subject: Subject,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(label) = &args.worker {
        return run_worker(label, &args);
    }
    if args.secs <= 0.0 || args.w7_secs <= 0.0 || args.rounds == 0 {
        anyhow::bail!("--secs, --w7-secs and --rounds must be positive");
    }
    if args.levels.is_empty() || args.levels.contains(&0) {
        anyhow::bail!("--levels must be task counts of at least 1");
    }
    // Start the masters before the runtime: testcluster is synchronous.
    let cluster = testcluster::Cluster::start(MASTERS).context("starting 5 masters")?;
    let urls = cluster.urls();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let started = std::time::Instant::now();
    let report = runtime.block_on(run(&args, &cluster, &urls));
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            eprintln!("server logs:\n{}", cluster.logs());
            return Err(e);
        }
    };
    println!("{}", report.table());
    println!("run took {:.0} s", started.elapsed().as_secs_f64());
    if let Some(path) = &args.json {
        create_parent(path);
        std::fs::write(path, serde_json::to_string_pretty(&report.json())?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("JSON written to {}", path.display());
    }
    if let Some(path) = &args.chart {
        create_parent(path);
        report.chart(path, &args.font)?;
        println!("W7 chart written to {}", path.display());
    }
    Ok(())
}

fn create_parent(path: &std::path::Path) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).ok();
    }
}

/// W3b's second (and first) client process: see `w3b.rs`.
fn run_worker(label: &str, args: &Args) -> Result<()> {
    let w = w3b::WorkerArgs {
        label: label.to_owned(),
        urls: args.worker_urls.clone(),
        key: args.worker_key.clone(),
        tasks: args.worker_tasks,
    };
    if w.urls.is_empty() || w.key.is_empty() || w.tasks == 0 {
        anyhow::bail!("--worker needs --worker-urls, --worker-key and --worker-tasks >= 1");
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(w3b::worker(&w, args))
}

async fn run(args: &Args, cluster: &testcluster::Cluster, urls: &[String]) -> Result<Report> {
    set_persistence(urls, args.persistence).await?;
    let mut locks = Vec::new();
    for label in [OURS, BATCHED, NO_FENCE, NO_WAKE, RSLOCK] {
        if args.measures(label) && (label != RSLOCK || cfg!(feature = "rslock")) {
            locks.push(subjects::build(label, urls, args).await?);
        }
    }
    let mut report = Report::new(args, locks.iter().map(|n| n.label).collect());
    // Wake-ups only change how contended acquires wait: the no-wake variant runs in W3 only,
    // unless named in `--subjects` (to profile what its pub/sub connections cost).
    let uncontended: Vec<Named> = locks
        .iter()
        .filter(|n| n.label != NO_WAKE || args.names(NO_WAKE))
        .cloned()
        .collect();
    // The opt-in variants are for W1, W2 and W7 only.
    locks.retain(|n| !OPT_IN.contains(&n.label));
    let mut floor = uncontended.clone();
    if args.measures(FLOOR) {
        floor.push(subjects::build(FLOOR, urls, args).await?);
    }
    let mut all = floor.clone();
    if args.measures(CEILING) {
        all.push(subjects::build(CEILING, urls, args).await?);
    }
    for s in all.iter().chain(
        locks
            .iter()
            .filter(|n| n.label == NO_WAKE && !args.names(NO_WAKE)),
    ) {
        workloads::warm_up(s).await?;
    }
    let slot = Duration::from_secs_f64(args.secs);
    let probe = Probe::connect(urls).await?;
    if args.wants("w1") {
        report.w1 = workloads::w1(&all, args.rounds, slot, args.max_ops, &probe).await?;
    }
    if args.wants("w2") {
        report.w2 = workloads::w2(&all, args.rounds, slot, 64, &probe).await?;
    }
    if args.wants("w3") {
        report.w3 = workloads::w3(&locks, args.rounds, slot, 16, &probe).await?;
    }
    if args.wants("w3b") {
        let labels: Vec<&'static str> = locks.iter().map(|n| n.label).collect();
        report.w3b = w3b::w3b(&labels, urls, args, &probe).await?;
    }
    if args.wants("w4") {
        // A paused master cannot answer INFO: W4's costs are those of the four running ones.
        let running = Probe::connect(&urls[..MASTERS - 1]).await?;
        cluster.pause(MASTERS - 1)?;
        let w4 = workloads::w4(
            &floor,
            slot * args.rounds as u32,
            Duration::from_secs_f64(args.rslock_w4_secs),
            args.max_ops,
            &running,
        )
        .await;
        cluster.resume(MASTERS - 1)?;
        report.w4 = w4?;
    }
    // The profile is for investigations: only when asked for by name.
    if args.only.iter().any(|w| w.eq_ignore_ascii_case("profile")) {
        let profiles =
            profile::profile(&floor, urls, args.rounds, args.profile_pairs, args.perf).await?;
        let order: Vec<&'static str> = floor.iter().map(|n| n.label).collect();
        println!("{}", profile::table(&profiles, &order));
    }
    // W8 starts its own masters: only when asked for by name.
    if args.only.iter().any(|w| w.eq_ignore_ascii_case("w8")) {
        w8::run(args).await?;
    }
    if args.wants("w6") {
        report.w6 = run_w6(args, urls, slot, &probe).await?;
    }
    if args.wants("w7") {
        let w7_slot = Duration::from_secs_f64(args.w7_secs);
        report.w7 = w7::w7(&floor, &args.levels, args.rounds, w7_slot, &probe).await?;
    }
    Ok(report)
}

async fn run_w6(
    args: &Args,
    urls: &[String],
    slot: Duration,
    probe: &Probe,
) -> Result<workloads::PerSubject<cache::CacheRun>> {
    let cache = redquorum::Cache::builder()
        .nodes(urls.iter().cloned())
        .build()
        .await?;
    cache::prefill(&cache).await?;
    let raw = cache::RawCache::connect(&cache, urls).await?;
    let mut subjects = Vec::new();
    if args.measures(OURS) {
        subjects.push((OURS, cache::CacheSubject::Ours(cache)));
    }
    if args.measures(CEILING) {
        subjects.push((CEILING, cache::CacheSubject::Raw(Arc::new(raw))));
    }
    cache::w6(&subjects, args.rounds, slot, 64, probe).await
}
