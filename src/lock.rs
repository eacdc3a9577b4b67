//! The [`Redlock`] handle: connecting, one acquire round, and the retry policy around it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use tokio::time::Instant;
use tracing::{Instrument, field};

use crate::config::{Builder, Config, check_resource, deadline_after};
use crate::error::{Error, MasterReply, Replies, Result};
use crate::guard::{LockContext, LockGuard};
use crate::held::{Attempt, HeldBy};
use crate::master::{Master, connect_all};
use crate::masters::Masters;
use crate::notify::Wakeups;
use crate::quorum::{Ballot, ChoiceTally, Decision, drift, quorum, sent_ttl, valid_until};
use crate::scripts::{ACQUIRE, ScriptCall};

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

/// How one acquire round ended.
enum RoundOutcome {
    Acquired {
        token: String,
        valid_until: Instant,
        fencing_token: Option<u64>,
        votes: usize,
        /// The choice a quorum granted (a semaphore slot; 0 for scripts that do not choose).
        choice: u32,
    },
    /// A quorum could not be had because other owners hold the key on enough masters.
    Contended(Replies),
    /// A quorum voted yes, but too late: no validity was left.
    Expired(Replies),
    /// Failing masters alone make a quorum impossible.
    Unavailable(Replies),
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

/// What the acquire script answered on one master.
type AcquireAnswer = std::result::Result<Option<Grant>, MasterReply>;

/// One master's grant: its fencing counter value, and what it chose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Grant {
    fence: u64,
    choice: u32,
}

impl Ballot<AcquireAnswer> for ChoiceTally {
    fn decision(&self) -> Decision {
        ChoiceTally::decision(self)
    }

    fn record(&mut self, answer: &AcquireAnswer) -> Decision {
        ChoiceTally::record(self, answer.as_ref().ok().and_then(|a| a.map(|g| g.choice)))
    }
}

impl Redlock {
    /// Starts configuring a client. See [`Builder`] for every setting and its default.
    pub fn builder() -> Builder {
        Builder::default()
    }

    pub(crate) async fn connect(builder: Builder) -> Result<Self> {
        let (masters, replies) = connect_all(&builder.masters, &builder.master_settings()).await?;
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
                &config.key_prefix,
                config.master_timeout,
                config.connect_timeout,
            )
        });
        let redlock = Self::from_masters(masters, config, wakeups);
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

    /// Acquires `resource` for `ttl`, retrying with jittered delays until it is granted or the
    /// acquire wait ([`Builder::acquire_wait`]) runs out.
    ///
    /// # Errors
    /// [`Error::EmptyResource`] / [`Error::InvalidTtl`] for bad input; [`Error::Contended`] when
    /// the wait ran out while someone else held the lock; [`Error::Timeout`] when rounds kept
    /// finishing too late to leave any validity; [`Error::Unavailable`] when so many masters
    /// fail that no quorum is possible: at once when they fail hard (connection refused, error
    /// replies), at the end of the wait when some only time out or are busy (a pause, an
    /// overload, a dataset loading or a long script may end; see [`MasterReply::is_transient`]).
    /// Each carries what every master answered.
    ///
    /// A round that started before the wait ran out is finished, so the call returns within the
    /// wait plus one per-master timeout (the votes), plus one more when the masters' fencing
    /// counters disagree and the token must be written back. Masters whose scripts were flushed
    /// or whose fencing counters must be sealed first are retried within the wait.
    ///
    /// # Cancellation
    /// Dropping the returned future part-way is safe: a round that was in flight is rolled back
    /// on every master in the background.
    pub async fn acquire(&self, resource: &str, ttl: Duration) -> Result<LockGuard> {
        self.acquire_with_wait(resource, ttl, self.inner.config.acquire_wait)
            .await
    }

    /// [`acquire`](Self::acquire) with an explicit wait instead of the configured one.
    ///
    /// # Errors
    /// As [`acquire`](Self::acquire).
    pub async fn acquire_with_wait(
        &self,
        resource: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<LockGuard> {
        check_resource(resource)?;
        self.inner.config.check_ttl(ttl)?;
        self.acquire_loop(resource, ttl, wait, Wake::OnRelease, || {
            self.lock_attempt(resource, ttl)
        })
        .await
    }

    /// The basic lock's round: `SET NX PX` on one key.
    fn lock_attempt(&self, resource: &str, ttl: Duration) -> Attempt {
        let config = &self.inner.config;
        let key = config.lock_key(resource);
        Attempt::new(ttl, HeldBy::lock(key.clone()), |token| {
            ScriptCall::new(
                &ACQUIRE,
                vec![key, config.fence_key()],
                vec![
                    token.to_owned(),
                    (ttl.as_millis() as u64).to_string(),
                    config.fencing_arg(),
                ],
            )
        })
    }

    /// The retry policy of every acquire: rounds built by `next` (a fresh token each), with
    /// jittered delays, until one wins or `wait` (or the retry count) runs out. `resource` names
    /// the hold in the guard, errors and traces. With [`Wake::OnRelease`] (the basic lock),
    /// waiters queue locally and are woken by release messages (notify.rs).
    pub(crate) async fn acquire_loop(
        &self,
        resource: &str,
        ttl: Duration,
        wait: Duration,
        wake: Wake,
        mut next: impl FnMut() -> Attempt,
    ) -> Result<LockGuard> {
        let span = tracing::debug_span!(
            "acquire",
            resource,
            ttl_ms = ttl.as_millis() as u64,
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
        async {
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
                        ));
                    }
                    // Hard failures (refused connections, error replies) will not heal within
                    // an acquire wait: fail fast. Timeouts (load, a short pause) and busy
                    // masters (loading, a long script) may: retry.
                    RoundOutcome::Unavailable(replies)
                        if !replies.as_slice().iter().any(MasterReply::is_transient) =>
                    {
                        return Err(Error::Unavailable {
                            failed: replies.failures(),
                            masters: self.masters(),
                            replies,
                        });
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
                        GaveUp::Unavailable => Error::Unavailable {
                            failed: replies.failures(),
                            masters: self.masters(),
                            replies,
                        },
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
        .await
    }

    /// Tries one round (plus one immediate retry if that round found connections broken and
    /// they reconnect). `Ok(None)` when the lock is held by someone else (or the round finished
    /// too late to leave any validity).
    ///
    /// # Errors
    /// [`Error::EmptyResource`] / [`Error::InvalidTtl`] for bad input; [`Error::Unavailable`]
    /// when so many masters fail that no quorum is possible.
    pub async fn try_acquire(&self, resource: &str, ttl: Duration) -> Result<Option<LockGuard>> {
        check_resource(resource)?;
        self.inner.config.check_ttl(ttl)?;
        self.try_once(resource, || self.lock_attempt(resource, ttl))
            .await
    }

    /// One round of an attempt built by `next` (two if the first found connections broken or
    /// scripts flushed); `Ok(None)` when refused or too late. Waiting for reconnects and
    /// sealing are bounded by one per-master timeout.
    pub(crate) async fn try_once(
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
            RoundOutcome::Unavailable(replies) => Err(Error::Unavailable {
                failed: replies.failures(),
                masters: self.masters(),
                replies,
            }),
        }
    }

    /// Runs `work` while holding `resource`: acquires (as [`acquire`](Self::acquire)), extends
    /// the lock in the background every third of `ttl` while `work` runs, releases it after.
    ///
    /// `work` gets a [`LockContext`] with the fencing token and a [`LockContext::lost`] future
    /// that completes if the lock could not be extended before its validity ran out; a lease
    /// that cannot be renewed must not be trusted silently. The closure is not cancelled on loss
    /// (stopping a write half-way may be worse); select on `lost()` to stop early.
    ///
    /// # Errors
    /// The errors of [`acquire`](Self::acquire), and [`Error::LockLost`] if the lock was lost
    /// while `work` ran (its output is then dropped, since it was produced without the lock).
    pub async fn with_lock<T, F, Fut>(&self, resource: &str, ttl: Duration, work: F) -> Result<T>
    where
        F: FnOnce(LockContext) -> Fut,
        Fut: Future<Output = T>,
    {
        self.acquire(resource, ttl)
            .await?
            .with_watchdog(ttl, work)
            .await
    }

    /// One round of an attempt built by `next`; if it failed only because connections were
    /// found broken and are coming back (a restarted server, a reset network path), scripts
    /// were flushed, or counters must be sealed, a second round right away, before `deadline`.
    /// Masters that are really down refuse the reconnect at once, so this still fails fast.
    ///
    /// The second round has a fresh owner token: the first one's rollback may reach a master
    /// late, and must not delete what the second round set there.
    async fn round_reconnecting(
        &self,
        next: &mut impl FnMut() -> Attempt,
        deadline: Instant,
    ) -> (RoundOutcome, Attempt) {
        let attempt = next();
        let outcome = self.round(&attempt, deadline).await;
        if let RoundOutcome::Unavailable(replies) = &outcome
            && Instant::now() < deadline
            && self.worth_retrying_at_once(replies)
        {
            tracing::debug!("connections, scripts or seals were being repaired; one more round");
            let attempt = next();
            return (self.round(&attempt, deadline).await, attempt);
        }
        (outcome, attempt)
    }

    /// Whether a failed round's failures may be gone by now.
    fn worth_retrying_at_once(&self, replies: &Replies) -> bool {
        replies.as_slice().iter().enumerate().any(|(i, r)| match r {
            MasterReply::Unavailable(_) => self.inner.masters.get(i).is_connected_or_connecting(),
            MasterReply::NoScript | MasterReply::Unsealed => true,
            _ => false,
        })
    }

    /// One acquire round, exactly as in the Redlock spec, plus the fencing step: `attempt.call`
    /// on every master, decided at a quorum for one choice, rolled back with `attempt.held`.
    /// Sealing and waiting for reconnects end by `deadline`.
    async fn round(&self, attempt: &Attempt, deadline: Instant) -> RoundOutcome {
        let inner = &self.inner;
        let config = &inner.config;
        let (n, quorum) = (inner.masters.len(), inner.masters.quorum());
        if config.fencing && self.has_unsealed_masters() {
            self.seal_masters(deadline).await;
        }
        // Validity counts the TTL the masters were sent: whole milliseconds.
        let (held, token, ttl) = (&attempt.held, &attempt.token, sent_ttl(attempt.ttl));
        let call = attempt.call.clone();
        // When the connected masters alone cannot make a quorum (say, every connection broke
        // at once), the others get one chance to reconnect, bounded by the per-master timeout,
        // before anything is sent (acquire scripts are never sent late). Not otherwise: a
        // master that is down or cut off would cost every round that timeout.
        let connected = inner.masters.iter().filter(|m| m.is_connected()).count();
        if connected < quorum {
            let until = deadline.min(Instant::now() + config.master_timeout);
            inner.masters.ask_each(|m| m.await_connection(until)).await;
        }
        // If this future is dropped from here on, keys may have landed: roll back.
        let mut rollback = RollbackOnDrop::armed(self.clone(), held.clone(), token.clone());
        let t0 = Instant::now();
        let round = inner
            .masters
            .ask(
                |master| {
                    let master = master.clone();
                    let call = call.clone();
                    let (quarantine, fencing) = (config.restart_quarantine, config.fencing);
                    async move {
                        // A master inside its restart quarantine, or whose fencing counter is not
                        // sealed for its current process (its grant could carry a token lower than
                        // one already handed out), must not vote.
                        let excluded = |m: &Master| {
                            if m.is_quarantined(quarantine) {
                                Some(MasterReply::Quarantined)
                            } else if fencing && !m.is_sealed() {
                                Some(MasterReply::Unsealed)
                            } else {
                                None
                            }
                        };
                        let answer = master
                            .run_once(&call, excluded)
                            .await
                            .and_then(parse_acquire);
                        if answer == Err(MasterReply::Unsealed) {
                            master.unseal();
                        }
                        answer
                    }
                },
                ChoiceTally::new(n, quorum),
            )
            .await;
        let mut replies = Replies(
            round
                .answers
                .iter()
                .map(|a| match a {
                    None => MasterReply::NoAnswer,
                    Some(Ok(Some(_))) => MasterReply::Granted,
                    Some(Ok(None)) => MasterReply::Refused,
                    Some(Err(reply)) => reply.clone(),
                })
                .collect(),
        );
        let votes = replies.granted();
        if round.decision == Decision::Won {
            let choice = winning_choice(&round.answers, quorum);
            // Masters that granted another choice (a semaphore slot that lost) give it back.
            let others: Vec<Option<AcquireAnswer>> = round
                .answers
                .iter()
                .map(|a| match a {
                    Some(Ok(Some(g))) if g.choice != choice => a.clone(),
                    _ => Some(Ok(None)),
                })
                .collect();
            if others.iter().any(|a| matches!(a, Some(Ok(Some(_))))) {
                self.rollback(held, token, &others).await;
            }
            let fencing_token = if config.fencing {
                let grants: Vec<(usize, u64)> = round
                    .answers
                    .iter()
                    .enumerate()
                    .filter_map(|(i, a)| match a {
                        Some(Ok(Some(g))) if g.choice == choice => Some((i, g.fence)),
                        _ => None,
                    })
                    .collect();
                match self.fence_write_back(&grants).await {
                    Some(token) => Some(token),
                    None => {
                        self.rollback(held, token, &round.answers).await;
                        rollback.disarm();
                        replies.0.iter_mut().for_each(|r| {
                            if *r == MasterReply::NoAnswer {
                                *r = MasterReply::TimedOut;
                            }
                        });
                        return RoundOutcome::Unavailable(replies);
                    }
                }
            } else {
                None
            };
            let drift = drift(ttl, config.drift_factor);
            if let Some(valid_until) = valid_until(t0, ttl, drift, Instant::now()) {
                rollback.disarm();
                return RoundOutcome::Acquired {
                    token: token.clone(),
                    valid_until,
                    fencing_token,
                    votes,
                    choice,
                };
            }
            self.rollback(held, token, &round.answers).await;
            rollback.disarm();
            return RoundOutcome::Expired(replies);
        }
        self.rollback(held, token, &round.answers).await;
        rollback.disarm();
        if replies.failures() > n - quorum {
            RoundOutcome::Unavailable(replies)
        } else {
            RoundOutcome::Contended(replies)
        }
    }

    /// Releases a failed round's keys on every master that may hold them: all but those that
    /// answered "held by someone else" (their SET did not land). A master that timed out or was
    /// not waited for may have applied the SET, so it is included. Returns once every call is
    /// on its way (queued before this client's next command to that master), not answered.
    async fn rollback(&self, held: &HeldBy, token: &str, answers: &[Option<AcquireAnswer>]) {
        let targets: Vec<usize> = answers
            .iter()
            .enumerate()
            .filter(|(_, a)| !matches!(a, Some(Ok(None))))
            .map(|(i, _)| i)
            .collect();
        if targets.is_empty() {
            return;
        }
        let call = Arc::new(held.rollback_call(token));
        self.inner
            .masters
            .send_to(&targets, |master| {
                let master = master.clone();
                let call = call.clone();
                async move { master.run(&call).await }
            })
            .await;
    }

    /// Delayed-restart protection: a master that (re)started less than the configured maximum
    /// lock TTL ago may have lost keys it granted, so its votes do not count yet.
    pub(crate) fn is_quarantined(&self, master: &Master) -> bool {
        master.is_quarantined(self.inner.config.restart_quarantine)
    }

    pub(crate) fn config(&self) -> &Config {
        &self.inner.config
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

fn parse_acquire(value: Value) -> AcquireAnswer {
    match value {
        Value::Int(-1) => Ok(None),
        // Fencing on and the counter missing: nothing was set (fencing.rs).
        Value::Int(-2) => Err(MasterReply::Unsealed),
        Value::Int(v) if v >= 0 => Ok(Some(Grant {
            fence: v as u64,
            choice: 0,
        })),
        // Scripts that choose (the semaphore's slot) answer [counter, choice].
        Value::Array(ref pair) => match pair.as_slice() {
            [Value::Int(fence), Value::Int(choice)] if *fence >= 0 && *choice >= 0 => {
                Ok(Some(Grant {
                    fence: *fence as u64,
                    choice: u32::try_from(*choice).unwrap_or(u32::MAX),
                }))
            }
            _ => Err(MasterReply::ServerError(format!(
                "unexpected acquire reply {value:?}"
            ))),
        },
        other => Err(MasterReply::ServerError(format!(
            "unexpected acquire reply {other:?}"
        ))),
    }
}

/// The choice granted by a quorum in a won round.
fn winning_choice(answers: &[Option<AcquireAnswer>], quorum: usize) -> u32 {
    let mut tally = ChoiceTally::new(answers.len(), quorum);
    for answer in answers.iter().flatten() {
        Ballot::record(&mut tally, answer);
    }
    tally.winner().unwrap_or(0)
}

/// Rolls a round back if the acquiring future is dropped while the round is in flight.
struct RollbackOnDrop {
    armed: Option<(Redlock, HeldBy, String)>,
}

impl RollbackOnDrop {
    fn armed(redlock: Redlock, held: HeldBy, token: String) -> Self {
        Self {
            armed: Some((redlock, held, token)),
        }
    }

    fn disarm(&mut self) {
        self.armed = None;
    }
}

impl Drop for RollbackOnDrop {
    fn drop(&mut self) {
        if let Some((redlock, held, token)) = self.armed.take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            handle.spawn(async move {
                let n = redlock.masters();
                redlock.rollback(&held, &token, &vec![None; n]).await;
            });
        }
    }
}
