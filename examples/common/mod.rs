//! What the primitive examples share: where the masters are, and a latency figure.
#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::Context;

/// The master URLs from `REDQUORUM_MASTERS` (comma-separated), or five local `redis-server`
/// masters started for the example (stopped when the returned cluster is dropped).
pub fn masters() -> anyhow::Result<(Vec<String>, Option<testcluster::Cluster>)> {
    Ok(match std::env::var("REDQUORUM_MASTERS") {
        Ok(list) => (list.split(',').map(str::to_owned).collect(), None),
        Err(_) => {
            let cluster = testcluster::Cluster::start(5)
                .context("starting five redis-server masters (is redis-server installed?)")?;
            (cluster.urls(), Some(cluster))
        }
    })
}

/// Runs `op` `n` times one after the other and prints p50 / p99 of its duration.
pub async fn timed<F, Fut>(label: &str, n: usize, mut op: F) -> anyhow::Result<Duration>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        op(i).await?;
        times.push(t.elapsed());
    }
    times.sort();
    let p50 = times[times.len() / 2];
    println!(
        "{label:>40}: p50 {:>6} us  p99 {:>6} us",
        p50.as_micros(),
        times[times.len() * 99 / 100].as_micros()
    );
    Ok(p50)
}

/// Kendall's tau between arrival order (the index) and service order (`served[i]` = the rank
/// at which arrival `i` was served): 1 = first come, first served; 0 = unrelated.
pub fn kendall_tau(served: &[usize]) -> f64 {
    let (mut concordant, mut discordant) = (0i64, 0i64);
    for i in 0..served.len() {
        for j in i + 1..served.len() {
            if served[i] < served[j] {
                concordant += 1;
            } else {
                discordant += 1;
            }
        }
    }
    (concordant - discordant) as f64 / (concordant + discordant) as f64
}
