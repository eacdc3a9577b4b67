//! The topology on the masters themselves: a hash `<prefix>topology:state` on every master of
//! every group, with `spec_epoch` and `spec` (the encoded [`Topology`]) and `epoch` (the
//! newest epoch this master has seen, checked by every sharded acquire and extend script).
//!
//! A change is stored on a quorum of every group, old and new, before anyone routes by it
//! (`change.rs`); a client reloads by reading every master it knows and taking the newest spec.

use redis::Value;

use crate::error::{Error, MasterReply, Replies, Result};
use crate::lock::Redlock;
use crate::scripts::{ScriptCall, TOPOLOGY_READ};

/// Where a group's masters keep the topology.
pub(crate) fn topology_key(group: &Redlock) -> String {
    group.config().key("topology", "state")
}

/// Where a group's masters keep the change lock (change.rs).
pub(crate) fn change_key(group: &Redlock) -> String {
    group.config().key("topology", "change")
}

/// How many answers a read of the topology needs before it counts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    /// Whatever answers (routing: the masters' epoch checks keep a stale view safe).
    Any,
    /// A quorum of at least one group: every change is stored on a quorum of every group of
    /// the topology it replaces, so one group's quorum is enough to see the change that
    /// follows the view's topology (and a group removed and shut down since does not block
    /// the read).
    OneQuorum,
    /// A quorum of every group: for a change, which must see every epoch and pin any quorum
    /// of any group it involves holds.
    EachQuorum,
}

/// What each answering master of each group of `groups` stores, per group in the order
/// given (every master asked once, each call bounded by the per-master timeout), or
/// [`Error::Unavailable`] when fewer groups than `need` asks for had a quorum answer.
async fn read_groups(groups: &[&Redlock], need: Need) -> Result<Vec<Vec<Stored>>> {
    // A script rather than HMGET: one code path for real masters and the simulator's.
    let reads = groups.iter().map(|group| async move {
        let call = ScriptCall::new(&TOPOLOGY_READ, vec![topology_key(group)], Vec::new());
        let call = &call;
        group
            .master_set()
            .ask_each(|master| async move { master.run(call).await })
            .await
    });
    let answers = futures::future::join_all(reads).await;
    let mut all = Vec::new();
    let mut silent = None;
    let mut heard_a_quorum = groups.is_empty();
    for (group, answers) in groups.iter().zip(answers) {
        let masters = group.master_set();
        if answers.iter().filter(|a| a.is_ok()).count() >= masters.quorum() {
            heard_a_quorum = true;
        } else if silent.is_none() {
            silent = Some(masters.unavailable(Replies::from_results(&answers)));
        }
        all.push(answers.into_iter().filter_map(|a| parse(a.ok()?)).collect());
    }
    match (silent, need) {
        (Some(unavailable), Need::EachQuorum) => Err(unavailable),
        (Some(unavailable), Need::OneQuorum) if !heard_a_quorum => Err(unavailable),
        _ => Ok(all),
    }
}

async fn read_all(groups: &[&Redlock], need: Need) -> Result<Vec<Stored>> {
    Ok(read_groups(groups, need)
        .await?
        .into_iter()
        .flatten()
        .collect())
}

/// What the masters of each group of `groups` store, per group in the order given, read
/// from a quorum of every group ([`Error::Unavailable`] otherwise): what a change decides by.
pub(crate) async fn read_each_quorum(groups: &[&Redlock]) -> Result<Vec<Vec<Stored>>> {
    read_groups(groups, Need::EachQuorum).await
}

/// The newest spec any master of `groups` stores, as `(spec_epoch, spec)`; `None` when none
/// stores one. Of two specs under one epoch (an interrupted change's, and one that replaced
/// it elsewhere: at most one of them is on a quorum anywhere), the one more masters store.
/// Reads what answers (for routing, where the masters' epoch checks keep a stale view safe).
pub(crate) async fn read_newest(groups: &[&Redlock]) -> Option<(u64, String)> {
    newest(&read_all(groups, Need::Any).await.unwrap_or_default())
}

/// [`read_newest`], from a quorum of at least one group or [`Error::Unavailable`]: for a
/// reload, which must not miss the change that follows the view's topology.
pub(crate) async fn read_newest_checked(groups: &[&Redlock]) -> Result<Option<(u64, String)>> {
    Ok(newest(&read_all(groups, Need::OneQuorum).await?))
}

/// The newest spec of `all`, as `(spec_epoch, spec)`: of two under one epoch, the one more
/// masters store.
pub(crate) fn newest<'a>(all: impl IntoIterator<Item = &'a Stored>) -> Option<(u64, String)> {
    let mut counts: std::collections::BTreeMap<&(u64, String), usize> = Default::default();
    for stored in all {
        if let Some(spec) = &stored.spec {
            *counts.entry(spec).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .max_by_key(|((epoch, _), count)| (*epoch, *count))
        .map(|(spec, _)| spec.clone())
}

/// The highest epoch any answering master of `groups` has seen (stored by a write, or raised
/// by an acquire routed with a spec that may be stored nowhere else), read from a quorum of
/// every group ([`Error::Unavailable`] otherwise): above every epoch established on a quorum
/// of any of them.
pub(crate) async fn highest_epoch(groups: &[&Redlock]) -> Result<u64> {
    let all = read_all(groups, Need::EachQuorum).await?;
    Ok(highest_of(&all))
}

/// The highest epoch `states` report (seen or stored).
pub(crate) fn highest_of<'a>(states: impl IntoIterator<Item = &'a Stored>) -> u64 {
    states
        .into_iter()
        .map(|s| s.epoch.max(s.spec.as_ref().map_or(0, |(e, _)| *e)))
        .max()
        .unwrap_or(0)
}

/// One master's topology state, as `topology_read.lua` answers it.
#[derive(Debug, Default)]
pub(crate) struct Stored {
    /// The newest spec stored, with its epoch.
    pub(crate) spec: Option<(u64, String)>,
    /// The highest epoch seen (stored, or raised by an acquire).
    pub(crate) epoch: u64,
    /// The digest pinned to `epoch` (or `conflict`).
    pub(crate) digest: Option<String>,
    /// The seal generation (`<run_id>:<random>`), if sealed.
    pub(crate) generation: Option<String>,
}

/// `topology_read.lua`'s reply.
pub(crate) fn parse(value: Value) -> Option<Stored> {
    let Value::Array(fields) = value else {
        return None;
    };
    let text = |i: usize| match fields.get(i) {
        Some(Value::BulkString(b)) => String::from_utf8(b.clone()).ok(),
        _ => None,
    };
    let spec = match (text(0).and_then(|e| e.parse().ok()), text(1)) {
        (Some(epoch), Some(spec)) => Some((epoch, spec)),
        _ => None,
    };
    Some(Stored {
        spec,
        epoch: text(2).and_then(|e| e.parse().ok()).unwrap_or(0),
        digest: text(3),
        generation: text(4),
    })
}

/// Whether a master refused because its topology state is not sealed for its process
/// (seal.rs): seal the group, then try again.
pub(crate) fn is_unsealed(error: &Error) -> bool {
    error.replies().is_some_and(|r| {
        r.as_slice()
            .iter()
            .any(|r| matches!(r, MasterReply::ServerError(e) if e.contains("TOPOLOGYUNSEALED")))
    })
}

/// What a master said when it refused for a newer or conflicting topology, if one did.
pub(crate) fn stale_reason(replies: &Replies) -> Option<String> {
    replies.as_slice().iter().find_map(|r| match r {
        MasterReply::ServerError(e)
            if e.contains("STALETOPOLOGY")
                || e.contains("TOPOLOGYCONFLICT")
                || e.contains("TOPOLOGYBUSY") =>
        {
            Some(e.clone())
        }
        _ => None,
    })
}

/// Whether `error` came from a master refusing for a newer topology: reload and retry.
pub(crate) fn is_stale(error: &Error) -> bool {
    matches!(error, Error::StaleTopology { .. })
        || error.replies().is_some_and(|r| stale_reason(r).is_some())
}
