//! Shared helpers for the integration tests: a client tuned for a loaded CI machine, and direct
//! access to each master to check what the library left there.
#![allow(dead_code)]

use std::time::Duration;

use redquorum::Redlock;
use testcluster::Cluster;

/// Per-master timeout for tests: still far below every TTL used, but generous enough that a
/// healthy master on a busy 2-core machine running tests in parallel does not look dead.
pub const TEST_MASTER_TIMEOUT: Duration = Duration::from_millis(100);

pub fn builder(cluster: &Cluster) -> redquorum::Builder {
    Redlock::builder()
        .masters(cluster.urls())
        .master_timeout(TEST_MASTER_TIMEOUT)
}

pub async fn client(cluster: &Cluster) -> Redlock {
    builder(cluster)
        .build()
        .await
        .unwrap_or_else(|e| panic!("build failed: {e}\n{}", cluster.logs()))
}

/// A plain connection to master `i`, bypassing any proxy.
pub async fn direct(cluster: &Cluster, i: usize) -> redis::aio::MultiplexedConnection {
    redis::Client::open(cluster.direct_url(i))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "direct connection to master {i} failed: {e}\n{}",
                cluster.log(i)
            )
        })
}

/// The value of `key` on every running master (None where absent or the master is down).
pub async fn values_everywhere(cluster: &Cluster, key: &str) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for i in 0..cluster.len() {
        if !cluster.is_running(i) {
            out.push(None);
            continue;
        }
        let mut c = direct(cluster, i).await;
        let v: Option<String> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut c)
            .await
            .unwrap();
        out.push(v);
    }
    out
}

pub fn lock_key(resource: &str) -> String {
    format!("{}lock:{resource}", redquorum::DEFAULT_KEY_PREFIX)
}

/// Median of a set of durations.
pub fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}
