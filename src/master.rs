//! One Redis master: its multiplexed connection, reconnection, per-call timeout and identity.
//!
//! Every call is bounded by the per-master timeout, whatever state the connection is in: a
//! paused master costs one timeout, a dead one costs nothing (the call fails at once while a
//! single reconnect attempt runs in the background). The client library's own timeouts and
//! backoffs are never on the hot path.

use std::future::Future;

use futures::FutureExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::{Cmd, RedisError, ServerErrorKind, Value};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::batch::{Batcher, Delivery};
use crate::endpoint::classify;
use crate::error::{Error, MasterReply, Replies, redact_url};
use crate::link::{Conn, Connector};
use crate::scripts::ScriptCall;
use crate::settings::{FenceKeys, Settings};

impl Settings {
    /// The way master `index` at `url` is reached.
    fn connector(&self, index: usize, url: &str) -> Result<Connector, Error> {
        #[cfg(feature = "sim")]
        if let Some(network) = &self.network {
            return Ok(Connector::Sim {
                index,
                network: network.clone(),
            });
        }
        Ok(Connector::Redis(self.access.endpoint(index, url)?))
    }
}

/// What the client knows about the server process behind a master's address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Identity {
    pub(crate) run_id: String,
    /// When the restart quarantine of this process starts, on our monotonic clock: when it
    /// started (observed time - uptime), or, for a process first seen after `build()` replacing
    /// another one, when we first saw it, whatever its uptime (a promoted replica or a standby
    /// that took over the address may have run for long without holding our keys).
    pub(crate) started_at: Instant,
}

/// Minimum time between two connection attempts to a master that is down.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(100);

pub(crate) struct Master {
    pub(crate) index: usize,
    /// The URL with any password redacted: safe for errors and logs.
    pub(crate) addr: String,
    connector: Connector,
    /// `None` while disconnected. Swapped without a lock so that the hot path only clones an
    /// `Arc` (and the connection handle, a channel sender).
    conn: ArcSwapOption<Conn>,
    connecting: AtomicBool,
    /// Woken when a connection attempt ends, so calls waiting for a reconnect go on at once.
    attempt_done: Notify,
    /// Milliseconds since `epoch` of the last connection attempt (for the backoff).
    last_attempt_ms: AtomicU64,
    epoch: Instant,
    identity: Mutex<Option<Identity>>,
    /// The fencing keys read at every connect, when fencing is on (fencing.rs).
    fence: Option<FenceKeys>,
    /// Whether this master's fencing counter is sealed for the server process behind the
    /// current connection: it has been raised from a quorum since that process started, so its
    /// vote may count (fencing.rs). Read from the master at every connect, so a client started
    /// after a restart knows it as well as one that saw it.
    sealed: AtomicBool,
    /// The master's seal generation (field `gen` of its fencing hash) while `sealed`: a grant
    /// counts only if the master answers with this very generation, and write-backs carry it.
    generation: ArcSwapOption<String>,
    /// Bumped by every connect and every unseal, so that a seal computed for an older state
    /// does not mark a newer one sealed (local bookkeeping, not the master's generation).
    seal_epoch: AtomicU64,
    /// Off during `build()`: the servers seen then are the baseline, not restarts.
    track_restarts: AtomicBool,
    /// The key the permission probe reads at connect, if it runs.
    probe_key: Option<String>,
    /// Set while the scripts are being loaded again after a `NOSCRIPT`.
    reloading: AtomicBool,
    /// The last connection attempt found the server busy (loading its data, running a long
    /// script): calls made without a connection say so, a transient failure, instead of
    /// "not connected", which the retry policy treats as hard.
    busy_at_connect: AtomicBool,
    timeout: Duration,
    connect_timeout: Duration,
    /// The delayed-restart window, only to word the restart log message.
    quarantine: Option<Duration>,
    /// Script calls ready while another is in flight go out together (batch.rs).
    batcher: Arc<Batcher>,
}

impl Master {
    pub(crate) fn new(index: usize, url: &str, settings: &Settings) -> Result<Self, Error> {
        let connector = settings.connector(index, url)?;
        let (timeout, connect_timeout, quarantine) = (
            settings.timeout,
            settings.connect_timeout,
            settings.quarantine,
        );
        let fence = settings.fence.clone();
        let probe_key = settings.probe_key.clone().filter(|_| connector.is_real());
        Ok(Self {
            index,
            addr: redact_url(url),
            connector,
            conn: ArcSwapOption::empty(),
            connecting: AtomicBool::new(false),
            attempt_done: Notify::new(),
            last_attempt_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            identity: Mutex::new(None),
            fence,
            sealed: AtomicBool::new(false),
            generation: ArcSwapOption::empty(),
            seal_epoch: AtomicU64::new(0),
            track_restarts: AtomicBool::new(false),
            probe_key,
            reloading: AtomicBool::new(false),
            busy_at_connect: AtomicBool::new(false),
            timeout,
            connect_timeout,
            quarantine,
            batcher: Arc::new(Batcher::new(timeout, settings.batching)),
        })
    }

    /// `host:port` of this master, for duplicate detection before connecting.
    pub(crate) fn endpoint(&self) -> String {
        self.connector.endpoint()
    }

    pub(crate) fn identity(&self) -> Option<Identity> {
        self.identity
            .lock()
            .expect("identity lock poisoned")
            .clone()
    }

    /// Delayed-restart protection: whether this master (re)started less than `window` ago (or
    /// has not been seen yet), so it may have lost keys it granted. Always false without a
    /// window.
    pub(crate) fn is_quarantined(&self, window: Option<Duration>) -> bool {
        let Some(window) = window else {
            return false;
        };
        match self.identity() {
            Some(id) => id.started_at.elapsed() < window,
            None => true,
        }
    }

    /// Whether this master's fencing counter is sealed for its current server process, so its
    /// votes may count when fencing is on.
    pub(crate) fn is_sealed(&self) -> bool {
        self.sealed.load(Ordering::Acquire)
    }

    /// The master's seal generation while it is sealed (fencing.rs).
    pub(crate) fn generation(&self) -> Option<Arc<String>> {
        self.generation.load_full()
    }

    /// Whether `answered` (the generation a grant came with) is the one this client knows.
    pub(crate) fn is_generation(&self, answered: &[u8]) -> bool {
        self.generation
            .load()
            .as_deref()
            .is_some_and(|g| g.as_bytes() == answered)
    }

    /// Whether a seal generation (`<run_id>:<random>`, as a master answered it) was made for
    /// the server process this client knows behind this master.
    pub(crate) fn is_process_generation(&self, generation: &[u8]) -> bool {
        let Ok(generation) = std::str::from_utf8(generation) else {
            return false;
        };
        self.identity()
            .is_some_and(|id| generation_is_for(generation, &id.run_id))
    }

    /// The state a seal starting now would cover; pass it to [`mark_sealed`](Self::mark_sealed).
    pub(crate) fn seal_epoch(&self) -> u64 {
        self.seal_epoch.load(Ordering::Acquire)
    }

    /// Records a seal with the master's new `generation`, unless the master reconnected or was
    /// unsealed since `epoch` was read.
    pub(crate) fn mark_sealed(&self, epoch: u64, generation: String) {
        // Flag, generation and epoch move together under the identity lock (see `connect`).
        let _known = self.identity.lock().expect("identity lock poisoned");
        if self.seal_epoch.load(Ordering::Acquire) == epoch {
            self.generation.store(Some(Arc::new(generation)));
            self.sealed.store(true, Ordering::Release);
        }
    }

    /// The master answered that its fencing hash has no generation or another one than this
    /// client knows (flushed, evicted, lost, sealed again): it must be sealed (or its new seal
    /// read) before its votes count.
    pub(crate) fn unseal(&self) {
        let _known = self.identity.lock().expect("identity lock poisoned");
        self.seal_epoch.fetch_add(1, Ordering::AcqRel);
        self.sealed.store(false, Ordering::Release);
        self.generation.store(None);
    }

    /// From now on, a server process not seen before is treated as a restart.
    pub(crate) fn track_restarts(&self) {
        self.track_restarts.store(true, Ordering::Release);
    }

    /// Connects (bounded by the connect timeout), records the server's identity, loads the
    /// scripts. Used at build and by background reconnects.
    pub(crate) async fn connect(&self) -> Result<(), MasterReply> {
        let result = self.connect_once().await;
        let busy = matches!(result, Err(MasterReply::Busy(_)));
        self.busy_at_connect.store(busy, Ordering::Release);
        result
    }

    async fn connect_once(&self) -> Result<(), MasterReply> {
        let attempt = async {
            let mut conn = self.connector.connect(self.connect_timeout).await?;
            let setup = async {
                let mut info = redis::cmd("INFO");
                info.arg("server");
                let info: String = conn.query(&info).await?;
                let seal = match &self.fence {
                    Some(keys) => Some(read_fence(&mut conn, keys).await?),
                    None => None,
                };
                let _: Vec<String> = conn.query_many(&crate::batch::load_all()).await?;
                if let Some(key) = &self.probe_key {
                    let _: Vec<Value> = conn
                        .query_many(&crate::endpoint::permission_probe(key))
                        .await?;
                }
                Ok::<_, RedisError>((info, seal))
            };
            let (info, seal) = setup.await.map_err(|e| classify(&e).0)?;
            Ok::<_, MasterReply>((conn, info, seal))
        };
        let (conn, info, seal) = match tokio::time::timeout(self.connect_timeout * 2, attempt).await
        {
            Ok(result) => result?,
            Err(_) => return Err(MasterReply::TimedOut),
        };
        if let Some(mut identity) = parse_identity(&info, Instant::now()) {
            let mut known = self.identity.lock().expect("identity lock poisoned");
            let new_process = known
                .as_ref()
                .is_none_or(|old| old.run_id != identity.run_id);
            // Sealed only if the generation names this very process and its counter is there.
            let generation = seal
                .filter(|f| f.is_sealed_for(&identity.run_id))
                .and_then(|f| f.generation);
            self.seal_epoch.fetch_add(1, Ordering::AcqRel);
            self.sealed.store(generation.is_some(), Ordering::Release);
            self.generation.store(generation.map(Arc::new));
            if let Some(old) = known.as_ref().filter(|_| !new_process) {
                // The same process again (a reconnect): its quarantine started when we first
                // saw it, which may be later than its uptime says (see below).
                identity.started_at = old.started_at;
            }
            if new_process && self.track_restarts.load(Ordering::Acquire) {
                // A replacement process: whatever its uptime, it did not hold our keys until
                // now, so its quarantine starts when we first see it.
                identity.started_at = Instant::now();
                if self.quarantine.is_some() {
                    tracing::info!(master = self.index, addr = %self.addr, run_id = %identity.run_id,
                        "master restarted; its votes wait out the restart quarantine");
                } else {
                    tracing::warn!(master = self.index, addr = %self.addr, run_id = %identity.run_id,
                        "master restarted and restart quarantine is off: if it lost its data, \
                         a lock it granted can now be granted twice");
                }
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
            master.attempt_done.notify_waiters();
        });
    }

    /// Why a call found no connection: busy when the last attempt found the server busy.
    fn not_connected(&self) -> MasterReply {
        if self.busy_at_connect.load(Ordering::Acquire) {
            MasterReply::Busy("busy when connecting; retrying".into())
        } else {
            MasterReply::Unavailable("not connected".into())
        }
    }

    fn drop_connection(&self, failed: &Arc<Conn>) {
        // Only clear the slot if it still holds the connection that failed: a reconnect may
        // already have put a fresh one there.
        let current = self.conn.load();
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, failed)) {
            drop(current);
            self.conn.compare_and_swap(&Some(failed.clone()), None);
        }
    }

    /// The current connection; if there is none, starts a reconnect and waits for it until
    /// `deadline`. A master that refuses connections fails at once (the attempt ends at once);
    /// within the reconnect backoff no attempt is made and the call fails at once too.
    async fn connection(self: &Arc<Self>, deadline: Instant) -> Result<Arc<Conn>, MasterReply> {
        if let Some(conn) = self.conn.load_full() {
            return Ok(conn);
        }
        // Registered before the attempt starts, so its end cannot be missed.
        let done = self.attempt_done.notified();
        self.reconnect_in_background();
        if self.connecting.load(Ordering::Acquire) {
            let _ = tokio::time::timeout_at(deadline, done).await;
        }
        self.conn.load_full().ok_or_else(|| self.not_connected())
    }

    /// Runs one command, bounded by the per-master timeout.
    pub(crate) async fn query(self: &Arc<Self>, cmd: &Cmd) -> Result<Value, MasterReply> {
        self.exchange(|conn| async move { (*conn).clone().send(cmd).await?.extract_error() })
            .await
    }

    /// Runs a script by SHA, falling back to `EVAL` on `NOSCRIPT`; the whole exchange is bounded
    /// by one per-master timeout.
    pub(crate) async fn run(self: &Arc<Self>, call: &ScriptCall) -> Result<Value, MasterReply> {
        // The entry's deadline is a backstop: when the exchange times out it drops this future,
        // and a call still queued in the batcher is then never sent.
        self.exchange(|conn| async move {
            let deadline = Instant::now() + self.timeout;
            self.eval_script(&conn, call, deadline).await
        })
        .await
    }

    /// [`run`](Self::run) bounded by `timeout` instead of the per-master timeout: a watchdog's
    /// renewal, whose late answer still counts while the lock's validity lasts (lease.rs).
    pub(crate) async fn run_within(
        self: &Arc<Self>,
        call: &ScriptCall,
        timeout: Duration,
    ) -> Result<Value, MasterReply> {
        self.exchange_within(timeout, true, |conn| async move {
            let deadline = Instant::now() + timeout;
            self.eval_script(&conn, call, deadline).await
        })
        .await
    }

    /// [`run`](Self::run) as a future that owns what it needs: the call a round makes to each
    /// master (it may outlive the round, as a straggler finishing in the background).
    pub(crate) fn run_owned(
        self: &Arc<Self>,
        call: &Arc<ScriptCall>,
    ) -> impl Future<Output = Result<Value, MasterReply>> + Send + use<> {
        let (master, call) = (self.clone(), call.clone());
        async move { master.run(&call).await }
    }

    /// Runs a script at most once, on the connection as it is now: no waiting for a reconnect,
    /// no second try on a new connection. For acquire scripts: a `SET` that reached a master
    /// late (after a reconnect) could land after this round's rollback or the lock's release
    /// and leave a key behind; sent now, it is ordered before them on the same connection.
    ///
    /// `excluded` is asked after the connection is loaded (and says why the master must not
    /// vote): a reconnect records a restart (new identity, seal state) before it publishes the
    /// new connection, so a vote sent on a restarted server's connection always sees that it
    /// restarted.
    pub(crate) async fn run_once(
        self: &Arc<Self>,
        call: &ScriptCall,
        excluded: impl FnOnce(&Self) -> Option<MasterReply>,
    ) -> Result<Value, MasterReply> {
        let Some(shared) = self.conn.load_full() else {
            self.reconnect_in_background();
            return Err(self.not_connected());
        };
        if let Some(why) = excluded(self) {
            return Err(why);
        }
        let deadline = Instant::now() + self.timeout;
        let evalsha = self
            .batcher
            .send(&shared, call, (deadline, Delivery::InTime))
            .map(|r| r.and_then(Value::extract_error));
        let answer = tokio::time::timeout_at(deadline, evalsha).await;
        match answer {
            Ok(Ok(value)) => Ok(value),
            Err(_) => Err(MasterReply::TimedOut),
            Ok(Err(e)) if e.kind() == redis::ErrorKind::Server(ServerErrorKind::NoScript) => {
                // No EVAL fallback here: it would be a second command, sent only once this
                // answer is back, and so possibly after this round's rollback or the lock's
                // release, leaving a key behind. This master votes no; the scripts are loaded
                // again (SCRIPT LOAD creates no key) for the next round.
                self.reload_scripts((*shared).clone()).await;
                Err(MasterReply::NoScript)
            }
            Ok(Err(e)) => {
                let (reply, broken) = classify(&e);
                if broken {
                    self.drop_connection(&shared);
                    self.reconnect_in_background();
                }
                Err(reply)
            }
        }
    }

    /// Loads every script again after a `NOSCRIPT` (the master restarted or its script cache
    /// was flushed), bounded by the per-master timeout; one reload at a time.
    async fn reload_scripts(&self, mut conn: Conn) {
        if self.reloading.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::debug!(
            master = self.index,
            "NOSCRIPT on an acquire: reloading the scripts"
        );
        let load = crate::batch::load_all();
        let reload = conn.query_many::<String>(&load);
        if let Ok(Err(e)) = tokio::time::timeout(self.timeout, reload).await {
            tracing::debug!(master = self.index, error = %e, "script reload failed");
        }
        self.reloading.store(false, Ordering::Release);
    }

    /// `EVALSHA`, and on `NOSCRIPT` the same call as `EVAL` once that answer is back. Only for
    /// calls that are harmless when they arrive late: the fallback is sent after the answer,
    /// so commands queued meanwhile (a release, say) reach the master before it.
    async fn eval_script(
        &self,
        conn: &Arc<Conn>,
        call: &ScriptCall,
        deadline: Instant,
    ) -> redis::RedisResult<Value> {
        // Error replies arrive as `Ok(Value::ServerError)`; make them errors to branch on.
        let first = self
            .batcher
            .send(conn, call, (deadline, Delivery::Always))
            .await
            .and_then(Value::extract_error);
        match first {
            Err(e) if e.kind() == redis::ErrorKind::Server(ServerErrorKind::NoScript) => {
                // Boxed: the rare second exchange would otherwise double the size of every
                // call's future, which is moved and copied on each round.
                Box::pin(self.eval_fallback(&mut (**conn).clone(), call)).await
            }
            other => other,
        }
    }

    /// After `NOSCRIPT`: the same call as `EVAL` with the source (which re-caches the script).
    async fn eval_fallback(&self, conn: &mut Conn, call: &ScriptCall) -> redis::RedisResult<Value> {
        tracing::debug!(
            master = self.index,
            script = call.name(),
            "NOSCRIPT, using EVAL"
        );
        conn.send(&call.eval()).await.and_then(Value::extract_error)
    }

    /// Whether this master has no connection but a reconnect may bring one soon (an attempt
    /// is running, or one just succeeded).
    pub(crate) fn is_connected_or_connecting(&self) -> bool {
        self.connecting.load(Ordering::Acquire) || self.conn.load().is_some()
    }

    /// Whether a connection is open.
    pub(crate) fn is_connected(&self) -> bool {
        self.conn.load().is_some()
    }

    /// Waits, until `deadline`, for a reconnect of a master that has no connection. Sends
    /// nothing, so it is safe before a round whose commands must not arrive late.
    pub(crate) async fn await_connection(self: &Arc<Self>, deadline: Instant) {
        let _ = self.connection(deadline).await;
    }

    /// Runs `send` on the connection within one per-master timeout. If the connection turns
    /// out to be broken (the server restarted, a network path was reset), it is replaced and
    /// `send` is tried once more on the new one, still within the same timeout. Only for
    /// commands that are harmless if they arrive late or twice (compare-and-delete,
    /// compare-and-expire, counter raises, reads); acquire scripts use
    /// [`run_once`](Self::run_once).
    async fn exchange<'a, F, Fut>(self: &'a Arc<Self>, send: F) -> Result<Value, MasterReply>
    where
        F: Fn(Arc<Conn>) -> Fut,
        Fut: Future<Output = redis::RedisResult<Value>> + 'a,
    {
        self.exchange_within(self.timeout, true, send).await
    }

    /// [`exchange`](Self::exchange) with the caller's timeout instead of the per-master one.
    /// With `retry` false, `send` is never tried a second time: for commands that must not
    /// land twice.
    async fn exchange_within<'a, T, F, Fut>(
        self: &'a Arc<Self>,
        timeout: Duration,
        retry: bool,
        send: F,
    ) -> Result<T, MasterReply>
    where
        F: Fn(Arc<Conn>) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>> + 'a,
    {
        let deadline = Instant::now() + timeout;
        let mut retried = !retry;
        loop {
            let shared = tokio::time::timeout_at(deadline, self.connection(deadline))
                .await
                .map_err(|_| MasterReply::TimedOut)??;
            match tokio::time::timeout_at(deadline, send(shared.clone())).await {
                Ok(Ok(value)) => return Ok(value),
                Err(_) => return Err(MasterReply::TimedOut),
                Ok(Err(e)) => {
                    let (reply, broken) = classify(&e);
                    if broken {
                        self.drop_connection(&shared);
                        if !retried {
                            retried = true;
                            continue;
                        }
                        self.reconnect_in_background();
                    }
                    return Err(reply);
                }
            }
        }
    }
}

/// The configuration error to fail a build with, if a master refused the client at connect:
/// a certificate that does not verify, or credentials or permissions the master denies. Such a
/// master would never count towards a quorum, so a build that went on would silently run with
/// less fault tolerance than configured.
pub(crate) fn refused_at_build(masters: &[Arc<Master>], replies: &Replies) -> Option<Error> {
    masters
        .iter()
        .zip(replies.as_slice())
        .find_map(|(master, reply)| match reply {
            MasterReply::Tls(reason) => Some(Error::Tls {
                index: master.index,
                url: master.addr.clone(),
                reason: reason.clone(),
            }),
            MasterReply::Denied(reason) => Some(Error::Denied {
                index: master.index,
                url: master.addr.clone(),
                reason: reason.clone(),
            }),
            _ => None,
        })
}

/// Opens every master concurrently and checks that no two are the same server: same address
/// before connecting, same `run_id` after. Returns the masters (those that did not answer keep
/// reconnecting in the background) and what each one answered (`Granted` = connected).
///
/// Shared by [`Redlock`](crate::Redlock) and [`Cache`](crate::Cache), which differ only in
/// how many masters must answer.
pub(crate) async fn connect_all(
    urls: &[String],
    settings: &Settings,
) -> Result<(Vec<Arc<Master>>, Replies), Error> {
    let masters = urls
        .iter()
        .enumerate()
        .map(|(i, url)| Master::new(i, url, settings).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    let endpoints: Vec<String> = masters.iter().map(|m| m.endpoint()).collect();
    if let Some((first, second)) = first_duplicate(&endpoints) {
        return Err(Error::DuplicateMaster {
            first,
            second,
            why: "same address".into(),
        });
    }
    let results = futures::future::join_all(masters.iter().map(|m| m.connect())).await;
    let refused = results
        .iter()
        .map(|r| r.clone().err().unwrap_or(MasterReply::Granted));
    if let Some(e) = refused_at_build(&masters, &Replies(refused.collect())) {
        return Err(e);
    }
    let run_ids: Vec<Option<String>> = masters
        .iter()
        .map(|m| m.identity().map(|id| id.run_id))
        .collect();
    let known: Vec<String> = run_ids
        .iter()
        .enumerate()
        .map(|(i, id)| id.clone().unwrap_or_else(|| format!("unknown-{i}")))
        .collect();
    if let Some((first, second)) = first_duplicate(&known) {
        return Err(Error::DuplicateMaster {
            first,
            second,
            why: format!("same run_id {}", known[first]),
        });
    }
    let replies = Replies::from_results(&results);
    Ok((masters, replies))
}

/// A master's fencing hash, as read at connect and by a seal (fencing.rs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct FenceState {
    /// Field `n`; `None` when the counter is missing.
    pub(crate) counter: Option<u64>,
    /// Field `gen`: the generation of the last seal, `<run_id>:<random>`.
    pub(crate) generation: Option<String>,
}

impl FenceState {
    /// Whether the counter is there and sealed for the process `run_id`.
    pub(crate) fn is_sealed_for(&self, run_id: &str) -> bool {
        self.counter.is_some()
            && self
                .generation
                .as_deref()
                .is_some_and(|g| generation_is_for(g, run_id))
    }

    /// Parses the reply of `HMGET hash n gen`. A key of another type (a counter left as a
    /// plain string by an older version) reads as nothing: unsealed, converted by the claim.
    pub(crate) fn parse(value: redis::RedisResult<Value>) -> redis::RedisResult<Self> {
        let value = match value.and_then(Value::extract_error) {
            Err(e) if e.code() == Some("WRONGTYPE") => {
                return Ok(Self::default());
            }
            other => other?,
        };
        let (counter, generation): (Option<u64>, Option<String>) = redis::from_redis_value(value)?;
        Ok(Self {
            counter,
            generation,
        })
    }
}

/// The reply of a master whose sharded topology state is not sealed for its server process
/// (`sharded/seal.rs`): what the scripts answer when the state has no seal generation, and what
/// the client makes of a reply whose generation names another process.
pub(crate) fn topology_unsealed() -> MasterReply {
    MasterReply::ServerError(
        "TOPOLOGYUNSEALED topology state stored for another server process".into(),
    )
}

/// A sharded extend's or topology write's answer, with its topology seal generation checked:
/// `{1, gen}` (extend) or `gen` (write) counts as `1` only where `gen` names the server process
/// this client knows behind `master`; other answers are returned as they are.
pub(crate) fn topology_checked(
    master: &Master,
    answer: Result<Value, MasterReply>,
) -> Result<Value, MasterReply> {
    let generation = match &answer {
        Ok(Value::Array(items)) => match items.as_slice() {
            [Value::Int(1), Value::BulkString(g)] => g,
            _ => return answer,
        },
        Ok(Value::BulkString(g)) => g,
        _ => return answer,
    };
    if master.is_process_generation(generation) {
        Ok(Value::Int(1))
    } else {
        Err(topology_unsealed())
    }
}

/// Whether a seal generation (`<run_id>:<random>`) was made for the server process `run_id`.
pub(crate) fn generation_is_for(generation: &str, run_id: &str) -> bool {
    generation
        .strip_prefix(run_id)
        .is_some_and(|rest| rest.starts_with(':'))
}

/// `HMGET hash n gen`: what a master knows of its fencing counter.
pub(crate) fn fence_read(keys: &FenceKeys) -> Cmd {
    let mut cmd = redis::cmd("HMGET");
    cmd.arg(&keys.counter).arg("n").arg("gen");
    cmd
}

async fn read_fence(conn: &mut Conn, keys: &FenceKeys) -> redis::RedisResult<FenceState> {
    FenceState::parse(conn.send(&fence_read(keys)).await)
}

/// The first pair of equal items, by index.
fn first_duplicate(items: &[String]) -> Option<(usize, usize)> {
    items
        .iter()
        .enumerate()
        .find_map(|(j, b)| items[..j].iter().position(|a| a == b).map(|i| (i, j)))
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

/// Batched commands for the cache, which keeps its own per-node timeout.
impl Master {
    /// Sends `pipe` as one exchange bounded by `timeout` (the caller's: the cache's per-node
    /// timeout may differ from the lock's per-master one when both share this connection).
    ///
    /// Returns one value per command, error replies included in their slots as
    /// `Value::ServerError`; for an atomic pipeline, the values of the commands inside
    /// `MULTI`/`EXEC`.
    pub(crate) async fn pipeline(
        self: &Arc<Self>,
        pipe: &redis::Pipeline,
        timeout: Duration,
    ) -> Result<Vec<Value>, MasterReply> {
        self.exchange_within(timeout, true, |conn| send_pipeline((*conn).clone(), pipe))
            .await
    }

    /// [`pipeline`](Self::pipeline) for writes that must not land twice: sent at most once,
    /// never again on a new connection after a broken one (the first copy may have run, and a
    /// second could undo a newer write or report a conflict with itself).
    ///
    /// On failure, the flag says whether `pipe` may have reached the server (a connection was
    /// there to send it on): if so, whether it ran is unknown.
    pub(crate) async fn pipeline_once(
        self: &Arc<Self>,
        pipe: &redis::Pipeline,
        timeout: Duration,
    ) -> Result<Vec<Value>, (MasterReply, bool)> {
        let sent = AtomicBool::new(false);
        self.exchange_within(timeout, false, |conn| {
            sent.store(true, Ordering::Relaxed);
            send_pipeline((*conn).clone(), pipe)
        })
        .await
        .map_err(|reply| (reply, sent.load(Ordering::Relaxed)))
    }
}

/// Sends `pipe` and returns one value per command (see [`Master::pipeline`]).
async fn send_pipeline(mut conn: Conn, pipe: &redis::Pipeline) -> redis::RedisResult<Vec<Value>> {
    let n = pipe.len();
    if !pipe.is_transaction() {
        return conn.send_many(pipe, 0, n).await;
    }
    // Skip MULTI and the QUEUED acknowledgements; keep EXEC's array.
    let mut exec = conn.send_many(pipe, n + 1, 1).await?;
    match exec.pop() {
        Some(Value::Array(values)) => Ok(values),
        other => Err(RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "unexpected EXEC reply",
            format!("{other:?}"),
        ))),
    }
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

    #[test]
    fn loading_and_busy_replies_are_busy_not_errors() {
        let reply = |line: &[u8]| {
            let value = redis::parse_redis_value(line).expect("a RESP error line");
            classify(&value.extract_error().expect_err("an error reply"))
        };
        let loading = reply(b"-LOADING Redis is loading the dataset in memory\r\n");
        assert!(
            matches!(&loading, (MasterReply::Busy(m), false) if m.contains("loading the dataset")),
            "{loading:?}"
        );
        let busy = reply(b"-BUSY Redis is busy running a script.\r\n");
        assert!(matches!(&busy, (MasterReply::Busy(m), false) if m.contains("BUSY")));
        let oom = reply(b"-OOM command not allowed\r\n");
        assert!(matches!(oom, (MasterReply::ServerError(_), false)));
    }
}
