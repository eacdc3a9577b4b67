//! `SimMaster`: one simulated Redis master: its identity, clock, keyspace and script cache,
//! behind the one entry point a network simulator needs, [`SimMaster::execute`].

use std::cell::RefCell;
use std::rc::Rc;

use rand::RngCore;

use crate::commands::{self, Lookup, Store};
use crate::data::Data;
use crate::keyspace::Entry;
use crate::lua::LuaEngine;
use crate::numbers::parse_i64;
use crate::value::{NOT_INTEGER, Value};

/// The reply to EVALSHA for a script that is not cached, exactly as Redis words it (the
/// library matches on it to fall back to EVAL).
pub const NOSCRIPT: &str = "NOSCRIPT No matching script. Please use EVAL.";

/// A 40-hex-digit run_id drawn from a seeded RNG (Redis draws it from /dev/urandom; a
/// simulation must replay, so never from the OS here).
pub fn random_run_id(rng: &mut impl RngCore) -> String {
    let mut bytes = [0u8; 20];
    rng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One simulated Redis 7.0 master. Single-threaded and deterministic: its only inputs are the
/// commands given to [`execute`](SimMaster::execute) and the clock set by the caller.
pub struct SimMaster {
    // Shared with the Lua interpreter's redis.call; never borrowed across a script run.
    store: Rc<RefCell<Store>>,
    lua: LuaEngine,
    run_id: String,
    started_at_ms: u64,
}

impl SimMaster {
    /// A fresh, empty master whose wall clock reads `now_ms`.
    pub fn new(run_id: impl Into<String>, now_ms: u64) -> SimMaster {
        let store = Rc::new(RefCell::new(Store {
            now_us: now_ms * 1000,
            ..Store::default()
        }));
        SimMaster {
            lua: LuaEngine::new(store.clone()),
            store,
            run_id: run_id.into(),
            started_at_ms: now_ms,
        }
    }

    /// A fresh master with a run_id drawn from `rng`.
    pub fn with_rng(rng: &mut impl RngCore, now_ms: u64) -> SimMaster {
        SimMaster::new(random_run_id(rng), now_ms)
    }

    /// The process identity INFO reports.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The master's wall clock, in ms since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        self.store.borrow().now_ms()
    }

    /// Sets the master's wall clock. It may jump backwards (a wall-clock step), and keys then
    /// live longer, as on a real master.
    pub fn set_now_ms(&mut self, now_ms: u64) {
        self.store.borrow_mut().now_us = now_ms * 1000;
    }

    /// Sets the wall clock with microseconds, which only TIME shows.
    pub fn set_now_us(&mut self, now_us: u64) {
        self.store.borrow_mut().now_us = now_us;
    }

    /// Moves the wall clock forward.
    pub fn advance_ms(&mut self, ms: u64) {
        self.store.borrow_mut().now_us += ms * 1000;
    }

    /// Models a restart: a new process (new `run_id`, uptime from now), with or without the
    /// data (as with or without persistence). The script cache is always lost, as in Redis.
    pub fn restart(&mut self, keep_data: bool, new_run_id: impl Into<String>) {
        if !keep_data {
            self.store.borrow_mut().keyspace.clear();
        }
        self.lua.flush();
        self.run_id = new_run_id.into();
        self.started_at_ms = self.now_ms();
    }

    /// Sets how many subscribers PUBLISH finds on a channel (no client subscribes here).
    pub fn set_subscribers(&mut self, channel: &[u8], count: i64) {
        self.store
            .borrow_mut()
            .subscribers
            .insert(channel.to_vec(), count);
    }

    /// Takes the messages published since the last call: (channel, message), in order.
    pub fn take_published(&mut self) -> Vec<(Vec<u8>, Vec<u8>)> {
        std::mem::take(&mut self.store.borrow_mut().published)
    }

    /// Every live key at the current time with its value and deadline, in key order.
    pub fn dump(&self) -> Vec<(Vec<u8>, Data, Option<u64>)> {
        let store = self.store.borrow();
        store
            .keyspace
            .live(store.now_ms())
            .map(|(k, Entry { data, expires_at })| (k.to_vec(), data.clone(), *expires_at))
            .collect()
    }

    /// The value and deadline of a live string key at `now_ms` (the master's clock), without
    /// touching the keyspace; `None` for a missing, expired or non-string key.
    pub fn string_entry(&self, key: &[u8], now_ms: u64) -> Option<(Vec<u8>, Option<u64>)> {
        let store = self.store.borrow();
        match store.keyspace.peek(key, now_ms)? {
            Entry {
                data: Data::Str(value),
                expires_at,
            } => Some((value.clone(), *expires_at)),
            _ => None,
        }
    }

    /// Runs one command, as a client would send it: `args[0]` is the name (any case).
    pub fn execute(&mut self, args: &[Vec<u8>]) -> Value {
        let Some(first) = args.first() else {
            return Value::err("empty command");
        };
        let name = String::from_utf8_lossy(first).to_ascii_lowercase();
        match commands::lookup(&name, args.len()) {
            Lookup::Ok => return commands::run(&mut self.store.borrow_mut(), &name, args),
            Lookup::WrongArity => return commands::wrong_arity(&name),
            Lookup::Unknown => {}
        }
        let rest = &args[1..];
        match name.as_str() {
            "eval" | "evalsha" if rest.len() < 2 => commands::wrong_arity(&name),
            "eval" => match self.lua.load(&rest[0]) {
                Ok(sha) => self.run_script(&sha, &rest[1..]),
                Err(e) => e,
            },
            "evalsha" => {
                // Redis matches the sha case-insensitively.
                let sha = String::from_utf8_lossy(&rest[0]).to_ascii_lowercase();
                if self.lua.exists(&sha) {
                    self.run_script(&sha, &rest[1..])
                } else {
                    Value::Error(NOSCRIPT.into())
                }
            }
            "script" => self.script(rest),
            "info" => self.info(rest),
            "flushall" => {
                self.store.borrow_mut().keyspace.clear();
                Value::ok()
            }
            "config" => config(rest),
            _ => {
                let mut text = format!("unknown command '{}', with args beginning with: ", name);
                for arg in rest {
                    text.push_str(&format!("'{}' ", String::from_utf8_lossy(arg)));
                }
                Value::err(text)
            }
        }
    }

    /// EVAL / EVALSHA after the script is known: `rest` is numkeys, keys, then ARGV.
    fn run_script(&mut self, sha: &str, rest: &[Vec<u8>]) -> Value {
        let Some(numkeys) = parse_i64(&rest[0]) else {
            return Value::Error(NOT_INTEGER.into());
        };
        if numkeys < 0 {
            return Value::err("Number of keys can't be negative");
        }
        let numkeys = numkeys as usize;
        if numkeys > rest.len() - 1 {
            return Value::err("Number of keys can't be greater than number of args");
        }
        let (keys, argv) = rest[1..].split_at(numkeys);
        self.lua.run(sha, keys, argv)
    }

    /// SCRIPT LOAD | EXISTS | FLUSH.
    fn script(&mut self, rest: &[Vec<u8>]) -> Value {
        let sub = rest
            .first()
            .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase());
        match (sub.as_deref(), rest.len()) {
            (Some("load"), 2) => match self.lua.load(&rest[1]) {
                Ok(sha) => Value::bulk(sha),
                Err(e) => e,
            },
            (Some("exists"), n) if n >= 2 => Value::Array(
                rest[1..]
                    .iter()
                    .map(|sha| {
                        let sha = String::from_utf8_lossy(sha).to_ascii_lowercase();
                        Value::Int(self.lua.exists(&sha) as i64)
                    })
                    .collect(),
            ),
            // ASYNC and SYNC differ only in when memory is freed.
            (Some("flush"), 1) => {
                self.lua.flush();
                Value::ok()
            }
            (Some("flush"), 2)
                if matches!(
                    String::from_utf8_lossy(&rest[1])
                        .to_ascii_lowercase()
                        .as_str(),
                    "async" | "sync"
                ) =>
            {
                self.lua.flush();
                Value::ok()
            }
            _ => Value::err("unknown subcommand or wrong number of arguments for 'script' command"),
        }
    }

    /// INFO: only the server section, only the lines the library reads (and the version, for
    /// a reader who wonders what is modelled).
    fn info(&self, rest: &[Vec<u8>]) -> Value {
        let section = rest
            .first()
            .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase());
        if !matches!(
            section.as_deref(),
            None | Some("server") | Some("all") | Some("default")
        ) {
            return Value::bulk("");
        }
        let uptime_s = self.now_ms().saturating_sub(self.started_at_ms) / 1000;
        Value::bulk(format!(
            "# Server\r\nredis_version:7.0.15\r\nredquorum_sim:1\r\nrun_id:{}\r\nuptime_in_seconds:{}\r\nuptime_in_days:{}\r\n",
            self.run_id,
            uptime_s,
            uptime_s / 86_400
        ))
    }
}

/// CONFIG GET maxmemory-policy: the library checks that keys are never evicted.
fn config(rest: &[Vec<u8>]) -> Value {
    let sub = rest
        .first()
        .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase());
    match (sub.as_deref(), rest.get(1)) {
        (Some("get"), Some(pattern)) if pattern.eq_ignore_ascii_case(b"maxmemory-policy") => {
            Value::Array(vec![
                Value::bulk("maxmemory-policy"),
                Value::bulk("noeviction"),
            ])
        }
        (Some("get"), Some(_)) => Value::Array(vec![]),
        _ => Value::err("CONFIG: only GET maxmemory-policy is modelled by redquorum-sim"),
    }
}
