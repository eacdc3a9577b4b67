//! W6: cache get/set throughput over the ring, against the raw-command ceiling.
//!
//! 64 tasks each run a mix of 80% `get` / 20% `set` of 64-byte values over 10,000 keys that
//! are all written before the first slot. The `redquorum` column is [`redquorum::Cache`]; the
//! `ceiling` column sends a plain `GET` / `SET .. PX` for the same data key to the node the
//! same ring picks, over one multiplexed connection per node, with no cache logic (no
//! per-node timeout, no counters, and no `MULTI` + version `DEL` around the `SET`).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Result, bail};
use redis::Value;
use redis::aio::MultiplexedConnection;
use tokio::time::Instant;

use crate::probe::{Cost, Probe};
use crate::workloads::{Lat, PerSubject, order};

/// Keys in the key space (all pre-filled).
pub const KEYS: u64 = 10_000;
/// Percentage of operations that are gets.
pub const GET_PERCENT: u64 = 80;
/// Size of every value written.
pub const VALUE_BYTES: usize = 64;
/// Long enough that no pre-filled key expires during the run.
const CACHE_TTL: Duration = Duration::from_secs(600);

/// The cache or its ceiling.
#[derive(Clone)]
pub enum CacheSubject {
    Ours(redquorum::Cache),
    Raw(std::sync::Arc<RawCache>),
}

/// One multiplexed connection per node, in the ring's node order, and the ring to pick with.
pub struct RawCache {
    ring: redquorum::HashRing,
    conns: Vec<MultiplexedConnection>,
}

impl RawCache {
    /// `cache`'s ring, with fresh connections to `urls` (the cache's nodes, in its order).
    pub async fn connect(cache: &redquorum::Cache, urls: &[String]) -> Result<Self> {
        let mut conns = Vec::new();
        for url in urls {
            let client = redis::Client::open(url.as_str())?;
            conns.push(client.get_multiplexed_async_connection().await?);
        }
        Ok(Self {
            ring: cache.ring().clone(),
            conns,
        })
    }

    fn conn(&self, key: &str) -> MultiplexedConnection {
        let node = self.ring.node_index_for(key).expect("ring has nodes");
        self.conns[node].clone()
    }
}

fn data_key(key: &str) -> String {
    format!("{}{key}", redquorum::defaults::DEFAULT_CACHE_KEY_PREFIX)
}

impl CacheSubject {
    /// `Ok(hit)` on a read that returned; an error when it failed outright.
    async fn get(&self, key: &str) -> Result<bool> {
        match self {
            CacheSubject::Ours(c) => Ok(c.get(key).await?.is_some()),
            CacheSubject::Raw(r) => {
                let v: Value = redis::cmd("GET")
                    .arg(data_key(key))
                    .query_async(&mut r.conn(key))
                    .await?;
                Ok(!matches!(v, Value::Nil))
            }
        }
    }

    async fn set(&self, key: &str, value: &[u8]) -> Result<()> {
        match self {
            CacheSubject::Ours(c) => {
                if c.set(key, value, CACHE_TTL).await?.is_dropped() {
                    bail!("cache set of {key} dropped");
                }
            }
            CacheSubject::Raw(r) => {
                let _: () = redis::cmd("SET")
                    .arg(data_key(key))
                    .arg(value)
                    .arg("PX")
                    .arg(CACHE_TTL.as_millis() as u64)
                    .query_async(&mut r.conn(key))
                    .await?;
            }
        }
        Ok(())
    }
}

fn key_name(i: u64) -> String {
    format!("w6:{i}")
}

/// Writes every key of the key space once (through the cache, batched).
pub async fn prefill(cache: &redquorum::Cache) -> Result<()> {
    let value = vec![b'v'; VALUE_BYTES];
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(500) {
        let items: Vec<(String, &[u8])> = chunk
            .iter()
            .map(|&i| (key_name(i), value.as_slice()))
            .collect();
        let report = cache.set_many(items, CACHE_TTL).await?;
        if !report.is_complete() {
            bail!("W6 prefill: {} writes dropped", report.dropped());
        }
    }
    Ok(())
}

/// One subject's W6 figures, summed over its slots.
#[derive(Clone, Debug, Default)]
pub struct CacheRun {
    pub gets: Lat,
    pub sets: Lat,
    pub hits: u64,
    pub misses: u64,
    /// Operations that failed (a set dropped, a read error); not counted in the latencies.
    pub errors: u64,
    pub elapsed: Duration,
    /// CPU and commands during the slots.
    pub cost: Cost,
}

impl CacheRun {
    pub fn ops(&self) -> u64 {
        (self.gets.len() + self.sets.len()) as u64
    }

    pub fn rate(&self) -> Option<f64> {
        (self.elapsed > Duration::ZERO).then(|| self.ops() as f64 / self.elapsed.as_secs_f64())
    }

    pub fn hit_ratio(&self) -> Option<f64> {
        let reads = self.hits + self.misses;
        (reads > 0).then(|| self.hits as f64 / reads as f64)
    }

    fn add(&mut self, o: CacheRun) {
        self.gets.extend(o.gets);
        self.sets.extend(o.sets);
        self.hits += o.hits;
        self.misses += o.misses;
        self.errors += o.errors;
        self.elapsed += o.elapsed;
        self.cost += o.cost;
    }
}

/// xorshift64*: cheap, and the same sequence for every subject.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

async fn mix(s: &CacheSubject, tasks: usize, slot: Duration) -> Result<CacheRun> {
    let start = Instant::now();
    let deadline = start + slot;
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut out = CacheRun::default();
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (t as u64 + 1));
                let value = vec![b'w'; VALUE_BYTES];
                let mut i = 0u64;
                // Bounded by time, and by a count no run can reach.
                while Instant::now() < deadline && i < 10_000_000 {
                    i += 1;
                    let r = rng.next();
                    let key = key_name((r >> 8) % KEYS);
                    let t0 = Instant::now();
                    if r % 100 < GET_PERCENT {
                        match s.get(&key).await {
                            Ok(hit) => {
                                out.gets.push(t0.elapsed());
                                if hit {
                                    out.hits += 1;
                                } else {
                                    out.misses += 1;
                                }
                            }
                            Err(_) => out.errors += 1,
                        }
                    } else {
                        match s.set(&key, &value).await {
                            Ok(()) => out.sets.push(t0.elapsed()),
                            Err(_) => out.errors += 1,
                        }
                    }
                }
                anyhow::Ok(out)
            })
        })
        .collect();
    let mut out = CacheRun::default();
    for h in handles {
        out.add(h.await??);
    }
    out.elapsed = start.elapsed();
    Ok(out)
}

/// W6: each subject gets `rounds` slots of `slot`, order alternating between rounds.
pub async fn w6(
    subjects: &[(&'static str, CacheSubject)],
    rounds: usize,
    slot: Duration,
    tasks: usize,
    probe: &Probe,
) -> Result<PerSubject<CacheRun>> {
    // Warm both paths (connections, scripts, allocator) outside the measured slots.
    for (_, s) in subjects {
        mix(s, 8, Duration::from_millis(100)).await?;
    }
    let mut out: PerSubject<CacheRun> = BTreeMap::new();
    for r in 0..rounds {
        for i in order(subjects.len(), r) {
            let (label, s) = &subjects[i];
            let (one, cost) = probe.measure(mix(s, tasks, slot)).await;
            let mut one = one?;
            one.cost = cost;
            out.entry(label).or_default().add(one);
        }
    }
    Ok(out)
}
