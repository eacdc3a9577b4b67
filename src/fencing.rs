//! Fencing tokens over the quorum: sealing a master's counter before its vote counts, and the
//! write-back that makes a majority know each token before it is handed out.
//!
//! # State on each master
//! One hash per key namespace (`<prefix>fence`), so that nothing removes the counter without
//! the rest: field `n` (the counter), field `gen` (the *generation* of the last seal,
//! `<run_id>:<random>`, new at every seal) and, while a seal is under way, field `claim`
//! (`<run_id>:<random>`, see below). A master is *sealed* when its hash has `n` and a `gen` of
//! the server process that answers now. Clients read `n` and `gen` at every connect (so one
//! started after a fault knows as much as one that saw it) and keep each master's generation.
//! - **Acquire** (every acquire script): refuses, touching nothing, when the hash has no `gen`;
//!   on a grant it increments `n` and answers the new value *with* `gen`, read in the same
//!   atomic run. The client counts the vote only if that is the generation it knows for the
//!   master (`round.rs`), so a vote always comes from a master sealed with a known generation.
//!   (The check is at the client because the reply carries `gen`; a script-less pipeline
//!   `SET NX PX`, `HINCRBY n`, `HGET gen` gives the same guarantee: a hash created by the
//!   `HINCRBY` alone has no `gen`, and a flush followed by someone's re-seal between the
//!   commands gives another `gen`.)
//! - **Write-back** (`fence_raise.lua`): raises `n` only if `gen` is the generation the client
//!   sent; an acknowledgement counts only then. A raise that lands after a flush creates
//!   nothing, and after a re-seal changes nothing.
//! - **Seal**, three steps: (1) *claim* (`fence_claim.lua`): unless the master is sealed for
//!   its process already, remove `gen` and set `claim` to a fresh random id (or adopt a claim
//!   already pending for this process); from this moment the master does not vote. (2) Read
//!   `n` from a quorum of sealed masters, sent only after the claim's reply. (3) *Seal*
//!   (`fence_seal.lua`): `n = max(n, seed)` and a new `gen`, **only if the claim is still the
//!   pending one**. A flush, an eviction or a restart removes the claim; another client's seal
//!   replaces it; a claim id is random and written once, so once gone it never comes back.
//!   A seal that arrives late is therefore refused whatever happened meanwhile: the master
//!   stayed claimed, out of the vote, from before the reads until the seal.
//!
//! # Why a token exceeds every token handed out before its round started
//! Let `S` be the sealed masters and `K` the sealed masters whose counter is at least the last
//! token handed out. The invariant is `|K| > |S| - Q`: any `Q` sealed masters include one of
//! `K`. Within one generation a counter only grows (`HINCRBY`, max), so a master leaves `K`
//! only by leaving `S`.
//! - A grant counts votes of sealed masters only, with their known generation; its token is the
//!   largest counter among `Q` of them, so it exceeds the last token, and it is written back to
//!   `Q` sealed masters (same generation, checked on the master) before the lock is handed out:
//!   then `|K| >= Q`.
//! - A master that loses its hash or is replaced (restart without data, an old snapshot, a
//!   promoted replica, another process on its address: a new `run_id`; `FLUSHALL`, `DEL`, an
//!   eviction of the hash: no `gen`) or is claimed leaves `S`: `S` and `K` lose at most one
//!   member each, the invariant holds. Nothing makes it sealed again but a seal (a hash
//!   re-created by a bare `HINCRBY` has no `gen`; a raise creates nothing).
//! - A seal raises the master to the largest counter read from `Q` sealed masters, one of which
//!   was in `K` when read, so it joins `K`. Reads taken before a later grant may be stale, but
//!   the claim keeps the master out of `S` from before the reads until the seal lands, so it was
//!   outside `S` at that grant, which left one spare member in `K` for it: after a grant with
//!   `u` masters outside `S`, `|K| - |S| + Q >= 2Q - N + u >= 1 + u`, and each of those `u` can
//!   spend one unit at most (its next seal needs a new claim, made after the grant, whose reads
//!   see the grant's write-back). This step used to assume the seal lands before its master is
//!   flushed again; the claim now enforces it, which closes `tests/fencing_gaps.rs` (a seal
//!   delayed past a second `FLUSHALL` of the same running master re-sealed it with an old seed).
//! - When fewer than `Q` sealed masters answer, a seal needs *every* master to answer: with
//!   all counters read, the largest is the last token unless every master that knew it lost
//!   it. That bootstraps a new namespace (no counters anywhere) and recovers after most
//!   masters lost their data; then tokens are only as safe as the surviving counters (logged).
//!
//! So `FLUSHALL` and eviction of a running master are covered like a restart without data.
//! What remains: more than `N - Q` masters losing their counters between two grants (the bullet
//! above), and data put back into a *running* master under its own `run_id` (a `RESTORE` of the
//! hash from an older dump of the same process): it looks sealed with an old counter.
//!
//! # What is ordered, exactly
//! The argument orders a grant against every grant **completed** (write-back acknowledged)
//! before its round **started**: then it gets a larger token, whatever the resources. Nothing
//! else is ordered. Concurrent grants of different resources can share a token (each takes the
//! largest counter of its own quorum). Rounds of one resource that overlap in time are not
//! ordered by the proof either: a waiter's acquire that was already in flight when the previous
//! holder's grant completed can get a token not above the previous holder's (a fenced store
//! then refuses its writes: safe, not live). Its votes on masters the waiter reached first
//! carry old counters, and the quorum the two share gives no larger one when the holder's
//! write-back to that master did not land before the waiter's vote: lost with a broken
//! connection, or slower than the rest of the holder's lease there. (On one connection the
//! write-back is sent before the release, so it lands first in the common case.) With each round starting after the previous holder's grant, as for a waiter woken by
//! the release or retrying after it, tokens of one resource strictly increase.
//! `tests/fencing.rs` (`a_grant_started_after_another_completed_gets_a_larger_token`) checks the
//! ordering claim and counts the rest.

use std::sync::Arc;

use futures::future::join_all;
use redis::Value;
use tokio::time::Instant;

use crate::error::MasterReply;
use crate::lock::Redlock;
use crate::master::{FenceState, fence_read};
use crate::quorum::{Ballot, Decision};
use crate::scripts::{FENCE_CLAIM, FENCE_RAISE, FENCE_SEAL, ScriptCall};

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
        self.master_set()
            .iter()
            .any(|m| m.is_connected() && !m.is_sealed())
    }

    /// Seals every connected master that is not sealed, if a quorum of sealed masters (or every
    /// master) answers before `deadline`; otherwise their votes keep waiting. Three steps:
    /// claim each unsealed master (`fence_claim.lua`), then read the counters, then seal each
    /// claimed master from them (`fence_seal.lua`, refused unless the claim is still pending).
    /// See the module docs for why this keeps tokens increasing.
    pub(crate) async fn seal_masters(&self, deadline: Instant) {
        let Some(keys) = self.config().fence_keys() else {
            return;
        };
        let unsealed: Vec<(usize, u64)> = self
            .master_set()
            .iter()
            .enumerate()
            .filter(|(_, m)| m.is_connected() && !m.is_sealed())
            .map(|(i, m)| (i, m.seal_epoch()))
            .collect();
        if unsealed.is_empty() {
            return;
        }
        // 1. Claim, before any counter is read: from here on these masters do not vote until
        //    sealed, and a seal computed from reads older than its claim cannot exist.
        let claims = unsealed.iter().map(|&(i, epoch)| {
            let master = self.master_set().get(i).clone();
            let key = keys.counter.clone();
            async move {
                let run_id = master.identity()?.run_id;
                let call = ScriptCall::new(
                    &FENCE_CLAIM,
                    vec![key],
                    vec![run_id.clone(), crate::random::token()],
                );
                let claim = parse_claim(master.run(&call).await.ok()?)?;
                Some((i, epoch, run_id, claim))
            }
        });
        let Ok(claims) = tokio::time::timeout_at(deadline, join_all(claims)).await else {
            tracing::debug!("fencing seal postponed: the acquire wait ran out");
            return;
        };
        let mut pending = Vec::new();
        for (i, epoch, run_id, claim) in claims.into_iter().flatten() {
            match claim {
                // Sealed by another client: its generation is all there is to learn.
                Claim::Sealed(generation) => {
                    tracing::debug!(master = i, "fencing counter found sealed");
                    self.master_set().get(i).mark_sealed(epoch, generation);
                }
                Claim::Pending(claim) => pending.push((i, epoch, run_id, claim)),
            }
        }
        if pending.is_empty() {
            return;
        }
        // 2. Read every master's counter, done at a quorum of sealed ones (or all answers).
        let read = Arc::new(fence_read(&keys));
        let tally = SealTally {
            n: self.master_set().len(),
            quorum: self.master_set().quorum(),
            sealed: 0,
            answered: 0,
        };
        let round = self.master_set().ask(
            |master| {
                let master = master.clone();
                let read = read.clone();
                async move {
                    let state = FenceState::parse(Ok(master.query(&read).await?))
                        .map_err(|e| server_error(&e))?;
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
        if round.decision != Decision::Won && answers.len() < self.master_set().len() {
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
        // 3. Seal: accepted only while this very claim is pending there.
        let seals = pending.into_iter().map(|(i, epoch, run_id, claim)| {
            let master = self.master_set().get(i).clone();
            let key = keys.counter.clone();
            async move {
                let generation = format!("{run_id}:{}", crate::random::token());
                let call = ScriptCall::new(
                    &FENCE_SEAL,
                    vec![key],
                    vec![seed.to_string(), claim, generation.clone()],
                );
                match master.run(&call).await {
                    Ok(Value::Int(v)) if v >= 0 && v as u64 >= seed => {
                        tracing::info!(master = i, seed, "fencing counter sealed");
                        master.mark_sealed(epoch, generation);
                    }
                    // The claim is gone (flushed, or another client sealed first: the next
                    // round's claim reads its generation).
                    Ok(_) => tracing::debug!(master = i, "fencing seal refused: claim gone"),
                    Err(why) => tracing::debug!(master = i, %why, "fencing seal failed"),
                }
            }
        });
        // Bounded by the deadline like the claims and the reads: a seal still in flight then
        // may land or not; this client learns which from its next claim (`Claim::Sealed`).
        if tokio::time::timeout_at(deadline, join_all(seals))
            .await
            .is_err()
        {
            tracing::debug!("fencing seal unconfirmed: the acquire wait ran out");
        }
    }

    /// Fencing write-back: makes sure a quorum of sealed masters has a counter at least as large
    /// as the token before the lock is handed out. Returns the token, or `None` when no quorum
    /// acknowledged.
    ///
    /// Masters whose grant already returned the maximum hold it; only the others are written,
    /// so when the counters are in step (the usual case) this costs no round trip at all.
    pub(crate) async fn fence_write_back(&self, grants: &[(usize, u64)]) -> Option<u64> {
        let token = grants.iter().map(|(_, v)| *v).max()?;
        let at_max = grants.iter().filter(|(_, v)| *v == token).count();
        let quorum = self.master_set().quorum();
        if at_max >= quorum {
            return Some(token);
        }
        // Only sealed masters count, each raised for the generation this client knows: a
        // raise that lands after the master lost that generation is refused there.
        let others: Vec<usize> = (0..self.master_set().len())
            .filter(|i| !grants.iter().any(|(g, v)| g == i && *v == token))
            .collect();
        let (key, value) = (self.config().fence_key(), token.to_string());
        let round = self
            .master_set()
            .vote_among(
                &others,
                quorum - at_max,
                |master| {
                    let master = master.clone();
                    let (key, value) = (key.clone(), value.clone());
                    async move {
                        let Some(generation) = master.generation() else {
                            return Err(MasterReply::Unsealed);
                        };
                        let call = ScriptCall::new(
                            &FENCE_RAISE,
                            vec![key],
                            vec![value, generation.as_str().to_owned()],
                        );
                        let answer = master.run(&call).await;
                        if answer == Ok(Value::Int(-1)) && master.generation() == Some(generation) {
                            // Flushed or sealed again since: learn its state before it votes.
                            master.unseal();
                        }
                        answer
                    }
                },
                |answer| matches!(answer, Ok(Value::Int(v)) if *v >= 0 && *v as u64 >= token),
            )
            .await;
        (round.decision == Decision::Won).then_some(token)
    }
}

/// What a claim found (`fence_claim.lua`).
enum Claim {
    /// The master is already sealed for its process, with this generation.
    Sealed(String),
    /// The master waits for a seal presenting this claim.
    Pending(String),
}

fn parse_claim(value: Value) -> Option<Claim> {
    let (_counter, generation, claim): (Option<u64>, Option<String>, Option<String>) =
        redis::from_redis_value(value).ok()?;
    match (generation, claim) {
        (Some(generation), _) => Some(Claim::Sealed(generation)),
        (None, Some(claim)) => Some(Claim::Pending(claim)),
        (None, None) => None,
    }
}

fn server_error(e: &redis::RedisError) -> MasterReply {
    MasterReply::ServerError(e.to_string())
}
