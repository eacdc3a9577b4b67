//! Differential test: every script of the library's table (`scripts/*.lua` as assembled from
//! its pieces, `redquorum::sim::scripts()`) runs on a `SimMaster` and on a real
//! `redis-server` with the same inputs; after every step the replies must be equal and so must
//! the keyspaces (type, value, TTL; wall-clock-derived numbers within a small tolerance).
//!
//! The model's clock is set from the real server's TIME before each step. Expiry cases use
//! TTLs of a few ms and sleep past them before the next step, so both sides agree on what has
//! expired; all other TTLs are at least 10 s.
//!
//! Fixed scenarios cover the paths of each script; seeded random runs mix scripts on a small
//! pool of keys (sometimes of the wrong type). `SIM_SEED=n` replays one random run.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use redquorum_sim::{NOSCRIPT, SimMaster, Value};
use support::compare::{diff, dump, reply_eq};
use support::resp::RespClient;
use support::server::RealServer;
use support::{Exec, args};

/// Sleep that outlasts every "tiny" TTL used here (at most 5 ms) with margin for timer slack.
const PAST_TINY: Duration = Duration::from_millis(12);

fn scripts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts")
}

/// Every script of the library's table, by name, with the text the library sends (its pieces
/// expanded). A new script cannot be skipped: the random generator panics on a name it does
/// not know, and the scenarios must have run each one; and every file in scripts/ must be in
/// the table.
fn all_scripts() -> BTreeMap<String, String> {
    let out: BTreeMap<String, String> = redquorum::sim::scripts()
        .into_iter()
        .map(|(name, source)| (name.to_owned(), source.to_owned()))
        .collect();
    for entry in std::fs::read_dir(scripts_dir()).expect("scripts/ exists") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "lua") {
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            assert!(
                out.contains_key(&name),
                "scripts/{name}.lua is not in the library's script table (src/scripts.rs)"
            );
        }
    }
    assert!(out.len() >= 20, "only {} scripts in the table", out.len());
    out
}

struct Harness {
    // Field order: the client closes before the server is killed.
    real: RespClient,
    _server: RealServer,
    sim: SimMaster,
    scripts: BTreeMap<String, String>,
    shas: BTreeMap<String, String>,
    ran: BTreeMap<String, usize>,
    steps: usize,
    error_replies: usize,
    trace: Vec<String>,
    context: String,
}

impl Harness {
    fn new() -> Harness {
        let server = RealServer::start();
        let real = RespClient::connect(server.port);
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let sim = SimMaster::with_rng(&mut rng, 0);
        let mut h = Harness {
            real,
            _server: server,
            sim,
            scripts: all_scripts(),
            shas: BTreeMap::new(),
            ran: BTreeMap::new(),
            steps: 0,
            error_replies: 0,
            trace: Vec::new(),
            context: String::new(),
        };
        h.load_scripts();
        h
    }

    fn load_scripts(&mut self) {
        let scripts = self.scripts.clone();
        for (name, source) in &scripts {
            let load = vec![
                b"SCRIPT".to_vec(),
                b"LOAD".to_vec(),
                source.as_bytes().to_vec(),
            ];
            let real = self.real.exec(&load);
            let sim = self.sim.execute(&load);
            assert_eq!(real, sim, "SCRIPT LOAD of {name}");
            let Value::Bulk(sha) = real else {
                panic!("SCRIPT LOAD {name}: {real:?}")
            };
            self.shas
                .insert(name.clone(), String::from_utf8(sha).unwrap());
        }
    }

    fn sync_clock(&mut self) {
        let Value::Array(t) = self.real.exec(&args(&["TIME"])) else {
            panic!("TIME")
        };
        let num = |v: &Value| match v {
            Value::Bulk(b) => std::str::from_utf8(b).unwrap().parse::<u64>().unwrap(),
            other => panic!("TIME part {other:?}"),
        };
        self.sim.set_now_us(num(&t[0]) * 1_000_000 + num(&t[1]));
    }

    fn fail(&self, what: String) -> ! {
        let start = self.trace.len().saturating_sub(25);
        panic!(
            "{}\n{what}\nlast steps (of {}):\n  {}",
            self.context,
            self.steps,
            self.trace[start..].join("\n  ")
        );
    }

    /// Runs one command on both (clock synced first), compares replies and keyspaces, and
    /// returns the reply.
    fn both(&mut self, command: Vec<Vec<u8>>, label: String) -> Value {
        self.sync_clock();
        let real = self.real.exec(&command);
        let sim = self.sim.execute(&command);
        self.steps += 1;
        self.error_replies += real.is_error() as usize;
        self.trace.push(format!("{label} -> {real:?}"));
        if !replies_agree(&label, &real, &sim) {
            self.fail(format!(
                "reply differs for {label}:\n  redis-server {real:?}\n  SimMaster    {sim:?}"
            ));
        }
        self.compare_keyspace();
        real
    }

    fn compare_keyspace(&mut self) {
        let Value::Array(real_keys) = self.real.exec(&args(&["KEYS", "*"])) else {
            panic!("KEYS")
        };
        let mut keys: Vec<Vec<u8>> = real_keys
            .into_iter()
            .map(|k| match k {
                Value::Bulk(b) => b,
                other => panic!("key {other:?}"),
            })
            .collect();
        keys.extend(self.sim.dump().into_iter().map(|(k, _, _)| k));
        keys.sort();
        keys.dedup();
        let real = dump(&mut self.real, keys.clone());
        let sim = dump(&mut self.sim, keys);
        let differences = diff(&real, &sim);
        if !differences.is_empty() {
            self.fail(format!("keyspace differs:\n{}", differences.join("\n")));
        }
    }

    /// EVALSHA of a script of the table on both.
    fn script(&mut self, name: &str, keys: &[&str], argv: &[&str]) -> Value {
        let sha = self
            .shas
            .get(name)
            .unwrap_or_else(|| panic!("no script {name}"))
            .clone();
        let mut command = args(&["EVALSHA", &sha, &keys.len().to_string()]);
        command.extend(args(keys));
        command.extend(args(argv));
        *self.ran.entry(name.to_owned()).or_default() += 1;
        self.both(command, format!("{name} KEYS={keys:?} ARGV={argv:?}"))
    }

    /// A client-facing command on both.
    fn command(&mut self, items: &[&str]) -> Value {
        self.both(args(items), format!("{items:?}"))
    }

    fn flush(&mut self) {
        assert_eq!(self.command(&["FLUSHALL"]), Value::ok());
    }

    fn past_tiny(&self) {
        std::thread::sleep(PAST_TINY);
    }
}

/// The inspect script's PTTL and election_read's time left of the lease are read from each
/// side's own clock, a moment apart: they may straddle a millisecond boundary. Everything else
/// must agree as `reply_eq` says.
fn replies_agree(label: &str, real: &Value, sim: &Value) -> bool {
    if (label.starts_with("inspect ") || label.starts_with("election_read "))
        && let (Value::Array(r), Value::Array(s)) = (real, sim)
        && let ([rv @ .., Value::Int(rt)], [sv @ .., Value::Int(st)]) = (r.as_slice(), s.as_slice())
        && rv.len() == sv.len()
    {
        return rv.iter().zip(sv).all(|(r, s)| reply_eq(r, s)) && (rt - st).abs() <= 2;
    }
    reply_eq(real, sim)
}

fn int(n: i64) -> Value {
    Value::Int(n)
}

fn bulk(s: &str) -> Value {
    Value::bulk(s)
}

fn ints(items: &[i64]) -> Value {
    Value::Array(items.iter().map(|&n| Value::Int(n)).collect())
}

// ---- fixed scenarios -------------------------------------------------------------------------

fn scenario_lock_delay(h: &mut Harness) {
    h.context = "scenario: lock-delay (tombstone past the ttl, release frees at once)".into();
    h.flush();
    // Acquired with PX ttl + delay by the plain acquire script.
    assert_eq!(
        h.script("acquire", &["lk", "fc"], &["o1", "30000", "0"]),
        int(0)
    );
    assert_eq!(
        h.script("lock_delay_extend", &["lk"], &["o2", "1000", "500"]),
        int(0)
    );
    assert_eq!(
        h.script("lock_delay_extend", &["lk"], &["o1", "1000", "500"]),
        int(1)
    );
    assert_eq!(
        h.script("lock_delay_release", &["lk"], &["o2", "500", "chan", "r1"]),
        int(0)
    );
    assert_eq!(
        h.script("lock_delay_release", &["lk"], &["o1", "500", "chan", "r2"]),
        int(1)
    );
    assert_eq!(
        h.sim.take_published(),
        vec![(b"chan".to_vec(), b"r2".to_vec())]
    );
    assert_eq!(
        h.script("lock_delay_release", &["lk"], &["o1", "500"]),
        int(0)
    );
    // Expired (ttl 1 + delay 2 ms): not extendable, free again.
    assert_eq!(
        h.script("acquire", &["lk", "fc"], &["o1", "3", "0"]),
        int(0)
    );
    h.past_tiny();
    assert_eq!(
        h.script("lock_delay_extend", &["lk"], &["o1", "1000", "500"]),
        int(0),
        "never re-created"
    );
}

fn scenario_election(h: &mut Harness) {
    h.context = "scenario: election (leadership hash, term, read, tombstone)".into();
    h.flush();
    assert_eq!(seal(h, "fc", "5", "runA:g1"), int(5));
    assert_eq!(
        h.script(
            "election_acquire",
            &["el", "fc"],
            &["o1", "30000", "1", "host-a", "0"]
        ),
        granted(6, "runA:g1")
    );
    assert_eq!(
        h.script(
            "election_acquire",
            &["el", "fc"],
            &["o2", "30000", "1", "host-b", "0"]
        ),
        int(-1)
    );
    let read = h.script("election_read", &["el"], &[]);
    let Value::Array(items) = read else {
        panic!("election_read: {read:?}")
    };
    // The term is not recorded until election_term (the round's token, not this counter).
    assert_eq!(items[..3], [bulk("o1"), bulk("host-a"), int(0)]);
    assert_eq!(h.script("election_term", &["el"], &["o2", "9"]), int(0));
    assert_eq!(h.script("election_term", &["el"], &["o1", "9"]), int(1));
    assert_eq!(
        h.script("election_term", &["el"], &["o1", "7"]),
        int(1),
        "only raises"
    );
    assert_eq!(
        h.script("election_extend", &["el"], &["o2", "30000", "0"]),
        int(0)
    );
    assert_eq!(
        h.script("election_extend", &["el"], &["o1", "30000", "100"]),
        int(1)
    );
    assert_eq!(
        h.script("election_release", &["el"], &["o2", "0", "chan", "r1"]),
        int(0)
    );
    assert_eq!(
        h.script("election_release", &["el"], &["o1", "0", "chan", "r2"]),
        int(1)
    );
    assert_eq!(
        h.sim.take_published(),
        vec![(b"chan".to_vec(), b"r2".to_vec())]
    );
    assert_eq!(h.script("election_read", &["el"], &[]), ints(&[]));
    // Counter missing: refused untouched.
    assert_eq!(
        h.script(
            "election_acquire",
            &["el", "nofc"],
            &["o1", "30000", "1", "v", "0"]
        ),
        int(-2)
    );
    // A 2 ms lease with a 30 s delay: the lease ends, the tombstone stays and refuses.
    assert_eq!(
        h.script(
            "election_acquire",
            &["el", "fc"],
            &["o1", "2", "1", "v", "30000"]
        ),
        granted(7, "runA:g1")
    );
    h.past_tiny();
    assert_eq!(h.script("election_read", &["el"], &[]), ints(&[]));
    assert_eq!(
        h.script(
            "election_acquire",
            &["el", "fc"],
            &["o2", "30000", "1", "v", "0"]
        ),
        int(-1),
        "tombstone"
    );
    assert_eq!(
        h.script("election_release", &["el"], &["o1", "30000"]),
        int(1)
    );
    assert_eq!(
        h.script(
            "election_acquire",
            &["el", "fc"],
            &["o2", "30000", "0", "v", "0"]
        ),
        int(0)
    );
}

fn scenario_lock(h: &mut Harness) {
    h.context = "scenario: lock (acquire, extend, release)".into();
    h.flush();
    assert_eq!(
        h.script("acquire", &["lk", "fc"], &["o1", "30000", "0"]),
        int(0)
    );
    assert_eq!(
        h.script("acquire", &["lk", "fc"], &["o2", "30000", "0"]),
        int(-1)
    );
    assert_eq!(
        h.script("acquire", &["lk", "fc"], &["o1", "30000", "0"]),
        int(-1),
        "own older round"
    );
    // Inspection: the holder's value and its PTTL; nil and -2 for a free lock.
    let Value::Array(seen) = h.script("inspect", &["lk"], &[]) else {
        panic!("inspect replies with an array");
    };
    assert_eq!(seen[0], bulk("o1"));
    assert!(
        matches!(seen[1], Value::Int(ms) if ms > 29_000 && ms <= 30_000),
        "{seen:?}"
    );
    assert_eq!(
        h.script("inspect", &["free"], &[]),
        Value::Array(vec![Value::Nil, int(-2)])
    );
    assert_eq!(h.script("extend", &["lk"], &["o2", "60000"]), int(0));
    assert_eq!(h.script("extend", &["lk"], &["o1", "60000"]), int(1));
    assert_eq!(h.script("release", &["lk"], &["o2"]), int(0));
    // Nobody marked itself waiting: the release deletes and publishes nothing.
    assert_eq!(
        h.script("release", &["lk", "lw"], &["o1", "chan", "rel-0"]),
        int(1)
    );
    assert_eq!(h.sim.take_published(), vec![]);
    assert_eq!(
        h.script("acquire", &["lk", "fc"], &["o1", "30000", "0"]),
        int(0)
    );
    // A refused waiter marks itself (KEYS[3]); the release deletes the marker and publishes.
    assert_eq!(
        h.script("acquire", &["lk", "fc", "lw"], &["o2", "30000", "0"]),
        int(-1)
    );
    assert_eq!(h.command(&["EXISTS", "lw"]), int(1));
    assert_eq!(
        h.script("release", &["lk", "lw"], &["o1", "chan", "rel-1"]),
        int(1)
    );
    assert_eq!(
        h.sim.take_published(),
        vec![(b"chan".to_vec(), b"rel-1".to_vec())]
    );
    assert_eq!(h.command(&["EXISTS", "lw"]), int(0));
    assert_eq!(h.script("release", &["lk"], &["o1"]), int(0));
    // Expiry: a lease of 2 ms, then the key is free for anyone and not extendable.
    assert_eq!(
        h.script("acquire", &["lk", "fc"], &["o1", "2", "0"]),
        int(0)
    );
    h.past_tiny();
    assert_eq!(
        h.script("extend", &["lk"], &["o1", "30000"]),
        int(0),
        "never re-created"
    );
    assert_eq!(
        h.script("acquire", &["lk", "fc"], &["o2", "30000", "0"]),
        int(0)
    );
    assert_eq!(h.script("release", &["lk"], &["o2"]), int(1));
    // A bad TTL fails inside SET, with Redis' script error text and line.
    let reply = h.script("acquire", &["lk", "fc"], &["o1", "abc", "0"]);
    assert!(reply.is_error(), "{reply:?}");
    let reply = h.script("acquire", &["lk", "fc"], &["o1", "0", "0"]);
    assert!(reply.is_error(), "{reply:?}");
}

/// Seals the fencing hash `fc` through both steps, as the library does: claim it for the
/// process of `generation` (`<run>:<random>`), then seal it at `seed` with that generation.
/// Returns the seal's reply.
fn seal(h: &mut Harness, fc: &str, seed: &str, generation: &str) -> Value {
    let run = generation.split(':').next().expect("run:random");
    let claim = match h.script("fence_claim", &[fc], &[run, "c0"]) {
        Value::Array(items) => items[2].clone(),
        other => panic!("fence_claim: {other:?}"),
    };
    let Value::Bulk(claim) = claim else {
        panic!("fence_claim left no claim to seal: {claim:?}");
    };
    let claim = String::from_utf8(claim).expect("utf-8 claim");
    h.script("fence_seal", &[fc], &[seed, &claim, generation])
}

/// A fenced grant: `[counter, generation]`.
fn granted(n: i64, generation: &str) -> Value {
    Value::Array(vec![int(n), bulk(generation)])
}

fn scenario_fencing(h: &mut Harness) {
    h.context = "scenario: fencing".into();
    h.flush();
    // No hash: -2, nothing touched.
    assert_eq!(
        h.script("acquire", &["lk", "fc"], &["o1", "30000", "1"]),
        int(-2)
    );
    assert_eq!(
        h.script("multi_acquire", &["fc", "m1", "m2"], &["o1", "30000", "1"]),
        int(-2)
    );
    assert_eq!(
        h.script(
            "reentrant_acquire",
            &["re", "fc"],
            &["h1", "30000", "1", "o1"]
        ),
        int(-2)
    );
    assert_eq!(
        h.script(
            "semaphore_acquire",
            &["sem", "fc"],
            &["o1", "30000", "1", "2"]
        ),
        int(-2)
    );
    assert_eq!(
        h.script(
            "rw_read_acquire",
            &["wk", "rd", "ww", "fc"],
            &["o1", "30000", "1"]
        ),
        int(-2)
    );
    assert_eq!(
        h.script(
            "rw_write_acquire",
            &["wk", "rd", "ww", "fc"],
            &["o1", "30000", "1", "w1", "20000"]
        ),
        int(-2)
    );
    assert_eq!(
        h.script(
            "fair_acquire",
            &["lk", "q", "qd", "fc"],
            &["o1", "30000", "1", "w1", "1", "20000"]
        ),
        int(-2)
    );
    assert_eq!(
        h.command(&["EXISTS", "lk", "m1", "re", "sem", "wk", "q"]),
        int(0)
    );
    // A hash made by a bare HINCRBY (a script-less client after a flush) has no generation.
    assert_eq!(h.command(&["HINCRBY", "fc", "n", "1"]), int(1));
    assert_eq!(
        h.script("acquire", &["lk", "fc"], &["o1", "30000", "1"]),
        int(-2)
    );
    // Claim: pending, no generation yet; a seal with another claim is refused.
    assert_eq!(
        h.script("fence_claim", &["fc"], &["runA", "c1"]),
        Value::Array(vec![bulk("1"), Value::Nil, bulk("runA:c1")])
    );
    assert_eq!(
        h.script("fence_claim", &["fc"], &["runA", "c9"]),
        Value::Array(vec![bulk("1"), Value::Nil, bulk("runA:c1")]),
        "a pending claim of the same process is adopted"
    );
    assert_eq!(
        h.script("acquire", &["lk", "fc"], &["o1", "30000", "1"]),
        int(-2),
        "claimed, not sealed"
    );
    assert_eq!(
        h.script("fence_seal", &["fc"], &["5", "runA:c2", "runA:g1"]),
        int(-1)
    );
    assert_eq!(
        h.script("fence_seal", &["fc"], &["5", "runA:c1", "runA:g1"]),
        int(5)
    );
    assert_eq!(
        h.script("fence_seal", &["fc"], &["9", "runA:c1", "runA:g9"]),
        int(-1),
        "a claim seals once"
    );
    assert_eq!(
        h.script("fence_claim", &["fc"], &["runA", "c3"]),
        Value::Array(vec![bulk("5"), bulk("runA:g1"), Value::Nil]),
        "sealed for this process: read, nothing written"
    );
    // Another process (a restart from a snapshot): claimed again, the old generation is gone.
    assert_eq!(
        h.script("fence_claim", &["fc"], &["runB", "c4"]),
        Value::Array(vec![bulk("5"), Value::Nil, bulk("runB:c4")])
    );
    assert_eq!(
        h.script("acquire", &["lk", "fc"], &["o1", "30000", "1"]),
        int(-2)
    );
    assert_eq!(
        h.script("fence_seal", &["fc"], &["3", "runB:c4", "runB:g2"]),
        int(5),
        "never lowered"
    );
    assert_eq!(
        h.script("acquire", &["lk", "fc"], &["o1", "30000", "1"]),
        granted(6, "runB:g2")
    );
    assert_eq!(
        h.script("acquire", &["lk", "fc"], &["o2", "30000", "1"]),
        int(-1),
        "no grant, no increment"
    );
    // Raise: only for the generation the client knows.
    assert_eq!(h.script("fence_raise", &["fc"], &["7", "runA:g1"]), int(-1));
    assert_eq!(h.script("fence_raise", &["fc"], &["7", "runB:g2"]), int(7));
    assert_eq!(h.script("fence_raise", &["fc"], &["4", "runB:g2"]), int(7));
    assert_eq!(
        h.script("fence_raise", &["fc"], &["15", "runB:g2"]),
        int(15)
    );
    assert_eq!(
        h.script("fence_raise", &["fc2"], &["4", "runB:g2"]),
        int(-1),
        "missing hash: refused, not created"
    );
    assert_eq!(h.command(&["EXISTS", "fc2"]), int(0));
    assert_eq!(
        h.script("multi_acquire", &["fc", "m1", "m2"], &["o1", "30000", "1"]),
        granted(16, "runB:g2")
    );
    assert_eq!(
        h.script(
            "reentrant_acquire",
            &["re", "fc"],
            &["h1", "30000", "1", "o1"]
        ),
        granted(17, "runB:g2")
    );
    assert_eq!(
        h.script(
            "semaphore_acquire",
            &["sem", "fc"],
            &["o1", "30000", "1", "2"]
        ),
        Value::Array(vec![int(18), int(0), bulk("runB:g2")])
    );
    // A seal delayed past a flush: its claim is gone, it is refused and creates nothing.
    assert_eq!(
        h.script("fence_claim", &["fc"], &["runC", "c5"]),
        Value::Array(vec![bulk("18"), Value::Nil, bulk("runC:c5")])
    );
    assert_eq!(h.command(&["FLUSHALL"]), Value::ok());
    assert_eq!(
        h.script("fence_seal", &["fc"], &["18", "runC:c5", "runC:g3"]),
        int(-1)
    );
    assert_eq!(h.command(&["EXISTS", "fc"]), int(0));
    // ... and past a second flush with a seal in between (the gap of fencing_gaps.rs): the
    // master was claimed (c6), sealed by someone else, voted, flushed, claimed again (c7).
    h.script("fence_claim", &["fc"], &["runC", "c6"]);
    // Another client adopts the pending claim c6 and seals with it.
    assert_eq!(seal(h, "fc", "20", "runC:g4"), int(20));
    assert_eq!(
        h.script("acquire", &["lk:x", "fc"], &["o1", "30000", "1"]),
        granted(21, "runC:g4")
    );
    assert_eq!(h.command(&["FLUSHALL"]), Value::ok());
    h.script("fence_claim", &["fc"], &["runC", "c7"]);
    assert_eq!(
        h.script("fence_seal", &["fc"], &["2", "runC:c6", "runC:g5"]),
        int(-1),
        "a late seal of an old claim after a second flush"
    );
    assert_eq!(
        h.command(&["HGET", "fc", "gen"]),
        Value::Nil,
        "still unsealed"
    );
    // A flush and a re-seal between two grants: the second comes with another generation,
    // which a client that knew the first one discards (round.rs).
    assert_eq!(seal(h, "fc", "30", "runC:g6"), int(30));
    assert_eq!(
        h.script("acquire", &["lk:y", "fc"], &["o1", "30000", "1"]),
        granted(31, "runC:g6")
    );
    assert_eq!(h.command(&["FLUSHALL"]), Value::ok());
    assert_eq!(seal(h, "fc", "3", "runC:g7"), int(3));
    assert_eq!(
        h.script("acquire", &["lk:y", "fc"], &["o1", "30000", "1"]),
        granted(4, "runC:g7")
    );
    assert_eq!(
        h.script("fence_raise", &["fc"], &["31", "runC:g6"]),
        int(-1),
        "a write-back for the generation before the flush"
    );
    // A counter left as a plain string by an older version is converted by the claim.
    h.flush();
    assert_eq!(h.command(&["SET", "fc", "42"]), Value::ok());
    assert_eq!(
        h.script("fence_claim", &["fc"], &["runD", "c8"]),
        Value::Array(vec![bulk("42"), Value::Nil, bulk("runD:c8")])
    );
    assert_eq!(
        h.script("fence_seal", &["fc"], &["40", "runD:c8", "runD:g8"]),
        int(42)
    );
    assert_eq!(
        h.command(&["HMGET", "fc", "n", "gen", "claim"]),
        Value::Array(vec![bulk("42"), bulk("runD:g8"), Value::Nil])
    );
}

fn scenario_multi(h: &mut Harness) {
    h.context = "scenario: multi-resource lock".into();
    h.flush();
    assert_eq!(
        h.script("multi_acquire", &["fc", "m1", "m2"], &["o1", "30000", "0"]),
        int(0)
    );
    assert_eq!(
        h.script("multi_acquire", &["fc", "m2", "m3"], &["o2", "30000", "0"]),
        int(-1),
        "partly held"
    );
    assert_eq!(
        h.script("multi_acquire", &["fc", "m3"], &["o2", "30000", "0"]),
        int(0)
    );
    assert_eq!(
        h.script("multi_extend", &["m1", "m2"], &["o1", "60000"]),
        int(1)
    );
    assert_eq!(
        h.script("multi_extend", &["m1", "m3"], &["o1", "60000"]),
        int(0)
    );
    assert_eq!(
        h.script("multi_release", &["m1", "m3"], &["o1"]),
        int(0),
        "deletes its own anyway"
    );
    assert_eq!(h.script("multi_release", &["m2"], &["o1"]), int(1));
    assert_eq!(
        h.script("multi_acquire", &["fc", "m1", "m2"], &["o3", "3", "0"]),
        int(0)
    );
    h.past_tiny();
    assert_eq!(
        h.script("multi_extend", &["m1", "m2"], &["o3", "30000"]),
        int(0)
    );
    assert_eq!(
        h.script("multi_acquire", &["fc", "m1", "m2"], &["o1", "30000", "0"]),
        int(0)
    );
}

/// Seals the topology hash `t` through both steps (sharded/seal.rs): claim it for the process
/// of `generation` (`<run>:<random>`), then merge `merged` (epoch, digest, spec epoch, spec)
/// with that generation. Returns the seal's reply.
fn seal_topology(h: &mut Harness, t: &str, generation: &str, merged: [&str; 4]) -> Value {
    let run = generation.split(':').next().expect("run:random");
    let claim = match h.script("topology_claim", &[t], &[run, "c0"]) {
        Value::Array(items) => items[1].clone(),
        other => panic!("topology_claim: {other:?}"),
    };
    let Value::Bulk(claim) = claim else {
        panic!("topology_claim left no claim to seal: {claim:?}");
    };
    let claim = String::from_utf8(claim).expect("utf-8 claim");
    let [epoch, digest, spec_epoch, spec] = merged;
    h.script(
        "topology_seal",
        &[t],
        &[&claim, generation, epoch, digest, spec_epoch, spec],
    )
}

/// A sharded grant without fencing: `[0, nil, topology generation]`.
fn sharded_grant(generation: &str) -> Value {
    Value::Array(vec![int(0), Value::Nil, bulk(generation)])
}

fn scenario_sharded(h: &mut Harness) {
    h.context = "scenario: sharded lock (multi scripts with the epoch check) and topology".into();
    h.flush();
    let spec = "v1\nmax_ttl_ms 1000\ngroup a 1 redis://x:1\n";
    // No topology yet: read nils; unsealed, so acquires, extends and writes are refused
    // (TOPOLOGYUNSEALED), touching nothing.
    h.script("topology_read", &["t"], &[]);
    h.script(
        "multi_acquire",
        &["fc", "t", "s1"],
        &["o1", "30000", "0", "1", "d1"],
    );
    h.script(
        "multi_extend",
        &["t", "s1"],
        &["o1", "30000", "1", "1", "d1", ""],
    );
    h.script("topology_write", &["t"], &["1", spec, "d1"]);
    // A claim for run A, adopted again by a second claim of the same process; a claim of
    // another process replaces it, and the first process's seal is refused.
    h.script("topology_claim", &["t"], &["runA", "c1"]);
    h.script("topology_claim", &["t"], &["runA", "c2"]);
    h.script("topology_claim", &["t"], &["runB", "c3"]);
    assert_eq!(
        h.script(
            "topology_seal",
            &["t"],
            &["runA:c1", "runA:g1", "0", "", "0", ""]
        ),
        int(-1),
        "claim gone"
    );
    assert_eq!(
        seal_topology(h, "t", "runA:g1", ["0", "", "0", ""]),
        int(1),
        "sealed at epoch 0 (nothing read)"
    );
    h.script("topology_read", &["t"], &[]);
    // Sealed for run A: a claim for run A writes nothing.
    h.script("topology_claim", &["t"], &["runA", "c4"]);
    // Acquire at epoch 1 raises the stored epoch and pins d1.
    assert_eq!(
        h.script(
            "multi_acquire",
            &["fc", "t", "s1"],
            &["o1", "30000", "0", "1", "d1"]
        ),
        sharded_grant("runA:g1")
    );
    assert_eq!(
        h.script(
            "multi_acquire",
            &["fc", "t", "s1", "s2"],
            &["o2", "30000", "0", "1", "d1"]
        ),
        int(-1),
        "held"
    );
    // Another spec's digest under the pinned epoch: TOPOLOGYCONFLICT, nothing touched.
    h.script(
        "multi_acquire",
        &["fc", "t", "s5"],
        &["o5", "30000", "0", "1", "dX"],
    );
    h.script("topology_write", &["t"], &["1", spec, "dX"]); // TOPOLOGYCONFLICT
    assert_eq!(
        h.script("topology_write", &["t"], &["2", spec, "d2"]),
        bulk("runA:g1")
    );
    assert_eq!(
        h.script("topology_write", &["t"], &["2", spec, "d2"]),
        bulk("runA:g1"),
        "same spec again"
    );
    h.script("topology_write", &["t"], &["2", "v1\nother\n", "d3"]); // TOPOLOGYCONFLICT
    h.script("topology_write", &["t"], &["1", spec, "d1"]); // STALETOPOLOGY
    h.script("topology_read", &["t"], &[]);
    // A client at epoch 1 is refused now; extends of an epoch-1 hold too.
    h.script(
        "multi_acquire",
        &["fc", "t", "s3"],
        &["o3", "30000", "0", "1", "d1"],
    );
    h.script(
        "multi_extend",
        &["t", "s1"],
        &["o1", "30000", "1", "1", "d1", ""],
    );
    // A joint hold of epoch 1 extends under its final (epoch 2, digest d2), not another.
    assert_eq!(
        h.script(
            "multi_extend",
            &["t", "s1"],
            &["o1", "30000", "2", "1", "d1", "d2"]
        ),
        Value::Array(vec![int(1), bulk("runA:g1")])
    );
    h.script(
        "multi_extend",
        &["t", "s1"],
        &["o1", "30000", "2", "1", "d1", "dY"],
    );
    assert_eq!(
        h.script(
            "multi_acquire",
            &["fc", "t", "s3"],
            &["o3", "30000", "0", "3", "d3"]
        ),
        sharded_grant("runA:g1"),
        "a newer epoch raises the stored one"
    );
    h.script(
        "multi_acquire",
        &["fc", "t", "s4"],
        &["o4", "30000", "0", "2", "d2"],
    );
    // s3 is o3's: not the whole set, s1 deleted anyway; the topology hash is not touched.
    assert_eq!(
        h.script("multi_release", &["t", "s1", "s3"], &["o1", "2"]),
        int(0)
    );
    assert_eq!(
        h.script("multi_release", &["t", "s1"], &["o1", "2"]),
        int(0)
    );
    h.script("topology_read", &["t"], &[]);
    // A process that finds run A's seal (a restart from a snapshot): claimed and sealed again.
    // The merge only restricts: a lower epoch read keeps the stored one; the same epoch with
    // another digest pins 'conflict'; a newer spec replaces the stored one.
    assert_eq!(
        seal_topology(h, "t", "runB:g1", ["1", "d1", "1", spec]),
        int(1)
    );
    h.script("topology_read", &["t"], &[]);
    assert_eq!(
        seal_topology(h, "t", "runC:g1", ["3", "dZ", "4", "v1\nnewer\n"]),
        int(1)
    );
    h.script("topology_read", &["t"], &[]);
    h.script(
        "multi_acquire",
        &["fc", "t", "s6"],
        &["o6", "30000", "0", "3", "d3"],
    ); // TOPOLOGYCONFLICT
    assert_eq!(seal_topology(h, "t", "runD:g1", ["5", "", "0", ""]), int(1));
    h.script("topology_read", &["t"], &[]);
    // The change lock: taken, renewed by its holder, refused to another; a change's write
    // lands only where its lock is held (TOPOLOGYBUSY otherwise); released by its holder only.
    assert_eq!(
        h.script("topology_change_lock", &["cl"], &["adm1", "30000"]),
        int(1)
    );
    assert_eq!(
        h.script("topology_change_lock", &["cl"], &["adm1", "30000"]),
        int(1)
    );
    assert_eq!(
        h.script("topology_change_lock", &["cl"], &["adm2", "30000"]),
        int(0)
    );
    h.script("topology_write", &["t", "cl"], &["6", spec, "d6", "adm2"]); // TOPOLOGYBUSY
    assert_eq!(
        h.script("topology_write", &["t", "cl"], &["6", spec, "d6", "adm1"]),
        bulk("runD:g1")
    );
    assert_eq!(
        h.script("topology_change_lock", &["cl"], &["adm2", "0"]),
        int(1)
    );
    assert_eq!(
        h.script("topology_change_lock", &["cl"], &["adm1", "0"]),
        int(1)
    );
    h.script("topology_write", &["t", "cl"], &["8", spec, "d8", "adm1"]); // TOPOLOGYBUSY
    h.script("topology_read", &["t"], &[]);
}

fn scenario_reentrant(h: &mut Harness) {
    h.context = "scenario: reentrant lock".into();
    h.flush();
    assert_eq!(
        h.script(
            "reentrant_acquire",
            &["re", "fc"],
            &["h1", "30000", "0", "o1"]
        ),
        int(0)
    );
    assert_eq!(
        h.script(
            "reentrant_acquire",
            &["re", "fc"],
            &["h2", "10000", "0", "o1"]
        ),
        int(0),
        "never shortens"
    );
    assert_eq!(
        h.script(
            "reentrant_acquire",
            &["re", "fc"],
            &["h3", "60000", "0", "o1"]
        ),
        int(0),
        "raises"
    );
    assert_eq!(
        h.script(
            "reentrant_acquire",
            &["re", "fc"],
            &["h9", "30000", "0", "o2"]
        ),
        int(-1)
    );
    assert_eq!(
        h.script("reentrant_extend", &["re"], &["h1", "90000", "o1"]),
        int(1)
    );
    assert_eq!(
        h.script("reentrant_extend", &["re"], &["h1", "90000", "o2"]),
        int(0)
    );
    assert_eq!(
        h.script("reentrant_extend", &["re"], &["h7", "90000", "o1"]),
        int(0)
    );
    assert_eq!(
        h.script("reentrant_release", &["re"], &["h1", "o2"]),
        int(0)
    );
    assert_eq!(
        h.script("reentrant_release", &["re"], &["h1", "o1"]),
        int(1)
    );
    assert_eq!(
        h.script("reentrant_release", &["re"], &["h1", "o1"]),
        int(0),
        "twice"
    );
    assert_eq!(
        h.script("reentrant_release", &["re"], &["h2", "o1"]),
        int(1)
    );
    assert_eq!(
        h.script("reentrant_release", &["re"], &["h3", "o1"]),
        int(1),
        "last hold deletes"
    );
    assert_eq!(
        h.script("reentrant_acquire", &["re", "fc"], &["h4", "2", "0", "o2"]),
        int(0)
    );
    h.past_tiny();
    assert_eq!(
        h.script("reentrant_extend", &["re"], &["h4", "30000", "o2"]),
        int(0)
    );
    assert_eq!(
        h.script(
            "reentrant_acquire",
            &["re", "fc"],
            &["h5", "30000", "0", "o1"]
        ),
        int(0)
    );
}

fn scenario_rw(h: &mut Harness) {
    h.context = "scenario: read-write lock".into();
    h.flush();
    let k = ["wk", "rd", "ww", "fc"];
    assert_eq!(
        h.script("rw_read_acquire", &k, &["r1", "30000", "0"]),
        int(0)
    );
    assert_eq!(
        h.script("rw_read_acquire", &k, &["r2", "10000", "0"]),
        int(0)
    );
    assert_eq!(
        h.script("rw_write_acquire", &k, &["w1", "30000", "0", "W1", "20000"]),
        int(-1),
        "readers"
    );
    assert_eq!(
        h.script("rw_read_acquire", &k, &["r3", "30000", "0"]),
        int(-1),
        "writer waits"
    );
    assert_eq!(
        h.script("rw_read_extend", &k[..2], &["r1", "60000"]),
        int(1)
    );
    assert_eq!(
        h.script("rw_read_extend", &k[..2], &["r9", "60000"]),
        int(0)
    );
    assert_eq!(h.script("rw_read_release", &k[..2], &["r1"]), int(1));
    assert_eq!(h.script("rw_read_release", &k[..2], &["r1"]), int(0));
    assert_eq!(h.script("rw_read_release", &k[..2], &["r2"]), int(1));
    assert_eq!(
        h.script("rw_write_acquire", &k, &["w1", "30000", "0", "W1", "20000"]),
        int(0)
    );
    assert_eq!(
        h.script("rw_write_acquire", &k, &["w2", "30000", "0", "W2", "20000"]),
        int(-1)
    );
    assert_eq!(h.script("rw_write_release", &k[..3], &["w2", "W2"]), int(0));
    assert_eq!(h.script("rw_write_release", &k[..3], &["w1", "W1"]), int(1));
    assert_eq!(
        h.script("rw_write_acquire", &k, &["w2", "30000", "0", "W2", "20000"]),
        int(0)
    );
    assert_eq!(h.script("rw_write_release", &k[..3], &["w2", "W2"]), int(1));
    assert_eq!(
        h.script("rw_write_acquire", &k, &["w9", "30000", "0", "W9", "20000"]),
        int(0)
    );
    assert_eq!(
        h.script("rw_write_release", &k[..3], &["w9", "W8"]),
        int(1),
        "W9 still waits"
    );
    assert_eq!(
        h.script("rw_read_acquire", &k, &["r4", "30000", "0"]),
        int(-1),
        "writer waits"
    );
    assert_eq!(h.script("dequeue", &["ww"], &["W9"]), int(1));
    assert_eq!(
        h.script("rw_read_acquire", &k, &["r4", "30000", "0"]),
        int(0)
    );
    assert_eq!(h.script("rw_read_release", &k[..2], &["r4"]), int(1));
    // Expiry inside the sorted sets (leases judged by TIME) and of the sets themselves.
    assert_eq!(h.script("rw_read_acquire", &k, &["r5", "3", "0"]), int(0));
    assert_eq!(
        h.script("rw_read_acquire", &k, &["r6", "30000", "0"]),
        int(0)
    );
    h.past_tiny();
    assert_eq!(
        h.script("rw_read_extend", &k[..2], &["r5", "30000"]),
        int(0),
        "lapsed lease"
    );
    assert_eq!(h.script("rw_read_release", &k[..2], &["r6"]), int(1));
    assert_eq!(h.script("rw_read_acquire", &k, &["r7", "3", "0"]), int(0));
    h.past_tiny();
    assert_eq!(
        h.script("rw_read_release", &k[..2], &["r7"]),
        int(0),
        "set expired"
    );
    assert_eq!(
        h.script("rw_write_acquire", &k, &["w3", "30000", "0", "W3", "3"]),
        int(0),
        "readers lapsed"
    );
    h.past_tiny();
    assert_eq!(
        h.script("rw_read_acquire", &k, &["r8", "30000", "0"]),
        int(-1),
        "writer holds"
    );
}

fn scenario_fair(h: &mut Harness) {
    h.context = "scenario: fair lock".into();
    h.flush();
    let k = ["lk", "q", "qd", "fc"];
    assert_eq!(h.script("fair_ticket", &["q"], &[]), int(1));
    assert_eq!(
        h.script(
            "fair_acquire",
            &k,
            &["o1", "30000", "0", "w1", "1", "20000"]
        ),
        int(0)
    );
    assert_eq!(h.script("fair_ticket", &["q"], &[]), int(2));
    assert_eq!(
        h.script(
            "fair_acquire",
            &k,
            &["o2", "30000", "0", "w2", "2", "20000"]
        ),
        int(-1)
    );
    assert_eq!(
        h.script(
            "fair_acquire",
            &k,
            &["o3", "30000", "0", "w0", "2", "20000"]
        ),
        int(-1),
        "tie by id"
    );
    assert_eq!(h.script("fair_ticket", &["q"], &[]), int(3));
    assert_eq!(
        h.script("fair_release", &k[..3], &["o9", "w1"]),
        int(0),
        "leaves the queue only"
    );
    assert_eq!(
        h.script(
            "fair_acquire",
            &k,
            &["o2", "30000", "0", "w2", "2", "20000"]
        ),
        int(-1),
        "w0 first"
    );
    assert_eq!(h.script("fair_release", &k[..3], &["o1", "w1"]), int(1));
    assert_eq!(
        h.script(
            "fair_acquire",
            &k,
            &["o2", "30000", "0", "w2", "2", "20000"]
        ),
        int(-1)
    );
    assert_eq!(
        h.script(
            "fair_acquire",
            &k,
            &["o3", "30000", "0", "w0", "2", "20000"]
        ),
        int(0)
    );
    assert_eq!(h.script("dequeue", &["q", "qd"], &["w2"]), int(1));
    assert_eq!(h.script("fair_release", &k[..3], &["o3", "w0"]), int(1));
    // A waiter that stops polling is dropped after its timeout.
    assert_eq!(
        h.script("fair_acquire", &k, &["o4", "30000", "0", "w4", "1", "3"]),
        int(0)
    );
    assert_eq!(
        h.script(
            "fair_acquire",
            &k,
            &["o5", "30000", "0", "w5", "0", "20000"]
        ),
        int(-1),
        "lock still held"
    );
    assert_eq!(
        h.script("fair_acquire", &k, &["o6", "30000", "0", "w6", "3", "3"]),
        int(-1)
    );
    h.past_tiny();
    assert_eq!(
        h.script("fair_ticket", &["q"], &[]),
        int(4),
        "queue key kept by w5's timeout"
    );
    assert_eq!(h.script("fair_release", &k[..3], &["o4", "w4"]), int(1));
    assert_eq!(
        h.script(
            "fair_acquire",
            &k,
            &["o5", "30000", "0", "w5", "0", "20000"]
        ),
        int(0)
    );
    assert_eq!(
        h.script("fair_ticket", &["q"], &[]),
        int(1),
        "w6 dropped, only w5 (ticket 0) left"
    );
}

fn scenario_semaphore(h: &mut Harness) {
    h.context = "scenario: semaphore".into();
    h.flush();
    let k = ["sem", "fc"];
    let slot = |n| Value::Array(vec![int(0), int(n)]);
    assert_eq!(
        h.script("semaphore_acquire", &k, &["t1", "30000", "0", "2"]),
        slot(0)
    );
    assert_eq!(
        h.script("semaphore_acquire", &k, &["t2", "30000", "0", "2"]),
        slot(1)
    );
    assert_eq!(
        h.script("semaphore_acquire", &k, &["t3", "30000", "0", "2"]),
        int(-1)
    );
    assert_eq!(
        h.script("semaphore_acquire", &k, &["t1", "30000", "0", "2"]),
        slot(0),
        "repeat"
    );
    assert_eq!(h.script("semaphore_held", &["sem"], &[]), ints(&[0, 1]));
    assert_eq!(
        h.script("semaphore_extend", &["sem"], &["t1", "60000", "0"]),
        int(1)
    );
    assert_eq!(
        h.script("semaphore_extend", &["sem"], &["t1", "60000", "1"]),
        int(0),
        "not its slot"
    );
    assert_eq!(h.script("semaphore_release", &["sem"], &["t1"]), int(1));
    assert_eq!(h.script("semaphore_held", &["sem"], &[]), ints(&[1]));
    assert_eq!(
        h.script("semaphore_acquire", &k, &["t3", "30000", "0", "2"]),
        slot(0)
    );
    assert_eq!(
        h.script("semaphore_held", &["sem"], &[]),
        ints(&[1, 0]),
        "HGETALL order"
    );
    assert_eq!(
        h.script("semaphore_acquire", &k, &["t4", "3", "0", "3"]),
        slot(2)
    );
    h.past_tiny();
    assert_eq!(h.script("semaphore_held", &["sem"], &[]), ints(&[1, 0]));
    assert_eq!(
        h.script("semaphore_extend", &["sem"], &["t4", "30000", "2"]),
        int(0),
        "lapsed"
    );
    assert_eq!(
        h.script("semaphore_release", &["sem"], &["t4"]),
        int(0),
        "lapsed lease dropped"
    );
    assert_eq!(
        h.script("semaphore_acquire", &k, &["t5", "3", "0", "3"]),
        slot(2)
    );
    h.past_tiny();
    assert_eq!(
        h.script("semaphore_acquire", &k, &["t6", "30000", "0", "3"]),
        slot(2),
        "lapsed dropped"
    );
    assert_eq!(h.script("semaphore_release", &["sem"], &["t2"]), int(1));
    assert_eq!(h.script("semaphore_release", &["sem"], &["t3"]), int(1));
    assert_eq!(h.script("semaphore_release", &["sem"], &["t6"]), int(1));
    assert_eq!(
        h.command(&["EXISTS", "sem"]),
        int(0),
        "an empty hash is deleted"
    );
    // The whole hash expires when its longest lease does.
    assert_eq!(
        h.script("semaphore_acquire", &k, &["t7", "3", "0", "1"]),
        slot(0)
    );
    h.past_tiny();
    assert_eq!(h.script("semaphore_held", &["sem"], &[]), ints(&[]));
    // A malformed permit count errors inside the script, identically.
    let reply = h.script("semaphore_acquire", &k, &["t8", "30000", "0", "many"]);
    assert!(reply.is_error(), "{reply:?}");
}

fn scenario_cache(h: &mut Harness) {
    h.context = "scenario: cache_versioned".into();
    h.flush();
    let k = ["cd", "cv", "cn"];
    assert_eq!(h.script("cache_versioned", &k, &["get"]), Value::Nil);
    assert_eq!(
        h.script("cache_versioned", &k, &["cas", "3", "x", "30000"]),
        ints(&[0]),
        "absent"
    );
    assert_eq!(
        h.script("cache_versioned", &k, &["cas", "", "v1", "30000"]),
        Value::Array(vec![int(1), bulk("1")])
    );
    assert_eq!(
        h.script("cache_versioned", &k, &["get"]),
        Value::Array(vec![bulk("1"), bulk("v1")])
    );
    assert_eq!(
        h.script("cache_versioned", &k, &["cas", "", "v2", "30000"]),
        Value::Array(vec![int(0), bulk("1")])
    );
    assert_eq!(
        h.script("cache_versioned", &k, &["cas", "1", "v2", "60000"]),
        Value::Array(vec![int(1), bulk("2")])
    );
    assert_eq!(
        h.script("cache_versioned", &k, &["cas", "1", "v3", "60000"]),
        Value::Array(vec![int(0), bulk("2")])
    );
    // A plain SET (any client) drops the version key's meaning: the next read versions it anew.
    assert_eq!(
        h.command(&["SET", "cd", "plain", "PX", "40000"]),
        Value::ok()
    );
    assert_eq!(h.command(&["DEL", "cv"]), int(1));
    assert_eq!(
        h.script("cache_versioned", &k, &["get"]),
        Value::Array(vec![bulk("3"), bulk("plain")])
    );
    assert_eq!(h.command(&["SET", "cd", "forever"]), Value::ok());
    assert_eq!(h.command(&["DEL", "cv"]), int(1));
    assert_eq!(
        h.script("cache_versioned", &k, &["get"]),
        Value::Array(vec![bulk("4"), bulk("forever")])
    );
    assert_eq!(
        h.command(&["MGET", "cd", "cv", "nokey"]),
        Value::Array(vec![bulk("forever"), bulk("4"), Value::Nil])
    );
    // Expiry: both keys lapse; versions are never reused.
    assert_eq!(
        h.script("cache_versioned", &k, &["cas", "4", "short", "3"]),
        Value::Array(vec![int(1), bulk("5")])
    );
    h.past_tiny();
    assert_eq!(h.script("cache_versioned", &k, &["get"]), Value::Nil);
    assert_eq!(
        h.script("cache_versioned", &k, &["cas", "", "v6", "30000"]),
        Value::Array(vec![int(1), bulk("6")])
    );
}

fn scenario_client_commands(h: &mut Harness) {
    h.context = "scenario: client-facing commands and the script cache".into();
    h.flush();
    assert_eq!(h.command(&["PING"]), Value::Status("PONG".into()));
    assert_eq!(h.command(&["SET", "a", "1"]), Value::ok());
    assert_eq!(h.command(&["SET", "a", "2", "NX"]), Value::Nil);
    assert_eq!(h.command(&["INCR", "a"]), int(2));
    assert_eq!(h.command(&["SET", "b", "x", "PX", "2"]), Value::ok());
    h.past_tiny();
    assert_eq!(
        h.command(&["SET", "b", "y", "NX", "PX", "30000"]),
        Value::ok(),
        "NX on an expired key"
    );
    assert!(h.command(&["INCR", "b"]).is_error());
    assert_eq!(h.command(&["EXISTS", "a", "b", "a", "c"]), int(3));
    assert_eq!(h.command(&["DEL", "a", "c"]), int(1));
    assert_eq!(h.command(&["PEXPIRE", "nokey", "100"]), int(0));
    assert_eq!(h.command(&["PEXPIRE", "b", "0"]), int(1));
    assert_eq!(h.command(&["EXISTS", "b"]), int(0));
    assert_eq!(
        h.command(&["GET"]),
        Value::Error("ERR wrong number of arguments for 'get' command".into())
    );
    assert_eq!(h.command(&["HSET", "h", "f", "v"]), int(1));
    assert!(h.command(&["GET", "h"]).is_error(), "WRONGTYPE");
    assert_eq!(
        h.command(&["CONFIG", "GET", "maxmemory-policy"]),
        Value::Array(vec![bulk("maxmemory-policy"), bulk("noeviction")])
    );
    assert_eq!(
        h.command(&["EVAL", "return {1, 2, nil, 3}", "0"]),
        ints(&[1, 2])
    );
    assert!(
        h.command(&["EVAL", "return redis.call('INCR', KEYS[1])", "1", "h"])
            .is_error()
    );
    // The script cache: EVALSHA after SCRIPT FLUSH is NOSCRIPT on both, word for word.
    let sha = h.shas["acquire"].clone();
    assert_eq!(
        h.command(&[
            "SCRIPT",
            "EXISTS",
            &sha,
            "0000000000000000000000000000000000000000"
        ]),
        ints(&[1, 0])
    );
    assert_eq!(h.command(&["SCRIPT", "FLUSH"]), Value::ok());
    assert_eq!(
        h.command(&["EVALSHA", &sha, "2", "lk", "fc", "o1", "30000", "0"]),
        Value::Error(NOSCRIPT.into())
    );
    assert_eq!(h.command(&["SCRIPT", "EXISTS", &sha]), ints(&[0]));
    h.load_scripts();
    // INFO: the fields the library reads are there on both (values differ by nature).
    for master in [&mut h.real as &mut dyn Exec, &mut h.sim as &mut dyn Exec] {
        let Value::Bulk(info) = master.exec(&args(&["INFO", "server"])) else {
            panic!("INFO")
        };
        let info = String::from_utf8(info).unwrap();
        let run_id = info
            .lines()
            .find_map(|l| l.strip_prefix("run_id:"))
            .expect("run_id line");
        assert_eq!(run_id.len(), 40);
        assert!(info.lines().any(|l| {
            l.strip_prefix("uptime_in_seconds:")
                .is_some_and(|v| v.parse::<u64>().is_ok())
        }));
    }
}

// ---- randomized runs ----------------------------------------------------------------------

const OWNERS: &[&str] = &["o1", "o2", "o3"];
const ALL_KEYS: &[&str] = &[
    "lk:a", "lk:b", "fc", "seal", "q", "qd", "wk", "rd", "ww", "sem", "re", "cd", "cv", "cn", "el",
];

struct Gen {
    rng: ChaCha8Rng,
    tiny: bool,
}

impl Gen {
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.rng.random_range(0..items.len())]
    }

    /// A key from its role's pool, or (1 time in 20) any key, so types clash sometimes.
    fn key<'a>(&mut self, usual: &'a str) -> &'a str {
        if self.rng.random_range(0..20) == 0 {
            self.pick(ALL_KEYS)
        } else {
            usual
        }
    }

    /// A TTL, or (1 time in 4) "0": the change lock's release.
    fn ttl_or_zero(&mut self) -> String {
        if self.rng.random_range(0..4) == 0 {
            "0".into()
        } else {
            self.ttl()
        }
    }

    fn ttl(&mut self) -> String {
        if self.rng.random_range(0..4) == 0 {
            self.tiny = true;
            self.rng.random_range(1..=5).to_string()
        } else {
            self.pick(&["20000", "60000"]).to_owned()
        }
    }

    fn flag(&mut self) -> String {
        self.pick(&["0", "1"]).to_owned()
    }

    fn generation(&mut self) -> String {
        self.pick(&["runA:g1", "runA:g2", "runB:g1"]).to_owned()
    }

    fn num(&mut self, max: u32) -> String {
        self.rng.random_range(0..=max).to_string()
    }

    fn locks(&mut self) -> Vec<String> {
        let n = self.rng.random_range(1..=2);
        ["lk:a", "lk:b"][..n]
            .iter()
            .map(|k| self.key(k).to_owned())
            .collect()
    }

    /// KEYS and ARGV for one call of `name`, shaped like the library's calls.
    fn step(&mut self, name: &str) -> (Vec<String>, Vec<String>) {
        let owner = self.pick(OWNERS).to_owned();
        let lock = self.pick(&["lk:a", "lk:b"]).to_owned();
        let lock = self.key(&lock).to_owned();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let fc = self.key("fc").to_owned();
        match name {
            "acquire" => {
                // A caller that will wait marks itself on refusal (KEYS[3]).
                let mut keys = vec![lock, fc];
                if self.rng.random_bool(0.5) {
                    keys.push(self.key("lw").to_owned());
                }
                (keys, vec![owner, self.ttl(), self.flag()])
            }
            "extend" => (vec![lock], vec![owner, self.ttl()]),
            "inspect" => (vec![lock], vec![]),
            "release" => {
                if self.rng.random_bool(0.5) {
                    let marker = self.key("lw").to_owned();
                    (vec![lock, marker], vec![owner, "chan".into(), "id".into()])
                } else {
                    (vec![lock], vec![owner])
                }
            }
            "lock_delay_extend" => (vec![lock], vec![owner, self.ttl(), self.ttl()]),
            "lock_delay_release" => {
                if self.rng.random_bool(0.5) {
                    (
                        vec![lock],
                        vec![owner, self.ttl(), "chan".into(), "id".into()],
                    )
                } else {
                    (vec![lock], vec![owner, self.ttl()])
                }
            }
            "election_acquire" => (
                vec![self.key("el").into(), fc],
                vec![
                    owner,
                    self.ttl(),
                    self.flag(),
                    self.pick(&["va", "vb"]).into(),
                    self.pick(&["0", "3", "30000"]).into(),
                ],
            ),
            "election_extend" => (
                vec![self.key("el").into()],
                vec![owner, self.ttl(), self.pick(&["0", "3", "30000"]).into()],
            ),
            "election_release" => (
                vec![self.key("el").into()],
                vec![owner, "0".into(), "chan".into(), "id".into()],
            ),
            "election_term" => (vec![self.key("el").into()], vec![owner, self.num(12)]),
            "election_read" => (vec![self.key("el").into()], vec![]),
            "fence_raise" => (vec![fc], vec![self.num(12), self.generation()]),
            "fence_claim" => (
                vec![fc],
                vec![
                    self.pick(&["runA", "runB"]).into(),
                    self.pick(&["c1", "c2"]).into(),
                ],
            ),
            "fence_seal" => (
                vec![fc],
                vec![
                    self.num(12),
                    self.pick(&["runA:c0", "runA:c1", "runA:c2", "runB:c1"])
                        .into(),
                    self.generation(),
                ],
            ),
            // Half of the calls with the sharded epoch check (the topology hash first).
            "multi_acquire" => {
                let mut keys = vec![fc];
                let mut args = vec![owner, self.ttl(), self.flag()];
                if self.rng.random_bool(0.5) {
                    keys.push(self.key("tp").into());
                    args.push(self.pick(&["1", "2", "3"]).into());
                    args.push(self.pick(&["da", "db"]).into());
                }
                keys.extend(self.locks());
                (keys, args)
            }
            "multi_extend" => {
                let (mut keys, mut args) = (Vec::new(), vec![owner, self.ttl()]);
                if self.rng.random_bool(0.5) {
                    keys.push(self.key("tp").into());
                    args.push(self.pick(&["1", "2", "3"]).into());
                    args.push(self.pick(&["1", "2", "3"]).into());
                    args.push(self.pick(&["da", "db"]).into());
                    args.push(self.pick(&["", "da", "db"]).into());
                }
                keys.extend(self.locks());
                (keys, args)
            }
            "multi_release" => {
                let (mut keys, mut args) = (Vec::new(), vec![owner]);
                if self.rng.random_bool(0.5) {
                    keys.push(self.key("tp").into());
                    args.push(self.pick(&["1", "2", "3"]).into());
                }
                keys.extend(self.locks());
                (keys, args)
            }
            "topology_write" => {
                let epoch = self.pick(&["1", "2", "3"]).into();
                let spec = self.pick(&["v1\nspec a\n", "v1\nspec b\n"]).into();
                let digest = self.pick(&["da", "db"]).into();
                let (mut keys, mut args) = (vec![self.key("tp").into()], vec![epoch, spec, digest]);
                // Half of the writes as a change's, under the change lock.
                if self.rng.random_bool(0.5) {
                    keys.push(self.key("cl").into());
                    args.push(self.pick(&["adm1", "adm2"]).into());
                }
                (keys, args)
            }
            "topology_change_lock" => (
                vec![self.key("cl").into()],
                vec![self.pick(&["adm1", "adm2"]).into(), self.ttl_or_zero()],
            ),
            "topology_read" => (vec![self.key("tp").into()], Vec::new()),
            "topology_claim" => (
                vec![self.key("tp").into()],
                vec![
                    self.pick(&["runA", "runB"]).into(),
                    self.pick(&["c1", "c2"]).into(),
                ],
            ),
            "topology_seal" => (
                vec![self.key("tp").into()],
                vec![
                    self.pick(&["runA:c0", "runA:c1", "runA:c2", "runB:c1"])
                        .into(),
                    self.generation(),
                    self.pick(&["0", "1", "2", "3"]).into(),
                    self.pick(&["", "da", "db", "conflict"]).into(),
                    self.pick(&["0", "1", "2", "3"]).into(),
                    self.pick(&["v1\nspec a\n", "v1\nspec b\n"]).into(),
                ],
            ),
            "reentrant_acquire" => {
                let hold = self.pick(&["h1", "h2", "h3"]).into();
                (
                    vec![self.key("re").into(), fc],
                    vec![hold, self.ttl(), self.flag(), owner],
                )
            }
            "reentrant_extend" => {
                let hold = self.pick(&["h1", "h2", "h3"]).into();
                (vec![self.key("re").into()], vec![hold, self.ttl(), owner])
            }
            "reentrant_release" => {
                let hold = self.pick(&["h1", "h2", "h3"]).into();
                (vec![self.key("re").into()], vec![hold, owner])
            }
            "rw_read_acquire" => (
                vec![
                    self.key("wk").into(),
                    self.key("rd").into(),
                    self.key("ww").into(),
                    fc,
                ],
                vec![owner, self.ttl(), self.flag()],
            ),
            "rw_read_extend" => (s(&["wk", self.key("rd")]), vec![owner, self.ttl()]),
            "rw_read_release" => (s(&["wk", self.key("rd")]), vec![owner]),
            "rw_write_acquire" => {
                let writer = self.pick(&["W1", "W2"]).into();
                (
                    vec![
                        self.key("wk").into(),
                        self.key("rd").into(),
                        self.key("ww").into(),
                        fc,
                    ],
                    vec![owner, self.ttl(), self.flag(), writer, self.ttl()],
                )
            }
            "rw_write_release" => (
                s(&[self.key("wk"), "rd", self.key("ww")]),
                vec![owner, self.pick(&["W1", "W2"]).into()],
            ),
            "fair_ticket" => (vec![self.key("q").into()], vec![]),
            "fair_acquire" => {
                let waiter = self.pick(&["w1", "w2", "w3"]).into();
                (
                    vec![lock, self.key("q").into(), self.key("qd").into(), fc],
                    vec![
                        owner,
                        self.ttl(),
                        self.flag(),
                        waiter,
                        self.num(4),
                        self.ttl(),
                    ],
                )
            }
            "fair_release" => (
                vec![lock, self.key("q").into(), self.key("qd").into()],
                vec![owner, self.pick(&["w1", "w2", "w3"]).into()],
            ),
            "dequeue" => (
                s(&[self.key("q"), "qd", "ww"]),
                vec![self.pick(&["w1", "w2", "W1", "W2"]).into()],
            ),
            "semaphore_acquire" => (
                vec![self.key("sem").into(), fc],
                vec![
                    owner,
                    self.ttl(),
                    self.flag(),
                    self.pick(&["1", "2", "3"]).into(),
                ],
            ),
            "semaphore_extend" => (
                vec![self.key("sem").into()],
                vec![owner, self.ttl(), self.num(2)],
            ),
            "semaphore_held" => (vec![self.key("sem").into()], vec![]),
            "semaphore_release" => (vec![self.key("sem").into()], vec![owner]),
            "cache_versioned" => {
                let keys = vec![
                    self.key("cd").into(),
                    self.key("cv").into(),
                    self.key("cn").into(),
                ];
                if self.rng.random_bool(0.4) {
                    (keys, s(&["get"]))
                } else {
                    let expected = self.pick(&["", "1", "2", "3", "4", "5", "6"]).into();
                    (
                        keys,
                        vec![
                            "cas".into(),
                            expected,
                            format!("val{}", self.num(9)),
                            self.ttl(),
                        ],
                    )
                }
            }
            other => panic!(
                "script {other} (scripts/{other}.lua) has no generator in sim/tests/differential.rs: add one (and a scenario)"
            ),
        }
    }

    /// Now and then a direct client command that scripts race with.
    fn client_step(&mut self) -> Vec<String> {
        let key = self.pick(ALL_KEYS).to_owned();
        match self.rng.random_range(0..9) {
            0 => vec!["SET".into(), key, "plain".into(), "PX".into(), self.ttl()],
            1 => vec!["DEL".into(), key],
            2 => vec!["INCR".into(), key],
            3 => vec!["GET".into(), key],
            // The fencing hash as a script-less client (issue 22's pipeline) touches it.
            4 => vec![
                "HINCRBY".into(),
                self.key("fc").into(),
                "n".into(),
                "1".into(),
            ],
            5 => vec![
                "HMGET".into(),
                self.key("fc").into(),
                "n".into(),
                "gen".into(),
                "claim".into(),
            ],
            // A flush between any two steps (the random run re-seals after it, sometimes).
            6 => vec!["FLUSHALL".into()],
            _ => vec!["EXISTS".into(), key, "fc".into()],
        }
    }
}

fn random_run(h: &mut Harness, seed: u64, steps: usize) {
    h.context = format!(
        "random run, seed {seed} (replay: SIM_SEED={seed} cargo test -p redquorum-sim --test differential)"
    );
    h.flush();
    let names: Vec<String> = h.scripts.keys().cloned().collect();
    let mut g = Gen {
        rng: ChaCha8Rng::seed_from_u64(seed),
        tiny: false,
    };
    // Every script has a generator, also the ones this seed would not pick.
    for name in &names {
        g.step(name);
    }
    g.tiny = false;
    // A sealed counter most of the time, so fenced calls do more than return -2.
    if g.rng.random_bool(0.8) {
        seal(h, "fc", "1", "runA:g1");
    }
    // A sealed topology most of the time, so sharded calls do more than refuse.
    if g.rng.random_bool(0.8) {
        seal_topology(h, "tp", "runA:g1", ["0", "", "0", ""]);
    }
    for _ in 0..steps {
        if g.rng.random_range(0..10) == 0 {
            let command = g.client_step();
            let items: Vec<&str> = command.iter().map(String::as_str).collect();
            h.command(&items);
            // After a flush, usually a re-seal (with a new generation) before the next step.
            if command[0] == "FLUSHALL" && g.rng.random_bool(0.7) {
                let generation = g.generation();
                let seed = g.num(12);
                seal(h, "fc", &seed, &generation);
            }
        } else {
            let name = names[g.rng.random_range(0..names.len())].clone();
            let (keys, argv) = g.step(&name);
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            h.script(&name, &keys, &argv);
        }
        if std::mem::take(&mut g.tiny) {
            h.past_tiny();
        }
    }
}

#[test]
fn scripts_behave_the_same_on_the_model_and_on_redis() {
    let started = Instant::now();
    let mut h = Harness::new();
    if let Ok(seed) = std::env::var("SIM_SEED") {
        let seed = seed.parse().expect("SIM_SEED is a u64");
        random_run(&mut h, seed, 400);
        return;
    }
    scenario_lock(&mut h);
    scenario_fencing(&mut h);
    scenario_multi(&mut h);
    scenario_sharded(&mut h);
    scenario_reentrant(&mut h);
    scenario_rw(&mut h);
    scenario_fair(&mut h);
    scenario_semaphore(&mut h);
    scenario_cache(&mut h);
    scenario_lock_delay(&mut h);
    scenario_election(&mut h);
    scenario_client_commands(&mut h);
    let missing: Vec<&String> = h
        .scripts
        .keys()
        .filter(|n| !h.ran.contains_key(*n))
        .collect();
    assert!(
        missing.is_empty(),
        "scripts without a scenario: {missing:?}"
    );
    let scenario_steps = h.steps;
    for seed in 1..=3 {
        random_run(&mut h, seed, 200);
    }
    eprintln!(
        "differential: {} steps ({} in scenarios, {} scripts, {} error replies), {:.1?}",
        h.steps,
        scenario_steps,
        h.scripts.len(),
        h.error_replies,
        started.elapsed()
    );
}
