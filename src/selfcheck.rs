//! The masters self-check: what each master is configured to do that matters to a lock (does it
//! evict keys, does it persist them, which server process is it), read at build and on demand
//! ([`Redlock::masters_report`]).
//!
//! Everything is read in one pipelined exchange per master, bounded by the connect timeout.
//! `CONFIG GET` is what tells the settings exactly, but managed Redis often renames it or an
//! ACL forbids it; then `INFO memory` (`maxmemory_policy`) and `INFO persistence`
//! (`aof_enabled`) still tell most of it, and what neither tells is reported as unknown,
//! never guessed.

use std::fmt;
use std::sync::Arc;

use futures::future::join_all;
use redis::Value;

use crate::error::{Error, MasterReply, Result};
use crate::lock::Redlock;
use crate::master::Master;

/// The one `maxmemory-policy` under which Redis never removes a key before it expires.
pub const NO_EVICTION: &str = "noeviction";

/// What the self-check read from one master.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MasterReport {
    /// The master's index in the builder's list.
    pub index: usize,
    /// Its URL, password redacted.
    pub addr: String,
    /// What it reported, or why it could not be asked.
    pub settings: std::result::Result<MasterSettings, MasterReply>,
}

/// The settings of one master that a lock's safety depends on. `None` means unknown: neither
/// `CONFIG GET` nor `INFO` told it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MasterSettings {
    /// `redis_version` (`INFO server`).
    pub version: Option<String>,
    /// `run_id` of the server process (`INFO server`).
    pub run_id: Option<String>,
    /// `maxmemory-policy` (`CONFIG GET`, else `INFO memory`).
    pub maxmemory_policy: Option<String>,
    /// `maxmemory` in bytes, 0 for no limit (`CONFIG GET`, else `INFO memory`).
    pub maxmemory: Option<u64>,
    /// Whether the append-only file is on (`INFO persistence`, else `CONFIG GET appendonly`).
    pub aof_enabled: Option<bool>,
    /// `appendfsync` (`CONFIG GET` only: `INFO` does not report it).
    pub appendfsync: Option<String>,
    /// Whether `CONFIG GET` answered; false when it is forbidden (ACL) or renamed.
    pub config_readable: bool,
}

impl MasterSettings {
    /// Whether this master may remove lock keys before they expire: any `maxmemory-policy`
    /// other than `noeviction` (`volatile-*` included: lock keys have a TTL). `None` when the
    /// policy is unknown.
    pub fn evicts(&self) -> Option<bool> {
        self.maxmemory_policy.as_deref().map(|p| p != NO_EVICTION)
    }

    /// Whether this master keeps its keys across a restart: the append-only file is on.
    /// (RDB snapshots alone lose the keys written since the last one.) `None` when unknown.
    pub fn persists(&self) -> Option<bool> {
        self.aof_enabled
    }
}

impl MasterReport {
    /// What an operator must fix or know about this master, in words; empty when nothing.
    /// `quarantine` is whether the client runs with the restart quarantine, which covers
    /// masters without persistence.
    pub fn problems(&self, quarantine: bool) -> Vec<String> {
        let s = match &self.settings {
            Ok(s) => s,
            Err(why) => return vec![format!("not checked: {why}")],
        };
        let mut out = Vec::new();
        match (s.evicts(), &s.maxmemory_policy) {
            (Some(true), Some(policy)) => out.push(format!(
                "maxmemory-policy {policy} may evict lock keys before they expire \
                 (a lock can then be granted twice); set noeviction"
            )),
            (None, _) => out.push("maxmemory-policy unknown".into()),
            _ => {}
        }
        match s.persists() {
            Some(false) if !quarantine => out.push(
                "no append-only file and restart quarantine off: after a restart it forgets \
                 the locks it granted"
                    .into(),
            ),
            None if !quarantine => out.push("persistence unknown".into()),
            _ => {}
        }
        out
    }
}

/// The self-check of every master of a client, by index. `Display` prints a table.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MastersReport {
    /// One report per master, in the builder's order.
    pub masters: Vec<MasterReport>,
    /// Whether the client runs with the restart quarantine (it covers masters without
    /// persistence).
    pub restart_quarantine: bool,
}

impl MastersReport {
    /// The first master whose policy evicts keys, if any.
    pub fn first_evicting(&self) -> Option<&MasterReport> {
        self.masters
            .iter()
            .find(|m| m.settings.as_ref().is_ok_and(|s| s.evicts() == Some(true)))
    }
}

impl fmt::Display for MastersReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unknown = |v: &Option<String>| v.clone().unwrap_or_else(|| "?".into());
        writeln!(
            f,
            "{:<3} {:<28} {:<8} {:<12} {:<16} {:<5} {:<11} verdict",
            "#", "address", "version", "run_id", "maxmemory-policy", "aof", "appendfsync"
        )?;
        for m in &self.masters {
            let problems = m.problems(self.restart_quarantine);
            let verdict = if problems.is_empty() {
                "ok".to_owned()
            } else {
                problems.join("; ")
            };
            let Ok(s) = &m.settings else {
                writeln!(f, "{:<3} {:<28} {verdict}", m.index, m.addr)?;
                continue;
            };
            let run_id: String = unknown(&s.run_id).chars().take(12).collect();
            let aof = match s.aof_enabled {
                Some(true) => "yes",
                Some(false) => "no",
                None => "?",
            };
            writeln!(
                f,
                "{:<3} {:<28} {:<8} {:<12} {:<16} {:<5} {:<11} {verdict}",
                m.index,
                m.addr,
                unknown(&s.version),
                run_id,
                unknown(&s.maxmemory_policy),
                aof,
                unknown(&s.appendfsync),
            )?;
        }
        Ok(())
    }
}

impl Redlock {
    /// Reads from every master what its lock safety depends on: eviction policy, persistence,
    /// version and `run_id`. One pipelined exchange per master, concurrently, each bounded by
    /// the connect timeout; a master that cannot be asked (not connected right now, timed out)
    /// is reported with the reason.
    ///
    /// [`Builder::build`](crate::Builder::build) runs it once and logs a warning for every
    /// problem found (see [`Builder::refuse_evicting_masters`](crate::Builder::refuse_evicting_masters)).
    pub async fn masters_report(&self) -> MastersReport {
        let timeout = self.config().connect_timeout;
        let reads = self
            .master_set()
            .iter()
            .map(|master| read_master(master.clone(), timeout));
        MastersReport {
            masters: join_all(reads).await,
            restart_quarantine: self.config().restart_quarantine.is_some(),
        }
    }

    /// The build-time self-check: warns about every problem, and fails on an evicting master
    /// when asked to.
    pub(crate) async fn check_masters(&self) -> Result<()> {
        let report = self.masters_report().await;
        for m in &report.masters {
            for problem in m.problems(report.restart_quarantine) {
                tracing::warn!(master = m.index, addr = %m.addr, "master self-check: {problem}");
            }
        }
        if self.config().refuse_evicting
            && let Some(m) = report.first_evicting()
        {
            let policy = m
                .settings
                .as_ref()
                .ok()
                .and_then(|s| s.maxmemory_policy.clone());
            return Err(Error::EvictingMaster {
                index: m.index,
                addr: m.addr.clone(),
                policy: policy.unwrap_or_default(),
            });
        }
        Ok(())
    }
}

async fn read_master(master: Arc<Master>, timeout: std::time::Duration) -> MasterReport {
    let (index, addr) = (master.index, master.addr.clone());
    // Not waiting for a reconnect: at build, that would add a connect timeout for every
    // master that is down, to a build that already tolerates it.
    if !master.is_connected() {
        let settings = Err(MasterReply::Unavailable("not connected".into()));
        return MasterReport {
            index,
            addr,
            settings,
        };
    }
    let mut pipe = redis::pipe();
    for section in ["server", "memory", "persistence"] {
        pipe.cmd("INFO").arg(section);
    }
    for name in ["maxmemory-policy", "maxmemory", "appendonly", "appendfsync"] {
        pipe.cmd("CONFIG").arg("GET").arg(name);
    }
    let settings = master
        .pipeline(&pipe, timeout)
        .await
        .map(|values| parse_settings(&values));
    MasterReport {
        index,
        addr,
        settings,
    }
}

/// The settings from the pipeline's replies: three `INFO` texts, then four `CONFIG GET`s
/// (each an error reply when `CONFIG` is forbidden or renamed).
fn parse_settings(values: &[Value]) -> MasterSettings {
    let info = |i: usize| match values.get(i) {
        Some(v) => redis::from_redis_value::<String>(v.clone()).unwrap_or_default(),
        None => String::new(),
    };
    let (server, memory, persistence) = (info(0), info(1), info(2));
    let config = |i: usize| config_value(values.get(i));
    let policy = config(3).or_else(|| info_field(&memory, "maxmemory_policy"));
    let maxmemory = config(4).or_else(|| info_field(&memory, "maxmemory"));
    let aof = info_field(&persistence, "aof_enabled")
        .map(|v| v == "1")
        .or_else(|| config(5).map(|v| v == "yes"));
    MasterSettings {
        version: info_field(&server, "redis_version"),
        run_id: info_field(&server, "run_id"),
        maxmemory_policy: policy,
        maxmemory: maxmemory.and_then(|v| v.parse().ok()),
        aof_enabled: aof,
        appendfsync: config(6),
        config_readable: config(3).is_some(),
    }
}

/// The value of a `CONFIG GET name` reply (`[name, value]`, or a map in RESP3); `None` for an
/// error reply or an empty answer.
fn config_value(value: Option<&Value>) -> Option<String> {
    let pairs: Vec<String> = match value? {
        Value::Map(map) => map
            .iter()
            .flat_map(|(k, v)| [k.clone(), v.clone()])
            .filter_map(|v| redis::from_redis_value(v).ok())
            .collect(),
        v => redis::from_redis_value(v.clone()).ok()?,
    };
    pairs.get(1).cloned()
}

/// The value of `name:value` in an `INFO` text.
fn info_field(info: &str, name: &str) -> Option<String> {
    info.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key == name).then(|| value.trim().to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn pair(name: &str, value: &str) -> Value {
        Value::Array(vec![text(name), text(value)])
    }

    fn forbidden() -> Value {
        redis::parse_redis_value(b"-NOPERM this user has no permissions to run 'config'\r\n")
            .expect("an error reply")
    }

    const SERVER: &str = "# Server\r\nredis_version:7.0.15\r\nrun_id:abc\r\n";
    const MEMORY: &str = "# Memory\r\nmaxmemory:1048576\r\nmaxmemory_policy:allkeys-lru\r\n";
    const PERSISTENCE: &str = "# Persistence\r\naof_enabled:0\r\n";

    #[test]
    fn config_wins_and_info_is_the_fallback() {
        let all = [
            text(SERVER),
            text(MEMORY),
            text(PERSISTENCE),
            pair("maxmemory-policy", "noeviction"),
            pair("maxmemory", "0"),
            pair("appendonly", "yes"),
            pair("appendfsync", "always"),
        ];
        let s = parse_settings(&all);
        assert_eq!(s.maxmemory_policy.as_deref(), Some("noeviction"));
        assert_eq!(s.maxmemory, Some(0));
        assert_eq!(s.aof_enabled, Some(false), "INFO says what runs now");
        assert_eq!(s.appendfsync.as_deref(), Some("always"));
        assert!(s.config_readable);

        let no_config = [
            text(SERVER),
            text(MEMORY),
            text(PERSISTENCE),
            forbidden(),
            forbidden(),
            forbidden(),
            forbidden(),
        ];
        let s = parse_settings(&no_config);
        assert_eq!(s.version.as_deref(), Some("7.0.15"));
        assert_eq!(s.run_id.as_deref(), Some("abc"));
        assert_eq!(s.maxmemory_policy.as_deref(), Some("allkeys-lru"));
        assert_eq!(s.maxmemory, Some(1_048_576));
        assert_eq!(s.evicts(), Some(true));
        assert_eq!(s.persists(), Some(false));
        assert_eq!(s.appendfsync, None);
        assert!(!s.config_readable);
    }

    #[test]
    fn what_nobody_tells_is_unknown() {
        let bare = [text(""), text(""), text(""), forbidden()];
        let s = parse_settings(&bare);
        assert_eq!(s, MasterSettings::default());
        assert_eq!(s.evicts(), None);
        let report = MasterReport {
            index: 0,
            addr: "redis://x:1".into(),
            settings: Ok(s),
        };
        assert_eq!(report.problems(true), vec!["maxmemory-policy unknown"]);
        assert_eq!(report.problems(false).len(), 2);
    }

    #[test]
    fn volatile_policies_evict_lock_keys_too() {
        for (policy, evicts) in [
            ("noeviction", false),
            ("volatile-lru", true),
            ("volatile-ttl", true),
            ("allkeys-random", true),
        ] {
            let s = MasterSettings {
                maxmemory_policy: Some(policy.into()),
                ..MasterSettings::default()
            };
            assert_eq!(s.evicts(), Some(evicts), "{policy}");
        }
    }
}
