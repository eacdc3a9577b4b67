//! Multi-resource lock: several resources in one round, all or none on each master.

use std::future::Future;
use std::time::Duration;

use crate::config::check_resource;
use crate::error::{Error, Result};
use crate::guard::LockGuard;
use crate::held::{Attempt, HeldBy};
use crate::lease::LockContext;
use crate::lock::{Redlock, Wake};
use crate::options::LockOptions;
use crate::scripts::millis;
use crate::scripts::{MULTI_ACQUIRE, MULTI_EXTEND, MULTI_RELEASE, ScriptCall};

impl Redlock {
    /// Acquires every resource of `resources` together, as one lock, retrying as
    /// [`acquire`](Self::acquire) does.
    ///
    /// One round, one script per master: a master grants all the resources or none (if any of
    /// them is held there), so there is no partial state to deadlock on, and a failed round is
    /// rolled back as a unit. The names are sorted and deduplicated first, so that every client
    /// sends the same keys in the same order. The keys are the basic lock's: a multi-resource
    /// lock on `["a", "b"]` excludes [`acquire("a")`](Self::acquire) and vice versa.
    ///
    /// The guard's [`resource`](LockGuard::resource) is the sorted names joined by `", "`; its
    /// extend and release act on all of them (extend only where this owner still holds the
    /// whole set).
    ///
    /// # Errors
    /// [`Error::EmptyResource`] when `resources` is empty or a name is empty;
    /// [`Error::InvalidArgument`] for a lock-delay (the options' TTL, wait and cap are
    /// honoured); otherwise as [`acquire`](Self::acquire).
    pub async fn acquire_many<I, S>(
        &self,
        resources: I,
        options: impl Into<LockOptions>,
    ) -> Result<LockGuard>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let options = options.into();
        let names = sorted_names(resources)?;
        options.check("acquire_many", true, false)?;
        let wait = options.wait_or(self.config().acquire_wait);
        let guard = self
            .acquire_names(&names, &options, Patience::Wait(wait), None)
            .await?;
        Ok(guard.expect("a waiting acquire returns a guard or an error"))
    }

    /// One round of [`acquire_many`](Self::acquire_many): `Ok(None)` when any of the resources
    /// is held on too many masters.
    ///
    /// # Errors
    /// [`Error::EmptyResource`], [`Error::InvalidTtl`], [`Error::InvalidArgument`] (a wait or a
    /// lock-delay), [`Error::Unavailable`].
    pub async fn try_acquire_many<I, S>(
        &self,
        resources: I,
        options: impl Into<LockOptions>,
    ) -> Result<Option<LockGuard>>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let options = options.into();
        let names = sorted_names(resources)?;
        options.check("try_acquire_many", false, false)?;
        self.acquire_names(&names, &options, Patience::Once, None)
            .await
    }

    /// The one multi-resource acquire, behind [`acquire_many`](Self::acquire_many) and each
    /// group of a sharded lock: `names` (sorted, distinct: [`sorted_names`]) through the basic
    /// lock's name and TTL checks, then rounds of `multi_acquire.lua` by the shared retry loop
    /// (`Patience::Wait`) or one round (`Patience::Once`, `Ok(None)` when refused). With
    /// `check`, every master first checks the sharded topology epoch (`sharded/mod.rs`). The
    /// caller has checked the options it honours (`LockOptions::check`).
    pub(crate) async fn acquire_names(
        &self,
        names: &[String],
        options: &LockOptions,
        patience: Patience,
        check: Option<&EpochCheck>,
    ) -> Result<Option<LockGuard>> {
        names
            .iter()
            .try_for_each(|n| self.config().check_lock_key(n))?;
        let ttl = options.ttl();
        self.config().check_ttl(ttl)?;
        let label = names.join(", ");
        let next = || self.multi_attempt(names, ttl, check);
        match patience {
            Patience::Once => self.try_once(&label, options, next).await,
            Patience::Wait(wait) => self
                .acquire_loop(&label, options, wait, Wake::Poll, next)
                .await
                .map(Some),
        }
    }

    /// [`with_lock`](Self::with_lock) for several resources: acquires them as
    /// [`acquire_many`](Self::acquire_many), extends them while `work` runs, releases them.
    ///
    /// # Errors
    /// The errors of [`acquire_many`](Self::acquire_many), and [`Error::LockLost`].
    pub async fn with_locks<I, S, T, F, Fut>(
        &self,
        resources: I,
        options: impl Into<LockOptions>,
        work: F,
    ) -> Result<T>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
        F: FnOnce(LockContext) -> Fut,
        Fut: Future<Output = T>,
    {
        let options = options.into();
        let guard = self.acquire_many(resources, &options).await?;
        guard.with_watchdog(options.ttl(), work).await
    }

    fn multi_attempt(
        &self,
        names: &[String],
        ttl: Duration,
        check: Option<&EpochCheck>,
    ) -> Attempt {
        let config = self.config();
        let mut keys: Vec<String> = Vec::with_capacity(names.len() + 1);
        // A sharded hold carries the topology hash first, for the extend's epoch check (the
        // release script skips it).
        keys.extend(check.map(|c| c.key.clone()));
        keys.extend(names.iter().map(|n| config.lock_key(n)));
        let kind = if check.is_some() { "sharded" } else { "multi" };
        let held = HeldBy::new(kind, keys.clone(), &MULTI_EXTEND, &MULTI_RELEASE).args(
            check.map_or_else(Vec::new, |c| {
                vec![
                    c.extendable_until.to_string(),
                    c.epoch.to_string(),
                    c.digest.clone(),
                    c.final_digest.clone().unwrap_or_default(),
                ]
            }),
        );
        let mut args = vec![millis(ttl), config.fencing_arg()];
        if let Some(c) = check {
            args.extend([c.epoch.to_string(), c.digest.clone()]);
        }
        // The stored value names its holder for inspection (owner_id.rs), as the basic lock's.
        let token = crate::owner_id::compose(&crate::held::new_token(), &config.owner_id);
        Attempt::with_token(token, ttl, held, |token| {
            let mut all = vec![config.fence_key()];
            all.extend(keys);
            let mut argv = vec![token.to_owned()];
            argv.extend(args);
            ScriptCall::new(&MULTI_ACQUIRE, all, argv)
        })
    }
}

/// How long a multi-resource acquire may try.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Patience {
    /// Rounds by the retry loop until granted or the wait runs out.
    Wait(Duration),
    /// One round.
    Once,
}

/// The sharded lock's topology check in a multi-resource round (`sharded/mod.rs`): each master
/// refuses the round when it stores an epoch newer than `epoch` or pins another spec digest
/// to it (else raises its own epoch to it and pins `digest`), and refuses an extend once it
/// stores an epoch past `extendable_until` or a spec other than the hold's (or, past `epoch`,
/// other than the change's final one, `final_digest`).
#[derive(Clone, Debug)]
pub(crate) struct EpochCheck {
    /// The group's topology hash.
    pub(crate) key: String,
    pub(crate) epoch: u64,
    pub(crate) digest: String,
    pub(crate) extendable_until: u64,
    pub(crate) final_digest: Option<String>,
}

/// The names, checked, sorted (bytewise) and deduplicated: every client then asks for the same
/// keys in the same order, and a name given twice is not refused by its own first `SET`.
pub(crate) fn sorted_names<I, S>(resources: I) -> Result<Vec<String>>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut names = Vec::new();
    for r in resources {
        check_resource(r.as_ref())?;
        names.push(r.as_ref().to_owned());
    }
    if names.is_empty() {
        return Err(Error::EmptyResource);
    }
    names.sort_unstable();
    names.dedup();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sorted_deduplicated_and_checked() {
        assert_eq!(
            sorted_names(["b", "a", "b", "c"]).unwrap(),
            vec!["a", "b", "c"]
        );
        assert!(matches!(
            sorted_names(Vec::<String>::new()),
            Err(Error::EmptyResource)
        ));
        assert!(matches!(sorted_names(["a", ""]), Err(Error::EmptyResource)));
    }
}
