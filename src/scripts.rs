//! The Lua scripts that make each per-master step atomic, and how they are invoked.
//!
//! Scripts are sent as `EVALSHA`. A master that answers `NOSCRIPT` (restarted, or after
//! `SCRIPT FLUSH`) gets the scripts loaded again. An acquire is never re-sent as `EVAL`: that
//! second command would leave only once the first answer is back, possibly after the round's
//! rollback or the lock's release, and leave a key behind; the master votes no for that round.
//! Calls that are harmless when late (compare-and-delete, compare-and-expire, counter raises,
//! reads) fall back to `EVAL` with the source at once.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Cmd;

/// A duration as the scripts take it: whole milliseconds, as a decimal string (truncated, as
/// validity counts the TTL; quorum.rs).
pub(crate) fn millis(d: Duration) -> String {
    (d.as_millis() as u64).to_string()
}

/// One Lua script with its SHA1, computed once.
pub(crate) struct LuaScript {
    pub(crate) name: &'static str,
    pub(crate) source: &'static str,
    pub(crate) sha1: String,
}

impl LuaScript {
    fn new(name: &'static str, source: &'static str) -> Self {
        let sha1 = redis::Script::new(source).get_hash().to_owned();
        Self { name, source, sha1 }
    }

    /// A script built at run time (the batch script, batch.rs), kept for the whole process.
    pub(crate) fn generated(name: &'static str, source: String) -> Self {
        Self::new(name, Box::leak(source.into_boxed_str()))
    }
}

/// `SET NX PX` plus the fencing counter increment.
pub(crate) static ACQUIRE: LazyLock<LuaScript> =
    LazyLock::new(|| LuaScript::new("acquire", include_str!("../scripts/acquire.lua")));
/// Compare-and-delete.
pub(crate) static RELEASE: LazyLock<LuaScript> =
    LazyLock::new(|| LuaScript::new("release", include_str!("../scripts/release.lua")));
/// Compare-and-PEXPIRE.
pub(crate) static EXTEND: LazyLock<LuaScript> =
    LazyLock::new(|| LuaScript::new("extend", include_str!("../scripts/extend.lua")));
/// `counter = max(counter, token)` for the generation the client knows.
pub(crate) static FENCE_RAISE: LazyLock<LuaScript> =
    LazyLock::new(|| LuaScript::new("fence_raise", include_str!("../scripts/fence_raise.lua")));

/// Sealing, step 1: claim an unsealed master's fencing hash (fencing.rs).
pub(crate) static FENCE_CLAIM: LazyLock<LuaScript> =
    LazyLock::new(|| LuaScript::new("fence_claim", include_str!("../scripts/fence_claim.lua")));

/// Sealing, step 2: `counter = max(counter, seed)` and a new generation, if the claim holds.
pub(crate) static FENCE_SEAL: LazyLock<LuaScript> =
    LazyLock::new(|| LuaScript::new("fence_seal", include_str!("../scripts/fence_seal.lua")));

/// Declares a script from `scripts/<file>.lua`; its header comment there says what it takes
/// (KEYS, ARGV) and returns.
macro_rules! script {
    ($(#[$doc:meta])* $name:ident, $file:literal) => {
        $(#[$doc])*
        pub(crate) static $name: LazyLock<LuaScript> = LazyLock::new(|| {
            LuaScript::new($file, include_str!(concat!("../scripts/", $file, ".lua")))
        });
    };
}

script!(
    /// Multi-resource lock: all keys or none, plus the fencing counter increment.
    MULTI_ACQUIRE,
    "multi_acquire"
);
script!(
    /// Multi-resource lock: compare-and-PEXPIRE of every key.
    MULTI_EXTEND,
    "multi_extend"
);
script!(
    /// Multi-resource lock: compare-and-delete of every key.
    MULTI_RELEASE,
    "multi_release"
);
script!(
    /// Reentrant lock: add one hold of the owner.
    REENTRANT_ACQUIRE,
    "reentrant_acquire"
);
script!(
    /// Reentrant lock: extend one hold.
    REENTRANT_EXTEND,
    "reentrant_extend"
);
script!(
    /// Reentrant lock: remove one hold, delete at zero (also the rollback).
    REENTRANT_RELEASE,
    "reentrant_release"
);
script!(
    /// Fair lock: a ticket larger than every queued one.
    FAIR_TICKET,
    "fair_ticket"
);
script!(
    /// Fair lock: (re)join the queue, take the lock when free and at the head.
    FAIR_ACQUIRE,
    "fair_acquire"
);
script!(
    /// Fair lock: leave the queue and compare-and-delete the lock.
    FAIR_RELEASE,
    "fair_release"
);
script!(
    /// Remove a member from sorted sets: a waiter or writer that gives up.
    DEQUEUE,
    "dequeue"
);
script!(
    /// Read-write lock: a read lease unless a writer holds or waits.
    RW_READ_ACQUIRE,
    "rw_read_acquire"
);
script!(
    /// Read-write lock: extend a live read lease.
    RW_READ_EXTEND,
    "rw_read_extend"
);
script!(
    /// Read-write lock: drop a read lease (also the rollback).
    RW_READ_RELEASE,
    "rw_read_release"
);
script!(
    /// Read-write lock: register the writer's intent, take the write lock when no reader is left.
    RW_WRITE_ACQUIRE,
    "rw_write_acquire"
);
script!(
    /// Read-write lock: withdraw the intent, compare-and-delete the write lock.
    RW_WRITE_RELEASE,
    "rw_write_release"
);
script!(
    /// Semaphore: the lowest free permit slot.
    SEMAPHORE_ACQUIRE,
    "semaphore_acquire"
);
script!(
    /// Semaphore: extend the lease on the slot won.
    SEMAPHORE_EXTEND,
    "semaphore_extend"
);
script!(
    /// Semaphore: drop every lease of a token (also the rollback).
    SEMAPHORE_RELEASE,
    "semaphore_release"
);
script!(
    /// Semaphore: the slots held by live leases (read only).
    SEMAPHORE_HELD,
    "semaphore_held"
);

script!(
    /// Inspection: a basic lock's value and PTTL, read together.
    INSPECT,
    "inspect"
);
script!(
    /// Lock-delay: compare-and-PEXPIRE to ttl + delay.
    LOCK_DELAY_EXTEND,
    "lock_delay_extend"
);
script!(
    /// Lock-delay: compare-and-delete (a release frees the lock at once) and announce.
    LOCK_DELAY_RELEASE,
    "lock_delay_release"
);
script!(
    /// Election: take the leadership hash (owner, value, term, until) with the next token.
    ELECTION_ACQUIRE,
    "election_acquire"
);
script!(
    /// Election: extend the leadership (until and key expiry).
    ELECTION_EXTEND,
    "election_extend"
);
script!(
    /// Election: resign (compare-and-delete) and announce.
    ELECTION_RELEASE,
    "election_release"
);
script!(
    /// Election: record the won round's fencing token as the term.
    ELECTION_TERM,
    "election_term"
);
script!(
    /// Election: the leader on one master, by its own clock (read only).
    ELECTION_READ,
    "election_read"
);

/// The cache's versioned read and compare-and-set (see `cache::versioned`).
pub(crate) static CACHE_VERSIONED: LazyLock<LuaScript> = LazyLock::new(|| {
    LuaScript::new(
        "cache_versioned",
        include_str!("../scripts/cache_versioned.lua"),
    )
});

script!(
    /// Sharded lock: store a topology spec and raise the checked epoch.
    TOPOLOGY_WRITE,
    "topology_write"
);
script!(
    /// Sharded lock: read the stored topology spec.
    TOPOLOGY_READ,
    "topology_read"
);
script!(
    /// Sharded lock: one master's change lock (sharded/change.rs).
    TOPOLOGY_CHANGE_LOCK,
    "topology_change_lock"
);
script!(
    /// Sharded lock, sealing a master's topology, step 1: claim it (sharded/seal.rs).
    TOPOLOGY_CLAIM,
    "topology_claim"
);
script!(
    /// Sharded lock, sealing a master's topology, step 2: merge and seal, if the claim holds.
    TOPOLOGY_SEAL,
    "topology_seal"
);

/// Every script, for loading them on each new connection.
pub(crate) fn all() -> Vec<&'static LuaScript> {
    vec![
        &CACHE_VERSIONED,
        &ACQUIRE,
        &RELEASE,
        &EXTEND,
        &FENCE_RAISE,
        &FENCE_CLAIM,
        &FENCE_SEAL,
        &MULTI_ACQUIRE,
        &MULTI_EXTEND,
        &MULTI_RELEASE,
        &REENTRANT_ACQUIRE,
        &REENTRANT_EXTEND,
        &REENTRANT_RELEASE,
        &FAIR_TICKET,
        &FAIR_ACQUIRE,
        &FAIR_RELEASE,
        &DEQUEUE,
        &RW_READ_ACQUIRE,
        &RW_READ_EXTEND,
        &RW_READ_RELEASE,
        &RW_WRITE_ACQUIRE,
        &RW_WRITE_RELEASE,
        &SEMAPHORE_ACQUIRE,
        &SEMAPHORE_EXTEND,
        &SEMAPHORE_RELEASE,
        &SEMAPHORE_HELD,
        &INSPECT,
        &LOCK_DELAY_EXTEND,
        &LOCK_DELAY_RELEASE,
        &ELECTION_ACQUIRE,
        &ELECTION_EXTEND,
        &ELECTION_RELEASE,
        &ELECTION_TERM,
        &ELECTION_READ,
        &TOPOLOGY_WRITE,
        &TOPOLOGY_READ,
        &TOPOLOGY_CLAIM,
        &TOPOLOGY_SEAL,
        &TOPOLOGY_CHANGE_LOCK,
    ]
}

/// One script call, built once per round and shared by the calls to every master.
pub(crate) struct ScriptCall {
    script: &'static LuaScript,
    keys: usize,
    evalsha: Cmd,
}

impl ScriptCall {
    pub(crate) fn new(script: &'static LuaScript, keys: Vec<String>, args: Vec<String>) -> Self {
        let evalsha = Self::command("EVALSHA", &script.sha1, &keys, &args);
        Self {
            script,
            keys: keys.len(),
            evalsha,
        }
    }

    pub(crate) fn script(&self) -> &'static LuaScript {
        self.script
    }

    pub(crate) fn key_count(&self) -> usize {
        self.keys
    }

    /// The keys, then the arguments, as sent (for a batch entry, batch.rs).
    pub(crate) fn keys_and_args(&self) -> Vec<Vec<u8>> {
        self.evalsha
            .args_iter()
            .skip(3)
            .filter_map(|arg| match arg {
                redis::Arg::Simple(bytes) => Some(bytes.to_vec()),
                _ => None,
            })
            .collect()
    }

    /// Sized up front: growing a command argument by argument reallocates its buffers several
    /// times, on every round (counted by loadbench's allocations per pair).
    fn command(verb: &str, body: &str, keys: &[String], args: &[String]) -> Cmd {
        let bytes =
            verb.len() + body.len() + 4 + keys.iter().chain(args).map(String::len).sum::<usize>();
        let mut cmd = Cmd::with_capacity(3 + keys.len() + args.len(), bytes);
        cmd.arg(verb).arg(body).arg(keys.len()).arg(keys).arg(args);
        cmd
    }

    pub(crate) fn evalsha(&self) -> &Cmd {
        &self.evalsha
    }

    /// The fallback after `NOSCRIPT`: the same keys and arguments after `EVAL <source>`.
    pub(crate) fn eval(&self) -> Cmd {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(self.script.source);
        for arg in self.evalsha.args_iter().skip(2) {
            if let redis::Arg::Simple(bytes) = arg {
                cmd.arg(bytes);
            }
        }
        cmd
    }

    pub(crate) fn name(&self) -> &'static str {
        self.script.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eval_fallback_carries_the_same_keys_and_args() {
        let call = ScriptCall::new(
            &RELEASE,
            vec!["k".into()],
            vec!["tok".into(), "chan".into(), "7".into()],
        );
        let evalsha = call.evalsha().get_packed_command();
        let eval = call.eval().get_packed_command();
        let tail = b"$1\r\n1\r\n$1\r\nk\r\n$3\r\ntok\r\n$4\r\nchan\r\n$1\r\n7\r\n";
        assert!(evalsha.ends_with(tail));
        assert!(eval.ends_with(tail));
        assert!(eval.starts_with(b"*7\r\n$4\r\nEVAL\r\n"));
        assert!(
            String::from_utf8_lossy(&eval).contains(RELEASE.source),
            "EVAL carries the script source"
        );
    }

    #[test]
    fn hashes_are_sha1_hex() {
        for s in all() {
            assert_eq!(s.sha1.len(), 40, "{}", s.name);
            assert!(s.sha1.bytes().all(|b| b.is_ascii_hexdigit()));
        }
    }

    #[test]
    fn every_script_is_loaded_once_and_documents_its_interface() {
        let scripts = all();
        for (i, s) in scripts.iter().enumerate() {
            assert!(
                scripts[..i].iter().all(|o| o.sha1 != s.sha1),
                "{} twice",
                s.name
            );
            assert!(s.source.starts_with("-- "), "{}: header comment", s.name);
            assert!(s.source.contains("KEYS"), "{}: KEYS documented", s.name);
            assert!(s.source.contains("Returns"), "{}: reply documented", s.name);
        }
        let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts")).unwrap();
        assert_eq!(
            files.count(),
            scripts.len(),
            "a script in scripts/ is not in all()"
        );
    }
}
