//! The Lua scripts that make each per-master step atomic, and how they are invoked.
//!
//! Scripts are sent as `EVALSHA`; a master that answers `NOSCRIPT` (restarted, or after
//! `SCRIPT FLUSH`) gets the same call as `EVAL` with the source, which also puts the script back
//! into its cache, so recovery costs one extra round trip on that master only.

use std::sync::LazyLock;

use redis::Cmd;

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
/// `counter = max(counter, token)`.
pub(crate) static FENCE_RAISE: LazyLock<LuaScript> =
    LazyLock::new(|| LuaScript::new("fence_raise", include_str!("../scripts/fence_raise.lua")));

/// Every script, for loading them on each new connection.
pub(crate) fn all() -> [&'static LuaScript; 4] {
    [&ACQUIRE, &RELEASE, &EXTEND, &FENCE_RAISE]
}

/// One script call, built once per round and shared by the calls to every master.
pub(crate) struct ScriptCall {
    script: &'static LuaScript,
    evalsha: Cmd,
}

impl ScriptCall {
    pub(crate) fn new(script: &'static LuaScript, keys: Vec<String>, args: Vec<String>) -> Self {
        let evalsha = Self::command("EVALSHA", &script.sha1, &keys, &args);
        Self { script, evalsha }
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
}
