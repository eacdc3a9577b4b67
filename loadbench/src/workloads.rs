//! The workloads. Every loop is bounded by a count and by time.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use tokio::time::Instant;

use crate::probe::{Cost, PerOp, Probe};
use crate::{Named, TTL};

/// Latency samples, in microseconds.
#[derive(Clone, Debug, Default)]
pub struct Lat(Vec<f64>);

impl Lat {
    pub fn push(&mut self, d: Duration) {
        self.0.push(d.as_secs_f64() * 1e6);
    }

    pub fn extend(&mut self, other: Lat) {
        self.0.extend(other.0);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The `p`-th percentile (0..=100), nearest rank.
    pub fn pct(&self, p: f64) -> Option<f64> {
        if self.0.is_empty() {
            return None;
        }
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        Some(v[rank.clamp(1, v.len()) - 1])
    }
}

/// W1 / W4 shape: one task, sequential pairs.
#[derive(Clone, Debug, Default)]
pub struct Serial {
    pub lat: Lat,
    pub elapsed: Duration,
    /// The run stopped at its deadline rather than after its count.
    pub cut_at_deadline: bool,
    /// Allocations by the whole process during the slots (drivers and timers included).
    pub allocations: u64,
    pub errors: u64,
    /// CPU and commands during the slots.
    pub cost: Cost,
}

/// W2 / W5 shape: many tasks, pairs per second.
#[derive(Clone, Debug, Default)]
pub struct Throughput {
    /// CPU and commands during the slots.
    pub cost: Cost,
    pub pairs: u64,
    /// Pairs that failed (e.g. a per-master timeout under overload); not counted in `pairs`.
    pub errors: u64,
    /// The first error seen, to say what the errors were.
    pub first_error: Option<String>,
    pub elapsed: Duration,
    pub lat: Lat,
}

impl Serial {
    pub fn allocations_per_pair(&self) -> Option<f64> {
        let n = self.lat.len() as u64 + self.errors;
        (n > 0).then(|| self.allocations as f64 / n as f64)
    }

    /// Cost per pair attempted (a pair that failed still sent its commands).
    pub fn per_pair(&self) -> Option<PerOp> {
        self.cost.per(self.lat.len() as u64 + self.errors)
    }
}

impl Throughput {
    pub fn rate(&self) -> Option<f64> {
        (self.elapsed > Duration::ZERO).then(|| self.pairs as f64 / self.elapsed.as_secs_f64())
    }

    /// Cost per pair done.
    pub fn per_pair(&self) -> Option<PerOp> {
        self.cost.per(self.pairs)
    }

    fn add(&mut self, one: Throughput) {
        self.cost += one.cost;
        self.pairs += one.pairs;
        self.errors += one.errors;
        self.elapsed += one.elapsed;
        self.lat.extend(one.lat);
        if self.first_error.is_none() {
            self.first_error = one.first_error;
        }
    }
}

/// W3: contention on one key. `handoff`: from the holder starting its release to the next
/// acquisition by another task returning.
#[derive(Clone, Debug, Default)]
pub struct Contention {
    pub acquisitions: u64,
    pub elapsed: Duration,
    pub handoff: Lat,
    pub per_task: Vec<u64>,
    /// Acquire rounds that failed with an error rather than "contended".
    pub errors: u64,
    pub cost: Cost,
}

impl Contention {
    /// Cost per acquisition.
    pub fn per_acquisition(&self) -> Option<PerOp> {
        self.cost.per(self.acquisitions)
    }

    /// Slowest task's count over the busiest one's (1 = even).
    pub fn task_fairness(&self) -> Option<f64> {
        fairness(&self.per_task)
    }

    /// Adds one slot's figures; `per_task` entries are summed position by position.
    pub fn add(&mut self, one: Contention) {
        self.cost += one.cost;
        self.acquisitions += one.acquisitions;
        self.errors += one.errors;
        self.elapsed += one.elapsed;
        self.handoff.extend(one.handoff);
        if self.per_task.is_empty() {
            self.per_task = one.per_task;
        } else {
            for (a, b) in self.per_task.iter_mut().zip(one.per_task) {
                *a += b;
            }
        }
    }

    pub fn rate(&self) -> Option<f64> {
        (self.elapsed > Duration::ZERO)
            .then(|| self.acquisitions as f64 / self.elapsed.as_secs_f64())
    }
}

/// min / max of `counts` (1 = even; 0 when someone got nothing).
pub fn fairness(counts: &[u64]) -> Option<f64> {
    let (min, max) = (counts.iter().min()?, counts.iter().max()?);
    (*max > 0).then(|| *min as f64 / *max as f64)
}

/// Subject order for round `r`: reversed every other round.
pub fn order(n: usize, r: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    if r % 2 == 1 {
        v.reverse();
    }
    v
}

/// Key names unique across the whole run.
pub fn key(label: &str, workload: &str, a: usize, b: u64) -> String {
    static RUN: AtomicU64 = AtomicU64::new(0);
    let n = RUN.fetch_add(1, Ordering::Relaxed);
    format!("{workload}:{label}:{a}:{b}:{n}")
}

pub async fn warm_up(s: &Named) -> Result<()> {
    for i in 0..200 {
        s.subject.pair(&key(s.label, "warm", 0, i), TTL).await?;
    }
    Ok(())
}

/// One task running sequential pairs until `max_ops` or `slot` is reached.
async fn serial(s: &Named, workload: &str, slot: Duration, max_ops: usize) -> Serial {
    let mut out = Serial::default();
    let start = Instant::now();
    let deadline = start + slot;
    let allocations = crate::alloc::allocations();
    for i in 0..max_ops as u64 {
        if Instant::now() >= deadline {
            out.cut_at_deadline = true;
            break;
        }
        let t = Instant::now();
        match s.subject.pair(&key(s.label, workload, 0, i), TTL).await {
            Ok(()) => out.lat.push(t.elapsed()),
            Err(_) => out.errors += 1,
        }
    }
    out.elapsed = start.elapsed();
    out.allocations = crate::alloc::allocations() - allocations;
    out
}

pub type PerSubject<T> = BTreeMap<&'static str, T>;

pub async fn w1(
    all: &[Named],
    rounds: usize,
    slot: Duration,
    max_ops: usize,
    probe: &Probe,
) -> Result<PerSubject<Serial>> {
    let mut out: PerSubject<Serial> = BTreeMap::new();
    for r in 0..rounds {
        for i in order(all.len(), r) {
            let s = &all[i];
            let (one, cost) = probe.measure(serial(s, "w1", slot, max_ops)).await;
            let acc = out.entry(s.label).or_default();
            acc.cost += cost;
            acc.lat.extend(one.lat);
            acc.elapsed += one.elapsed;
            acc.errors += one.errors;
            acc.allocations += one.allocations;
        }
    }
    Ok(out)
}

/// `tasks` tasks each running pairs on its own keys for `slot`.
pub async fn parallel(s: &Named, tasks: usize, slot: Duration) -> Result<Throughput> {
    let start = Instant::now();
    let deadline = start + slot;
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut lat = Lat::default();
                let mut errors = 0u64;
                let mut first_error = None;
                let mut i = 0u64;
                // Bounded by time, and by a count no run can reach.
                while Instant::now() < deadline && i < 10_000_000 {
                    let t0 = Instant::now();
                    match s.subject.pair(&key(s.label, "w2", t, i), TTL).await {
                        Ok(()) => lat.push(t0.elapsed()),
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert_with(|| format!("{e:#}"));
                        }
                    }
                    i += 1;
                }
                anyhow::Ok((lat, errors, first_error))
            })
        })
        .collect();
    let mut out = Throughput::default();
    for h in handles {
        let (lat, errors, first_error) = h.await??;
        out.pairs += lat.len() as u64;
        out.errors += errors;
        if out.first_error.is_none() {
            out.first_error = first_error;
        }
        out.lat.extend(lat);
    }
    out.elapsed = start.elapsed();
    Ok(out)
}

/// W2 (and W7 per level): `rounds` slots of `tasks` parallel tasks per subject.
pub async fn w2(
    all: &[Named],
    rounds: usize,
    slot: Duration,
    tasks: usize,
    probe: &Probe,
) -> Result<PerSubject<Throughput>> {
    let mut out: PerSubject<Throughput> = BTreeMap::new();
    for r in 0..rounds {
        for i in order(all.len(), r) {
            let s = &all[i];
            let (one, cost) = probe.measure(parallel(s, tasks, slot)).await;
            let mut one = one?;
            one.cost = cost;
            out.entry(s.label).or_default().add(one);
        }
    }
    Ok(out)
}

/// `tasks` tasks contending for `resource` for `slot`. Only acquisitions that returned
/// before the deadline count, and the rate is over the slot. W3b's worker processes run this
/// too, on one resource shared between them.
pub async fn contend(
    s: &Named,
    resource: String,
    tasks: usize,
    slot: Duration,
) -> Result<Contention> {
    let resource = Arc::new(resource);
    let start = Instant::now();
    let deadline = start + slot;
    // Which task last held the lock and when it started releasing. A hand-off is the next
    // acquisition by a *different* task (a holder re-taking its own lock hands nothing off).
    let release_started: Arc<Mutex<Option<(usize, Instant)>>> = Arc::new(Mutex::new(None));
    let handles: Vec<_> = (0..tasks)
        .map(|me| {
            let s = s.clone();
            let resource = resource.clone();
            let release_started = release_started.clone();
            tokio::spawn(async move {
                let mut handoff = Lat::default();
                let mut acquired = 0u64;
                let mut tries = 0u64;
                let mut errors = 0u64;
                while tries < 10_000_000 {
                    tries += 1;
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    let held = match s.subject.acquire(&resource, TTL, deadline - now).await {
                        Ok(Some(held)) => held,
                        Ok(None) => continue,
                        Err(_) => {
                            errors += 1;
                            continue;
                        }
                    };
                    let got = Instant::now();
                    if got < deadline {
                        acquired += 1;
                        if let Some((who, t)) = release_started.lock().unwrap().take()
                            && who != me
                        {
                            handoff.push(got - t);
                        }
                    }
                    *release_started.lock().unwrap() = Some((me, Instant::now()));
                    if s.subject.release(held).await.is_err() {
                        errors += 1;
                    }
                }
                anyhow::Ok((acquired, handoff, errors))
            })
        })
        .collect();
    let mut out = Contention::default();
    for h in handles {
        let (n, lat, errors) = h.await??;
        out.acquisitions += n;
        out.errors += errors;
        out.per_task.push(n);
        out.handoff.extend(lat);
    }
    out.elapsed = slot;
    Ok(out)
}

pub async fn w3(
    locks: &[Named],
    rounds: usize,
    slot: Duration,
    tasks: usize,
    probe: &Probe,
) -> Result<PerSubject<Contention>> {
    let mut out: PerSubject<Contention> = BTreeMap::new();
    for r in 0..rounds {
        for i in order(locks.len(), r) {
            let s = &locks[i];
            let resource = key(s.label, "w3", r, 0);
            let (one, cost) = probe.measure(contend(s, resource, tasks, slot)).await;
            let mut one = one?;
            one.cost = cost;
            out.entry(s.label).or_default().add(one);
        }
    }
    Ok(out)
}

/// W1 with a master paused (the caller pauses it). redquorum runs `slot`; a subject without
/// timeouts (rslock) runs until `stall_deadline` and is cut there.
pub async fn w4(
    locks: &[Named],
    slot: Duration,
    stall_deadline: Duration,
    max_ops: usize,
    probe: &Probe,
) -> Result<PerSubject<Serial>> {
    let mut out: PerSubject<Serial> = BTreeMap::new();
    for s in locks {
        let (mut one, cost) = probe
            .measure(w4_one(s, slot, stall_deadline, max_ops))
            .await;
        one.cost = cost;
        out.insert(s.label, one);
    }
    Ok(out)
}

async fn w4_one(s: &Named, slot: Duration, stall_deadline: Duration, max_ops: usize) -> Serial {
    if s.label != crate::RSLOCK {
        serial(s, "w4", slot, max_ops).await
    } else {
        // Cut from outside: one call may stall far longer than the deadline.
        let start = Instant::now();
        let lat = Arc::new(Mutex::new(Lat::default()));
        let run = {
            let (s, lat) = (s.clone(), lat.clone());
            async move {
                for i in 0..max_ops as u64 {
                    let t = Instant::now();
                    if s.subject.pair(&key(s.label, "w4", 0, i), TTL).await.is_ok() {
                        lat.lock().unwrap().push(t.elapsed());
                    }
                }
            }
        };
        let cut = tokio::time::timeout(stall_deadline, run).await.is_err();
        let lat = lat.lock().unwrap().clone();
        Serial {
            lat,
            elapsed: start.elapsed(),
            cut_at_deadline: cut,
            errors: 0,
            allocations: 0,
            cost: Cost::default(),
        }
    }
}
