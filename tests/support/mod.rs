//! Shared helpers for the integration tests: a client tuned for a loaded CI machine, and direct
//! access to each master to check what the library left there.
#![allow(dead_code)]

pub mod exercise;

use std::time::Duration;

use redquorum::{LockGuard, Redlock};
use testcluster::Cluster;
use testcluster::checker::Holding;
use tokio::time::Instant;

/// Per-master timeout for tests: still far below every TTL used, but generous enough that a
/// healthy master on a busy 2-core machine running tests in parallel does not look dead.
pub const TEST_MASTER_TIMEOUT: Duration = Duration::from_millis(100);

pub fn builder(cluster: &Cluster) -> redquorum::Builder {
    builder_for(cluster.urls())
}

/// [`builder`] for masters given by URL (a user's credentials in them, a server of a test's
/// own).
pub fn builder_for<I, S>(urls: I) -> redquorum::Builder
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    Redlock::builder()
        .masters(urls)
        .master_timeout(TEST_MASTER_TIMEOUT)
        .batching(batching_from_env())
}

/// A client whose per-master timeout is the largest `ttl` allows (a tenth of it), so that
/// renewals against stopped masters hang as long as they can.
pub async fn client_with_slow_renewals(cluster: &Cluster, ttl: Duration) -> Redlock {
    builder(cluster)
        .master_timeout(ttl / 10)
        .build()
        .await
        .unwrap()
}

/// `REDQUORUM_TEST_BATCHING=1` runs a suite with batched rounds on (`tools/dev.sh test` runs
/// the Docker safety suite that way); otherwise the library's default.
pub fn batching_from_env() -> bool {
    match std::env::var("REDQUORUM_TEST_BATCHING").as_deref() {
        Ok("1") => true,
        Ok("0") => false,
        _ => redquorum::defaults::DEFAULT_BATCHING,
    }
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

/// A peer client's lock: `SET key value NX PX ttl` on master `i`, bypassing any proxy; whether
/// it was set.
pub async fn peer_set(cluster: &Cluster, i: usize, key: &str, value: &str, ttl: Duration) -> bool {
    let mut c = direct(cluster, i).await;
    let set: Option<String> = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .arg("NX")
        .arg("PX")
        .arg(ttl.as_millis() as u64)
        .query_async(&mut c)
        .await
        .unwrap();
    set.is_some()
}

/// Points master `i`'s proxy at master 0 of `standby`: another server takes over the address.
pub fn take_over(cluster: &Cluster, i: usize, standby: &Cluster) -> anyhow::Result<()> {
    let to = standby
        .direct_url(0)
        .trim_start_matches("redis://")
        .parse()?;
    cluster.redirect(i, to)?;
    Ok(())
}

/// Each master's fencing counter (field `n` of the fencing hash `key`), `None` where the
/// counter is missing or the master is stopped.
pub async fn counters_everywhere(cluster: &Cluster, key: &str) -> Vec<Option<String>> {
    everywhere(cluster, || redis::cmd("HGET").arg(key).arg("n").clone()).await
}

/// The value of `key` on every running master (None where absent or the master is down).
pub async fn values_everywhere(cluster: &Cluster, key: &str) -> Vec<Option<String>> {
    everywhere(cluster, || redis::cmd("GET").arg(key).clone()).await
}

/// `cmd`'s answer from every running master, `None` for the stopped ones.
async fn everywhere(cluster: &Cluster, cmd: impl Fn() -> redis::Cmd) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for i in 0..cluster.len() {
        if !cluster.is_running(i) {
            out.push(None);
            continue;
        }
        let mut c = direct(cluster, i).await;
        out.push(cmd().query_async(&mut c).await.unwrap());
    }
    out
}

/// The checker's record of `lock` held by `client` since `acquired_at`, not released (yet).
pub fn holding(client: usize, lock: &LockGuard, acquired_at: Instant) -> Holding {
    holding_of(client, lock.resource(), lock, acquired_at)
}

/// The same for one `resource` of `lock` (a multi-resource guard holds several).
pub fn holding_of(
    client: usize,
    resource: &str,
    lock: &LockGuard,
    acquired_at: Instant,
) -> Holding {
    Holding::new(
        client,
        resource,
        acquired_at.into_std(),
        lock.valid_until().into_std(),
        lock.fencing_token(),
    )
}

pub fn lock_key(resource: &str) -> String {
    format!("{}lock:{resource}", redquorum::defaults::DEFAULT_KEY_PREFIX)
}

/// Median of a set of durations.
pub fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

/// Everything logged through `tracing` on the current thread (events and span fields, as
/// `name=value` text) while the returned guard lives. For checking what reaches logs; use it
/// on a current-thread runtime, since tasks on other threads are not captured.
pub fn capture_logs() -> (
    std::sync::Arc<std::sync::Mutex<String>>,
    tracing::subscriber::DefaultGuard,
) {
    let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let guard = tracing::subscriber::set_default(Capture(text.clone()));
    (text, guard)
}

/// Runs `work` and returns its output with everything it logged through `tracing` (see
/// [`capture_logs`]: await it on the test's own thread).
pub async fn logged<T>(work: impl std::future::Future<Output = T>) -> (T, String) {
    let (logs, capture) = capture_logs();
    let out = work.await;
    let text = logs.lock().unwrap().clone();
    drop(capture);
    (out, text)
}

/// A `tracing` subscriber that appends every field it sees to a string.
struct Capture(std::sync::Arc<std::sync::Mutex<String>>);

impl Capture {
    fn append(&self, record: impl FnOnce(&mut dyn tracing::field::Visit)) {
        let mut text = self.0.lock().unwrap();
        record(&mut FieldText(&mut text));
        text.push('\n');
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        self.append(|v| span.record(v));
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        self.append(|v| values.record(v));
    }
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        self.append(|v| event.record(v));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

struct FieldText<'a>(&'a mut String);

impl tracing::field::Visit for FieldText<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        let _ = write!(self.0, "{}={value:?} ", field.name());
    }
}

/// `tasks` tasks of one client, each taking (`try_acquire`) and releasing its own key `rounds`
/// times; returns how many pairs succeeded. Many tasks on distinct keys keep calls in flight to
/// every master at once (what batching groups).
pub async fn churn(
    redlock: &Redlock,
    prefix: &str,
    tasks: usize,
    rounds: usize,
    ttl: Duration,
) -> usize {
    let tasks: Vec<_> = (0..tasks)
        .map(|t| {
            let (redlock, prefix) = (redlock.clone(), prefix.to_owned());
            tokio::spawn(async move {
                let mut done = 0;
                for r in 0..rounds {
                    let resource = format!("{prefix}-{t}-{r}");
                    if let Ok(Some(lock)) = redlock.try_acquire(&resource, ttl).await
                        && matches!(lock.release().await, Ok(true))
                    {
                        done += 1;
                    }
                }
                done
            })
        })
        .collect();
    let mut done = 0;
    for t in tasks {
        done += t.await.expect("churn task");
    }
    done
}
