//! The builder, its defaults, and the validation of everything a caller can pass in.

use std::time::Duration;

use crate::defaults::{
    DEFAULT_ACQUIRE_WAIT, DEFAULT_BATCHING, DEFAULT_CONNECT_TIMEOUT, DEFAULT_DRIFT_FACTOR,
    DEFAULT_FENCING, DEFAULT_KEY_PREFIX, DEFAULT_MASTER_TIMEOUT, DEFAULT_RETRY_COUNT,
    DEFAULT_RETRY_DELAY, DEFAULT_RETRY_JITTER, DEFAULT_WAKE_UPS, MAX_TTL, MIN_TTL_PER_TIMEOUT,
};
use crate::error::{Error, Result, redact_url};
use crate::invalid::{ArgumentReason, ConfigReason};
use crate::settings::{Access, FenceKeys, PROBE_RESOURCE, Settings};

/// Settings shared by every operation of one [`Redlock`](crate::Redlock). Built by [`Builder`].
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) retry_count: Option<u32>,
    pub(crate) retry_delay: Duration,
    pub(crate) retry_jitter: Duration,
    pub(crate) master_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) drift_factor: f64,
    pub(crate) acquire_wait: Duration,
    pub(crate) key_prefix: String,
    pub(crate) fencing: bool,
    pub(crate) restart_quarantine: Option<Duration>,
    pub(crate) wake_ups: bool,
    /// Group commit of script calls per master (batch.rs).
    pub(crate) batching: bool,
    /// The interop key layout (interop.rs): lock keys from a template, not the prefix.
    pub(crate) interop: Option<crate::interop::KeyLayout>,
    /// The fencing counter's key, when not `<prefix>fence`.
    pub(crate) fence_key: Option<String>,
    /// Fail the build when a master's `maxmemory-policy` evicts keys (selfcheck.rs).
    pub(crate) refuse_evicting: bool,
    /// Who holds a lock, for inspection (`owner_id.rs`): stored in the basic lock's value.
    pub(crate) owner_id: String,
}

impl Config {
    /// The key a resource's lock lives under.
    pub(crate) fn lock_key(&self, resource: &str) -> String {
        match &self.interop {
            Some(layout) => layout.lock_key(resource),
            None => format!("{}lock:{}", self.key_prefix, resource),
        }
    }

    /// A primitive's key: `<prefix><space>:<name>`. Every space is a distinct word and none is
    /// a prefix of another followed by `:`, so keys of two spaces never collide whatever the
    /// names contain.
    pub(crate) fn key(&self, space: &str, name: &str) -> String {
        format!("{}{space}:{name}", self.key_prefix)
    }

    /// The fencing flag the acquire scripts take.
    pub(crate) fn fencing_arg(&self) -> String {
        if self.fencing { "1" } else { "0" }.to_owned()
    }

    /// The fencing counter of this key namespace (one per prefix, on every master).
    pub(crate) fn fence_key(&self) -> String {
        match &self.fence_key {
            Some(key) => key.clone(),
            None => format!("{}fence", self.key_prefix),
        }
    }

    /// Where earlier versions recorded the process a fencing counter was sealed for; no longer
    /// written (the generation lives in the fencing hash), still refused as a lock key.
    pub(crate) fn fence_seal_key(&self) -> String {
        format!("{}:seal", self.fence_key())
    }

    /// The fencing keys a master's connection reads at connect, when fencing is on.
    pub(crate) fn fence_keys(&self) -> Option<FenceKeys> {
        self.fencing.then(|| FenceKeys {
            counter: self.fence_key(),
        })
    }

    /// Rejects TTLs that cannot give a useful lock.
    pub(crate) fn check_ttl(&self, ttl: Duration) -> Result<()> {
        let invalid = |reason: String| Err(Error::InvalidTtl { ttl, reason });
        if ttl.is_zero() {
            return invalid("ttl must be positive".into());
        }
        if ttl > MAX_TTL {
            return invalid(format!("ttl must be at most {MAX_TTL:?}"));
        }
        if ttl < Duration::from_millis(1) {
            return invalid("ttl must be at least 1 ms (redis expires in milliseconds)".into());
        }
        if self.master_timeout * MIN_TTL_PER_TIMEOUT > ttl {
            return invalid(format!(
                "the per-master timeout ({:?}) must be at most 1/{MIN_TTL_PER_TIMEOUT} of the ttl",
                self.master_timeout
            ));
        }
        let drift = crate::quorum::drift(ttl, self.drift_factor);
        if drift + self.master_timeout >= ttl {
            return invalid(format!(
                "drift ({drift:?}) and the per-master timeout ({:?}) leave no validity",
                self.master_timeout
            ));
        }
        Ok(())
    }
}

impl Config {
    /// A waiter timeout must outlast the pause between two attempts of a waiting client (two
    /// rounds and one retry delay, with margin), or waiters would lose their place while
    /// waiting.
    pub(crate) fn check_waiter_timeout(&self, timeout: Duration) -> Result<()> {
        let min = self
            .retry_delay
            .saturating_add(self.retry_jitter)
            .saturating_add(self.master_timeout)
            .saturating_mul(2);
        if timeout < min {
            return Err(Error::InvalidArgument(
                ArgumentReason::WaiterTimeoutTooShort { timeout, min },
            ));
        }
        Ok(())
    }
}

impl Config {
    /// Rejects a resource whose lock key would be one of the fencing keys: with a template as
    /// open as `{resource}`, the resource `redquorum:fence` would otherwise overwrite (or be
    /// refused by) the fencing counter.
    pub(crate) fn check_lock_key(&self, resource: &str) -> Result<()> {
        let key = self.lock_key(resource);
        if key == self.fence_key() || key == self.fence_seal_key() {
            return Err(Error::InvalidArgument(ArgumentReason::NamesFenceKey {
                resource: resource.to_owned(),
                key,
            }));
        }
        // Under an open template the lock key could also be one of the library's own keys
        // (a waiter marker, which every release of the marked resource deletes; an election,
        // a topology): refuse anything under the key prefix.
        if self.interop.is_some() && key.starts_with(&self.key_prefix) {
            return Err(Error::InvalidArgument(ArgumentReason::UnderKeyPrefix {
                resource: resource.to_owned(),
                key,
                prefix: self.key_prefix.clone(),
            }));
        }
        Ok(())
    }

    /// Fails for a primitive that has no layout a peer client shares, when the interop layout
    /// is on.
    pub(crate) fn refuse_interop(&self, primitive: &'static str) -> Result<()> {
        match self.interop {
            Some(_) => Err(Error::InteropUnsupported { primitive }),
            None => Ok(()),
        }
    }
}

/// `start + wait`, or a point far enough away to mean "never" when the sum does not fit
/// (`Duration::MAX` is the usual way to say "wait forever"; tokio's `Instant` would panic).
pub(crate) fn deadline_after(start: tokio::time::Instant, wait: Duration) -> tokio::time::Instant {
    const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);
    start
        .checked_add(wait.min(FOREVER))
        .unwrap_or_else(|| start + Duration::from_secs(24 * 60 * 60))
}

pub(crate) fn check_resource(resource: &str) -> Result<()> {
    if resource.is_empty() {
        return Err(Error::EmptyResource);
    }
    Ok(())
}

/// Configures and connects a [`Redlock`](crate::Redlock). Created by
/// [`Redlock::builder`](crate::Redlock::builder).
///
/// ```no_run
/// # async fn run() -> redquorum::Result<()> {
/// use std::time::Duration;
/// let redlock = redquorum::Redlock::builder()
///     .masters(["redis://10.0.0.1:6379", "redis://10.0.0.2:6379", "redis://10.0.0.3:6379"])
///     .master_timeout(Duration::from_millis(20))
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
#[must_use]
#[derive(Clone)]
pub struct Builder {
    pub(crate) masters: Vec<String>,
    pub(crate) config: Config,
    /// Credentials and TLS options for every master (endpoint.rs).
    pub(crate) access: Access,
    /// Masters reached over a simulated network instead (`sim` feature).
    #[cfg(feature = "sim")]
    pub(crate) network: Option<std::sync::Arc<dyn crate::sim::Network>>,
}

impl std::fmt::Debug for Builder {
    // Hand-written so that passwords in master URLs never reach logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let masters: Vec<String> = self.masters.iter().map(|u| redact_url(u)).collect();
        f.debug_struct("Builder")
            .field("masters", &masters)
            .field("config", &self.config)
            .field("access", &self.access)
            .finish()
    }
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            masters: Vec::new(),
            config: Config {
                retry_count: DEFAULT_RETRY_COUNT,
                retry_delay: DEFAULT_RETRY_DELAY,
                retry_jitter: DEFAULT_RETRY_JITTER,
                master_timeout: DEFAULT_MASTER_TIMEOUT,
                connect_timeout: DEFAULT_CONNECT_TIMEOUT,
                drift_factor: DEFAULT_DRIFT_FACTOR,
                acquire_wait: DEFAULT_ACQUIRE_WAIT,
                key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
                fencing: DEFAULT_FENCING,
                restart_quarantine: None,
                wake_ups: DEFAULT_WAKE_UPS,
                batching: DEFAULT_BATCHING,
                interop: None,
                fence_key: None,
                refuse_evicting: false,
                owner_id: crate::owner_id::default_owner_id(),
            },
            access: Default::default(),
            #[cfg(feature = "sim")]
            network: None,
        }
    }
}

impl Builder {
    /// Reaches the masters over a simulated network (the deterministic simulator's; not a
    /// public API): the master URLs only name them, and release wake-ups are off (they use
    /// pub/sub connections of their own).
    #[cfg(feature = "sim")]
    #[doc(hidden)]
    pub fn sim_network(mut self, network: std::sync::Arc<dyn crate::sim::Network>) -> Self {
        self.network = Some(network);
        self.config.wake_ups = false;
        self
    }

    /// Whether `build` runs the masters self-check: not over the simulator's network, whose
    /// runs must stay the same message for message (selfcheck.rs).
    pub(crate) fn runs_self_check(&self) -> bool {
        #[cfg(feature = "sim")]
        if self.network.is_some() {
            return false;
        }
        true
    }

    /// The masters' connection settings.
    pub(crate) fn master_settings(&self) -> Settings {
        let config = &self.config;
        Settings {
            timeout: config.master_timeout,
            connect_timeout: config.connect_timeout,
            quarantine: config.restart_quarantine,
            fence: config.fence_keys(),
            access: self.access.clone(),
            probe_key: Some(config.lock_key(PROBE_RESOURCE)),
            batching: config.batching,
            #[cfg(feature = "sim")]
            network: self.network.clone(),
        }
    }

    /// The independent Redis masters (`redis://[user:password@]host:port[/db]` URLs;
    /// `rediss://` for TLS with the `tls` feature; `redis+unix:///path` for a Unix socket). Their
    /// order defines the master indices used in errors. Typically 5; any N >= 1 works, and the
    /// quorum is `N / 2 + 1`. No default: at least one is required.
    pub fn masters<I, S>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.masters = urls.into_iter().map(Into::into).collect();
        self
    }

    /// Maximum number of rounds [`Redlock::acquire`](crate::Redlock::acquire) tries. Default:
    /// unbounded ([`DEFAULT_RETRY_COUNT`]), so that the acquire wait alone bounds it.
    pub fn retry_count(mut self, count: u32) -> Self {
        self.config.retry_count = Some(count);
        self
    }

    /// Base delay between acquire rounds. Default [`DEFAULT_RETRY_DELAY`].
    pub fn retry_delay(mut self, delay: Duration) -> Self {
        self.config.retry_delay = delay;
        self
    }

    /// Maximum random jitter added to each retry delay. Default [`DEFAULT_RETRY_JITTER`].
    pub fn retry_jitter(mut self, jitter: Duration) -> Self {
        self.config.retry_jitter = jitter;
        self
    }

    /// Bound on each call to one master. Default [`DEFAULT_MASTER_TIMEOUT`]. Must be well below
    /// the TTLs used (at most 1/[`MIN_TTL_PER_TIMEOUT`] of them).
    pub fn master_timeout(mut self, timeout: Duration) -> Self {
        self.config.master_timeout = timeout;
        self
    }

    /// Bound on opening a connection to one master. Default [`DEFAULT_CONNECT_TIMEOUT`].
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// Clock drift factor, in `[0, 0.5)`. Default [`DEFAULT_DRIFT_FACTOR`]. The validity of a
    /// lock is `ttl - elapsed - (ttl * factor + 2 ms)`.
    pub fn drift_factor(mut self, factor: f64) -> Self {
        self.config.drift_factor = factor;
        self
    }

    /// How long [`Redlock::acquire`](crate::Redlock::acquire) keeps retrying. Default
    /// [`DEFAULT_ACQUIRE_WAIT`].
    pub fn acquire_wait(mut self, wait: Duration) -> Self {
        self.config.acquire_wait = wait;
        self
    }

    /// Prefix of every key written (lock keys are `<prefix>lock:<resource>`, the fencing counter
    /// is `<prefix>fence`). Default [`DEFAULT_KEY_PREFIX`].
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.config.key_prefix = prefix.into();
        self
    }

    /// Whether acquisitions carry fencing tokens. Default [`DEFAULT_FENCING`] (on). Off saves
    /// the counter increment and, rarely, one write-back round trip.
    ///
    /// On, each master keeps the hash `<prefix>fence`: the counter and the generation of its
    /// last seal (`<run_id>:<random>`, new at every seal), read at every connect. A master that
    /// restarted, was replaced, flushed or lost its counter votes only once a seal raised its
    /// counter from a quorum of sealed masters, so tokens stay ordered also across such faults
    /// (see the crate docs for the exact claim). A brand-new namespace needs every master to
    /// answer once before its first token.
    pub fn fencing(mut self, on: bool) -> Self {
        self.config.fencing = on;
        self
    }

    /// Delayed-restart protection: do not count the votes of a master whose server process
    /// started less than `max_lock_ttl` ago, because it may have lost keys it granted. Set it
    /// to the largest TTL your application uses. Default: off.
    ///
    /// The window starts at the process's start (`uptime_in_seconds`), or, for a process with a
    /// `run_id` this client first sees after it was built (a restart, a promoted replica, a
    /// standby that took over the address), when the client first sees it, whatever its
    /// uptime. A client built after such a takeover can only go by the uptime.
    pub fn restart_quarantine(mut self, max_lock_ttl: Duration) -> Self {
        self.config.restart_quarantine = Some(max_lock_ttl);
        self
    }

    /// The interop key layout: the lock key of a resource is `template` with `{resource}`
    /// replaced by the resource name (`"{resource}"`: the name itself, the layout of redsync,
    /// node-redlock, aioredlock and RedLock.net; `"redlock:{resource}"`: pottery's), and its
    /// value a random owner token, so that their locks and ours on the same resource exclude
    /// each other. Default: off (`<prefix>lock:<resource>`).
    ///
    /// Only [`Redlock::acquire`](crate::Redlock::acquire) and the multi-resource lock use this
    /// layout; the other primitives fail with
    /// [`Error::InteropUnsupported`](crate::Error::InteropUnsupported). A resource whose key would
    /// be the fencing counter's is refused. See the guide's "Interop with other Redlock clients"
    /// (`docs/production.md`).
    pub fn interop_keys(mut self, template: impl Into<String>) -> Self {
        self.config.interop = Some(crate::interop::KeyLayout::new(&template.into()));
        self
    }

    /// The key of the fencing hash (counter and seal generation). Default `<prefix>fence`.
    /// Every client that shares lock keys must use the same one, or tokens do not order them.
    pub fn fence_key(mut self, key: impl Into<String>) -> Self {
        self.config.fence_key = Some(key.into());
        self
    }

    /// Fail [`build`](Self::build) with [`Error::EvictingMaster`](crate::Error::EvictingMaster)
    /// when a master's `maxmemory-policy` is anything but `noeviction` (such a master can drop a
    /// lock key before it expires). Default: off, the build only logs a warning. A master that
    /// cannot be asked at build, or whose policy neither `CONFIG GET` nor `INFO` tells, is not
    /// refused (it is warned about); see
    /// [`Redlock::masters_report`](crate::Redlock::masters_report).
    pub fn refuse_evicting_masters(mut self, on: bool) -> Self {
        self.config.refuse_evicting = on;
        self
    }

    /// Whether a waiting [`Redlock::acquire`](crate::Redlock::acquire) is woken when the lock is
    /// released. Default [`DEFAULT_WAKE_UPS`] (on).
    ///
    /// On: the client keeps one extra pub/sub connection per master, subscribes to a
    /// resource's release channel while one of its tasks waits for it, and retries as soon as a
    /// release is announced (the retry delay stays as the fallback for locks that expire
    /// instead of being released). The tasks of one client waiting for the same resource queue
    /// in arrival order and only the first runs rounds, so they do not split the vote among
    /// themselves. Off: waiters poll with the jittered retry delay only (and leave no waiter
    /// marker). Releases announce themselves either way (a `PUBLISH` per master when a waiter
    /// marked the resource), so clients with wake-ups on are woken by clients with them off.
    pub fn wake_ups(mut self, on: bool) -> Self {
        self.config.wake_ups = on;
        self
    }

    /// Whether script calls that become ready for a master while another call to it is in
    /// flight leave together, as one batch script call carrying all of them (group commit).
    /// Default [`DEFAULT_BATCHING`] (off).
    ///
    /// On: many tasks of one client send fewer, larger commands (fewer round trips and fewer
    /// read/write system calls on both sides); a single task pays nothing, since an idle
    /// master gets each call at once as a plain `EVALSHA`. The cost: a batch runs its entries
    /// through one generated script (a Lua function call and argument copying per entry), so
    /// the masters' CPU per operation does not fall in proportion to the commands saved (see
    /// the guide's `docs/performance.md`), and an entry waits for the call in flight before it
    /// leaves. Off: every operation is its own `EVALSHA` per master, as in other Redlock
    /// clients. Safety is the same either way.
    pub fn batching(mut self, on: bool) -> Self {
        self.config.batching = on;
        self
    }

    /// A human-readable name of this holder (default: `hostname/pid`), stored next to the owner
    /// token in the basic lock's value so that [`Redlock::inspect`](crate::Redlock::inspect) can
    /// show who holds a lock. At most [`MAX_OWNER_ID_LEN`](crate::defaults::MAX_OWNER_ID_LEN)
    /// bytes, no control characters; it is not secret and not checked for uniqueness.
    pub fn owner_id(mut self, id: impl Into<String>) -> Self {
        self.config.owner_id = id.into();
        self
    }

    /// The settings' own checks, before anything connects ([`build`](Self::build)).
    pub(crate) fn validate(&self) -> Result<()> {
        let c = &self.config;
        if self.masters.is_empty() {
            return Err(Error::NoMasters);
        }
        let bad = |reason| Err(Error::InvalidConfig(reason));
        let not_positive = |setting| bad(ConfigReason::NotPositive { setting });
        if c.master_timeout.is_zero() {
            return not_positive("master timeout");
        }
        if c.connect_timeout.is_zero() {
            return not_positive("connect timeout");
        }
        if !(0.0..0.5).contains(&c.drift_factor) || c.drift_factor.is_nan() {
            return bad(ConfigReason::DriftFactor(c.drift_factor));
        }
        if c.retry_count == Some(0) {
            return bad(ConfigReason::NoRetries);
        }
        if c.retry_delay.saturating_add(c.retry_jitter) > Duration::from_secs(60) {
            return bad(ConfigReason::RetryDelayTooLong);
        }
        if let Some(q) = c.restart_quarantine
            && q.is_zero()
        {
            return not_positive("restart quarantine");
        }
        if c.fence_key.as_deref() == Some("") {
            return bad(ConfigReason::EmptyFenceKey);
        }
        if let Some(layout) = &c.interop {
            layout.validate()?;
            // Lock keys under the interop template must stay out of the space of this
            // library's own keys (markers, elections, topology: interop.rs check_lock_key).
            if c.key_prefix.is_empty() || layout.lock_key("").starts_with(&c.key_prefix) {
                return bad(ConfigReason::InteropSharesPrefix);
            }
        }
        crate::owner_id::check(&c.owner_id)
    }
}

/// Credentials and TLS on the lock client's builder.
impl Builder {
    /// Logs in to every master as this ACL user (`AUTH username password`), unless the
    /// master's URL carries a username or password of its own (`redis://user:pass@host`),
    /// which then wins. See the guide (`docs/production.md`, "ACL users") for the minimal ACL rule.
    pub fn credentials(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.access
            .set_credentials(Some(username.into()), password.into());
        self
    }

    /// Logs in to every master with this password (`AUTH password`, the `default` user),
    /// unless the master's URL carries a username or password of its own.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.access.set_credentials(None, password.into());
        self
    }

    /// How `rediss://` masters are verified and which client certificate they are shown.
    /// Default: [`TlsOptions::new`](crate::TlsOptions::new) (the system's root certificates,
    /// hostname verification on). Plain `redis://` masters in the same list are unaffected.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, options: crate::tls::TlsOptions) -> Self {
        self.access.tls = options;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Builder::default().config
    }

    #[test]
    fn rejects_zero_huge_and_too_short_ttls() {
        let c = config();
        assert!(c.check_ttl(Duration::ZERO).is_err());
        assert!(c.check_ttl(MAX_TTL + Duration::from_secs(1)).is_err());
        // 50 ms timeout: a 400 ms TTL is below 10x the timeout.
        assert!(c.check_ttl(Duration::from_millis(400)).is_err());
        assert!(c.check_ttl(Duration::from_millis(500)).is_ok());
        assert!(c.check_ttl(Duration::from_secs(10)).is_ok());
    }

    #[test]
    fn builder_validation() {
        assert!(matches!(
            Builder::default().validate(),
            Err(Error::NoMasters)
        ));
        let b = Builder::default().masters(["redis://127.0.0.1:1"]);
        assert!(b.clone().drift_factor(0.7).validate().is_err());
        assert!(b.clone().drift_factor(f64::NAN).validate().is_err());
        assert!(b.clone().master_timeout(Duration::ZERO).validate().is_err());
        assert!(b.clone().retry_count(0).validate().is_err());
        assert!(b.validate().is_ok());
    }

    #[test]
    fn huge_waits_and_delays_do_not_overflow() {
        let now = tokio::time::Instant::now();
        assert!(deadline_after(now, Duration::MAX) > now + Duration::from_secs(3600));
        let b = Builder::default()
            .masters(["redis://127.0.0.1:1"])
            .retry_delay(Duration::MAX)
            .retry_jitter(Duration::MAX);
        assert!(b.validate().is_err());
        let c = Builder::default().retry_delay(Duration::MAX).config;
        assert!(c.check_waiter_timeout(Duration::from_secs(1)).is_err());
    }

    #[test]
    fn debug_redacts_passwords() {
        let b = Builder::default().masters(["redis://app:hunter2@10.0.0.1:6379"]);
        let shown = format!("{b:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("10.0.0.1:6379"));
    }

    #[test]
    fn keys_do_not_collide_with_the_fence_counter() {
        let c = config();
        assert_eq!(c.lock_key("fence"), "redquorum:lock:fence");
        assert_eq!(c.fence_key(), "redquorum:fence");
    }
}
