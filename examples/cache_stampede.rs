//! A cache stampede, defused: 200 concurrent requests for one cold key whose value takes
//! 200 ms to compute. Without protection every request would run the computation; with
//! `Cache::get_or_compute` it runs once, and everyone gets its value.
//!
//! The 200 requests come from 4 `Cache` clients with separate connections (as 4 processes
//! would), 50 each: the per-process single-flight shares a computation inside a client, the
//! fill lock (a Redlock on the key) picks one client across them.
//!
//! # How to run
//! ```text
//! # 5 local masters started for the run with testcluster (needs redis-server on PATH):
//! cargo run --example cache_stampede
//! # or against masters you run yourself:
//! REDQUORUM_MASTERS=redis://127.0.0.1:7001,redis://127.0.0.1:7002,redis://127.0.0.1:7003 \
//!     cargo run --example cache_stampede
//! ```
//! It prints how many computations ran (must be 1), the clients' hits and misses, and the
//! latency of the cold pass and of a warm pass that follows.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redquorum::Cache;
use testcluster::Cluster;
use tokio::sync::Barrier;

const CLIENTS: usize = 4;
const REQUESTS_PER_CLIENT: usize = 50;
const COMPUTE_TIME: Duration = Duration::from_millis(200);
const TTL: Duration = Duration::from_secs(60);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Keep the cluster alive for the whole run; dropping it stops the masters.
    let (urls, _cluster) = match std::env::var("REDQUORUM_MASTERS") {
        Ok(list) => (list.split(',').map(str::to_owned).collect::<Vec<_>>(), None),
        Err(_) => {
            let cluster = Cluster::start(5)?;
            println!("started 5 masters with testcluster: {:?}", cluster.urls());
            (cluster.urls(), Some(cluster))
        }
    };

    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        clients.push(
            Cache::builder()
                .nodes(urls.clone())
                .node_timeout(Duration::from_millis(100))
                .build()
                .await?,
        );
    }
    // A fresh key per run, so the first pass is cold even on long-lived masters.
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let key = format!("stampede:{nanos}");
    println!(
        "{} requests ({CLIENTS} clients x {REQUESTS_PER_CLIENT}) for cold key {key:?}, \
         computation takes {COMPUTE_TIME:?}",
        CLIENTS * REQUESTS_PER_CLIENT
    );

    let computations = Arc::new(AtomicUsize::new(0));
    let cold = run_pass(&clients, &key, &computations).await?;
    report("cold", &cold);
    let warm = run_pass(&clients, &key, &computations).await?;
    report("warm", &warm);

    let ran = computations.load(Ordering::SeqCst);
    let (mut hits, mut misses) = (0, 0);
    for client in &clients {
        let stats = client.stats();
        hits += stats.hits;
        misses += stats.misses;
    }
    println!("computations run: {ran}");
    println!("hits: {hits}, misses: {misses} (over both passes, all clients)");
    clients[0].delete(&key).await?;
    anyhow::ensure!(ran == 1, "the computation ran {ran} times");
    Ok(())
}

/// Fires every request at once (a barrier releases them together); returns their latencies.
async fn run_pass(
    clients: &[Cache],
    key: &str,
    computations: &Arc<AtomicUsize>,
) -> anyhow::Result<Vec<Duration>> {
    let barrier = Arc::new(Barrier::new(clients.len() * REQUESTS_PER_CLIENT));
    let mut tasks = Vec::new();
    for client in clients {
        for _ in 0..REQUESTS_PER_CLIENT {
            let (client, key) = (client.clone(), key.to_owned());
            let (barrier, computations) = (barrier.clone(), computations.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let started = Instant::now();
                let value = client
                    .get_or_compute(&key, TTL, || async move {
                        computations.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(COMPUTE_TIME).await;
                        Ok::<_, std::io::Error>(b"an expensive report".to_vec())
                    })
                    .await?;
                anyhow::ensure!(&value[..] == b"an expensive report");
                anyhow::Ok(started.elapsed())
            }));
        }
    }
    let mut latencies = Vec::with_capacity(tasks.len());
    for task in tasks {
        latencies.push(task.await??);
    }
    latencies.sort();
    Ok(latencies)
}

fn report(pass: &str, sorted: &[Duration]) {
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    println!(
        "{pass} pass: {} requests, latency p50 {:?}, p99 {:?}, max {:?}",
        sorted.len(),
        at(0.5),
        at(0.99),
        sorted[sorted.len() - 1]
    );
}
