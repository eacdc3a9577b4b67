//! Leader election over the quorum: [`Election`] (campaign, read the leader, observe changes)
//! and [`Leadership`], the handle of the candidate that leads.
//!
//! A leadership is a lock (one round over every master, decided at a quorum, validity from
//! the TTL minus the round and drift, rollback of failed rounds) on its own key, a hash per
//! master holding the owner token, the leader's value, its term and the end of its lease by
//! that master's clock. The term is the round's fencing token, so terms strictly increase
//! across leaders exactly as lock tokens do (fencing.rs); after the round it is written to the
//! leadership hashes of a quorum, so that [`Election::leader`] reads it back. The leadership is
//! kept by the lease watchdog (lease.rs), with its signals.

mod announcements;
mod leadership;
mod observe;

use std::time::Duration;

use redis::Value;
use tokio::time::Instant;

use crate::config::deadline_after;
#[cfg(doc)]
use crate::defaults::DEFAULT_ELECTION_TTL;
use crate::defaults::{DEFAULT_OBSERVE_INTERVAL, MAX_VALUE_LEN};
use crate::error::{Error, Replies, Result};
use crate::guard::LockGuard;
use crate::held::{Attempt, HeldBy};
use crate::invalid::ArgumentReason;
use crate::lock::{Redlock, Wake};
use crate::options::LockOptions;
use crate::scripts::millis;
use crate::scripts::{
    ELECTION_ACQUIRE, ELECTION_EXTEND, ELECTION_READ, ELECTION_RELEASE, ELECTION_TERM, ScriptCall,
};

pub use leadership::Leadership;

/// One election, by name. Created by [`Redlock::election`]; cheap to clone. A campaign takes
/// its leadership's [`LockOptions`] (TTL, wait, lock-delay, extension cap); the
/// `observe_interval` is builder-style.
#[derive(Clone, Debug)]
pub struct Election {
    redlock: Redlock,
    name: String,
    observe_interval: Duration,
}

/// The leader as a quorum of masters reports it (see [`Election::leader`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leader {
    /// The value the leader campaigned with.
    pub value: String,
    /// Its term: the fencing token of its leadership.
    pub term: u64,
}

impl Redlock {
    /// The election `name` (any non-empty string). Elections need fencing on (the term is the
    /// fencing token).
    pub fn election(&self, name: impl Into<String>) -> Election {
        Election {
            redlock: self.clone(),
            name: name.into(),
            observe_interval: DEFAULT_OBSERVE_INTERVAL,
        }
    }
}

impl Election {
    /// How often [`observe`](Self::observe) reads the leader. Must be positive: `observe` and
    /// `campaign` refuse zero.
    pub fn observe_interval(mut self, interval: Duration) -> Self {
        self.observe_interval = interval;
        self
    }

    /// The election's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Campaigns with `value` (what others read as the leader's value: an address, a host
    /// name) until this candidate leads, and returns its leadership, kept alive in the
    /// background until it is resigned, dropped, lost or capped.
    ///
    /// The options are the leadership's: its TTL (a leader that vanishes without resigning is
    /// replaced within about one TTL, plus the lock-delay; [`DEFAULT_ELECTION_TTL`] is a
    /// reasonable one), the wait, the lock-delay (after a leader's lease ran out without a
    /// resignation, nobody is elected for that much more; a resignation hands over at once) and
    /// the extension cap (counted from the win, not from after the term is recorded).
    ///
    /// Without [`LockOptions::wait`] it waits without a deadline: drop the future to stop
    /// campaigning (safe at any point: a round in flight is rolled back in the background). A
    /// resignation wakes waiting candidates of this client at once (release messages);
    /// otherwise they retry at the client's retry delay.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty name, a value over [`MAX_VALUE_LEN`] bytes, fencing
    /// off, a zero cap or a lock-delay over [`MAX_TTL`](crate::defaults::MAX_TTL); [`Error::InvalidTtl`];
    /// [`Error::Unavailable`] when masters fail hard (connections refused) so no quorum is
    /// possible; with a wait, [`Error::Contended`] (another leader held on),
    /// [`Error::Timeout`] or [`Error::Unavailable`] when it ran out.
    pub async fn campaign(
        &self,
        value: impl Into<String>,
        options: impl Into<LockOptions>,
    ) -> Result<Leadership> {
        let value = value.into();
        let options = options.into();
        self.check(&value, &options)?;
        let deadline = deadline_after(Instant::now(), options.wait_or(Duration::MAX));
        let resource = self.resource();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let guard = self
                .redlock
                .acquire_loop(&resource, &options, left, Wake::OnRelease, || {
                    self.attempt(&value, &options)
                })
                .await?;
            // The extension cap counts from here, not from after the term is recorded.
            let won_at = Instant::now();
            let term = guard.fencing_token().unwrap_or(0);
            let replies = match self.record_term(&guard, term).await {
                Ok(()) => {
                    let ttl = options.ttl();
                    return Ok(Leadership::start(self, guard, ttl, won_at, value, term));
                }
                Err(replies) => replies,
            };
            // Won, but readers could not be told the term: give it back and try again, so that
            // `leader()` never shows an older term for a leader that returned.
            tracing::debug!(election = %self.name, "term not recorded on a quorum; campaigning again");
            let _ = guard.release().await;
            if Instant::now() >= deadline {
                return Err(self.redlock.master_set().unavailable(replies));
            }
        }
    }

    /// The current leader as a quorum of masters reports it, each by its own clock: `Some` when
    /// a quorum of masters hold the same leader's live lease, `None` when none does (no leader,
    /// a hand-over in progress, a winner whose term is not recorded yet, or masters that
    /// disagree). The term is the leader's fencing token, recorded on a quorum before its
    /// campaign returns.
    ///
    /// **Advisory**: a snapshot that may be stale when it arrives. Never use it to decide that
    /// *you* lead (only a [`Leadership`] says that); use it to find the leader.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the masters that did not answer could decide it: fewer than
    /// a quorum answered, or no owner holds a quorum of the answers but one would with the
    /// silent masters (a leader on exactly a quorum, one of them paused). The leader is then
    /// unknown, not absent; `Ok(None)` only when no owner could hold a quorum whatever the
    /// silent masters hold.
    pub async fn leader(&self) -> Result<Option<Leader>> {
        Ok(self.leader_lease().await?.map(|(leader, _)| leader))
    }

    /// [`leader`](Self::leader), with the shortest time left of its lease among the quorum of
    /// masters that report it, each by its own clock (the leader extends it every third of the
    /// TTL; a leader that vanished is gone by then). Advisory, like `leader`.
    ///
    /// # Errors
    /// As [`leader`](Self::leader).
    pub async fn leader_lease(&self) -> Result<Option<(Leader, Duration)>> {
        let redlock = &self.redlock;
        let call = ScriptCall::new(&ELECTION_READ, vec![self.key()], Vec::new());
        let answers = redlock.master_set().ask_each(|m| m.run(&call)).await;
        let replies = Replies::from_results(&answers);
        let reads: Vec<Option<Held>> = answers
            .into_iter()
            .filter_map(|a| a.ok())
            .map(parse_read)
            .collect();
        let quorum = redlock.master_set().quorum();
        let silent = redlock.master_set().len() - reads.len();
        match read_leader(&reads, silent, quorum) {
            Some(leader) => Ok(leader),
            None => Err(redlock.master_set().unavailable(replies)),
        }
    }

    fn check(&self, value: &str, options: &LockOptions) -> Result<()> {
        if self.name.is_empty() {
            return Err(Error::InvalidArgument(ArgumentReason::EmptyElectionName));
        }
        if value.len() > MAX_VALUE_LEN {
            return Err(Error::InvalidArgument(
                ArgumentReason::CandidateValueTooLong {
                    len: value.len(),
                    max: MAX_VALUE_LEN,
                },
            ));
        }
        if !self.redlock.config().fencing {
            return Err(Error::InvalidArgument(
                ArgumentReason::ElectionWithoutFencing,
            ));
        }
        self.check_observe_interval()?;
        self.redlock.config().check_ttl(options.ttl())?;
        options.check("Election::campaign", true, true)
    }

    fn check_observe_interval(&self) -> Result<()> {
        if self.observe_interval.is_zero() {
            return Err(Error::InvalidArgument(ArgumentReason::ZeroObserveInterval));
        }
        Ok(())
    }

    /// The name guards, errors, traces and release messages use.
    fn resource(&self) -> String {
        format!("election:{}", self.name)
    }

    fn key(&self) -> String {
        self.redlock.config().key("election", &self.name)
    }

    fn attempt(&self, value: &str, options: &LockOptions) -> Attempt {
        let config = self.redlock.config();
        let key = self.key();
        let ttl = options.ttl();
        let delay = millis(options.delay());
        let held = HeldBy::new(
            "election",
            vec![key.clone()],
            &ELECTION_EXTEND,
            &ELECTION_RELEASE,
        )
        .args(vec![delay.clone()])
        .announced();
        Attempt::new(ttl, held, |token| {
            ScriptCall::new(
                &ELECTION_ACQUIRE,
                vec![key, config.fence_key()],
                vec![
                    token.to_owned(),
                    millis(ttl),
                    config.fencing_arg(),
                    value.to_owned(),
                    delay,
                ],
            )
        })
    }

    /// Writes the term into the leadership hashes: `Ok` when a quorum recorded it, else what
    /// each master answered.
    async fn record_term(&self, guard: &LockGuard, term: u64) -> std::result::Result<(), Replies> {
        let redlock = &self.redlock;
        let call = std::sync::Arc::new(ScriptCall::new(
            &ELECTION_TERM,
            vec![self.key()],
            vec![guard.token().to_owned(), term.to_string()],
        ));
        let round = redlock
            .master_set()
            .vote(
                redlock.master_set().quorum(),
                |master| master.run_owned(&call),
                |answer| matches!(answer, Ok(Value::Int(1))),
            )
            .await;
        if round.decision == crate::quorum::Decision::Won {
            return Ok(());
        }
        Err(Replies::from_answers(&round.answers, |v| {
            matches!(v, Value::Int(1))
        }))
    }
}

/// One master's view: who holds the leadership there, with what, in which term.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Held {
    owner: String,
    value: String,
    term: u64,
    /// Time left of the lease by that master's clock, in ms.
    left_ms: u64,
}

fn parse_read(value: Value) -> Option<Held> {
    let Value::Array(items) = value else {
        return None;
    };
    let text = |v: &Value| match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    };
    match items.as_slice() {
        [owner, value, Value::Int(term), Value::Int(left)] => Some(Held {
            owner: text(owner)?,
            value: text(value)?,
            term: u64::try_from(*term).ok()?,
            left_ms: u64::try_from(*left).ok()?,
        }),
        _ => None,
    }
}

/// What the answering masters' views `reads` say, with `silent` masters unheard: `Some(leader)`
/// when that is known (`Some(None)`: no leader), `None` when the silent masters could decide
/// it (an owner held on fewer than `quorum` views but on `quorum` with the silent ones).
fn read_leader(
    reads: &[Option<Held>],
    silent: usize,
    quorum: usize,
) -> Option<Option<(Leader, Duration)>> {
    let held: Vec<&Held> = reads.iter().flatten().collect();
    let most = held
        .iter()
        .map(|h| held.iter().filter(|o| o.owner == h.owner).count())
        .max()
        .unwrap_or(0);
    if most >= quorum {
        // Held on a quorum of the answers: the silent masters cannot change who (and a term
        // recorded on a quorum shows on one of these views, see `quorum_lease`).
        return Some(quorum_lease(reads, quorum));
    }
    // No owner could reach a quorum even if every silent master held it: no leader. (An owner
    // seen nowhere would need a quorum of silent masters: `silent < quorum` once a quorum
    // answered.)
    (most + silent < quorum && reads.len() >= quorum).then_some(None)
}

/// The leader held on at least `quorum` of the masters' views, if any.
#[cfg(test)]
fn quorum_leader(reads: &[Option<Held>], quorum: usize) -> Option<Leader> {
    quorum_lease(reads, quorum).map(|(leader, _)| leader)
}

/// The leader held on at least `quorum` of the masters' views, if any, and the shortest time
/// left of its lease among them.
fn quorum_lease(reads: &[Option<Held>], quorum: usize) -> Option<(Leader, Duration)> {
    let held: Vec<&Held> = reads.iter().flatten().collect();
    let owner = held
        .iter()
        .map(|h| &h.owner)
        .find(|o| held.iter().filter(|h| &h.owner == *o).count() >= quorum)?;
    let mine: Vec<&&Held> = held.iter().filter(|h| &h.owner == owner).collect();
    // Only the winner's own term is ever recorded under its owner token (the acquire script
    // writes 0), so every non-zero term seen here is the same; 0 everywhere means the winner
    // has not recorded it yet: its campaign has not returned, there is no leader to name.
    let term = mine.iter().map(|h| h.term).max().unwrap_or(0);
    let left = mine.iter().map(|h| h.left_ms).min().unwrap_or(0);
    (term > 0).then(|| {
        let leader = Leader {
            value: mine[0].value.clone(),
            term,
        };
        (leader, Duration::from_millis(left))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(owner: &str, term: u64) -> Option<Held> {
        Some(Held {
            owner: owner.into(),
            value: format!("v-{owner}"),
            term,
            left_ms: 1000 + term,
        })
    }

    #[test]
    fn a_leader_needs_a_quorum_of_views() {
        let agree = [held("a", 0), held("a", 9), None, held("a", 9), None];
        assert_eq!(
            quorum_leader(&agree, 3),
            Some(Leader {
                value: "v-a".into(),
                term: 9
            })
        );
        let split = [held("a", 7), held("a", 7), held("b", 8), held("b", 8), None];
        assert_eq!(quorum_leader(&split, 3), None);
        assert_eq!(quorum_leader(&[None, None, None], 2), None);
        // The lease left: the shortest among the masters that report the leader.
        assert_eq!(
            quorum_lease(&agree, 3).map(|(_, left)| left),
            Some(Duration::from_millis(1000))
        );
        // Held on a quorum but its term not recorded yet: the campaign has not returned.
        let unrecorded = [held("a", 0), held("a", 0), held("a", 0), None, None];
        assert_eq!(quorum_leader(&unrecorded, 3), None);
    }

    #[test]
    fn silent_masters_that_could_complete_a_quorum_make_it_unknown() {
        // On exactly 3 of 5, one of them silent: unknown.
        let two = [held("a", 9), held("a", 9), None, None];
        assert_eq!(read_leader(&two, 1, 3), None);
        // Nothing anywhere, one silent: nobody can have a quorum.
        assert_eq!(read_leader(&[None, None, None, None], 1, 3), Some(None));
        // Split 2 / 2, one silent: either could have 3.
        let split = [held("a", 7), held("a", 7), held("b", 8), held("b", 8)];
        assert_eq!(read_leader(&split, 1, 3), None);
        // One view each, one silent: nobody can have 3.
        let scattered = [held("a", 7), held("b", 8), held("c", 9), None];
        assert_eq!(read_leader(&scattered, 1, 3), Some(None));
        // A quorum of the answers: known whatever the silent masters say.
        let three = [held("a", 9), held("a", 9), held("a", 0), None];
        assert_eq!(
            read_leader(&three, 1, 3).unwrap().map(|(l, _)| l.term),
            Some(9)
        );
        // Fewer than a quorum answered: unknown.
        assert_eq!(read_leader(&[None, None], 3, 3), None);
    }

    #[test]
    fn reads_parse_or_count_as_no_leader() {
        let ok = Value::Array(vec![
            Value::BulkString(b"tok".to_vec()),
            Value::BulkString(b"host:1".to_vec()),
            Value::Int(12),
            Value::Int(1012),
        ]);
        assert_eq!(
            parse_read(ok),
            held("tok", 12).map(|h| Held {
                value: "host:1".into(),
                ..h
            })
        );
        assert_eq!(parse_read(Value::Array(vec![])), None);
        assert_eq!(parse_read(Value::Int(3)), None);
    }
}
