//! The [`Redlock`] handle: connecting, the public acquire calls, and the retry policy around
//! the acquire round (`round.rs`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{Instrument, field};

use crate::config::{Builder, Config, check_resource, deadline_after};
use crate::error::{Error, MasterReply, Replies, Result};
use crate::guard::LockGuard;
use crate::held::{Attempt, HeldBy};
use crate::lease::LockContext;
use crate::master::{Master, connect_all};
use crate::masters::Masters;
use crate::notify::Wakeups;
use crate::options::LockOptions;
use crate::quorum::quorum;
use crate::round::RoundOutcome;
use crate::scripts::{ACQUIRE, LOCK_DELAY_EXTEND, LOCK_DELAY_RELEASE, ScriptCall, millis};

/// A Redlock client over N independent Redis masters.
///
/// Cheap to clone: clones share the connections and settings. Clone it, don't wrap it in an
/// `Arc`. Created by [`Redlock::builder`].
#[derive(Clone)]
pub struct Redlock {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) masters: Masters,
    pub(crate) config: Config,
    /// Release wake-ups for waiting acquirers (notify.rs); `None` when turned off.
    pub(crate) wakeups: Option<Wakeups>,
}

impl std::fmt::Debug for Redlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let addrs: Vec<&str> = self.inner.masters.iter().map(|m| m.addr.as_str()).collect();
        f.debug_struct("Redlock")
            .field("masters", &addrs)
            .field("quorum", &self.inner.masters.quorum())
            .finish_non_exhaustive()
    }
}

/// Whether an acquire waits for release messages.
///
/// Only the basic lock does: its releases announce themselves, and its local FIFO queue of
/// waiters is right for a mutex. The primitives poll: a reentrant owner must not queue behind
/// a waiter that cannot get in until that owner leaves, and readers or permit holders may
/// hold together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wake {
    OnRelease,
    Poll,
}

/// Why the retry loop stopped without a lock, from the last round.
enum GaveUp {
    Contended,
    Timeout,
    Unavailable,
}

impl Redlock {
    /// Starts configuring a client. See [`Builder`] for every setting and its default.
    pub fn builder() -> Builder {
        Builder::default()
    }

    pub(crate) async fn connect(builder: Builder) -> Result<Self> {
        let (masters, replies) = connect_all(&builder.masters, &builder.master_settings()).await?;
        let self_check = builder.runs_self_check();
        let config = builder.config;
        let n = masters.len();
        let reachable = replies.granted();
        if reachable < quorum(n) {
            return Err(Error::QuorumUnreachable {
                reachable,
                masters: n,
                quorum: quorum(n),
                replies,
            });
        }
        for (master, reply) in masters.iter().zip(replies.as_slice()) {
            if *reply != MasterReply::Granted {
                tracing::warn!(master = master.index, addr = %master.addr, why = %reply,
                    "master unreachable at start; retrying in the background");
            }
        }
        let wakeups = config.wake_ups.then(|| {
            Wakeups::start(
                &builder.masters,
                &builder.access,
                &config.key_prefix,
                config.master_timeout,
                config.connect_timeout,
            )
        });
        let redlock = Self::from_masters(masters, config, wakeups);
        if self_check {
            redlock.check_masters().await?;
        }
        if redlock.inner.config.fencing {
            // Seal what can be sealed now, so the first acquire does not pay for it; what
            // cannot (too few masters answer) waits for a later round.
            let deadline = Instant::now() + redlock.inner.config.connect_timeout;
            redlock.seal_masters(deadline).await;
        }
        Ok(redlock)
    }

    /// Number of masters.
    pub fn masters(&self) -> usize {
        self.inner.masters.len()
    }

    /// Votes needed for a lock: `masters() / 2 + 1`.
    pub fn quorum(&self) -> usize {
        self.inner.masters.quorum()
    }

    /// Acquires `resource` for the options' TTL (a [`Duration`] is a TTL with the defaults),
    /// retrying with jittered delays until it is granted or the acquire wait
    /// ([`LockOptions::wait`], default [`Builder::acquire_wait`]) runs out. Honours every
    /// [`LockOptions`] setting: wait, lock-delay, extension cap (carried by the guard).
    ///
    /// # Errors
    /// [`Error::EmptyResource`] / [`Error::InvalidTtl`] for bad input, [`Error::InvalidArgument`]
    /// for a zero cap or a lock-delay over [`MAX_TTL`](crate::defaults::MAX_TTL);
    /// [`Error::Contended`] when the wait ran out while someone else held the lock;
    /// [`Error::Timeout`] when rounds kept finishing too late to leave any validity;
    /// [`Error::Unavailable`] when so many masters fail that no quorum is possible: at once when
    /// they fail hard (connection refused, error replies), at the end of the wait when some
    /// only time out or are busy (a pause, an overload, a dataset loading or a long script may
    /// end; see [`MasterReply::is_transient`]). Each carries what every master answered.
    ///
    /// A round that started before the wait ran out is finished, so the call returns within the
    /// wait plus one per-master timeout (the votes), plus one more when the masters' fencing
    /// counters disagree and the token must be written back. Masters whose scripts were flushed
    /// or whose fencing counters must be sealed first are retried within the wait.
    ///
    /// # Cancellation
    /// Dropping the returned future part-way is safe: a round that was in flight is rolled back
    /// on every master in the background.
    pub async fn acquire(
        &self,
        resource: &str,
        options: impl Into<LockOptions>,
    ) -> Result<LockGuard> {
        let options = options.into();
        self.check_lock(resource, &options, "acquire", true)?;
        let wait = options.wait_or(self.inner.config.acquire_wait);
        // A caller that will wait for a release message marks itself on refusal, so that the
        // release publishes (notify.rs); one that will not wait leaves no marker.
        let waits = self.inner.wakeups.is_some() && !wait.is_zero();
        self.acquire_loop(resource, &options, wait, Wake::OnRelease, || {
            self.lock_attempt(resource, &options, waits)
        })
        .await
    }

    /// The basic lock's checks: the name, the TTL, and the options `call` honours.
    fn check_lock(
        &self,
        resource: &str,
        options: &LockOptions,
        call: &'static str,
        waits: bool,
    ) -> Result<()> {
        check_resource(resource)?;
        self.inner.config.check_lock_key(resource)?;
        self.inner.config.check_ttl(options.ttl())?;
        options.check(call, waits, true)
    }

    /// The basic lock's round: `SET NX PX` on one key, living `ttl + lock-delay` on the
    /// masters; with `waits`, a refusal also sets the resource's waiter marker (acquire.lua).
    fn lock_attempt(&self, resource: &str, options: &LockOptions, waits: bool) -> Attempt {
        let config = &self.inner.config;
        let key = config.lock_key(resource);
        let delay = options.delay();
        let held = if delay.is_zero() {
            HeldBy::lock(
                key.clone(),
                crate::notify::waiter_marker(&config.key_prefix, resource),
            )
        } else {
            // Not "lock": a hand-off handle does not carry the delay, and a resume would
            // extend the key with the plain script, dropping the delay window.
            HeldBy::new(
                "lock-delay",
                vec![key.clone()],
                &LOCK_DELAY_EXTEND,
                &LOCK_DELAY_RELEASE,
            )
            .args(vec![millis(delay)])
            .announced()
        };
        let ttl = options.ttl();
        let mut keys = vec![key, config.fence_key()];
        if waits {
            keys.push(crate::notify::waiter_marker(&config.key_prefix, resource));
        }
        // The stored value names its holder for inspection (owner_id.rs).
        let token = crate::owner_id::compose(&crate::held::new_token(), &config.owner_id);
        Attempt::with_token(token, ttl, held, |token| {
            ScriptCall::new(
                &ACQUIRE,
                keys,
                vec![
                    token.to_owned(),
                    // Whole milliseconds of each, as validity counts the TTL (quorum.rs).
                    millis(ttl + delay),
                    config.fencing_arg(),
                ],
            )
        })
    }

    /// The retry policy of every acquire: rounds built by `next` (a fresh token each), with
    /// jittered delays, until one wins or `wait` (or the retry count) runs out. `resource` names
    /// the hold in the guard, errors and traces; the guard carries the options' extension cap. With [`Wake::OnRelease`] (the basic lock),
    /// waiters queue locally and are woken by release messages (notify.rs).
    pub(crate) async fn acquire_loop(
        &self,
        resource: &str,
        options: &LockOptions,
        wait: Duration,
        wake: Wake,
        mut next: impl FnMut() -> Attempt,
    ) -> Result<LockGuard> {
        let span = tracing::debug_span!(
            "acquire",
            resource,
            ttl_ms = options.ttl().as_millis() as u64,
            attempts = field::Empty,
            votes = field::Empty,
            elapsed_us = field::Empty
        );
        let started = Instant::now();
        let deadline = deadline_after(started, wait);
        let config = &self.inner.config;
        let mut attempts = 0u32;
        // Wake-ups (notify.rs): once this acquire has to wait, it queues behind the other local
        // waiters of the resource (joining at once if there are some: no barging) and waits for
        // a release message, with the jittered delay as the fallback.
        let wakeups = self
            .inner
            .wakeups
            .as_ref()
            .filter(|_| wake == Wake::OnRelease);
        let mut waiter = wakeups
            .filter(|w| w.has_waiters(resource))
            .map(|w| w.join(resource));
        let mut last_replies = Replies::default();
        let result = async {
            loop {
                if let Some(w) = waiter.as_mut()
                    && !w
                        .turn(deadline, config.retry_delay + config.retry_jitter)
                        .await
                {
                    return Err(Error::Contended {
                        resource: resource.to_owned(),
                        attempts,
                        waited: started.elapsed(),
                        replies: last_replies,
                    });
                }
                attempts += 1;
                let (outcome, attempt) = self.round_reconnecting(&mut next, deadline).await;
                let (replies, kind) = match outcome {
                    RoundOutcome::Acquired {
                        token,
                        valid_until,
                        fencing_token,
                        votes,
                        choice,
                    } => {
                        let span = tracing::Span::current();
                        span.record("attempts", attempts);
                        span.record("votes", votes);
                        span.record("elapsed_us", started.elapsed().as_micros() as u64);
                        if let Some(w) = waiter.take() {
                            w.acquired();
                        }
                        return Ok(LockGuard::new(
                            self.clone(),
                            resource,
                            attempt.held.chosen(choice),
                            token,
                            valid_until,
                            fencing_token,
                        )
                        .capped(options.cap()));
                    }
                    // Hard failures (refused connections, error replies) will not heal within
                    // an acquire wait: fail fast. Timeouts (load, a short pause) and busy
                    // masters (loading, a long script) may: retry.
                    RoundOutcome::Unavailable(replies)
                        if !replies.as_slice().iter().any(MasterReply::is_transient) =>
                    {
                        return Err(Error::unavailable(self.masters(), replies));
                    }
                    RoundOutcome::Unavailable(replies) => (replies, GaveUp::Unavailable),
                    RoundOutcome::Contended(replies) => (replies, GaveUp::Contended),
                    RoundOutcome::Expired(replies) => (replies, GaveUp::Timeout),
                };
                let delay = config.retry_delay + crate::random::jitter(config.retry_jitter);
                let out_of_tries = config.retry_count.is_some_and(|max| attempts >= max);
                let now = Instant::now();
                // A release message can end a wait early, so with wake-ups wait up to the
                // deadline; without, a delay that ends past it is not worth starting.
                let too_late = match wakeups {
                    Some(_) => now >= deadline,
                    None => now + delay >= deadline,
                };
                if out_of_tries || too_late {
                    let span = tracing::Span::current();
                    span.record("attempts", attempts);
                    span.record("elapsed_us", started.elapsed().as_micros() as u64);
                    let (resource, waited) = (resource.to_owned(), started.elapsed());
                    return Err(match kind {
                        GaveUp::Contended => Error::Contended {
                            resource,
                            attempts,
                            waited,
                            replies,
                        },
                        GaveUp::Timeout => Error::Timeout {
                            resource,
                            attempts,
                            waited,
                            replies,
                        },
                        GaveUp::Unavailable => Error::unavailable(self.masters(), replies),
                    });
                }
                match (wakeups, waiter.as_mut()) {
                    // First contention: subscribe, then retry at once (in `turn`), since the
                    // lock may have been released before the subscription took effect.
                    (Some(w), None) => waiter = Some(w.join(resource)),
                    (Some(_), Some(w)) => w.wait(delay.min(deadline - now)).await,
                    (None, _) => tokio::time::sleep(delay).await,
                }
                last_replies = replies;
            }
        }
        .instrument(span)
        .await;
        crate::metrics::acquire_finished(&result, attempts, started.elapsed());
        result
    }

    /// Tries one round (plus one immediate retry if that round found connections broken and
    /// they reconnect). `Ok(None)` when the lock is held by someone else (or the round finished
    /// too late to leave any validity). Honours the options' lock-delay and cap; a wait is
    /// refused (one round does not wait).
    ///
    /// # Errors
    /// [`Error::EmptyResource`] / [`Error::InvalidTtl`] / [`Error::InvalidArgument`] for bad
    /// input; [`Error::Unavailable`] when so many masters fail that no quorum is possible.
    pub async fn try_acquire(
        &self,
        resource: &str,
        options: impl Into<LockOptions>,
    ) -> Result<Option<LockGuard>> {
        let options = options.into();
        self.check_lock(resource, &options, "try_acquire", false)?;
        self.try_once(resource, &options, || {
            self.lock_attempt(resource, &options, false)
        })
        .await
    }

    /// One round of an attempt built by `next` (two if the first found connections broken or
    /// scripts flushed); `Ok(None)` when refused or too late. Waiting for reconnects and
    /// sealing are bounded by one per-master timeout.
    pub(crate) async fn try_once(
        &self,
        resource: &str,
        options: &LockOptions,
        mut next: impl FnMut() -> Attempt,
    ) -> Result<Option<LockGuard>> {
        let started = Instant::now();
        let result = self
            .try_once_unrecorded(resource, &mut next)
            .await
            .map(|guard| guard.map(|g| g.capped(options.cap())));
        crate::metrics::try_acquire_finished(&result, started.elapsed());
        result
    }

    async fn try_once_unrecorded(
        &self,
        resource: &str,
        mut next: impl FnMut() -> Attempt,
    ) -> Result<Option<LockGuard>> {
        let span = tracing::debug_span!("try_acquire", resource, votes = field::Empty);
        let deadline = Instant::now() + self.inner.config.master_timeout;
        let (outcome, attempt) = self
            .round_reconnecting(&mut next, deadline)
            .instrument(span.clone())
            .await;
        match outcome {
            RoundOutcome::Acquired {
                token,
                valid_until,
                fencing_token,
                votes,
                choice,
            } => {
                span.record("votes", votes);
                Ok(Some(LockGuard::new(
                    self.clone(),
                    resource,
                    attempt.held.chosen(choice),
                    token,
                    valid_until,
                    fencing_token,
                )))
            }
            RoundOutcome::Contended(_) | RoundOutcome::Expired(_) => Ok(None),
            RoundOutcome::Unavailable(replies) => Err(Error::unavailable(self.masters(), replies)),
        }
    }

    /// Runs `work` while holding `resource`: acquires (as [`acquire`](Self::acquire), with the
    /// same options), extends the lock in the background every third of the TTL while `work`
    /// runs (never past the options' extension cap), releases it after.
    ///
    /// `work` gets a [`LockContext`] with the fencing token and a [`LockContext::lost`] future
    /// that completes if the lock could not be extended before its validity ran out; a lease
    /// that cannot be renewed must not be trusted silently. The closure is not cancelled on loss
    /// (stopping a write half-way may be worse); select on `lost()` to stop early.
    ///
    /// # Errors
    /// The errors of [`acquire`](Self::acquire), and [`Error::LockLost`] if the lock was lost
    /// while `work` ran (its output is then dropped, since it was produced without the lock).
    pub async fn with_lock<T, F, Fut>(
        &self,
        resource: &str,
        options: impl Into<LockOptions>,
        work: F,
    ) -> Result<T>
    where
        F: FnOnce(LockContext) -> Fut,
        Fut: Future<Output = T>,
    {
        let options = options.into();
        self.acquire(resource, &options)
            .await?
            .with_watchdog(options.ttl(), work)
            .await
    }

    /// Delayed-restart protection: a master that (re)started less than the configured maximum
    /// lock TTL ago may have lost keys it granted, so its votes do not count yet.
    pub(crate) fn is_quarantined(&self, master: &Master) -> bool {
        master.is_quarantined(self.inner.config.restart_quarantine)
    }

    pub(crate) fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The masters, for the layers above the core that ask them (primitives, coordination).
    pub(crate) fn master_set(&self) -> &Masters {
        &self.inner.masters
    }

    /// The release-message listener, when wake-ups are on (notify.rs).
    pub(crate) fn wakeups(&self) -> Option<&Wakeups> {
        self.inner.wakeups.as_ref()
    }
}

/// For the cache, which connects its own nodes and locks over them.
impl Redlock {
    /// A client over masters that are already set up, skipping [`Builder::build`]'s connect
    /// and quorum checks: the caller (the cache's builder) does its own, since a cache
    /// tolerates nodes that are down at start.
    pub(crate) fn from_masters(
        masters: Vec<Arc<Master>>,
        config: Config,
        wakeups: Option<Wakeups>,
    ) -> Self {
        for master in &masters {
            master.track_restarts();
        }
        Self {
            inner: Arc::new(Inner {
                masters: Masters::new(masters),
                config,
                wakeups,
            }),
        }
    }
}
