//! The [`Redlock`] handle: connecting, one acquire round, and the retry policy around it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use rand::Rng;
use redis::Value;
use tokio::time::Instant;
use tracing::{Instrument, field};

use crate::config::{Builder, Config, check_resource};
use crate::error::{Error, MasterReply, Replies, Result};
use crate::guard::{Lease, LockContext, LockGuard};
use crate::master::Master;
use crate::notify::Wakeups;
use crate::quorum::{Decision, drift, fan_out, quorum, validity};
use crate::scripts::{ACQUIRE, FENCE_RAISE, RELEASE, ScriptCall};

/// A Redlock client over N independent Redis masters.
///
/// Cheap to clone: clones share the connections and settings. Clone it, don't wrap it in an
/// `Arc`. Created by [`Redlock::builder`].
#[derive(Clone)]
pub struct Redlock {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) masters: Vec<Arc<Master>>,
    pub(crate) config: Config,
    pub(crate) quorum: usize,
    /// Release wake-ups for waiting acquirers (notify.rs); `None` when turned off.
    pub(crate) wakeups: Option<Wakeups>,
}

impl std::fmt::Debug for Redlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let addrs: Vec<&str> = self.inner.masters.iter().map(|m| m.addr.as_str()).collect();
        f.debug_struct("Redlock")
            .field("masters", &addrs)
            .field("quorum", &self.inner.quorum)
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
    },
    /// A quorum could not be had because other owners hold the key on enough masters.
    Contended(Replies),
    /// A quorum voted yes, but too late: no validity was left.
    Expired(Replies),
    /// Failing masters alone make a quorum impossible.
    Unavailable(Replies),
}

/// What the acquire script answered on one master.
type AcquireAnswer = std::result::Result<Option<u64>, MasterReply>;

impl Redlock {
    /// Starts configuring a client. See [`Builder`] for every setting and its default.
    pub fn builder() -> Builder {
        Builder::default()
    }

    pub(crate) async fn connect(builder: Builder) -> Result<Self> {
        let config = builder.config;
        let masters = builder
            .masters
            .iter()
            .enumerate()
            .map(|(i, url)| {
                Master::new(i, url, config.master_timeout, config.connect_timeout).map(Arc::new)
            })
            .collect::<Result<Vec<_>>>()?;
        for (j, b) in masters.iter().enumerate() {
            for (i, a) in masters[..j].iter().enumerate() {
                if a.endpoint() == b.endpoint() {
                    return Err(Error::DuplicateMaster {
                        first: i,
                        second: j,
                        why: "same address".into(),
                    });
                }
            }
        }
        let n = masters.len();
        let results = join_all(masters.iter().map(|m| m.connect())).await;
        let replies = Replies(
            results
                .iter()
                .map(|r| match r {
                    Ok(()) => MasterReply::Granted,
                    Err(reply) => reply.clone(),
                })
                .collect(),
        );
        let reachable = replies.granted();
        if reachable < quorum(n) {
            return Err(Error::QuorumUnreachable {
                reachable,
                masters: n,
                quorum: quorum(n),
                replies,
            });
        }
        let identities: Vec<_> = masters.iter().map(|m| m.identity()).collect();
        for (j, b) in identities.iter().enumerate() {
            for (i, a) in identities[..j].iter().enumerate() {
                if let (Some(a), Some(b)) = (a, b)
                    && a.run_id == b.run_id
                {
                    return Err(Error::DuplicateMaster {
                        first: i,
                        second: j,
                        why: format!("same run_id {}", a.run_id),
                    });
                }
            }
        }
        for (i, r) in results.iter().enumerate() {
            if let Err(why) = r {
                tracing::warn!(master = i, addr = %masters[i].addr, %why,
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
        Ok(Self {
            inner: Arc::new(Inner {
                quorum: quorum(n),
                masters,
                config,
                wakeups,
            }),
        })
    }

    /// Number of masters.
    pub fn masters(&self) -> usize {
        self.inner.masters.len()
    }

    /// Votes needed for a lock: `masters() / 2 + 1`.
    pub fn quorum(&self) -> usize {
        self.inner.quorum
    }

    /// Acquires `resource` for `ttl`, retrying with jittered delays until it is granted or the
    /// acquire wait ([`Builder::acquire_wait`]) runs out.
    ///
    /// # Errors
    /// [`Error::EmptyResource`] / [`Error::InvalidTtl`] for bad input; [`Error::Contended`] when
    /// the wait ran out while someone else held the lock; [`Error::Timeout`] when rounds kept
    /// finishing too late to leave any validity; [`Error::Unavailable`] at once when so many
    /// masters fail that no quorum is possible. Each carries what every master answered.
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
        let span = tracing::debug_span!(
            "acquire",
            resource,
            ttl_ms = ttl.as_millis() as u64,
            attempts = field::Empty,
            votes = field::Empty,
            elapsed_us = field::Empty
        );
        let started = Instant::now();
        let deadline = started + wait;
        let config = &self.inner.config;
        let mut attempts = 0u32;
        // Wake-ups (notify.rs): once this acquire has to wait, it queues behind the other local
        // waiters of the resource (joining at once if there are some: no barging) and waits for
        // a release message, with the jittered delay as the fallback.
        let wakeups = self.inner.wakeups.as_ref();
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
                let outcome = self.round(resource, ttl).await;
                let (replies, contended) = match outcome {
                    RoundOutcome::Acquired {
                        token,
                        valid_until,
                        fencing_token,
                        votes,
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
                            token,
                            valid_until,
                            fencing_token,
                        ));
                    }
                    RoundOutcome::Unavailable(replies) => {
                        return Err(Error::Unavailable {
                            failed: replies.failures(),
                            masters: self.masters(),
                            replies,
                        });
                    }
                    RoundOutcome::Contended(replies) => (replies, true),
                    RoundOutcome::Expired(replies) => (replies, false),
                };
                let delay = config.retry_delay
                    + rand::rng().random_range(Duration::ZERO..=config.retry_jitter);
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
                    return Err(if contended {
                        Error::Contended {
                            resource,
                            attempts,
                            waited,
                            replies,
                        }
                    } else {
                        Error::Timeout {
                            resource,
                            attempts,
                            waited,
                            replies,
                        }
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

    /// Tries exactly one round. `Ok(None)` when the lock is held by someone else (or the round
    /// finished too late to leave any validity).
    ///
    /// # Errors
    /// [`Error::EmptyResource`] / [`Error::InvalidTtl`] for bad input; [`Error::Unavailable`]
    /// when so many masters fail that no quorum is possible.
    pub async fn try_acquire(&self, resource: &str, ttl: Duration) -> Result<Option<LockGuard>> {
        check_resource(resource)?;
        self.inner.config.check_ttl(ttl)?;
        let span = tracing::debug_span!("try_acquire", resource, votes = field::Empty);
        match self.round(resource, ttl).instrument(span.clone()).await {
            RoundOutcome::Acquired {
                token,
                valid_until,
                fencing_token,
                votes,
            } => {
                span.record("votes", votes);
                Ok(Some(LockGuard::new(
                    self.clone(),
                    resource,
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
        let guard = self.acquire(resource, ttl).await?;
        let (lease, context) = Lease::start(guard, ttl);
        let output = work(context).await;
        let (guard, lost) = lease.stop().await;
        if let Some(guard) = guard {
            // The closure is done either way; a failed release only leaves keys to expire.
            let _ = guard.release().await;
        }
        if lost {
            return Err(Error::LockLost {
                resource: resource.to_owned(),
            });
        }
        Ok(output)
    }

    /// One acquire round, exactly as in the Redlock spec, plus the fencing step.
    async fn round(&self, resource: &str, ttl: Duration) -> RoundOutcome {
        let inner = &self.inner;
        let config = &inner.config;
        let n = inner.masters.len();
        let key = config.lock_key(resource);
        let token = uuid::Uuid::new_v4().simple().to_string();
        let ttl_ms = ttl.as_millis() as u64;
        let call = Arc::new(ScriptCall::new(
            &ACQUIRE,
            vec![key.clone(), config.fence_key()],
            vec![
                token.clone(),
                ttl_ms.to_string(),
                if config.fencing { "1" } else { "0" }.into(),
            ],
        ));
        // If this future is dropped from here on, keys may have landed: roll back.
        let mut rollback = RollbackOnDrop::armed(self.clone(), key.clone(), token.clone());
        let t0 = Instant::now();
        let round = fan_out(
            n,
            inner.quorum,
            |i| {
                let master = inner.masters[i].clone();
                let call = call.clone();
                let quarantined = self.is_quarantined(&master);
                async move {
                    if quarantined {
                        return Err(MasterReply::Quarantined);
                    }
                    master.run(&call).await.and_then(parse_acquire)
                }
            },
            |answer: &AcquireAnswer| matches!(answer, Ok(Some(_))),
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
            let fencing_token = if config.fencing {
                let grants: Vec<(usize, u64)> = round
                    .answers
                    .iter()
                    .enumerate()
                    .filter_map(|(i, a)| match a {
                        Some(Ok(Some(v))) => Some((i, *v)),
                        _ => None,
                    })
                    .collect();
                match self.fence_write_back(&grants).await {
                    Some(token) => Some(token),
                    None => {
                        self.rollback(&key, &token, &round.answers).await;
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
            if let Some(valid) = validity(ttl, t0.elapsed(), drift) {
                rollback.disarm();
                return RoundOutcome::Acquired {
                    token,
                    valid_until: Instant::now() + valid,
                    fencing_token,
                    votes,
                };
            }
            self.rollback(&key, &token, &round.answers).await;
            rollback.disarm();
            return RoundOutcome::Expired(replies);
        }
        self.rollback(&key, &token, &round.answers).await;
        rollback.disarm();
        if replies.failures() > n - inner.quorum {
            RoundOutcome::Unavailable(replies)
        } else {
            RoundOutcome::Contended(replies)
        }
    }

    /// Fencing write-back: makes sure a majority of masters has a counter at least as large as
    /// the token before the lock is handed out. Returns the token, or `None` when no majority
    /// acknowledged.
    ///
    /// Masters whose grant already returned the maximum hold it; only the others are written,
    /// so when the counters are in step (the usual case) this costs no round trip at all.
    async fn fence_write_back(&self, grants: &[(usize, u64)]) -> Option<u64> {
        let inner = &self.inner;
        let token = grants.iter().map(|(_, v)| *v).max()?;
        let at_max = grants.iter().filter(|(_, v)| *v == token).count();
        if at_max >= inner.quorum {
            return Some(token);
        }
        let others: Vec<usize> = (0..inner.masters.len())
            .filter(|i| !grants.iter().any(|(g, v)| g == i && *v == token))
            .collect();
        let call = Arc::new(ScriptCall::new(
            &FENCE_RAISE,
            vec![inner.config.fence_key()],
            vec![token.to_string()],
        ));
        let round = fan_out(
            others.len(),
            inner.quorum - at_max,
            |j| {
                let master = inner.masters[others[j]].clone();
                let call = call.clone();
                async move { master.run(&call).await }
            },
            |answer| matches!(answer, Ok(Value::Int(v)) if *v as u64 >= token),
        )
        .await;
        (round.decision == Decision::Won).then_some(token)
    }

    /// Releases a failed round's keys on every master that may hold them: all but those that
    /// answered "held by someone else" (their SET did not land). A master that timed out or was
    /// not waited for may have applied the SET, so it is included.
    async fn rollback(&self, key: &str, token: &str, answers: &[Option<AcquireAnswer>]) {
        let targets: Vec<usize> = answers
            .iter()
            .enumerate()
            .filter(|(_, a)| !matches!(a, Some(Ok(None))))
            .map(|(i, _)| i)
            .collect();
        if targets.is_empty() {
            return;
        }
        let call = ScriptCall::new(&RELEASE, vec![key.to_owned()], vec![token.to_owned()]);
        join_all(targets.iter().map(|&i| self.inner.masters[i].run(&call))).await;
    }

    /// Delayed-restart protection: a master that (re)started less than the configured maximum
    /// lock TTL ago may have lost keys it granted, so its votes do not count yet.
    pub(crate) fn is_quarantined(&self, master: &Master) -> bool {
        let Some(window) = self.inner.config.restart_quarantine else {
            return false;
        };
        match master.identity() {
            Some(id) => id.started_at.elapsed() < window,
            None => true,
        }
    }

    pub(crate) fn config(&self) -> &Config {
        &self.inner.config
    }
}

fn parse_acquire(value: Value) -> AcquireAnswer {
    match value {
        Value::Int(-1) => Ok(None),
        Value::Int(v) if v >= 0 => Ok(Some(v as u64)),
        other => Err(MasterReply::ServerError(format!(
            "unexpected acquire reply {other:?}"
        ))),
    }
}

/// Rolls a round back if the acquiring future is dropped while the round is in flight.
struct RollbackOnDrop {
    armed: Option<(Redlock, String, String)>,
}

impl RollbackOnDrop {
    fn armed(redlock: Redlock, key: String, token: String) -> Self {
        Self {
            armed: Some((redlock, key, token)),
        }
    }

    fn disarm(&mut self) {
        self.armed = None;
    }
}

impl Drop for RollbackOnDrop {
    fn drop(&mut self) {
        if let Some((redlock, key, token)) = self.armed.take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            handle.spawn(async move {
                let n = redlock.masters();
                redlock.rollback(&key, &token, &vec![None; n]).await;
            });
        }
    }
}
