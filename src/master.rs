//! One Redis master: its multiplexed connection, reconnection, per-call timeout and identity.
//!
//! Every call is bounded by the per-master timeout, whatever state the connection is in: a
//! paused master costs one timeout, a dead one costs nothing (the call fails at once while a
//! single reconnect attempt runs in the background). The client library's own timeouts and
//! backoffs are never on the hot path.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Cmd, RedisError, ServerErrorKind, Value};
use tokio::time::Instant;

use crate::error::{Error, MasterReply, redact_url};
use crate::scripts::{self, ScriptCall};

/// What the client knows about the server process behind a master's address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Identity {
    pub(crate) run_id: String,
    /// When the server process started, on our monotonic clock (observed time - uptime).
    pub(crate) started_at: Instant,
}

/// Minimum time between two connection attempts to a master that is down.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(100);

pub(crate) struct Master {
    pub(crate) index: usize,
    /// The URL with any password redacted: safe for errors and logs.
    pub(crate) addr: String,
    client: redis::Client,
    /// `None` while disconnected. Swapped without a lock so that the hot path only clones an
    /// `Arc` (and the connection handle, a channel sender).
    conn: ArcSwapOption<MultiplexedConnection>,
    connecting: AtomicBool,
    /// Milliseconds since `epoch` of the last connection attempt (for the backoff).
    last_attempt_ms: AtomicU64,
    epoch: Instant,
    identity: Mutex<Option<Identity>>,
    /// Set when a reconnect found a different `run_id` than before: the server restarted.
    restarted: AtomicBool,
    timeout: Duration,
    connect_timeout: Duration,
}

impl Master {
    pub(crate) fn new(
        index: usize,
        url: &str,
        timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<Self, Error> {
        let client = redis::Client::open(url).map_err(|source| Error::InvalidUrl {
            index,
            url: redact_url(url),
            source,
        })?;
        Ok(Self {
            index,
            addr: redact_url(url),
            client,
            conn: ArcSwapOption::empty(),
            connecting: AtomicBool::new(false),
            last_attempt_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            identity: Mutex::new(None),
            restarted: AtomicBool::new(false),
            timeout,
            connect_timeout,
        })
    }

    /// `host:port` of this master, for duplicate detection before connecting.
    pub(crate) fn endpoint(&self) -> String {
        self.client.get_connection_info().addr().to_string()
    }

    pub(crate) fn identity(&self) -> Option<Identity> {
        self.identity
            .lock()
            .expect("identity lock poisoned")
            .clone()
    }

    /// Returns and clears the "restarted since last looked" flag.
    #[allow(dead_code)] // consumed by the fencing re-seed of restarted masters
    pub(crate) fn take_restarted(&self) -> bool {
        self.restarted.swap(false, Ordering::AcqRel)
    }

    /// Connects (bounded by the connect timeout), records the server's identity, loads the
    /// scripts. Used at build and by background reconnects.
    pub(crate) async fn connect(&self) -> Result<(), MasterReply> {
        let attempt = async {
            // No response timeout inside redis-rs: every call on this connection is already
            // bounded by our own per-master timeout (and this whole attempt by the connect
            // timeout), and a second timer per command costs a timer-wheel insert and removal
            // plus a larger future on the hot path (measured by loadbench, W1/W2).
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(self.connect_timeout))
                .set_response_timeout(None);
            let mut conn = self
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            let info: String = redis::cmd("INFO")
                .arg("server")
                .query_async(&mut conn)
                .await?;
            let mut load = redis::pipe();
            for script in scripts::all() {
                load.cmd("SCRIPT").arg("LOAD").arg(script.source);
            }
            let _: Vec<String> = load.query_async(&mut conn).await?;
            Ok::<_, RedisError>((conn, info))
        };
        let (conn, info) = match tokio::time::timeout(self.connect_timeout * 2, attempt).await {
            Ok(Ok(ok)) => ok,
            Ok(Err(e)) => return Err(classify(&e).0),
            Err(_) => return Err(MasterReply::TimedOut),
        };
        if let Some(identity) = parse_identity(&info, Instant::now()) {
            let mut known = self.identity.lock().expect("identity lock poisoned");
            if let Some(old) = known.as_ref()
                && old.run_id != identity.run_id
            {
                self.restarted.store(true, Ordering::Release);
                tracing::warn!(master = self.index, addr = %self.addr, old_run_id = %old.run_id,
                    new_run_id = %identity.run_id, "master restarted; it may have lost lock keys");
            }
            *known = Some(identity);
        }
        self.conn.store(Some(Arc::new(conn)));
        Ok(())
    }

    /// Starts one background connection attempt unless one is running or the last one was too
    /// recent. Never blocks the caller.
    fn reconnect_in_background(self: &Arc<Self>) {
        let now_ms = self.epoch.elapsed().as_millis() as u64;
        let last = self.last_attempt_ms.load(Ordering::Acquire);
        if last != 0 && now_ms.saturating_sub(last) < RECONNECT_BACKOFF.as_millis() as u64 {
            return;
        }
        if self.connecting.swap(true, Ordering::AcqRel) {
            return;
        }
        self.last_attempt_ms.store(now_ms.max(1), Ordering::Release);
        let weak: Weak<Self> = Arc::downgrade(self);
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            self.connecting.store(false, Ordering::Release);
            return;
        };
        handle.spawn(async move {
            let Some(master) = weak.upgrade() else { return };
            let result = master.connect().await;
            if let Err(why) = &result {
                tracing::debug!(master = master.index, addr = %master.addr, %why, "reconnect failed");
            }
            master.connecting.store(false, Ordering::Release);
        });
    }

    fn drop_connection(&self, failed: &Arc<MultiplexedConnection>) {
        // Only clear the slot if it still holds the connection that failed: a reconnect may
        // already have put a fresh one there.
        let current = self.conn.load();
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, failed)) {
            drop(current);
            self.conn.compare_and_swap(&Some(failed.clone()), None);
        }
    }

    fn connection(self: &Arc<Self>) -> Result<Arc<MultiplexedConnection>, MasterReply> {
        match self.conn.load_full() {
            Some(conn) => Ok(conn),
            None => {
                self.reconnect_in_background();
                Err(MasterReply::Unavailable("not connected".into()))
            }
        }
    }

    /// Runs one command, bounded by the per-master timeout.
    #[allow(dead_code)] // used by the cache
    pub(crate) async fn query(self: &Arc<Self>, cmd: &Cmd) -> Result<Value, MasterReply> {
        let shared = self.connection()?;
        let mut conn = (*shared).clone();
        let exchange = async { conn.send_packed_command(cmd).await?.extract_error() };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(self.failed(&shared, &e)),
            Err(_) => Err(MasterReply::TimedOut),
        }
    }

    /// Runs a script by SHA, falling back to `EVAL` on `NOSCRIPT`; the whole exchange is bounded
    /// by one per-master timeout.
    pub(crate) async fn run(self: &Arc<Self>, call: &ScriptCall) -> Result<Value, MasterReply> {
        let shared = self.connection()?;
        let mut conn = (*shared).clone();
        let exchange = async {
            // Error replies arrive as `Ok(Value::ServerError)`; make them errors to branch on.
            let first = conn
                .send_packed_command(call.evalsha())
                .await
                .and_then(Value::extract_error);
            match first {
                Err(e) if e.kind() == redis::ErrorKind::Server(ServerErrorKind::NoScript) => {
                    // Boxed: the rare second exchange would otherwise double the size of every
                    // call's future, which is moved and copied on each round.
                    Box::pin(self.eval_fallback(&mut conn, call)).await
                }
                other => other,
            }
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(self.failed(&shared, &e)),
            Err(_) => Err(MasterReply::TimedOut),
        }
    }

    /// After `NOSCRIPT`: the same call as `EVAL` with the source (which re-caches the script).
    async fn eval_fallback(
        &self,
        conn: &mut MultiplexedConnection,
        call: &ScriptCall,
    ) -> redis::RedisResult<Value> {
        tracing::debug!(
            master = self.index,
            script = call.name(),
            "NOSCRIPT, using EVAL"
        );
        conn.send_packed_command(&call.eval())
            .await
            .and_then(Value::extract_error)
    }

    fn failed(self: &Arc<Self>, conn: &Arc<MultiplexedConnection>, e: &RedisError) -> MasterReply {
        let (reply, broken) = classify(e);
        if broken {
            self.drop_connection(conn);
            self.reconnect_in_background();
        }
        reply
    }
}

/// Maps a client error to a reply, and says whether the connection is unusable.
fn classify(e: &RedisError) -> (MasterReply, bool) {
    if e.is_timeout() {
        (MasterReply::TimedOut, false)
    } else if e.is_io_error()
        || e.is_connection_dropped()
        || e.is_unrecoverable_error()
        || e.is_connection_refusal()
    {
        (MasterReply::Unavailable(e.to_string()), true)
    } else {
        (MasterReply::ServerError(e.to_string()), false)
    }
}

/// Reads `run_id` and `uptime_in_seconds` from an `INFO server` reply.
pub(crate) fn parse_identity(info: &str, now: Instant) -> Option<Identity> {
    let mut run_id = None;
    let mut uptime = None;
    for line in info.lines() {
        if let Some(v) = line.strip_prefix("run_id:") {
            run_id = Some(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("uptime_in_seconds:") {
            uptime = v.trim().parse::<u64>().ok();
        }
    }
    let uptime = Duration::from_secs(uptime?);
    Some(Identity {
        run_id: run_id?,
        started_at: now.checked_sub(uptime).unwrap_or(now),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_info_server() {
        let info = "# Server\r\nredis_version:7.0.15\r\nrun_id:abc123\r\nuptime_in_seconds:42\r\n";
        let now = Instant::now();
        let id = parse_identity(info, now).unwrap();
        assert_eq!(id.run_id, "abc123");
        assert_eq!(now - id.started_at, Duration::from_secs(42));
        assert!(parse_identity("# Server\r\n", now).is_none());
    }
}
