//! Ownership hand-off: a held basic lock exported as a [`LockHandle`] (serialisable with the
//! `serde` feature) and resumed by [`Redlock::resume`] in another task or process.
//!
//! Across processes no `Instant` can be shared and wall clocks may disagree, so the handle does
//! not carry a deadline to trust. Resuming first reads the key on every master and requires a
//! quorum that still holds the handle's owner token (so a stale handle changes no key: a
//! minority that still holds it is not pushed out to the new TTL; only keys that expire in the
//! one round trip between the check and the extend can leave the extend with a minority), then
//! runs an extend round with the handle's owner token:
//! the new guard's validity is measured from that round's own start on the resumer's monotonic
//! clock, exactly as for any extend, and the round only succeeds while a quorum of masters still
//! holds the exporter's keys (it never re-creates an expired key). So exclusion holds across
//! the hand-off: until the keys expire nobody else can take the lock, and after they expired
//! the resume fails with [`Error::NotHeld`].

use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use tokio::time::Instant;

use crate::config::check_resource;
use crate::error::{Error, MasterReply, Replies, Result};
use crate::guard::LockGuard;
use crate::held::HeldBy;
use crate::invalid::ArgumentReason;
use crate::lock::Redlock;
use crate::options::LockOptions;
use crate::quorum::Decision;
use crate::scripts::{INSPECT, ScriptCall};

/// A held basic lock, detached from its guard so that another task or process can
/// [resume](Redlock::resume) it. Created by [`LockGuard::export`].
///
/// It carries the owner token: whoever has the handle can extend and release the lock. Keep it
/// as secret as the lock's masters' passwords (`Debug` leaves the token out).
#[derive(Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LockHandle {
    resource: String,
    owner_token: String,
    fencing_token: Option<u64>,
    /// Validity left when exported, for information only: the resumer cannot know how long
    /// the handle took to reach it.
    remaining_at_export_ms: u64,
    /// The extension cap the lock was asked with ([`LockOptions::max_lease`]), in ms: a
    /// hand-off does not lift it. Absent in handles from before it was carried.
    #[cfg_attr(feature = "serde", serde(default))]
    max_lease_ms: Option<u64>,
}

impl std::fmt::Debug for LockHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockHandle")
            .field("resource", &self.resource)
            .field("fencing_token", &self.fencing_token)
            .field("remaining_at_export_ms", &self.remaining_at_export_ms)
            .finish_non_exhaustive()
    }
}

impl LockHandle {
    /// The resource the lock is for.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The fencing token of the acquisition; a resumed guard keeps it.
    pub fn fencing_token(&self) -> Option<u64> {
        self.fencing_token
    }

    /// The validity the exporter had left when it exported (not a deadline for the resumer:
    /// the time in transit is unknown to both sides).
    pub fn remaining_at_export(&self) -> Duration {
        Duration::from_millis(self.remaining_at_export_ms)
    }
}

impl LockGuard {
    /// Detaches this hold from the guard without releasing it, for [`Redlock::resume`] in
    /// another task or process. Consumes the guard, so the hold has one owner at a time.
    ///
    /// Only basic locks ([`Redlock::acquire`], [`Redlock::try_acquire`]) can be exported;
    /// any other guard is given back unchanged as the error, still holding its lock.
    ///
    /// The keys keep their TTL on the masters: resume before it runs out (and before
    /// [`remaining`](Self::remaining) reaches zero, to stay within validity).
    ///
    /// ```compile_fail
    /// # async fn f(guard: redquorum::LockGuard) {
    /// let handle = guard.export().unwrap();
    /// guard.release().await; // the guard was consumed by `export`
    /// # }
    /// ```
    ///
    /// # Errors
    /// The guard itself, boxed, when it is not a basic lock (a lock taken with a lock-delay is
    /// not exported either: the handle does not carry the delay).
    pub fn export(mut self) -> std::result::Result<LockHandle, Box<LockGuard>> {
        let (kind, token) = self.kind_and_token();
        if kind != "lock" {
            return Err(Box::new(self));
        }
        let handle = LockHandle {
            resource: self.resource().to_owned(),
            owner_token: token.to_owned(),
            fencing_token: self.fencing_token(),
            remaining_at_export_ms: self.remaining().as_millis() as u64,
            max_lease_ms: self.lease_cap().map(|cap| cap.as_millis() as u64),
        };
        self.disarm();
        Ok(handle)
    }
}

impl Redlock {
    /// Takes over an exported lock: extends it to the options' TTL with the handle's owner
    /// token and returns a guard that extends and releases it like the original, with the same
    /// fencing token. The new guard keeps the extension cap the lock was asked with, or the
    /// options' if that is smaller (a hand-off never lifts a cap); a wait or a lock-delay is
    /// refused. The validity is measured from this call's round, on this process's clock.
    ///
    /// Use a client with the same key prefix as the exporter's.
    ///
    /// # Errors
    /// [`Error::EmptyResource`] / [`Error::InvalidArgument`] for a malformed handle or an
    /// option it cannot honour;
    /// [`Error::InvalidTtl`]; [`Error::NotHeld`] when the lock expired or was released (no
    /// quorum of masters holds the handle's keys any more): the hold is gone, and no key was
    /// changed (a check round runs before the extend);
    /// [`Error::Unavailable`] / [`Error::Timeout`] when the round failed for want of masters
    /// or time: the hold may still be there and resuming again may succeed.
    pub async fn resume(
        &self,
        handle: LockHandle,
        options: impl Into<LockOptions>,
    ) -> Result<LockGuard> {
        let options = options.into();
        check_resource(&handle.resource)?;
        self.config().check_lock_key(&handle.resource)?;
        if handle.owner_token.is_empty() {
            return Err(Error::InvalidArgument(ArgumentReason::HandleWithoutToken));
        }
        let ttl = options.ttl();
        self.config().check_ttl(ttl)?;
        options.check("resume", false, false)?;
        let key = self.config().lock_key(&handle.resource);
        self.held_by_quorum(&handle.resource, &key, &handle.owner_token)
            .await?;
        // Not valid until the extend round says so.
        let mut guard = LockGuard::new(
            self.clone(),
            &handle.resource,
            HeldBy::lock(
                key,
                crate::notify::waiter_marker(&self.config().key_prefix, &handle.resource),
            ),
            handle.owner_token,
            Instant::now(),
            handle.fencing_token,
        )
        .capped(smaller_cap(
            handle.max_lease_ms.map(Duration::from_millis),
            options.cap(),
        ));
        match guard.extend(ttl).await {
            Ok(()) => Ok(guard),
            Err(e) => {
                // Dropping must not release: another resume of the same handle may still
                // succeed (Unavailable), and a hold that is gone has nothing to release.
                guard.disarm();
                Err(e)
            }
        }
    }

    /// The check before a resume: `Ok` when a quorum of masters holds `key` with the value
    /// `token` (read-only, `inspect.lua`), so that the extend which follows finds the keys there
    /// unless they expire meanwhile. `NotHeld` only when so many masters answered "not held"
    /// that no quorum can hold it.
    async fn held_by_quorum(&self, resource: &str, key: &str, token: &str) -> Result<()> {
        let call = Arc::new(ScriptCall::new(&INSPECT, vec![key.to_owned()], Vec::new()));
        let holds = |value: &Value| match value {
            Value::Array(items) => matches!(items.as_slice(),
                [Value::BulkString(v), _] if v == token.as_bytes()),
            _ => false,
        };
        let round = self
            .master_set()
            .vote(
                self.master_set().quorum(),
                |m| m.run_owned(&call),
                |answer: &std::result::Result<Value, MasterReply>| answer.as_ref().is_ok_and(holds),
            )
            .await;
        if round.decision == Decision::Won {
            return Ok(());
        }
        let replies = Replies::from_answers(&round.answers, holds);
        let n = self.master_set().len();
        if replies.refused() > n - self.master_set().quorum() {
            Err(Error::NotHeld {
                resource: resource.to_owned(),
                replies,
            })
        } else {
            Err(Error::unavailable(n, replies))
        }
    }
}

/// The tighter of two extension caps (`None`: no cap).
fn smaller_cap(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
