//! Semaphore: up to `permits` holders at once, each with its own lease.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use redis::Value;

use crate::config::check_resource;
use crate::error::{Error, MasterReply, Replies, Result};
use crate::guard::LockGuard;
use crate::held::{Attempt, HeldBy};
use crate::invalid::ArgumentReason;
use crate::lease::LockContext;
use crate::lock::{Redlock, Wake};
use crate::options::LockOptions;
use crate::scripts::millis;
use crate::scripts::{
    SEMAPHORE_ACQUIRE, SEMAPHORE_EXTEND, SEMAPHORE_HELD, SEMAPHORE_RELEASE, ScriptCall,
};

/// A counting semaphore on one resource: at most `permits` holders at once. Created by
/// [`Redlock::semaphore`]; cheap to clone.
///
/// The permits are `permits` numbered slots, and **each slot is a mutex over the quorum**: a
/// holder holds one slot on a quorum of masters. Two holders of one slot would need two
/// quorums, which share a master that granted that slot once; so at most `permits` holders
/// are inside their validity at any time, under the same assumptions as the basic lock.
///
/// Why slots and not a count per master: with a count, "fewer than `permits` on a quorum"
/// over-grants. With 5 masters and 2 permits, holders A on masters {0,1,2}, B on {2,3,4} and
/// C on {0,1,3} each have a quorum while no master counts more than 2: three holders.
///
/// On each master the script takes the lowest free slot, so masters that agree on which slots
/// are held pick the same one and a round costs one round trip; when they disagree (two
/// acquirers racing, a master that missed a release), the round needs a quorum for one slot,
/// gives back the other slots it got, and retries like a contended lock. A holder that
/// vanishes frees its slot when its lease expires (the masters' clocks).
///
/// Every client of one semaphore must use the same `permits`.
#[derive(Clone, Debug)]
pub struct Semaphore {
    redlock: Redlock,
    resource: String,
    permits: u32,
}

impl Redlock {
    /// A semaphore handle for `resource` with `permits` slots (`permits` = 0 is refused at
    /// acquire).
    pub fn semaphore(&self, resource: impl Into<String>, permits: u32) -> Semaphore {
        Semaphore {
            redlock: self.clone(),
            resource: resource.into(),
            permits,
        }
    }
}

impl Semaphore {
    /// The resource.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The number of permits.
    pub fn permits(&self) -> u32 {
        self.permits
    }

    /// Takes a permit for the options' TTL, retrying while all are held, for at most the
    /// acquire wait ([`LockOptions::wait`], default the client's). Honours the TTL, the wait
    /// and the cap, not a lock-delay.
    /// The guard's extend and release act on this permit's lease only.
    ///
    /// # Errors
    /// As [`Redlock::acquire`] ([`Error::Contended`] when no permit was freed in time), and
    /// [`Error::InvalidArgument`] for zero permits or a lock-delay.
    pub async fn acquire(&self, options: impl Into<LockOptions>) -> Result<LockGuard> {
        let options = options.into();
        self.check(&options, "Semaphore::acquire", true)?;
        let ttl = options.ttl();
        let wait = options.wait_or(self.redlock.config().acquire_wait);
        self.redlock
            .acquire_loop(&self.resource, &options, wait, Wake::Poll, || {
                self.attempt(ttl)
            })
            .await
    }

    /// One round: `Ok(None)` when no permit could be had.
    ///
    /// # Errors
    /// As [`Redlock::try_acquire`], and [`Error::InvalidArgument`] for zero permits.
    pub async fn try_acquire(&self, options: impl Into<LockOptions>) -> Result<Option<LockGuard>> {
        let options = options.into();
        self.check(&options, "Semaphore::try_acquire", false)?;
        let ttl = options.ttl();
        self.redlock
            .try_once(&self.resource, &options, || self.attempt(ttl))
            .await
    }

    /// Runs `work` holding a permit, extended while it runs, released after.
    ///
    /// # Errors
    /// The errors of [`acquire`](Self::acquire), and [`Error::LockLost`].
    pub async fn with_permit<T, F, Fut>(
        &self,
        options: impl Into<LockOptions>,
        work: F,
    ) -> Result<T>
    where
        F: FnOnce(LockContext) -> Fut,
        Fut: Future<Output = T>,
    {
        let options = options.into();
        let guard = self.acquire(&options).await?;
        guard.with_watchdog(options.ttl(), work).await
    }

    /// The permits free right now: the slots that at least a quorum of masters report free
    /// (not held by a live lease). A snapshot, for display and load shedding, not a promise:
    /// an acquire may still fail (another client took the slot) or, when masters disagree,
    /// wait for a retry. Asks every master once and waits for all answers, up to one per-master
    /// timeout; masters that fail or are quarantined count as reporting every slot held.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for zero permits; [`Error::Unavailable`] when fewer than a
    /// quorum of masters answered.
    pub async fn available(&self) -> Result<u32> {
        check_resource(&self.resource)?;
        self.redlock.config().refuse_interop("semaphore")?;
        self.check_permits()?;
        let redlock = &self.redlock;
        let key = self.redlock.config().key("semaphore", &self.resource);
        let call = ScriptCall::new(&SEMAPHORE_HELD, vec![key], vec![]);
        let answers = redlock
            .master_set()
            .ask_each(|master| {
                let call = &call;
                let quarantined = self.redlock.is_quarantined(master);
                async move {
                    if quarantined {
                        return Err(MasterReply::Quarantined);
                    }
                    match master.run(call).await? {
                        Value::Array(slots) => Ok(slots
                            .into_iter()
                            .filter_map(|s| match s {
                                Value::Int(s) => u32::try_from(s).ok(),
                                _ => None,
                            })
                            .collect::<Vec<u32>>()),
                        other => Err(MasterReply::ServerError(format!(
                            "unexpected reply {other:?}"
                        ))),
                    }
                }
            })
            .await;
        let answered = answers.iter().filter(|a| a.is_ok()).count();
        if answered < redlock.master_set().quorum() {
            let replies = Replies::from_results(&answers);
            return Err(redlock.master_set().unavailable(replies));
        }
        Ok(free_on_a_quorum(
            self.permits,
            answers.iter().filter_map(|a| a.as_ref().ok()),
            redlock.master_set().quorum(),
        ))
    }

    fn check_permits(&self) -> Result<()> {
        if self.permits == 0 {
            return Err(Error::InvalidArgument(ArgumentReason::NoPermits));
        }
        Ok(())
    }

    fn check(&self, options: &LockOptions, call: &'static str, waits: bool) -> Result<()> {
        check_resource(&self.resource)?;
        self.redlock.config().refuse_interop("semaphore")?;
        self.check_permits()?;
        self.redlock.config().check_ttl(options.ttl())?;
        options.check(call, waits, false)
    }

    fn attempt(&self, ttl: Duration) -> Attempt {
        let config = self.redlock.config();
        let key = config.key("semaphore", &self.resource);
        let held = HeldBy::new(
            "semaphore",
            vec![key.clone()],
            &SEMAPHORE_EXTEND,
            &SEMAPHORE_RELEASE,
        )
        // Extend needs the slot won: a lease on another slot is not a vote.
        .choice_arg();
        Attempt::new(ttl, held, |token| {
            ScriptCall::new(
                &SEMAPHORE_ACQUIRE,
                vec![key, config.fence_key()],
                vec![
                    token.to_owned(),
                    millis(ttl),
                    config.fencing_arg(),
                    self.permits.to_string(),
                ],
            )
        })
    }
}

/// Slots below `permits` that at least `quorum` of the answering masters do not report held.
fn free_on_a_quorum<'a>(
    permits: u32,
    held_per_master: impl Iterator<Item = &'a Vec<u32>>,
    quorum: usize,
) -> u32 {
    let mut answered = 0;
    let mut holders: HashMap<u32, usize> = HashMap::new();
    for held in held_per_master {
        answered += 1;
        for &slot in held {
            if slot < permits {
                *holders.entry(slot).or_default() += 1;
            }
        }
    }
    if answered < quorum {
        return 0;
    }
    let blocked = holders
        .values()
        .filter(|&&held_on| answered - held_on < quorum)
        .count() as u32;
    permits - blocked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_free_when_a_quorum_reports_it_free() {
        // Five masters, 3 permits. Slot 0 held everywhere, slot 1 held on two masters (a
        // minority: still free on three), slot 2 free, slot 7 out of range (another client's
        // larger permits) is ignored.
        let held = [vec![0, 1], vec![0, 1, 7], vec![0], vec![0], vec![0]];
        assert_eq!(free_on_a_quorum(3, held.iter(), 3), 2);
        // Only three masters answered: slot 1 is held on two of them, so free on one only.
        assert_eq!(free_on_a_quorum(3, held[..3].iter(), 3), 1);
        assert_eq!(free_on_a_quorum(3, held[..2].iter(), 3), 0);
    }
}
