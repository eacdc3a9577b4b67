//! One acquire round, as named steps: **prepare** (seal unsealed fencing counters, wait for
//! broken connections when too few are up), **send** the acquire script to every master and
//! **decide** at a quorum, then either **fence** (the token, written back to a quorum),
//! **validate** (validity left after drift) and grant, or **undo** (roll back on every master
//! that may hold the key). Dropping the round part-way undoes it in the background.

use std::sync::Arc;

use redis::Value;
use tokio::time::Instant;

use crate::drop_guard::SpawnOnDrop;
use crate::error::{MasterReply, Replies};
use crate::held::{Attempt, HeldBy};
use crate::lock::Redlock;
use crate::master::Master;
use crate::quorum::{Ballot, ChoiceTally, Decision, Round, drift, sent_ttl, valid_until};
use crate::scripts::ScriptCall;

/// How one acquire round ended.
pub(crate) enum RoundOutcome {
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

impl RoundOutcome {
    /// The outcome's name in metrics (metrics.rs).
    fn label(&self) -> &'static str {
        match self {
            Self::Acquired { .. } => "acquired",
            Self::Contended(_) => "contended",
            Self::Expired(_) => "expired",
            Self::Unavailable(_) => "unavailable",
        }
    }
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
    /// One round of an attempt built by `next`; if it failed only because connections were
    /// found broken and are coming back (a restarted server, a reset network path), scripts
    /// were flushed, or counters must be sealed, a second round right away, before `deadline`.
    /// Masters that are really down refuse the reconnect at once, so this still fails fast.
    ///
    /// The second round has a fresh owner token: the first one's rollback may reach a master
    /// late, and must not delete what the second round set there.
    pub(crate) async fn round_reconnecting(
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

    /// One acquire round, exactly as in the Redlock spec, plus the fencing step. Preparing
    /// (sealing, waiting for reconnects) ends by `deadline`.
    async fn round(&self, attempt: &Attempt, deadline: Instant) -> RoundOutcome {
        self.prepare(deadline).await;
        // If this future is dropped from here on, keys may have landed: undo in the background.
        let mut undo_on_drop = {
            let (redlock, held, token) =
                (self.clone(), attempt.held.clone(), attempt.token.clone());
            SpawnOnDrop::armed(move || async move {
                let every_master = vec![None; redlock.masters()];
                redlock.undo(&held, &token, &every_master).await;
            })
        };
        let t0 = Instant::now();
        let round = self.send(&attempt.call).await;
        let replies = replies_of(&round.answers);
        crate::metrics::master_replies(&replies);
        let outcome = match round.decision {
            Decision::Won => self.granted(attempt, &round, replies, t0).await,
            _ => {
                self.undo(&attempt.held, &attempt.token, &round.answers)
                    .await;
                self.refused(replies)
            }
        };
        undo_on_drop.disarm();
        crate::metrics::round_decided(outcome.label());
        outcome
    }

    /// Before sending: seal masters whose fencing counter is not sealed, and when the connected
    /// masters alone cannot make a quorum (say, every connection broke at once), give the others
    /// one chance to reconnect, bounded by the per-master timeout. Nothing is sent yet, so
    /// nothing can arrive late. Not otherwise: a master that is down or cut off would cost every
    /// round that timeout.
    async fn prepare(&self, deadline: Instant) {
        let (masters, config) = (&self.inner.masters, &self.inner.config);
        if config.fencing && self.has_unsealed_masters() {
            self.seal_masters(deadline).await;
        }
        let connected = masters.iter().filter(|m| m.is_connected()).count();
        if connected < masters.quorum() {
            let until = deadline.min(Instant::now() + config.master_timeout);
            masters.ask_each(|m| m.await_connection(until)).await;
        }
    }

    /// Sends the acquire call to every master at once (each at most once: never late) and
    /// decides at a quorum for one choice. A master inside its restart quarantine, or whose
    /// fencing counter is not sealed for its current process (its grant could carry a token
    /// lower than one already handed out), does not vote.
    async fn send(&self, call: &Arc<ScriptCall>) -> Round<AcquireAnswer> {
        let (masters, config) = (&self.inner.masters, &self.inner.config);
        let (quarantine, fencing) = (config.restart_quarantine, config.fencing);
        let excluded = move |m: &Master| {
            if m.is_quarantined(quarantine) {
                Some(MasterReply::Quarantined)
            } else if fencing && !m.is_sealed() {
                Some(MasterReply::Unsealed)
            } else {
                None
            }
        };
        masters
            .ask(
                |master| {
                    let (master, call) = (master.clone(), call.clone());
                    async move {
                        let answer = master.run_once(&call, excluded).await;
                        let answer = checked(answer.and_then(parse_acquire), &master, fencing);
                        if answer == Err(MasterReply::Unsealed) {
                            master.unseal();
                        }
                        answer
                    }
                },
                ChoiceTally::new(masters.len(), masters.quorum()),
            )
            .await
    }

    /// A quorum granted: give back what lost, fence, validate.
    async fn granted(
        &self,
        attempt: &Attempt,
        round: &Round<AcquireAnswer>,
        mut replies: Replies,
        t0: Instant,
    ) -> RoundOutcome {
        let (held, token) = (&attempt.held, &attempt.token);
        #[cfg(feature = "sim")]
        crate::sim::stall("acquire.quorum", token).await;
        let choice = winning_choice(&round.answers, self.inner.masters.quorum());
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
            self.undo(held, token, &others).await;
        }
        let Ok(fencing_token) = self.fence(&round.answers, choice).await else {
            self.undo(held, token, &round.answers).await;
            // Masters not waited for did not acknowledge the write-back in time either.
            for reply in &mut replies.0 {
                if *reply == MasterReply::NoAnswer {
                    *reply = MasterReply::TimedOut;
                }
            }
            return RoundOutcome::Unavailable(replies);
        };
        #[cfg(feature = "sim")]
        crate::sim::stall("acquire.fenced", token).await;
        // Validity counts from t0 with the TTL the masters were sent (whole milliseconds).
        let ttl = sent_ttl(attempt.ttl);
        let drift = drift(ttl, self.inner.config.drift_factor);
        let Some(valid_until) = valid_until(t0, ttl, drift, Instant::now()) else {
            self.undo(held, token, &round.answers).await;
            return RoundOutcome::Expired(replies);
        };
        #[cfg(feature = "sim")]
        crate::sim::stall("acquire.validated", token).await;
        RoundOutcome::Acquired {
            token: token.clone(),
            valid_until,
            fencing_token,
            votes: replies.granted(),
            choice,
        }
    }

    /// The fencing token of a won round (`None` when fencing is off): the largest counter among
    /// the grants for `choice`, written back to a quorum (fencing.rs). `Err` when no quorum
    /// acknowledged the write-back.
    async fn fence(
        &self,
        answers: &[Option<AcquireAnswer>],
        choice: u32,
    ) -> Result<Option<u64>, ()> {
        if !self.inner.config.fencing {
            return Ok(None);
        }
        let grants: Vec<(usize, u64)> = answers
            .iter()
            .enumerate()
            .filter_map(|(i, a)| match a {
                Some(Ok(Some(g))) if g.choice == choice => Some((i, g.fence)),
                _ => None,
            })
            .collect();
        self.fence_write_back(&grants).await.map(Some).ok_or(())
    }

    /// A round without a quorum: unavailable when failures alone rule one out, else contended.
    fn refused(&self, replies: Replies) -> RoundOutcome {
        let masters = &self.inner.masters;
        if replies.failures() > masters.len() - masters.quorum() {
            RoundOutcome::Unavailable(replies)
        } else {
            RoundOutcome::Contended(replies)
        }
    }

    /// Releases a failed round's keys on every master that may hold them: all but those that
    /// answered "held by someone else" (their SET did not land). A master that timed out or was
    /// not waited for may have applied the SET, so it is included. Returns once every call is
    /// on its way (queued before this client's next command to that master), not answered.
    async fn undo(&self, held: &HeldBy, token: &str, answers: &[Option<AcquireAnswer>]) {
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
            .send_to(&targets, |master| master.run_owned(&call))
            .await;
    }
}

/// What each master answered, for errors and traces.
fn replies_of(answers: &[Option<AcquireAnswer>]) -> Replies {
    Replies(
        answers
            .iter()
            .map(|a| match a {
                None => MasterReply::NoAnswer,
                Some(Ok(Some(_))) => MasterReply::Granted,
                Some(Ok(None)) => MasterReply::Refused,
                Some(Err(reply)) => reply.clone(),
            })
            .collect(),
    )
}

/// A grant as a master answered it: the grant, the seal generation it came with (fencing on),
/// to be checked against the one this client knows for that master, and (sharded) the
/// topology's seal generation, to be checked against the master's server process.
type Parsed = std::result::Result<Option<(Grant, Option<Vec<u8>>, Option<Vec<u8>>)>, MasterReply>;

fn parse_acquire(value: Value) -> Parsed {
    let unexpected =
        |v: &Value| MasterReply::ServerError(format!("unexpected acquire reply {v:?}"));
    let grant = |fence: i64, choice: i64| Grant {
        fence: fence as u64,
        choice: u32::try_from(choice).unwrap_or(u32::MAX),
    };
    match value {
        Value::Int(-1) => Ok(None),
        // Fencing on and the hash has no generation: nothing was set (fencing.rs).
        Value::Int(-2) => Err(MasterReply::Unsealed),
        Value::Int(v) if v >= 0 => Ok(Some((grant(v, 0), None, None))),
        // Fencing on: [counter, generation]; scripts that choose (the semaphore's slot) answer
        // [counter, choice] or, fenced, [counter, choice, generation]; the sharded lock's
        // [counter or 0, generation or nil, topology generation].
        Value::Array(items) => match items.as_slice() {
            [Value::Int(fence), Value::BulkString(g)] if *fence >= 0 => {
                Ok(Some((grant(*fence, 0), Some(g.clone()), None)))
            }
            [Value::Int(fence), Value::Int(choice)] if *fence >= 0 && *choice >= 0 => {
                Ok(Some((grant(*fence, *choice), None, None)))
            }
            [Value::Int(fence), Value::Int(choice), Value::BulkString(g)]
                if *fence >= 0 && *choice >= 0 =>
            {
                Ok(Some((grant(*fence, *choice), Some(g.clone()), None)))
            }
            [Value::Int(fence), g, Value::BulkString(topology)]
                if *fence >= 0 && matches!(g, Value::BulkString(_) | Value::Nil) =>
            {
                let g = match g {
                    Value::BulkString(g) => Some(g.clone()),
                    _ => None,
                };
                Ok(Some((grant(*fence, 0), g, Some(topology.clone()))))
            }
            _ => Err(unexpected(&Value::Array(items))),
        },
        other => Err(unexpected(&other)),
    }
}

/// With fencing on, a grant counts only if it came with the generation this client knows for
/// the master: another one means the master lost its counter and was sealed again since (or
/// is not the state this client sealed), so its counter may not be above the last token yet.
///
/// A sharded grant counts only if the topology's seal generation names the server process this
/// client knows behind the master (`sharded/seal.rs`): a topology hash stored by another
/// process (an old snapshot, a takeover) may be older than what a quorum knows.
fn checked(answer: Parsed, master: &Master, fencing: bool) -> AcquireAnswer {
    match answer? {
        None => Ok(None),
        Some((grant, generation, topology)) => {
            if let Some(topology) = topology
                && !master.is_process_generation(&topology)
            {
                return Err(crate::master::topology_unsealed());
            }
            if fencing && !generation.is_some_and(|g| master.is_generation(&g)) {
                return Err(MasterReply::Unsealed);
            }
            Ok(Some(grant))
        }
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
