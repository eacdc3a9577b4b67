//! Wake-ups for waiting acquirers: a release announces itself with `PUBLISH`, and waiters try
//! again at once instead of sleeping out their retry delay.
//!
//! - The release script `PUBLISH`es on the resource's channel ([`channel`]) on every master it
//!   deletes the key on, if someone waits there: an acquire that will wait sets the resource's
//!   waiter marker ([`waiter_marker`], value `redquorum:waiting`, which no peer writes as a lock value) in the same script run that
//!   refuses it, the release deletes the marker with the key and publishes only if it was
//!   there. A release nobody waits for sends no `PUBLISH`. A waiter refused just before a
//!   release is marked before it (one script run each, on one master). The marker lives for
//!   the longer of the waiter's TTL and the lock's remaining PTTL, is set again on each refused
//!   round, and every extend of the lock makes it live as long as the extended lock. A key of
//!   the marker's name that is not a marker (a peer's lock, any other type) is never written,
//!   extended or deleted: the waiter then falls back to its retry delay.
//! - Each client keeps one pub/sub connection per master, driven by a background task, and
//!   subscribes to a resource's channel only while one of its own tasks waits for that resource.
//! - The waiters of one resource inside this process form a FIFO queue (a fair async mutex, the
//!   *gate*): only the task at its head runs acquire rounds. Local waiters therefore never split
//!   the vote between themselves, are served in arrival order, and a task that has just released
//!   the lock and wants it back queues behind them instead of barging in.
//! - A release by a task of the same client wakes the head directly, as soon as its deletes
//!   are queued on the masters' connections (the head's SETs queue behind them, so every
//!   master sees the delete first): the hand-off overlaps the release round instead of
//!   following it.
//! - The head waits for a release message from any master, or for its jittered retry delay,
//!   whichever comes first: a lost message, a master that is down, or a lock that expired
//!   instead of being released costs at most the ordinary retry delay. Correctness never depends
//!   on a message arriving; messages only shorten the wait.
//!
//! Nothing here takes part in the quorum: granting, validity, rollback and release are the same
//! with or without wake-ups.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::future::join_all;
use tokio::sync::{Notify, OwnedMutexGuard, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Pause between two connection attempts of a subscriber whose master is down.
const RECONNECT_PAUSE: Duration = Duration::from_millis(200);

/// The channel a release of `resource` is announced on.
pub(crate) fn channel(prefix: &str, resource: &str) -> String {
    format!("{prefix}released:{resource}")
}

/// The key a refused waiter sets (acquire.lua) so that the release of `resource` publishes
/// (release.lua): a release nobody waits for sends no `PUBLISH`. Its own key space
/// (`lock-waiting`), so it never collides with a lock key.
pub(crate) fn waiter_marker(prefix: &str, resource: &str) -> String {
    format!("{prefix}lock-waiting:{resource}")
}

/// The wake-up machinery of one client: the local queues and a subscriber per master.
pub(crate) struct Wakeups {
    shared: Arc<Shared>,
    /// How each master is reached (URL, credentials, TLS), for listeners of their own
    /// (election observers).
    endpoints: Vec<crate::endpoint::Endpoint>,
    prefix: String,
    /// Bound on waiting for the masters to confirm a subscription.
    timeout: Duration,
    stop: CancellationToken,
}

struct Shared {
    /// Queues by channel name, present while at least one local task waits on the resource.
    queues: Mutex<HashMap<String, Arc<Queue>>>,
    /// One command sender per master's subscriber task.
    subscribers: Vec<mpsc::UnboundedSender<Command>>,
}

/// The local waiters of one resource.
struct Queue {
    /// FIFO gate: its holder is the one local task running acquire rounds for the resource.
    gate: Arc<tokio::sync::Mutex<()>>,
    /// Signalled on a release message (a stored permit means "released since you last looked").
    released: Notify,
    /// Payload of the last release message, so that the N copies of one release (one per
    /// master) wake the head once.
    last_release: AtomicU64,
    /// Set when the head left holding the lock: the next head then waits for a release before
    /// its first round instead of spending a round that cannot win.
    taken_locally: AtomicBool,
    /// Local tasks in the queue (guarded by the `queues` mutex).
    users: AtomicU64,
    /// Subscription confirmations still to await (taken by the first head).
    confirmations: Mutex<Vec<oneshot::Receiver<bool>>>,
}

enum Command {
    Subscribe(String, oneshot::Sender<bool>),
    Unsubscribe(String),
}

impl Wakeups {
    /// Starts one subscriber task per master URL. Connection failures are retried in the
    /// background; until a subscriber is connected, waiters simply fall back to their delay.
    pub(crate) fn start(
        urls: &[String],
        access: &crate::settings::Access,
        prefix: &str,
        timeout: Duration,
        connect_timeout: Duration,
    ) -> Self {
        let stop = CancellationToken::new();
        let mut senders = Vec::with_capacity(urls.len());
        let mut receivers = Vec::with_capacity(urls.len());
        for _ in urls {
            let (tx, rx) = mpsc::unbounded_channel();
            senders.push(tx);
            receivers.push(rx);
        }
        let shared = Arc::new(Shared {
            queues: Mutex::new(HashMap::new()),
            subscribers: senders,
        });
        let mut endpoints = Vec::with_capacity(urls.len());
        for (index, (url, rx)) in urls.iter().zip(receivers).enumerate() {
            // Invalid URLs were rejected by the master connections already.
            let Ok(endpoint) = access.endpoint(index, url) else {
                continue;
            };
            endpoints.push(endpoint.clone());
            tokio::spawn(subscriber(
                index,
                endpoint,
                Arc::downgrade(&shared),
                rx,
                connect_timeout,
                stop.clone(),
            ));
        }
        Self {
            shared,
            endpoints,
            prefix: prefix.to_owned(),
            timeout,
            stop,
        }
    }

    /// How each master is reached (with credentials: never log them).
    pub(crate) fn endpoints(&self) -> &[crate::endpoint::Endpoint] {
        &self.endpoints
    }

    /// Whether local tasks already wait for `resource` (a newcomer then queues behind them).
    pub(crate) fn has_waiters(&self, resource: &str) -> bool {
        let queues = self.shared.queues.lock().expect("wake-up queues poisoned");
        !queues.is_empty() && queues.contains_key(&channel(&self.prefix, resource))
    }

    /// A task of this client is releasing `resource` and its deletes are queued on every
    /// master's connection: wake the local head at once instead of waiting for the pub/sub
    /// message. Its SETs travel down the same connections behind the deletes, so each master
    /// sees the delete first (if a connection's queue was full and the order not kept, the
    /// head's round merely fails and the pub/sub message wakes it again). The release id is
    /// recorded so that the N pub/sub copies of this release do not wake anyone again.
    pub(crate) fn released_locally(&self, resource: &str, release_id: u64) {
        let queue = {
            let queues = self.shared.queues.lock().expect("wake-up queues poisoned");
            if queues.is_empty() {
                return;
            }
            queues.get(&channel(&self.prefix, resource)).cloned()
        };
        if let Some(queue) = queue {
            queue.last_release.store(release_id, Ordering::Release);
            queue.released.notify_one();
        }
    }

    /// Joins the local queue of `resource`, subscribing to its channel if this is the first
    /// local waiter.
    pub(crate) fn join(&self, resource: &str) -> Waiter {
        let name = channel(&self.prefix, resource);
        let mut queues = self.shared.queues.lock().expect("wake-up queues poisoned");
        let queue = queues
            .entry(name.clone())
            .or_insert_with(|| {
                // Sent under the map lock: per master, subscribe and unsubscribe commands for
                // a channel are queued in the same order as the map changes.
                let confirmations = self
                    .shared
                    .subscribers
                    .iter()
                    .map(|tx| {
                        let (done, confirmed) = oneshot::channel();
                        let _ = tx.send(Command::Subscribe(name.clone(), done));
                        confirmed
                    })
                    .collect();
                Arc::new(Queue {
                    gate: Arc::new(tokio::sync::Mutex::new(())),
                    released: Notify::new(),
                    last_release: AtomicU64::new(0),
                    taken_locally: AtomicBool::new(false),
                    users: AtomicU64::new(0),
                    confirmations: Mutex::new(confirmations),
                })
            })
            .clone();
        queue.users.fetch_add(1, Ordering::Relaxed);
        Waiter {
            shared: self.shared.clone(),
            channel: name,
            queue,
            gate: None,
            timeout: self.timeout,
        }
    }
}

impl Drop for Wakeups {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// One task's place in the local queue of a resource. Dropping it (acquired, gave up, or the
/// acquire future was dropped) leaves the queue and passes the gate on.
pub(crate) struct Waiter {
    shared: Arc<Shared>,
    channel: String,
    queue: Arc<Queue>,
    gate: Option<OwnedMutexGuard<()>>,
    timeout: Duration,
}

impl Waiter {
    /// Waits until this task heads the local queue and the channel is subscribed; then, if the
    /// previous head left holding the lock, for its release (or `fallback`). `false` when
    /// `deadline` passed first.
    pub(crate) async fn turn(&mut self, deadline: Instant, fallback: Duration) -> bool {
        if self.gate.is_some() {
            return true;
        }
        let gate = self.queue.gate.clone().lock_owned();
        let Ok(gate) = tokio::time::timeout_at(deadline, gate).await else {
            return false;
        };
        self.gate = Some(gate);
        // The first head waits for the masters to confirm the subscription, so that a release
        // after its next round cannot go unannounced. Bounded: a paused master is not waited
        // for longer than one per-master timeout.
        let pending = std::mem::take(
            &mut *self
                .queue
                .confirmations
                .lock()
                .expect("confirmations poisoned"),
        );
        if !pending.is_empty() {
            let _ = tokio::time::timeout(self.timeout, join_all(pending)).await;
        }
        if self.queue.taken_locally.swap(false, Ordering::AcqRel) {
            self.wait(fallback.min(deadline.saturating_duration_since(Instant::now())))
                .await;
        }
        true
    }

    /// Waits for a release message, or `fallback`, whichever comes first.
    pub(crate) async fn wait(&self, fallback: Duration) {
        tokio::select! {
            _ = self.queue.released.notified() => crate::metrics::woken(),
            _ = tokio::time::sleep(fallback) => {}
        }
    }

    /// Leaves the queue holding the lock: the next head waits for a release before its first
    /// round.
    pub(crate) fn acquired(self) {
        self.queue.taken_locally.store(true, Ordering::Release);
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        // Leave the queue before passing the gate on, so that the map state is right when the
        // next head runs.
        let mut queues = self.shared.queues.lock().expect("wake-up queues poisoned");
        if self.queue.users.fetch_sub(1, Ordering::Relaxed) == 1 {
            queues.remove(&self.channel);
            for tx in &self.shared.subscribers {
                let _ = tx.send(Command::Unsubscribe(self.channel.clone()));
            }
        }
        drop(queues);
        self.gate.take();
    }
}

/// Keeps one pub/sub connection to a master: applies (un)subscribe commands in order, and turns
/// release messages into wake-ups. Reconnects (and re-subscribes) when the connection drops.
async fn subscriber(
    index: usize,
    endpoint: crate::endpoint::Endpoint,
    shared: std::sync::Weak<Shared>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    connect_timeout: Duration,
    stop: CancellationToken,
) {
    loop {
        let connected = tokio::select! {
            _ = stop.cancelled() => return,
            c = endpoint.pubsub(connect_timeout) => c,
        };
        let (mut sink, mut stream) = match connected {
            Some(pubsub) => pubsub.split(),
            _ => {
                // Commands meanwhile: answer "not subscribed" so that nobody waits for us.
                let pause = tokio::time::sleep(RECONNECT_PAUSE);
                tokio::pin!(pause);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = &mut pause => break,
                        cmd = commands.recv() => match cmd {
                            Some(Command::Subscribe(_, done)) => { let _ = done.send(false); }
                            Some(Command::Unsubscribe(_)) => {}
                            None => return,
                        },
                    }
                }
                continue;
            }
        };
        // Re-subscribe to every channel that has local waiters (after a reconnect).
        let current: Vec<String> = match shared.upgrade() {
            Some(s) => s
                .queues
                .lock()
                .expect("wake-up queues poisoned")
                .keys()
                .cloned()
                .collect(),
            None => return,
        };
        if !current.is_empty() {
            let _ = tokio::time::timeout(connect_timeout, sink.subscribe(&current)).await;
        }
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                cmd = commands.recv() => match cmd {
                    // Bounded: a paused master must not stall the commands behind this one
                    // (messages keep arriving meanwhile: redis-rs buffers them).
                    Some(Command::Subscribe(name, done)) => {
                        let subscribed =
                            tokio::time::timeout(connect_timeout, sink.subscribe(&name)).await;
                        let _ = done.send(matches!(subscribed, Ok(Ok(()))));
                    }
                    Some(Command::Unsubscribe(name)) => {
                        let _ = tokio::time::timeout(connect_timeout, sink.unsubscribe(&name)).await;
                    }
                    None => return,
                },
                msg = stream.next() => {
                    let Some(msg) = msg else {
                        tracing::debug!(master = index, "wake-up connection lost; reconnecting");
                        break;
                    };
                    let Some(shared) = shared.upgrade() else { return };
                    let queue = shared
                        .queues
                        .lock()
                        .expect("wake-up queues poisoned")
                        .get(msg.get_channel_name())
                        .cloned();
                    if let Some(queue) = queue {
                        let id: u64 = msg.get_payload().unwrap_or(0);
                        if id == 0 || queue.last_release.swap(id, Ordering::AcqRel) != id {
                            queue.released.notify_one();
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::scripts::{ACQUIRE, EXTEND, RELEASE};

    #[test]
    fn the_scripts_agree_on_the_marker_value() {
        for script in [&*ACQUIRE, &*RELEASE, &*EXTEND] {
            assert!(
                script.source.contains("'redquorum:waiting'"),
                "{} writes or compares another marker value",
                script.name
            );
        }
    }
}
