//! What every primitive shares: [`HeldBy`] (how a hold is extended, released and rolled back
//! on each master), [`Attempt`] (what one acquire round sends), and
//! [`LockGuard::with_watchdog`], the automatic extension for any guard.
//!
//! Every primitive is one acquire script per master (atomic there) plus a `HeldBy`; the round
//! (`Redlock::round`), the retry loop, the guard, its extend, release and
//! drop, and the watchdog are the basic lock's, so the quorum, validity, drift, rollback,
//! timeout and fencing rules are the same for all of them.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::Value;

use crate::drop_guard::SpawnOnDrop;
use crate::error::Result;
use crate::guard::LockGuard;
use crate::lease::LockContext;
use crate::lock::Redlock;
use crate::scripts::millis;
use crate::scripts::{DEQUEUE, EXTEND, LuaScript, RELEASE, ScriptCall};

/// How a hold is kept and given back on every master.
///
/// Script conventions (every primitive's scripts follow them, so the guard needs no more):
/// `extend` takes `ARGV = [token, ttl_ms, extra_args..]`, `release` and `rollback` take
/// `ARGV = [token, extra_args..]`, all on `KEYS = keys`, and return 1 on success.
#[derive(Clone)]
pub(crate) struct HeldBy {
    /// What kind of hold, for `Debug` and traces: "lock", "multi", "reentrant", "fair",
    /// "read", "write", "semaphore".
    pub(crate) kind: &'static str,
    pub(crate) keys: Vec<String>,
    pub(crate) extend: &'static LuaScript,
    pub(crate) release: &'static LuaScript,
    /// Undoes a failed acquire round where it may have landed. Usually `release`; differs
    /// where a release also ends a wait that a retry must keep (the fair lock's queue place).
    pub(crate) rollback: &'static LuaScript,
    pub(crate) extra_args: Vec<String>,
    /// The round's winning choice (a semaphore slot) is appended to `extra_args`.
    pub(crate) choice_arg: bool,
    /// The release script announces the release on a channel (`[.., channel, release id]`
    /// appended to its arguments), for wake-ups (notify.rs). Only the basic lock does.
    pub(crate) announce: bool,
}

impl HeldBy {
    /// The basic lock: one string key, compare-and-PEXPIRE, compare-and-delete. `marker` is
    /// the resource's waiter marker (notify.rs), carried as a second key: an extend refreshes
    /// it (extend.lua), an announced release deletes it, a rollback ignores it (release.lua).
    pub(crate) fn lock(key: String, marker: String) -> Self {
        Self::new("lock", vec![key, marker], &EXTEND, &RELEASE).announced()
    }

    /// A hold of `kind` on `keys`, kept by `extend` and given back by `release` (which also
    /// rolls back a failed round), with no extra arguments and no announcement.
    pub(crate) fn new(
        kind: &'static str,
        keys: Vec<String>,
        extend: &'static LuaScript,
        release: &'static LuaScript,
    ) -> Self {
        Self {
            kind,
            keys,
            extend,
            release,
            rollback: release,
            extra_args: Vec::new(),
            choice_arg: false,
            announce: false,
        }
    }

    /// A failed round is undone with `rollback` instead of the release.
    pub(crate) fn rollback(mut self, rollback: &'static LuaScript) -> Self {
        self.rollback = rollback;
        self
    }

    /// `args` follow the token (and the TTL) in every extend, release and rollback call.
    pub(crate) fn args(mut self, args: Vec<String>) -> Self {
        self.extra_args = args;
        self
    }

    /// The round's winning choice is appended to the extra arguments ([`Self::chosen`]).
    pub(crate) fn choice_arg(mut self) -> Self {
        self.choice_arg = true;
        self
    }

    /// The release announces itself for wake-ups (notify.rs).
    pub(crate) fn announced(mut self) -> Self {
        self.announce = true;
        self
    }

    /// This hold, once its round won `choice`.
    pub(crate) fn chosen(mut self, choice: u32) -> Self {
        if self.choice_arg {
            self.extra_args.push(choice.to_string());
            self.choice_arg = false;
        }
        self
    }

    pub(crate) fn extend_call(&self, token: &str, ttl: Duration) -> ScriptCall {
        let mut args = vec![token.to_owned(), millis(ttl)];
        args.extend(self.extra_args.iter().cloned());
        ScriptCall::new(self.extend, self.keys.clone(), args)
    }

    pub(crate) fn release_call(&self, token: &str) -> ScriptCall {
        self.call(self.release, token)
    }

    /// The release call, announcing the release on `channel` where this kind of hold does,
    /// if the waiter marker `marker` is set (someone waits; release.lua).
    pub(crate) fn release_call_announced(
        &self,
        token: &str,
        (channel, marker): (&str, &str),
        release_id: u64,
    ) -> ScriptCall {
        if !self.announce {
            return self.release_call(token);
        }
        let mut args = vec![token.to_owned()];
        args.extend(self.extra_args.iter().cloned());
        args.push(channel.to_owned());
        args.push(release_id.to_string());
        let mut keys = self.keys.clone();
        // The basic lock carries its marker already.
        if self.keys.last().map(String::as_str) != Some(marker) {
            keys.push(marker.to_owned());
        }
        ScriptCall::new(self.release, keys, args)
    }

    pub(crate) fn rollback_call(&self, token: &str) -> ScriptCall {
        self.call(self.rollback, token)
    }

    fn call(&self, script: &'static LuaScript, token: &str) -> ScriptCall {
        let mut args = vec![token.to_owned()];
        args.extend(self.extra_args.iter().cloned());
        ScriptCall::new(script, self.keys.clone(), args)
    }
}

/// One acquire round's request: the acquire script call (already carrying `token`), and how
/// the result is held. The acquire script returns -1 (refused), -2 (fencing on, the master is
/// not sealed), 0 (granted, fencing off) or `[counter, generation]` (granted, fencing on: the
/// new counter value and the master's seal generation), and scripts that choose (the
/// semaphore's slot) `[0, choice]` or `[counter, choice, generation]`: a round then needs a
/// quorum for one choice.
pub(crate) struct Attempt {
    pub(crate) token: String,
    pub(crate) ttl: Duration,
    pub(crate) call: Arc<ScriptCall>,
    pub(crate) held: HeldBy,
}

impl Attempt {
    /// An attempt with a fresh random owner token: `call(token)` builds the acquire call.
    pub(crate) fn new(ttl: Duration, held: HeldBy, call: impl FnOnce(&str) -> ScriptCall) -> Self {
        Self::with_token(new_token(), ttl, held, call)
    }

    /// An attempt whose owner token is `token` (the basic lock's carries its owner id).
    pub(crate) fn with_token(
        token: String,
        ttl: Duration,
        held: HeldBy,
        call: impl FnOnce(&str) -> ScriptCall,
    ) -> Self {
        let call = Arc::new(call(&token));
        Self {
            token,
            ttl,
            call,
            held,
        }
    }
}

/// A random 128-bit owner token, as hex (see `random.rs`).
pub(crate) fn new_token() -> String {
    crate::random::token()
}

/// Removes `member` from the sorted sets `keys` on every master: a fair-lock waiter or a
/// waiting writer that gives up. Returns once a quorum answered (or failed); the other calls
/// finish in the background. Best effort: what is missed expires with the waiter timeout.
pub(crate) async fn leave(redlock: &Redlock, keys: Vec<String>, member: String) {
    let inner = &redlock.inner;
    let call = Arc::new(ScriptCall::new(&DEQUEUE, keys, vec![member]));
    inner
        .masters
        .vote(
            inner.masters.quorum(),
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

impl LockGuard {
    /// Runs `work` while this lock is held, extending it to `ttl` in the background every third
    /// of `ttl` (the first time after a third of the validity the guard has left, if that is
    /// less), and releases it after: [`Redlock::with_lock`](crate::Redlock::with_lock) for
    /// any guard (multi-resource, reentrant, fair, read, write, semaphore permit).
    ///
    /// `work` gets a [`LockContext`] whose [`lost`](LockContext::lost) future completes if the
    /// lock could not be extended before its validity ran out (no later than the deadline, even
    /// while a renewal hangs), or when the extension cap the lock was asked with
    /// ([`LockOptions::max_lease`](crate::LockOptions::max_lease), counted from now) ended it; its
    /// [`state`](LockContext::state) and [`jeopardy`](LockContext::jeopardy) say earlier that a
    /// renewal failed. The closure is not cancelled on loss; select on `lost()` to stop early.
    ///
    /// # Errors
    /// [`Error::InvalidTtl`](crate::Error::InvalidTtl) for a `ttl` that [`extend`](Self::extend) would refuse: then
    /// `work` does not run and the lock is released before the error is returned.
    /// [`Error::LockLost`](crate::Error::LockLost) if the lock was lost while `work` ran (its output is then dropped,
    /// since it was produced without the lock).
    ///
    /// # Cancellation
    /// Dropping the returned future stops the extension and releases the lock in the
    /// background.
    pub async fn with_watchdog<T, F, Fut>(self, ttl: Duration, work: F) -> Result<T>
    where
        F: FnOnce(LockContext) -> Fut,
        Fut: Future<Output = T>,
    {
        crate::lease::run_leased(self, ttl, work).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_follow_the_argument_convention() {
        let mut held = HeldBy::lock("k".into(), "m".into());
        held.choice_arg = true;
        held.extra_args = vec!["x".into()];
        let held = held.chosen(3);
        let packed = |c: &ScriptCall| {
            String::from_utf8_lossy(&c.evalsha().get_packed_command()).into_owned()
        };
        let extend = packed(&held.extend_call("tok", Duration::from_millis(1500)));
        assert!(
            extend.ends_with("$3\r\ntok\r\n$4\r\n1500\r\n$1\r\nx\r\n$1\r\n3\r\n"),
            "{extend}"
        );
        let release = packed(&held.release_call("tok"));
        assert!(
            release.ends_with("$1\r\nk\r\n$1\r\nm\r\n$3\r\ntok\r\n$1\r\nx\r\n$1\r\n3\r\n"),
            "{release}"
        );
        // The basic lock's announced release names its marker once.
        let announced = packed(&held.release_call_announced("tok", ("chan", "m"), 7));
        assert!(
            announced.contains("$1\r\n2\r\n$1\r\nk\r\n$1\r\nm\r\n$3\r\ntok"),
            "{announced}"
        );
        // Choosing twice does not append twice.
        assert_eq!(
            held.chosen(4).extra_args,
            vec!["x".to_owned(), "3".to_owned()]
        );
    }
}
