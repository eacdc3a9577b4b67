//! The sealed topology: a master votes in sharded acquires, extends and topology writes only
//! while its topology state was stored (sealed) for the server process that answers, from what
//! a quorum reports.
//!
//! # Stored on each master
//! The topology hash (`store.rs`) holds, besides the spec, the epoch and the pinned digest, the
//! field `gen`: the *generation* of the last seal, `<run_id>:<random>`, new at every seal, and
//! while a seal is under way the field `claim`. A master is *sealed* when its hash has a `gen`
//! of the server process that answers now.
//! - Every sharded acquire (`multi_acquire.lua`), extend (`multi_extend.lua`) and topology write
//!   (`topology_write.lua`) refuses with `TOPOLOGYUNSEALED`, touching nothing, when the hash has
//!   no `gen`; otherwise its yes carries `gen`, read in the same atomic run, and the client
//!   counts it only if `gen` names the process it knows behind that master (`round.rs`,
//!   `master::topology_checked`). A restart without data, a `FLUSHALL` or a `DEL` leaves no
//!   `gen`; a restart from an old snapshot, a promoted replica or another process on the
//!   address leaves one for another `run_id`.
//! - **Seal**, three steps, as the fencing counter's (`fencing.rs`): (1) *claim*
//!   (`topology_claim.lua`) every master not sealed for its process: remove `gen`, set `claim`
//!   (or adopt a pending claim of the same process); from then on it does not vote. (2) Read
//!   every master's state, sent only after the claims' replies; go on only if a quorum of
//!   sealed masters answered, or every master did. (3) *Seal* (`topology_seal.lua`), only if
//!   the claim is still the pending one: merge what was read into the master's own state, and
//!   a new `gen`. A flush or another seal removes or replaces the claim, and a claim id is
//!   random and written once, so a late seal is refused whatever happened meanwhile.
//! - The merge only restricts: the highest epoch read (or the master's own, if higher); at
//!   that epoch, the one digest pinned to it by the masters read, or `conflict` (matching no
//!   acquire or write) when they pin different ones; the newest spec.
//!
//! # Why a quorum's restrictions survive restarts
//! What the proofs of `mod.rs` use from the masters is a *restriction* `R` established on a
//! quorum of a group: "the stored epoch is at least `E`" (a write or an acquire of epoch `E`
//! reached `Q` masters: older views are refused), and "epoch `e` pins digest `d`" (a write or
//! an acquire routed with `(e, d)` reached `Q` masters: another spec of epoch `e` is refused).
//! A master *keeps* `R` while its state refuses what `R` refuses. Let `S` be the sealed
//! masters and `K` those of `S` that keep `R`. The invariant is `|K| > |S| - Q`: any `Q` sealed
//! masters, which is what any grant, extension or write needs, include one that refuses what
//! `R` refuses. Within one generation a master's state only gets more restrictive (epochs only
//! rise, a pin is replaced only by a higher epoch), so a master leaves `K` only by leaving `S`.
//! - `R` is established by `Q` sealed masters, each counted only with a generation of its
//!   current process: then `|K| >= Q`.
//! - A master that loses its state or is replaced (restart without data, an old snapshot, a
//!   takeover: a new `run_id`; `FLUSHALL`, `DEL`: no `gen`) or is claimed leaves `S`: `S` and
//!   `K` lose at most one member each, the invariant holds. Nothing but a seal makes it sealed
//!   again (a write or an acquire on a hash without `gen` creates nothing: they refuse).
//! - A seal merges the states of `Q` sealed masters read after its claim, one of which was in
//!   `K` when read: its epoch is above `E`, or it pins `d` to `e` (or a higher epoch). The
//!   merge keeps that: the master joins `K`. Reads older than a later establishment of a
//!   restriction may miss it, but the claim kept the master out of `S` from before the reads
//!   until the seal landed, so it was outside `S` when that restriction was established,
//!   which left a spare member in `K` for it, exactly as in `fencing.rs`'s proof.
//! - When fewer than `Q` sealed masters answer, a seal needs *every* master to answer: the
//!   merge then includes every state left anywhere, and loses `R` only if every master that
//!   kept it lost its state before any of them was sealed again. That bootstraps a new
//!   namespace (no state anywhere: sealed at epoch 0) and recovers after most masters of a
//!   group lost their state one after another without a seal in between (issue 18's second
//!   example: the third master still knows the epoch).
//!
//! So restarts without data, one after another or of a minority at once, with or without the
//! restart quarantine, cannot make an old view win: the restarted masters do not vote until
//! sealed, and a seal gives them the quorum's epoch. What remains: every master that kept a
//! restriction losing its state before one of them is sealed again (a majority of a group at
//! once, say), and state put back into a running master under its own `run_id` (a `RESTORE`
//! of the hash from an older dump of the same process).

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::join_all;
use redis::Value;
use tokio::time::Instant;

use crate::lock::Redlock;
use crate::master::Master;
use crate::scripts::{ScriptCall, TOPOLOGY_CLAIM, TOPOLOGY_READ, TOPOLOGY_SEAL};

use crate::error::{Error, Replies, Result};
use crate::quorum::Decision;
use crate::scripts::TOPOLOGY_WRITE;

use super::store::{Stored, change_key, parse, stale_reason, topology_key};
use super::topology::Topology;

/// The digest a seal pins when the masters read pin different ones to the highest epoch: no
/// acquire or write carries it, so that epoch is refused on the master from then on.
const CONFLICT: &str = "conflict";

/// Seals the topology of every master of `group` that is not sealed for its server process,
/// if a quorum of sealed masters (or every master) answers before `deadline`; otherwise
/// those masters keep not voting. Returns whether every master that answered the claim is
/// sealed now. See the module docs for why this keeps a quorum's restrictions.
pub(crate) async fn seal_group(group: &Redlock, deadline: Instant) -> bool {
    match tokio::time::timeout_at(deadline, seal(group)).await {
        Ok(done) => done,
        Err(_) => {
            tracing::debug!("topology seal postponed: the wait ran out");
            false
        }
    }
}

async fn seal(group: &Redlock) -> bool {
    let masters = group.master_set();
    let key = topology_key(group);
    // 1. Claim, before any state is read: from here on these masters do not vote until
    //    sealed, and a seal merged from reads older than its claim cannot exist.
    let claims = masters.ask_each(|master| claim(master, &key)).await;
    let pending: Vec<(usize, String, String)> = claims
        .into_iter()
        .enumerate()
        .filter_map(|(i, c)| c.flatten().map(|(run_id, claim)| (i, run_id, claim)))
        .collect();
    if pending.is_empty() {
        return true;
    }
    // 2. Read every master's state.
    let read = ScriptCall::new(&TOPOLOGY_READ, vec![key.clone()], Vec::new());
    let read = &read;
    let states: Vec<Option<(Stored, bool)>> = masters
        .ask_each(|master| async move {
            let state = parse(master.run(read).await.ok()?)?;
            // Judged after the read: a reconnect records the new process first.
            let sealed = state
                .generation
                .as_deref()
                .is_some_and(|g| master.is_process_generation(g.as_bytes()));
            Some((state, sealed))
        })
        .await;
    let answered: Vec<&(Stored, bool)> = states.iter().flatten().collect();
    let sealed = answered.iter().filter(|(_, s)| *s).count();
    if sealed < masters.quorum() && answered.len() < masters.len() {
        tracing::debug!(
            sealed,
            answered = answered.len(),
            "topology seal postponed: neither a quorum of sealed masters nor all answered"
        );
        return false;
    }
    if sealed < masters.quorum() {
        tracing::warn!(
            "fewer than a quorum of a group's masters kept their topology state: sealing from \
             every master's; if every master that knew the last epoch lost it, an old view may \
             be accepted again"
        );
    }
    let merged = merge(answered.iter().map(|(s, _)| s));
    // 3. Seal: accepted only while this very claim is pending there.
    let seals = pending.into_iter().map(|(i, run_id, claim)| {
        let master = masters.get(i).clone();
        let generation = format!("{run_id}:{}", crate::random::token());
        let (spec_epoch, spec) = merged.spec.clone().unwrap_or_default();
        let call = ScriptCall::new(
            &TOPOLOGY_SEAL,
            vec![key.clone()],
            vec![
                claim,
                generation,
                merged.epoch.to_string(),
                merged.digest.clone().unwrap_or_default(),
                spec_epoch.to_string(),
                spec,
            ],
        );
        async move {
            match master.run(&call).await {
                Ok(Value::Int(1)) => {
                    tracing::info!(master = i, epoch = merged.epoch, "topology sealed");
                    true
                }
                Ok(_) => {
                    tracing::debug!(master = i, "topology seal refused: claim gone");
                    false
                }
                Err(why) => {
                    tracing::debug!(master = i, %why, "topology seal failed");
                    false
                }
            }
        }
    });
    join_all(seals).await.into_iter().all(|sealed| sealed)
}

/// Claims `master`'s topology hash unless it is sealed for its process: `Some(None)` when it
/// is, `Some(Some((run_id, claim)))` when a claim is pending, `None` when it did not answer.
async fn claim(master: &Arc<Master>, key: &str) -> Option<Option<(String, String)>> {
    let run_id = master.identity()?.run_id;
    let call = ScriptCall::new(
        &TOPOLOGY_CLAIM,
        vec![key.to_owned()],
        vec![run_id.clone(), crate::random::token()],
    );
    let (generation, claim): (Option<String>, Option<String>) =
        redis::from_redis_value(master.run(&call).await.ok()?).ok()?;
    match (generation, claim) {
        (Some(_), _) => Some(None),
        (None, Some(claim)) => Some(Some((run_id, claim))),
        (None, None) => None,
    }
}

/// The merge of what was read: the highest epoch, the one digest pinned to it (or
/// [`CONFLICT`]), the newest spec (of two under one epoch, the one more masters store).
fn merge<'a>(states: impl Iterator<Item = &'a Stored>) -> Stored {
    let states: Vec<&Stored> = states.collect();
    let epoch = states
        .iter()
        .map(|s| s.epoch.max(s.spec.as_ref().map_or(0, |(e, _)| *e)))
        .max()
        .unwrap_or(0);
    let mut digests: Vec<&str> = states
        .iter()
        .filter(|s| s.epoch == epoch)
        .filter_map(|s| s.digest.as_deref())
        .collect();
    digests.sort_unstable();
    digests.dedup();
    let digest = match digests.as_slice() {
        [] => None,
        [one] => Some((*one).to_owned()),
        _ => Some(CONFLICT.to_owned()),
    };
    let mut specs: BTreeMap<&(u64, String), usize> = BTreeMap::new();
    for spec in states.iter().filter_map(|s| s.spec.as_ref()) {
        *specs.entry(spec).or_default() += 1;
    }
    let spec = specs
        .into_iter()
        .max_by_key(|((e, _), count)| (*e, *count))
        .map(|(spec, _)| spec.clone());
    Stored {
        spec,
        epoch,
        digest,
        generation: None,
    }
}

/// Stores `topology` on a quorum of every group of `groups`, concurrently. Masters that did
/// not answer in time may get it later or never; a quorum is what the proofs need.
///
/// # Errors
/// [`Error::StaleTopology`] when a master stores a newer or a conflicting spec (another
/// change); [`Error::Unavailable`] when a group has no quorum of answering masters.
pub(crate) async fn write_quorums(
    groups: &[&Redlock],
    topology: &Topology,
    change: Option<&str>,
) -> Result<()> {
    let (spec, digest) = (topology.encode(), topology.digest());
    let writes = groups
        .iter()
        .map(|group| write_quorum(group, topology.epoch, &spec, &digest, change));
    for result in futures::future::join_all(writes).await {
        result?;
    }
    Ok(())
}

async fn write_quorum(
    group: &Redlock,
    epoch: u64,
    spec: &str,
    digest: &str,
    change: Option<&str>,
) -> Result<()> {
    // Only masters sealed for their process count (module docs): seal those that are not
    // first.
    let deadline = Instant::now() + group.config().acquire_wait;
    seal_group(group, deadline).await;
    let mut keys = vec![topology_key(group)];
    let mut args = vec![epoch.to_string(), spec.to_owned(), digest.to_owned()];
    // A change writes only where its change lock is held (change.rs).
    if let Some(token) = change {
        keys.push(change_key(group));
        args.push(token.to_owned());
    }
    let call = Arc::new(ScriptCall::new(&TOPOLOGY_WRITE, keys, args));
    let masters = group.master_set();
    let round = masters
        .vote(
            masters.quorum(),
            |master| {
                let (master, call) = (master.clone(), call.clone());
                async move { crate::master::topology_checked(&master, master.run(&call).await) }
            },
            |answer| matches!(answer, Ok(Value::Int(1))),
        )
        .await;
    if round.decision == Decision::Won {
        return Ok(());
    }
    let replies = Replies::from_answers(&round.answers, |v| matches!(v, Value::Int(1)));
    match stale_reason(&replies) {
        Some(reason) => Err(Error::StaleTopology { epoch, reason }),
        None => Err(masters.unavailable(replies)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(epoch: u64, digest: Option<&str>, spec: Option<(u64, &str)>) -> Stored {
        Stored {
            spec: spec.map(|(e, s)| (e, s.to_owned())),
            epoch,
            digest: digest.map(str::to_owned),
            generation: None,
        }
    }

    #[test]
    fn the_merge_keeps_the_highest_epoch_and_marks_two_pins_a_conflict() {
        let one = [
            state(3, Some("d3"), Some((3, "f"))),
            state(2, Some("d2"), Some((2, "j"))),
            Stored::default(),
        ];
        let m = merge(one.iter());
        assert_eq!(
            (m.epoch, m.digest.as_deref(), m.spec),
            (3, Some("d3"), Some((3, "f".to_owned())))
        );
        let two = [state(2, Some("a"), None), state(2, Some("b"), None)];
        assert_eq!(merge(two.iter()).digest.as_deref(), Some(CONFLICT));
        let none: [Stored; 0] = [];
        let m = merge(none.iter());
        assert_eq!((m.epoch, m.digest, m.spec), (0, None, None));
    }
}
