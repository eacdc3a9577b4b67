//! Fencing tokens over the quorum: sealing a master's counter before its vote counts, and the
//! write-back that makes a majority know each token before it is handed out.
//!
//! # Why tokens strictly increase
//! Each master keeps a counter per key namespace, plus a *seal*: the `run_id` of the server
//! process for which the counter was last raised from a quorum. A master is *sealed* when its
//! counter exists and its seal names the process that answers now; any client reads this at
//! every connect, so one started after a restart knows it as well as one that saw it. Let `S`
//! be the sealed masters and `K` the sealed masters whose counter is at least the last token
//! handed out. The invariant is `|K| > |S| - Q`: any `Q` sealed masters include one of `K`.
//! - A grant counts votes of sealed masters only (the acquire script's `INCR` on a quorum);
//!   its token is the largest counter among them, so it exceeds the last token, and it is
//!   written back to `Q` sealed masters before the lock is handed out: then `|K| >= Q`.
//! - A master that loses its counter or is replaced (restart without data, an old snapshot, a
//!   promoted replica, another process on its address, a flush) is no longer sealed (new
//!   `run_id`, or the counter is missing, which the acquire scripts check): `S` and `K` lose
//!   at most one member each, the invariant holds.
//! - Sealing a master raises its counter to the largest counter read from `Q` sealed masters,
//!   one of which is in `K`, so it joins `K`. A seal read before a later grant may be stale,
//!   but that master was unsealed at the grant, which left one spare member in `K` for it.
//!   This step assumes the seal write lands before that master is sealed again and loses its
//!   counter once more. A restart gives it a new `run_id`, which voids a late seal; a `FLUSHALL`
//!   (or eviction) keeps the `run_id`, so a seal or write-back delayed past a second flush can
//!   recreate the counter with an old value: not covered (`tests/fencing_gaps.rs`).
//! - When fewer than `Q` sealed masters answer, a seal needs *every* master to answer: with
//!   all counters read, the largest is the last token unless every master that knew it lost
//!   it. That bootstraps a new namespace (no counters anywhere) and recovers after most
//!   masters lost their data; then tokens are only as safe as the surviving counters (logged).

use std::sync::Arc;

use futures::future::join_all;
use redis::Value;
use tokio::time::Instant;

use crate::error::MasterReply;
use crate::lock::Redlock;
use crate::master::{FenceState, fence_read};
use crate::quorum::{Ballot, Decision};
use crate::scripts::{FENCE_RAISE, FENCE_SEAL, ScriptCall};

/// One master's answer to the seal read: its fencing state, and whether it is sealed for the
/// process that answered.
type SealRead = std::result::Result<(FenceState, bool), MasterReply>;

/// Decides the seal read: done once `Q` sealed masters answered, or once every master did.
struct SealTally {
    n: usize,
    quorum: usize,
    sealed: usize,
    answered: usize,
}

impl Ballot<SealRead> for SealTally {
    fn decision(&self) -> Decision {
        if self.sealed >= self.quorum {
            Decision::Won
        } else if self.answered == self.n {
            Decision::Lost
        } else {
            Decision::Pending
        }
    }

    fn record(&mut self, answer: &SealRead) -> Decision {
        self.answered += 1;
        if matches!(answer, Ok((_, true))) {
            self.sealed += 1;
        }
        self.decision()
    }
}

impl Redlock {
    /// Whether some connected master's fencing counter is not sealed (one atomic load each).
    pub(crate) fn has_unsealed_masters(&self) -> bool {
        self.inner
            .masters
            .iter()
            .any(|m| m.is_connected() && !m.is_sealed())
    }

    /// Seals every connected master that is not sealed, if a quorum of sealed masters (or every
    /// master) answers before `deadline`; otherwise their votes keep waiting. See the module
    /// docs for why this keeps tokens increasing.
    pub(crate) async fn seal_masters(&self, deadline: Instant) {
        let inner = &self.inner;
        let Some(keys) = inner.config.fence_keys() else {
            return;
        };
        let unsealed: Vec<(usize, u64)> = inner
            .masters
            .iter()
            .enumerate()
            .filter(|(_, m)| m.is_connected() && !m.is_sealed())
            .map(|(i, m)| (i, m.seal_generation()))
            .collect();
        if unsealed.is_empty() {
            return;
        }
        let read = Arc::new(fence_read(&keys));
        let tally = SealTally {
            n: inner.masters.len(),
            quorum: inner.masters.quorum(),
            sealed: 0,
            answered: 0,
        };
        let round = inner.masters.ask(
            |master| {
                let master = master.clone();
                let read = read.clone();
                async move {
                    let state = master
                        .query(&read)
                        .await
                        .and_then(|v| FenceState::parse(v).map_err(|e| server_error(&e)))?;
                    // Judged after the read: a reconnect records the new process first.
                    let sealed = master
                        .identity()
                        .is_some_and(|id| state.is_sealed_for(&id.run_id));
                    Ok((state, sealed))
                }
            },
            tally,
        );
        let Ok(round) = tokio::time::timeout_at(deadline, round).await else {
            tracing::debug!("fencing seal postponed: the acquire wait ran out");
            return;
        };
        let answers: Vec<&(FenceState, bool)> = round.answers.iter().flatten().flatten().collect();
        if round.decision != Decision::Won && answers.len() < inner.masters.len() {
            tracing::debug!(
                "fencing seal postponed: neither a quorum of sealed masters nor all answered"
            );
            return;
        }
        let seed = answers
            .iter()
            .filter_map(|(state, _)| state.counter)
            .max()
            .unwrap_or(0);
        if round.decision != Decision::Won && seed > 0 {
            tracing::warn!(
                seed,
                "fewer than a quorum of masters kept their fencing counters: sealing every master \
                 from the largest one left; if every master that knew the last token lost it, \
                 tokens may repeat"
            );
        }
        let seals = unsealed.into_iter().map(|(i, generation)| {
            let master = inner.masters.get(i).clone();
            let keys = keys.clone();
            // Sealed meanwhile by another client: nothing to write.
            let already = round.answers[i]
                .as_ref()
                .is_some_and(|a| matches!(a, Ok((_, true))));
            async move {
                let Some(identity) = master.identity() else {
                    return;
                };
                if !already {
                    let call = ScriptCall::new(
                        &FENCE_SEAL,
                        vec![keys.counter, keys.seal],
                        vec![seed.to_string(), identity.run_id],
                    );
                    match master.run(&call).await {
                        Ok(Value::Int(v)) if v as u64 >= seed => {}
                        _ => return,
                    }
                }
                tracing::info!(master = i, seed, "fencing counter sealed");
                master.mark_sealed(generation);
            }
        });
        join_all(seals).await;
    }

    /// Fencing write-back: makes sure a quorum of sealed masters has a counter at least as large
    /// as the token before the lock is handed out. Returns the token, or `None` when no quorum
    /// acknowledged.
    ///
    /// Masters whose grant already returned the maximum hold it; only the others are written,
    /// so when the counters are in step (the usual case) this costs no round trip at all.
    pub(crate) async fn fence_write_back(&self, grants: &[(usize, u64)]) -> Option<u64> {
        let inner = &self.inner;
        let token = grants.iter().map(|(_, v)| *v).max()?;
        let at_max = grants.iter().filter(|(_, v)| *v == token).count();
        let quorum = inner.masters.quorum();
        if at_max >= quorum {
            return Some(token);
        }
        // Unsealed masters are raised too (it does no harm) but do not count.
        let others: Vec<usize> = (0..inner.masters.len())
            .filter(|i| !grants.iter().any(|(g, v)| g == i && *v == token))
            .collect();
        let call = Arc::new(ScriptCall::new(
            &FENCE_RAISE,
            vec![inner.config.fence_key()],
            vec![token.to_string()],
        ));
        let round = inner
            .masters
            .vote_among(
                &others,
                quorum - at_max,
                |master| {
                    let master = master.clone();
                    let call = call.clone();
                    async move { (master.is_sealed(), master.run(&call).await) }
                },
                |(sealed, answer)| {
                    *sealed && matches!(answer, Ok(Value::Int(v)) if *v as u64 >= token)
                },
            )
            .await;
        (round.decision == Decision::Won).then_some(token)
    }
}

fn server_error(e: &redis::RedisError) -> MasterReply {
    MasterReply::ServerError(e.to_string())
}
