//! The options every subcommand shares: which masters, and how to talk to them. Each has a
//! `REDQUORUM_*` environment variable, so that a deployment sets them once.

use std::time::Duration;

use redquorum::defaults::{MAX_TTL, MIN_TTL_PER_TIMEOUT};
use redquorum::{Error, Redlock};

use crate::exit;

#[derive(clap::Args, Debug)]
pub struct Connection {
    /// The Redis masters, comma-separated URLs: redis://host:port (rediss:// for TLS,
    /// redis://:password@host:port for credentials).
    #[arg(long, env = "REDQUORUM_MASTERS", value_delimiter = ',')]
    masters: Vec<String>,
    /// Bound on each call to one master. The TTL must be at least ten times this.
    #[arg(long, env = "REDQUORUM_MASTER_TIMEOUT", value_parser = crate::duration::parse,
          default_value = "50ms")]
    master_timeout: Duration,
    /// Prefix of the keys written (must match the other users of the lock).
    #[arg(long, env = "REDQUORUM_KEY_PREFIX", default_value = redquorum::defaults::DEFAULT_KEY_PREFIX)]
    key_prefix: String,
    /// Do not count a master whose server process started less than this long ago (it may
    /// have lost keys it granted): set it to the largest TTL in use. Default: off.
    #[arg(long, env = "REDQUORUM_RESTART_QUARANTINE", value_parser = crate::duration::parse)]
    restart_quarantine: Option<Duration>,
    /// Refuse to start when a master's maxmemory-policy may evict lock keys (default: a
    /// warning only).
    #[arg(long, env = "REDQUORUM_REFUSE_EVICTING_MASTERS")]
    refuse_evicting_masters: bool,
    /// Lock keys in another Redlock client's layout, to exclude its holders: "{resource}"
    /// (redsync, node-redlock, aioredlock, RedLock.net) or "redlock:{resource}" (pottery).
    /// Plain `lock` only.
    #[arg(long, env = "REDQUORUM_INTEROP_KEYS", value_name = "TEMPLATE")]
    interop_keys: Option<String>,
    /// No fencing tokens (saves a counter increment per lock; `elect` needs them, and no
    /// REDQUORUM_FENCING_TOKEN is given to the command).
    #[arg(long, env = "REDQUORUM_NO_FENCING")]
    no_fencing: bool,
}

impl Connection {
    pub fn master_timeout(&self) -> Duration {
        self.master_timeout
    }

    /// Checks what can be checked without the masters: that some are given, that the timeout
    /// is positive, and `ttl`'s limits (when there is one), in the user's terms.
    pub fn check(&self, ttl: Option<Duration>) -> Result<(), String> {
        if self.masters.iter().all(|m| m.trim().is_empty()) {
            return Err("no masters: set --masters or REDQUORUM_MASTERS to comma-separated \
                        URLs, e.g. redis://10.0.0.1:6379,redis://10.0.0.2:6379,redis://10.0.0.3:6379"
                .to_owned());
        }
        if let Some(bad) = self.masters.iter().find(|m| !m.trim().contains("://")) {
            return Err(format!(
                "master {bad:?}: expected a URL such as redis://{}",
                bad.trim()
            ));
        }
        if self.master_timeout.is_zero() {
            return Err("--master-timeout must be positive, e.g. 50ms".to_owned());
        }
        if let Some(ttl) = ttl {
            let min = self.min_ttl();
            if ttl < min || ttl > MAX_TTL {
                return Err(format!(
                    "--ttl {}: must be between {} (ten times --master-timeout {}) and {}",
                    show(ttl),
                    show(min),
                    show(self.master_timeout),
                    show(MAX_TTL)
                ));
            }
        }
        Ok(())
    }

    /// The shortest TTL the library accepts with this master timeout.
    pub fn min_ttl(&self) -> Duration {
        self.master_timeout * MIN_TTL_PER_TIMEOUT
    }

    /// Connects; `owner_id` is what the basic lock records as its holder.
    pub async fn connect(&self, owner_id: Option<&str>) -> redquorum::Result<Redlock> {
        let mut builder = Redlock::builder()
            .masters(
                self.masters
                    .iter()
                    .map(|m| m.trim().to_owned())
                    .filter(|m| !m.is_empty()),
            )
            .master_timeout(self.master_timeout)
            .key_prefix(self.key_prefix.clone())
            .refuse_evicting_masters(self.refuse_evicting_masters)
            .fencing(!self.no_fencing);
        if let Some(q) = self.restart_quarantine {
            builder = builder.restart_quarantine(q);
        }
        if let Some(template) = &self.interop_keys {
            builder = builder.interop_keys(template.clone());
        }
        if let Some(id) = owner_id {
            builder = builder.owner_id(id.to_owned());
        }
        builder.build().await
    }
}

/// A duration as the user writes it (`1m 30s`, `500ms`).
pub fn show(d: Duration) -> String {
    let d = Duration::from_millis(d.as_millis() as u64);
    crate::duration::format(d)
}

/// Reports a failed connect, telling configuration errors (fix the command line) from masters
/// that could not be reached; the exit code.
pub fn connect_failed(e: &Error) -> u8 {
    let config = matches!(
        e,
        Error::NoMasters
            | Error::InvalidUrl { .. }
            | Error::InvalidConfig(_)
            | Error::DuplicateMaster { .. }
            | Error::InvalidTtl { .. }
            | Error::InvalidArgument(_)
    );
    if config {
        let hint = match e {
            Error::InvalidUrl { .. } => " (expected redis://host:port or rediss://host:port)",
            _ => "",
        };
        eprintln!("redquorum: configuration error: {e}{hint}");
    } else {
        eprintln!("redquorum: cannot reach the masters: {e}");
    }
    exit::FAILED
}
