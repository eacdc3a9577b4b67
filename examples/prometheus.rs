//! The library's metrics served for Prometheus, while workers contend for a lock.
//!
//! How to run: `cargo run --example prometheus` starts five local `redis-server` masters
//! itself; `REDQUORUM_MASTERS=redis://h1:6379,redis://h2:6379,redis://h3:6379` uses yours.
//! It serves `http://127.0.0.1:9898/metrics` (`PROMETHEUS_ADDR` to change it) for as long as
//! the workers run (`DEMO_SECONDS`, default 30), and prints the page once at the end.
//!
//! The exporter is `metrics-exporter-prometheus` with its HTTP listener left out: the page is
//! `PrometheusHandle::render()`, served here by a few lines of tokio, so the example shows all
//! an application needs: install a recorder, serve what it renders.

use std::time::{Duration, Instant};

use anyhow::Context;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use redquorum::Redlock;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .context("installing the Prometheus recorder")?;
    let addr = std::env::var("PROMETHEUS_ADDR").unwrap_or_else(|_| "127.0.0.1:9898".into());
    let listener = TcpListener::bind(&addr)
        .await
        .context("binding the metrics address")?;
    println!("metrics on http://{addr}/metrics");
    tokio::spawn(serve(listener, handle.clone()));

    let (urls, _cluster) = match std::env::var("REDQUORUM_MASTERS") {
        Ok(list) => (list.split(',').map(str::to_owned).collect(), None),
        Err(_) => {
            let cluster = testcluster::Cluster::start(5)
                .context("starting five redis-server masters (is redis-server installed?)")?;
            (cluster.urls(), Some(cluster))
        }
    };
    let seconds: u64 = std::env::var("DEMO_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut workers = Vec::new();
    for _ in 0..3 {
        let redlock = Redlock::builder().masters(urls.clone()).build().await?;
        workers.push(tokio::spawn(work(redlock, until)));
    }
    for w in workers {
        w.await??;
    }
    println!("{}", handle.render());
    Ok(())
}

/// Takes turns on one lock, some attempts giving up at once (so `contended` shows up too).
async fn work(redlock: Redlock, until: Instant) -> anyhow::Result<()> {
    let ttl = Duration::from_secs(2);
    while Instant::now() < until {
        match redlock.try_acquire("report", ttl).await? {
            Some(lock) => {
                tokio::time::sleep(Duration::from_millis(30)).await;
                lock.release().await?;
            }
            None => {
                let lock = redlock.acquire("report", ttl).await?;
                lock.release().await?;
            }
        }
    }
    Ok(())
}

/// Answers every connection with the current metrics page (one request per connection).
async fn serve(listener: TcpListener, handle: PrometheusHandle) {
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            continue;
        };
        let page = handle.render();
        tokio::spawn(async move {
            // Read (and ignore) the request; bounded, so a silent client cannot hold a task.
            let mut request = [0u8; 1024];
            let _ = tokio::time::timeout(Duration::from_secs(1), socket.read(&mut request)).await;
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{page}",
                page.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        });
    }
}
