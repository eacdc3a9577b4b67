//! Leaving a wait queue: a fair-lock waiter or a waiting writer that gives up removes itself
//! from the queue on every master, now or, when its acquire future is dropped part-way, in the
//! background.

use std::sync::Arc;

use redis::Value;

use crate::drop_guard::SpawnOnDrop;
use crate::lock::Redlock;
use crate::scripts::{DEQUEUE, ScriptCall};

/// Removes `member` from the sorted sets `keys` on every master: a fair-lock waiter or a
/// waiting writer that gives up. Returns once a quorum answered (or failed); the other calls
/// finish in the background. Best effort: what is missed expires with the waiter timeout.
pub(crate) async fn leave(redlock: &Redlock, keys: Vec<String>, member: String) {
    let masters = redlock.master_set();
    let call = Arc::new(ScriptCall::new(&DEQUEUE, keys, vec![member]));
    masters
        .vote(
            masters.quorum(),
            |master| master.run_owned(&call),
            |answer| matches!(answer, Ok(Value::Int(1))),
        )
        .await;
}

/// A wait to leave if it ends without the lock (see [`leave_on_drop`]).
pub(crate) type LeaveOnDrop = SpawnOnDrop<
    Box<dyn FnOnce() -> futures::future::BoxFuture<'static, ()> + Send>,
    futures::future::BoxFuture<'static, ()>,
>;

/// Leaves now: the wait ended without the lock.
pub(crate) async fn leave_now(guard: LeaveOnDrop) {
    if let Some(leave) = guard.take() {
        leave().await;
    }
}

/// Leaves a wait in the background when dropped armed: an acquire future dropped part-way must
/// not leave its waiter queued (it would hold up the queue for a waiter timeout). Disarm it
/// when the wait ended with the lock (its release leaves); [`leave_now`] when it did not.
pub(crate) fn leave_on_drop(redlock: Redlock, keys: Vec<String>, member: String) -> LeaveOnDrop {
    SpawnOnDrop::armed(Box::new(move || {
        Box::pin(async move { leave(&redlock, keys, member).await })
            as futures::future::BoxFuture<'static, ()>
    }))
}
