//! The Lua scripts that make each per-master step atomic, and how they are invoked.
//!
//! Each script is declared once, in the table of the `scripts!` macro below, which also yields
//! [`all`], the list every consumer takes: the script load at connect and the batch script
//! (batch.rs), and through `crate::script_sources` the simulator's differential test and
//! loadbench. A script's text is `scripts/<name>.lua` with its pieces expanded: a line
//! `-- piece: <name> [<argument>...]` stands for the block kept once in
//! `scripts/pieces/<name>.lua` (the fencing gate, the fencing take, the topology check, the
//! announced delete), its `$1`, `$2`, ... replaced by the arguments. Assembly happens once per
//! process (the `LazyLock`s), and the SHA1 is that of the assembled text, which is what
//! masters run.
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

/// One Lua script: its assembled text (pieces expanded) and its SHA1, computed once.
pub(crate) struct LuaScript {
    pub(crate) name: &'static str,
    pub(crate) source: &'static str,
    pub(crate) sha1: String,
    /// The text as written in `scripts/<name>.lua`, piece markers included.
    #[cfg(test)]
    template: &'static str,
}

impl LuaScript {
    fn new(name: &'static str, source: &'static str) -> Self {
        let sha1 = redis::Script::new(source).get_hash().to_owned();
        Self {
            name,
            source,
            sha1,
            #[cfg(test)]
            template: source,
        }
    }

    /// A script of the table below: `scripts/<name>.lua` with its piece markers expanded.
    fn assembled(name: &'static str, template: &'static str) -> Self {
        let script = Self::new(name, Box::leak(assemble(name, template).into_boxed_str()));
        Self {
            #[cfg(test)]
            template,
            ..script
        }
    }

    /// A script built at run time (the batch script, batch.rs), kept for the whole process.
    pub(crate) fn generated(name: &'static str, source: String) -> Self {
        Self::new(name, Box::leak(source.into_boxed_str()))
    }
}

/// The line that names a piece in a script: `-- piece: <name> [<argument>...]`, indented as the
/// piece's lines are to be.
const PIECE_MARKER: &str = "-- piece: ";

/// The pieces: blocks of Lua that several scripts share, kept once in `scripts/pieces/`. A
/// piece's leading comment lines document it and are not copied; `$1`, `$2`, ... in its text
/// stand for the marker's arguments (which key holds the fencing hash differs by script).
const PIECES: &[(&str, &str)] = &[
    (
        "fence_gate",
        include_str!("../scripts/pieces/fence_gate.lua"),
    ),
    (
        "fence_take",
        include_str!("../scripts/pieces/fence_take.lua"),
    ),
    (
        "delete_and_announce",
        include_str!("../scripts/pieces/delete_and_announce.lua"),
    ),
    (
        "topology_check",
        include_str!("../scripts/pieces/topology_check.lua"),
    ),
];

/// `template` with every piece marker replaced by the piece's text, indented as the marker and
/// with its arguments filled in. Panics on an unknown piece or an argument left unfilled: the
/// scripts are assembled at first use, and the unit tests below assemble every one.
fn assemble(name: &str, template: &str) -> String {
    let mut out = String::with_capacity(template.len() * 2);
    for line in template.split_inclusive('\n') {
        let code = line.trim_start();
        let Some(marker) = code.strip_prefix(PIECE_MARKER) else {
            out.push_str(line);
            continue;
        };
        let indent = &line[..line.len() - code.len()];
        let mut words = marker.split_whitespace();
        let piece = words.next().unwrap_or_default();
        let args: Vec<&str> = words.collect();
        let (_, text) = PIECES
            .iter()
            .find(|(p, _)| *p == piece)
            .unwrap_or_else(|| panic!("scripts/{name}.lua names an unknown piece {piece:?}"));
        for piece_line in text.lines().skip_while(|l| l.starts_with("--")) {
            let mut filled = piece_line.to_owned();
            // From the highest, so that $1 does not eat the start of $10.
            for (i, arg) in args.iter().enumerate().rev() {
                filled = filled.replace(&format!("${}", i + 1), arg);
            }
            assert!(
                !filled.contains('$'),
                "scripts/{name}.lua: piece {piece} needs more arguments than {args:?}"
            );
            if !filled.is_empty() {
                out.push_str(indent);
            }
            out.push_str(&filled);
            out.push('\n');
        }
    }
    out
}

/// Declares every script once, from `scripts/<file>.lua` (its header comment there says what
/// it takes, KEYS and ARGV, and returns), and [`all`], the list of them.
macro_rules! scripts {
    ($($(#[$doc:meta])* $name:ident = $file:literal;)*) => {
        $(
            $(#[$doc])*
            pub(crate) static $name: LazyLock<LuaScript> = LazyLock::new(|| {
                LuaScript::assembled($file, include_str!(concat!("../scripts/", $file, ".lua")))
            });
        )*

        /// Every script, for loading them on each new connection, for the batch script
        /// (batch.rs) and for the simulator's differential test (`crate::script_sources`).
        pub(crate) fn all() -> Vec<&'static LuaScript> {
            vec![$(&$name),*]
        }
    };
}

scripts! {
    /// The cache's versioned read and compare-and-set (see `cache::versioned`).
    CACHE_VERSIONED = "cache_versioned";
    /// `SET NX PX` plus the fencing counter increment.
    ACQUIRE = "acquire";
    /// Compare-and-delete.
    RELEASE = "release";
    /// Compare-and-PEXPIRE.
    EXTEND = "extend";
    /// `counter = max(counter, token)` for the generation the client knows.
    FENCE_RAISE = "fence_raise";
    /// Sealing, step 1: claim an unsealed master's fencing hash (fencing.rs).
    FENCE_CLAIM = "fence_claim";
    /// Sealing, step 2: `counter = max(counter, seed)` and a new generation, if the claim holds.
    FENCE_SEAL = "fence_seal";
    /// Multi-resource lock: all keys or none, plus the fencing counter increment.
    MULTI_ACQUIRE = "multi_acquire";
    /// Multi-resource lock: compare-and-PEXPIRE of every key.
    MULTI_EXTEND = "multi_extend";
    /// Multi-resource lock: compare-and-delete of every key.
    MULTI_RELEASE = "multi_release";
    /// Reentrant lock: add one hold of the owner.
    REENTRANT_ACQUIRE = "reentrant_acquire";
    /// Reentrant lock: extend one hold.
    REENTRANT_EXTEND = "reentrant_extend";
    /// Reentrant lock: remove one hold, delete at zero (also the rollback).
    REENTRANT_RELEASE = "reentrant_release";
    /// Fair lock: a ticket larger than every queued one.
    FAIR_TICKET = "fair_ticket";
    /// Fair lock: (re)join the queue, take the lock when free and at the head.
    FAIR_ACQUIRE = "fair_acquire";
    /// Fair lock: leave the queue and compare-and-delete the lock.
    FAIR_RELEASE = "fair_release";
    /// Remove a member from sorted sets: a waiter or writer that gives up.
    DEQUEUE = "dequeue";
    /// Read-write lock: a read lease unless a writer holds or waits.
    RW_READ_ACQUIRE = "rw_read_acquire";
    /// Read-write lock: extend a live read lease.
    RW_READ_EXTEND = "rw_read_extend";
    /// Read-write lock: drop a read lease (also the rollback).
    RW_READ_RELEASE = "rw_read_release";
    /// Read-write lock: register the writer's intent, take the write lock when no reader is left.
    RW_WRITE_ACQUIRE = "rw_write_acquire";
    /// Read-write lock: withdraw the intent, compare-and-delete the write lock.
    RW_WRITE_RELEASE = "rw_write_release";
    /// Semaphore: the lowest free permit slot.
    SEMAPHORE_ACQUIRE = "semaphore_acquire";
    /// Semaphore: extend the lease on the slot won.
    SEMAPHORE_EXTEND = "semaphore_extend";
    /// Semaphore: drop every lease of a token (also the rollback).
    SEMAPHORE_RELEASE = "semaphore_release";
    /// Semaphore: the slots held by live leases (read only).
    SEMAPHORE_HELD = "semaphore_held";
    /// Inspection: a basic lock's value and PTTL, read together.
    INSPECT = "inspect";
    /// Lock-delay: compare-and-PEXPIRE to ttl + delay.
    LOCK_DELAY_EXTEND = "lock_delay_extend";
    /// Lock-delay: compare-and-delete (a release frees the lock at once) and announce.
    LOCK_DELAY_RELEASE = "lock_delay_release";
    /// Election: take the leadership hash (owner, value, term, until) with the next token.
    ELECTION_ACQUIRE = "election_acquire";
    /// Election: extend the leadership (until and key expiry).
    ELECTION_EXTEND = "election_extend";
    /// Election: resign (compare-and-delete) and announce.
    ELECTION_RELEASE = "election_release";
    /// Election: record the won round's fencing token as the term.
    ELECTION_TERM = "election_term";
    /// Election: the leader on one master, by its own clock (read only).
    ELECTION_READ = "election_read";
    /// Sharded lock: store a topology spec and raise the checked epoch.
    TOPOLOGY_WRITE = "topology_write";
    /// Sharded lock: read the stored topology spec.
    TOPOLOGY_READ = "topology_read";
    /// Sharded lock, sealing a master's topology, step 1: claim it (sharded/seal.rs).
    TOPOLOGY_CLAIM = "topology_claim";
    /// Sharded lock, sealing a master's topology, step 2: merge and seal, if the claim holds.
    TOPOLOGY_SEAL = "topology_seal";
    /// Sharded lock: one master's change lock (sharded/change.rs).
    TOPOLOGY_CHANGE_LOCK = "topology_change_lock";
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
        let lua = files
            .map(|f| f.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "lua"))
            .count();
        assert_eq!(lua, scripts.len(), "a script in scripts/ is not in all()");
    }

    /// Where each piece stands, as the scripts had these blocks written out before they were
    /// pieces (issue 21): a script that stops using one, or starts to, changes this list.
    const USES: &[(&str, &str)] = &[
        ("acquire", "fence_gate KEYS[2]"),
        ("acquire", "fence_take KEYS[2]"),
        ("election_acquire", "fence_gate KEYS[2]"),
        ("election_release", "delete_and_announce KEYS[1]"),
        ("fair_acquire", "fence_gate KEYS[4]"),
        ("fair_acquire", "fence_take KEYS[4]"),
        ("lock_delay_release", "delete_and_announce KEYS[1]"),
        ("multi_acquire", "fence_gate KEYS[1]"),
        ("multi_acquire", "topology_check KEYS[2]"),
        ("multi_extend", "topology_check KEYS[1]"),
        ("reentrant_acquire", "fence_gate KEYS[2]"),
        ("reentrant_acquire", "fence_take KEYS[2]"),
        ("rw_read_acquire", "fence_gate KEYS[4]"),
        ("rw_read_acquire", "fence_take KEYS[4]"),
        ("rw_write_acquire", "fence_gate KEYS[4]"),
        ("rw_write_acquire", "fence_take KEYS[4]"),
        ("semaphore_acquire", "fence_gate KEYS[2]"),
    ];

    #[test]
    fn every_piece_is_expanded_where_it_was_used() {
        let mut found = Vec::new();
        for s in all() {
            for line in s.template.lines() {
                if let Some(marker) = line.trim_start().strip_prefix(PIECE_MARKER) {
                    found.push((s.name, marker.trim_end()));
                }
            }
            assert!(
                !s.source.contains("-- piece:"),
                "{}: a piece marker left unexpanded",
                s.name
            );
            assert!(
                !s.source.contains('$'),
                "{}: a piece argument unfilled",
                s.name
            );
        }
        found.sort();
        let mut expected = USES.to_vec();
        expected.sort();
        assert_eq!(found, expected, "the scripts' piece markers");
        for (name, _) in PIECES {
            assert!(
                USES.iter().any(|(_, m)| m.split(' ').next() == Some(name)),
                "piece {name} is used nowhere"
            );
        }
    }

    #[test]
    fn a_piece_expands_to_its_text_indented_with_its_arguments() {
        let fence_gate = "local gen = false\n\
                          if ARGV[3] == '1' then\n  \
                          gen = redis.call('HGET', KEYS[4], 'gen')\n  \
                          if not gen then\n    return -2\n  end\nend\n";
        assert!(FAIR_ACQUIRE.source.contains(fence_gate));
        let take = "if ok then\n  if gen then\n    \
                    return {redis.call('HINCRBY', KEYS[2], 'n', 1), gen}\n  end\n  \
                    return 0\nend\nreturn -1\n";
        assert_eq!(
            assemble(
                "t",
                "if ok then\n  -- piece: fence_take KEYS[2]\nend\nreturn -1\n"
            ),
            take
        );
        // The marker's comment header (what KEYS and ARGV mean) stays; nothing else changes.
        let header = ACQUIRE.template.split(PIECE_MARKER).next().unwrap();
        assert!(header.len() > 100 && ACQUIRE.source.starts_with(header));
    }

    #[test]
    #[should_panic(expected = "unknown piece")]
    fn an_unknown_piece_is_refused() {
        assemble("t", "-- piece: fence_gates KEYS[1]\n");
    }

    #[test]
    #[should_panic(expected = "needs more arguments")]
    fn a_missing_argument_is_refused() {
        assemble("t", "-- piece: fence_gate\n");
    }
}
