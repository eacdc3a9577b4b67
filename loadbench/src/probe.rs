//! What a slot cost: CPU of this process, CPU of the five masters (`INFO`: `used_cpu_sys` +
//! `used_cpu_user`) and the commands they processed (`total_commands_processed`, which counts
//! the commands a script runs as well as the script call). On a shared 2-core machine the CPU,
//! not the wall clock, is what is scarce, so every workload reports these per operation.

use std::future::Future;
use std::ops::AddAssign;
use std::time::Duration;

use anyhow::Result;

/// CPU and commands used during some slots.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cost {
    /// This process (or, for W3b, the worker processes).
    pub client_cpu: Duration,
    /// The five masters together.
    pub server_cpu: Duration,
    /// Commands the five masters processed (the probe's own 10 `INFO`s per slot included).
    pub commands: u64,
    /// Slots whose `INFO` could not be read (after retries): the totals above are then
    /// incomplete, and no figure per operation is given.
    pub unreadable: u32,
}

/// [`Cost`] divided by a number of operations.
#[derive(Clone, Copy, Debug)]
pub struct PerOp {
    pub client_us: f64,
    pub server_us: f64,
    pub commands: f64,
}

impl Cost {
    pub fn per(&self, ops: u64) -> Option<PerOp> {
        let n = ops as f64;
        (ops > 0 && self.unreadable == 0).then(|| PerOp {
            client_us: self.client_cpu.as_secs_f64() * 1e6 / n,
            server_us: self.server_cpu.as_secs_f64() * 1e6 / n,
            commands: self.commands as f64 / n,
        })
    }

    fn since(&self, earlier: &Cost) -> Cost {
        Cost {
            client_cpu: self.client_cpu.saturating_sub(earlier.client_cpu),
            server_cpu: self.server_cpu.saturating_sub(earlier.server_cpu),
            commands: self.commands.saturating_sub(earlier.commands),
            unreadable: 0,
        }
    }
}

impl AddAssign for Cost {
    fn add_assign(&mut self, o: Cost) {
        self.client_cpu += o.client_cpu;
        self.server_cpu += o.server_cpu;
        self.commands += o.commands;
        self.unreadable += o.unreadable;
    }
}

/// One connection per master, for `INFO` only.
pub struct Probe {
    masters: Vec<redis::aio::MultiplexedConnection>,
}

impl Probe {
    pub async fn connect(urls: &[String]) -> Result<Self> {
        let mut masters = Vec::new();
        for url in urls {
            let client = redis::Client::open(url.as_str())?;
            masters.push(client.get_multiplexed_async_connection().await?);
        }
        Ok(Self { masters })
    }

    /// Runs `work` and returns its output with what it cost.
    pub async fn measure<T>(&self, work: impl Future<Output = T>) -> (T, Cost) {
        let before = self.sample().await;
        let out = work.await;
        let after = self.sample().await;
        let cost = match (before, after) {
            (Some(b), Some(a)) => a.since(&b),
            _ => {
                eprintln!("probe: a master's INFO was unreadable; this slot's costs are left out");
                Cost {
                    unreadable: 1,
                    ..Cost::default()
                }
            }
        };
        (out, cost)
    }

    /// Totals so far: this process's CPU, the masters' CPU and commands; `None` when a
    /// master's `INFO` failed three times (a loaded machine can time a reply out).
    async fn sample(&self) -> Option<Cost> {
        let mut total = Cost {
            client_cpu: client_cpu(),
            ..Cost::default()
        };
        for m in &self.masters {
            let (cpu, commands) = Self::info(m).await?;
            total.server_cpu += cpu;
            total.commands += commands;
        }
        Some(total)
    }

    /// One master's CPU and commands processed, in at most three tries.
    async fn info(m: &redis::aio::MultiplexedConnection) -> Option<(Duration, u64)> {
        for _ in 0..3 {
            let info: String = match redis::cmd("INFO").query_async(&mut m.clone()).await {
                Ok(info) => info,
                Err(_) => continue,
            };
            let (mut cpu, mut commands) = (None::<f64>, None);
            for line in info.lines() {
                if let Some(v) = line
                    .strip_prefix("used_cpu_sys:")
                    .or_else(|| line.strip_prefix("used_cpu_user:"))
                {
                    *cpu.get_or_insert(0.0) += v.trim().parse::<f64>().ok()?;
                } else if let Some(v) = line.strip_prefix("total_commands_processed:") {
                    commands = Some(v.trim().parse::<u64>().ok()?);
                }
            }
            return Some((Duration::from_secs_f64(cpu?), commands?));
        }
        None
    }
}

/// utime + stime of this process, from /proc (10 ms resolution; slots are long enough).
pub fn client_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}
