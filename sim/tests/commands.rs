//! Unit tests of the command layer and the scripting environment, through `execute` as a
//! client would call it. Behaviour checked here against Redis 7.0.15 by hand (redis-cli) where
//! the differential test cannot reach it deterministically (exact deadlines, overflow).

use redquorum_sim::{NOSCRIPT, SimMaster, Value};

const T0: u64 = 1_700_000_000_000;

fn master() -> SimMaster {
    SimMaster::new("0".repeat(40), T0)
}

fn run(m: &mut SimMaster, args: &[&str]) -> Value {
    let args: Vec<Vec<u8>> = args.iter().map(|a| a.as_bytes().to_vec()).collect();
    m.execute(&args)
}

fn bulk(s: &str) -> Value {
    Value::bulk(s)
}

fn strings(items: &[&str]) -> Value {
    Value::Array(items.iter().map(|s| bulk(s)).collect())
}

#[test]
fn key_lives_at_its_deadline_and_is_gone_one_ms_later() {
    let mut m = master();
    assert_eq!(run(&mut m, &["SET", "k", "v", "PX", "10"]), Value::ok());
    m.advance_ms(10);
    // Redis' keyIsExpired is `now > when`.
    assert_eq!(run(&mut m, &["PTTL", "k"]), Value::Int(0));
    assert_eq!(run(&mut m, &["GET", "k"]), bulk("v"));
    m.advance_ms(1);
    assert_eq!(run(&mut m, &["GET", "k"]), Value::Nil);
    assert_eq!(run(&mut m, &["PTTL", "k"]), Value::Int(-2));
    assert_eq!(run(&mut m, &["EXISTS", "k"]), Value::Int(0));
}

#[test]
fn set_nx_takes_an_expired_key() {
    let mut m = master();
    run(&mut m, &["SET", "k", "old", "PX", "5"]);
    assert_eq!(
        run(&mut m, &["SET", "k", "new", "NX", "PX", "100"]),
        Value::Nil
    );
    m.advance_ms(6);
    assert_eq!(
        run(&mut m, &["SET", "k", "new", "NX", "PX", "100"]),
        Value::ok()
    );
    assert_eq!(run(&mut m, &["GET", "k"]), bulk("new"));
    assert_eq!(run(&mut m, &["PTTL", "k"]), Value::Int(100));
}

#[test]
fn set_validates_expire_before_nx() {
    let mut m = master();
    run(&mut m, &["SET", "k", "v"]);
    let invalid = Value::Error("ERR invalid expire time in 'set' command".into());
    assert_eq!(run(&mut m, &["SET", "k", "v", "NX", "PX", "0"]), invalid);
    assert_eq!(run(&mut m, &["SET", "k", "v", "PX", "-1"]), invalid);
    let not_int = Value::Error("ERR value is not an integer or out of range".into());
    assert_eq!(run(&mut m, &["SET", "k", "v", "PX", "1.5"]), not_int);
    assert_eq!(
        run(&mut m, &["SET", "k", "v", "NX", "XX"]),
        Value::Error("ERR syntax error".into())
    );
}

#[test]
fn plain_set_drops_the_ttl_and_overwrites_any_type() {
    let mut m = master();
    run(&mut m, &["HSET", "k", "f", "v"]);
    run(&mut m, &["PEXPIRE", "k", "100"]);
    assert_eq!(run(&mut m, &["SET", "k", "s"]), Value::ok());
    assert_eq!(run(&mut m, &["PTTL", "k"]), Value::Int(-1));
    assert_eq!(run(&mut m, &["GET", "k"]), bulk("s"));
}

#[test]
fn pexpire_missing_key_is_zero_and_non_positive_deletes() {
    let mut m = master();
    assert_eq!(run(&mut m, &["PEXPIRE", "nokey", "100"]), Value::Int(0));
    run(&mut m, &["SET", "k", "v"]);
    assert_eq!(run(&mut m, &["PEXPIRE", "k", "0"]), Value::Int(1));
    assert_eq!(run(&mut m, &["EXISTS", "k"]), Value::Int(0));
    run(&mut m, &["SET", "k", "v"]);
    assert_eq!(run(&mut m, &["PEXPIRE", "k", "-5"]), Value::Int(1));
    assert_eq!(run(&mut m, &["EXISTS", "k"]), Value::Int(0));
    run(&mut m, &["SET", "k", "v", "PX", "3"]);
    m.advance_ms(4);
    assert_eq!(run(&mut m, &["PEXPIRE", "k", "100"]), Value::Int(0));
}

#[test]
fn incr_errors_like_redis_and_keeps_the_ttl() {
    let mut m = master();
    assert_eq!(run(&mut m, &["INCR", "c"]), Value::Int(1));
    run(&mut m, &["SET", "s", "abc"]);
    let not_int = Value::Error("ERR value is not an integer or out of range".into());
    assert_eq!(run(&mut m, &["INCR", "s"]), not_int);
    run(&mut m, &["SET", "s", "01"]);
    assert_eq!(run(&mut m, &["INCR", "s"]), not_int);
    run(&mut m, &["SET", "n", "9223372036854775807"]);
    assert_eq!(
        run(&mut m, &["INCR", "n"]),
        Value::Error("ERR increment or decrement would overflow".into())
    );
    run(&mut m, &["SET", "t", "5", "PX", "1000"]);
    assert_eq!(run(&mut m, &["INCR", "t"]), Value::Int(6));
    assert_eq!(run(&mut m, &["PTTL", "t"]), Value::Int(1000));
    run(&mut m, &["HSET", "h", "f", "v"]);
    assert_eq!(
        run(&mut m, &["INCR", "h"]),
        Value::Error("WRONGTYPE Operation against a key holding the wrong kind of value".into())
    );
}

#[test]
fn del_exists_mget_count_like_redis() {
    let mut m = master();
    run(&mut m, &["SET", "a", "1"]);
    run(&mut m, &["HSET", "h", "f", "v"]);
    assert_eq!(run(&mut m, &["EXISTS", "a", "a", "b"]), Value::Int(2));
    assert_eq!(
        run(&mut m, &["MGET", "a", "b", "h"]),
        Value::Array(vec![bulk("1"), Value::Nil, Value::Nil])
    );
    assert_eq!(run(&mut m, &["DEL", "a", "a", "b"]), Value::Int(1));
    assert_eq!(
        run(&mut m, &["GET"]),
        Value::Error("ERR wrong number of arguments for 'get' command".into())
    );
}

#[test]
fn sorted_set_ranges_and_bounds() {
    let mut m = master();
    assert_eq!(
        run(
            &mut m,
            &["ZADD", "z", "1", "a", "2", "b", "2", "c", "3", "d"]
        ),
        Value::Int(4)
    );
    assert_eq!(
        run(&mut m, &["ZRANGEBYSCORE", "z", "-inf", "+inf"]),
        strings(&["a", "b", "c", "d"])
    );
    assert_eq!(
        run(&mut m, &["ZRANGEBYSCORE", "z", "(1", "(3"]),
        strings(&["b", "c"])
    );
    assert_eq!(
        run(&mut m, &["ZRANGEBYSCORE", "z", "-inf", "2"]),
        strings(&["a", "b", "c"])
    );
    assert_eq!(
        run(&mut m, &["ZRANGEBYSCORE", "z", "x", "2"]),
        Value::Error("ERR min or max is not a float".into())
    );
    assert_eq!(run(&mut m, &["ZRANGE", "z", "0", "0"]), strings(&["a"]));
    assert_eq!(
        run(&mut m, &["ZRANGE", "z", "-2", "-1"]),
        strings(&["c", "d"])
    );
    assert_eq!(run(&mut m, &["ZRANGE", "z", "5", "10"]), strings(&[]));
    assert_eq!(
        run(&mut m, &["ZREVRANGE", "z", "0", "0", "WITHSCORES"]),
        strings(&["d", "3"])
    );
    assert_eq!(run(&mut m, &["ZSCORE", "z", "b"]), bulk("2"));
    assert_eq!(
        run(&mut m, &["ZREMRANGEBYSCORE", "z", "-inf", "2"]),
        Value::Int(3)
    );
    assert_eq!(run(&mut m, &["ZCARD", "z"]), Value::Int(1));
    assert_eq!(run(&mut m, &["ZREM", "z", "d", "x"]), Value::Int(1));
    // An emptied sorted set is deleted.
    assert_eq!(run(&mut m, &["EXISTS", "z"]), Value::Int(0));
    assert_eq!(run(&mut m, &["ZADD", "z", "0.1", "m"]), Value::Int(1));
    assert_eq!(
        run(&mut m, &["ZSCORE", "z", "m"]),
        bulk("0.10000000000000001")
    );
    assert_eq!(
        run(&mut m, &["ZADD", "z", "abc", "m"]),
        Value::Error("ERR value is not a valid float".into())
    );
}

#[test]
fn hashes_keep_insertion_order_and_vanish_when_empty() {
    let mut m = master();
    assert_eq!(
        run(&mut m, &["HSET", "h", "b", "1", "a", "2"]),
        Value::Int(2)
    );
    assert_eq!(
        run(&mut m, &["HSET", "h", "b", "3", "c", "4"]),
        Value::Int(1)
    );
    assert_eq!(
        run(&mut m, &["HGETALL", "h"]),
        strings(&["b", "3", "a", "2", "c", "4"])
    );
    assert_eq!(run(&mut m, &["HLEN", "h"]), Value::Int(3));
    assert_eq!(run(&mut m, &["HEXISTS", "h", "a"]), Value::Int(1));
    assert_eq!(
        run(&mut m, &["HDEL", "h", "a", "b", "c", "z"]),
        Value::Int(3)
    );
    assert_eq!(run(&mut m, &["EXISTS", "h"]), Value::Int(0));
    assert_eq!(
        run(&mut m, &["HSET", "h", "a"]),
        Value::Error("ERR wrong number of arguments for 'hset' command".into())
    );
}

#[test]
fn time_and_publish() {
    let mut m = master();
    m.set_now_us(1_700_000_000_123_456);
    assert_eq!(run(&mut m, &["TIME"]), strings(&["1700000000", "123456"]));
    m.set_subscribers(b"ch", 2);
    assert_eq!(run(&mut m, &["PUBLISH", "ch", "hi"]), Value::Int(2));
    assert_eq!(run(&mut m, &["PUBLISH", "other", "x"]), Value::Int(0));
    assert_eq!(
        m.take_published(),
        vec![
            (b"ch".to_vec(), b"hi".to_vec()),
            (b"other".to_vec(), b"x".to_vec())
        ]
    );
}

#[test]
fn script_cache_evalsha_noscript_and_flush() {
    let mut m = master();
    let source = "return 1";
    assert_eq!(
        run(
            &mut m,
            &["EVALSHA", "e0e1f9fabfc9d4800c877a703b823ac0578ff8db", "0"]
        ),
        Value::Error(NOSCRIPT.into())
    );
    // The sha Redis 7.0.15 answered for this body.
    assert_eq!(
        run(&mut m, &["SCRIPT", "LOAD", source]),
        bulk("e0e1f9fabfc9d4800c877a703b823ac0578ff8db")
    );
    assert_eq!(
        run(
            &mut m,
            &["EVALSHA", "E0E1F9FABFC9D4800C877A703B823AC0578FF8DB", "0"]
        ),
        Value::Int(1)
    );
    assert_eq!(
        run(
            &mut m,
            &[
                "SCRIPT",
                "EXISTS",
                "e0e1f9fabfc9d4800c877a703b823ac0578ff8db",
                "nope"
            ]
        ),
        Value::Array(vec![Value::Int(1), Value::Int(0)])
    );
    assert_eq!(run(&mut m, &["SCRIPT", "FLUSH"]), Value::ok());
    assert_eq!(
        run(
            &mut m,
            &["EVALSHA", "e0e1f9fabfc9d4800c877a703b823ac0578ff8db", "0"]
        ),
        Value::Error(NOSCRIPT.into())
    );
    // EVAL caches what it runs.
    assert_eq!(run(&mut m, &["EVAL", "return 2", "0"]), Value::Int(2));
    let sha = redquorum_sim::lua::sha1_hex(b"return 2");
    assert_eq!(run(&mut m, &["EVALSHA", &sha, "0"]), Value::Int(2));
    m.restart(true, "1".repeat(40));
    assert_eq!(
        run(&mut m, &["EVALSHA", &sha, "0"]),
        Value::Error(NOSCRIPT.into())
    );
}

#[test]
fn lua_conversions_match_redis() {
    let mut m = master();
    assert_eq!(
        run(&mut m, &["EVAL", "return {1, 2, nil, 3}", "0"]),
        Value::Array(vec![Value::Int(1), Value::Int(2)])
    );
    assert_eq!(
        run(
            &mut m,
            &["EVAL", "return {1.9, -2.7, 'a', true, false}", "0"]
        ),
        Value::Array(vec![
            Value::Int(1),
            Value::Int(-2),
            bulk("a"),
            Value::Int(1),
            Value::Nil
        ])
    );
    assert_eq!(
        run(&mut m, &["EVAL", "return redis.call('PING')", "0"]),
        Value::Status("PONG".into())
    );
    assert_eq!(
        run(&mut m, &["EVAL", "return redis.status_reply('FOO')", "0"]),
        Value::Status("FOO".into())
    );
    assert_eq!(
        run(&mut m, &["EVAL", "return redis.error_reply('MY bad')", "0"]),
        Value::Error("MY bad".into())
    );
    assert_eq!(
        run(&mut m, &["EVAL", "return redis.error_reply('bad')", "0"]),
        Value::Error("ERR bad".into())
    );
    assert_eq!(
        run(&mut m, &["EVAL", "return {err='x y'}", "0"]),
        Value::Error("x y".into())
    );
    assert_eq!(
        run(
            &mut m,
            &["EVAL", "return redis.call('GET', KEYS[1])", "1", "nokey"]
        ),
        Value::Nil
    );
    assert_eq!(
        run(
            &mut m,
            &[
                "EVAL",
                "return type(redis.call('GET', KEYS[1]))",
                "1",
                "nokey"
            ]
        ),
        bulk("boolean")
    );
    assert_eq!(
        run(&mut m, &["EVAL", "return ARGV[2]", "1", "k", "a", "b"]),
        bulk("b")
    );
    // Lua numbers become "%.17g" text as command arguments.
    assert_eq!(
        run(
            &mut m,
            &[
                "EVAL",
                "redis.call('SET', KEYS[1], 0.1) return redis.call('GET', KEYS[1])",
                "1",
                "f"
            ]
        ),
        bulk("0.10000000000000001")
    );
}

#[test]
fn script_errors_read_like_redis_7() {
    let mut m = master();
    run(&mut m, &["SET", "s", "abc"]);
    // The exact texts Redis 7.0.15 answered for these scripts.
    let cases: &[(&str, &str)] = &[
        (
            "return redis.call('INCR', KEYS[1])",
            "ERR value is not an integer or out of range script: 61636018f4e6b5817b89791bbed242f93fa089e3, on @user_script:1.",
        ),
        (
            "return nil + 1",
            "ERR user_script:1: attempt to perform arithmetic on a nil value script: d13bc48d895ba57f297c4db70c1d256548a54e2d, on @user_script:1.",
        ),
        (
            "error('boom')",
            "ERR user_script:1: boom script: 82903a0434f1503e152f89c03c9acd881a0e8150, on @user_script:1.",
        ),
        (
            "error({err='TAB x'})",
            "TAB x script: 533b7147981d90cf1ead33d1e2d34411041066e0, on @user_script:1.",
        ),
        (
            "return redis.call('nosuch')",
            "ERR Unknown Redis command called from script script: 206396248e12c6e742fd7296250433c8d7343b74, on @user_script:1.",
        ),
        (
            "return redis.call('GET')",
            "ERR Wrong number of args calling Redis command from script script: 72273adc3c5955bf8543f1ad6ce893355b89617d, on @user_script:1.",
        ),
        (
            "x = 1",
            "ERR user_script:1: Attempt to modify a readonly table script: 34bce5f775de97f557a34088509c8bfe1ea17e52, on @user_script:1.",
        ),
        (
            "return y",
            "ERR user_script:1: Script attempted to access nonexistent global variable 'y' script: e278681ed961e2fb52881313e5c90fdd93749940, on @user_script:1.",
        ),
        (
            "return redis.call('SET', KEYS[1], true)",
            "ERR Lua redis lib command arguments must be strings or integers script: c7557e3da172fab65869374864ec2ecd40bb1294, on @user_script:1.",
        ),
    ];
    for (script, expected) in cases {
        let keys: &[&str] = if script.contains("KEYS") {
            &["1", "s"]
        } else {
            &["0"]
        };
        let mut args = vec!["EVAL", script];
        args.extend_from_slice(keys);
        assert_eq!(
            run(&mut m, &args),
            Value::Error((*expected).into()),
            "{script}"
        );
    }
    // redis.pcall returns the error instead of raising it.
    assert_eq!(
        run(
            &mut m,
            &["EVAL", "return redis.pcall('INCR', KEYS[1])", "1", "s"]
        ),
        Value::Error("ERR value is not an integer or out of range".into())
    );
    // The line is the script's, not the first.
    assert_eq!(
        run(
            &mut m,
            &[
                "EVAL",
                "local a = 1\n\nreturn redis.call('INCR', KEYS[1])",
                "1",
                "s"
            ]
        ),
        Value::Error(format!(
            "ERR value is not an integer or out of range script: {}, on @user_script:3.",
            redquorum_sim::lua::sha1_hex(b"local a = 1\n\nreturn redis.call('INCR', KEYS[1])")
        ))
    );
}

#[test]
fn identity_uptime_and_restart() {
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(7);
    let mut m = SimMaster::with_rng(&mut rng, T0);
    let first = m.run_id().to_owned();
    assert_eq!(first.len(), 40);
    assert!(first.bytes().all(|b| b.is_ascii_hexdigit()));
    let mut again = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(7);
    assert_eq!(
        redquorum_sim::random_run_id(&mut again),
        first,
        "a seed replays"
    );
    run(&mut m, &["SET", "k", "v"]);
    m.advance_ms(5_500);
    let Value::Bulk(info) = run(&mut m, &["INFO", "server"]) else {
        panic!("INFO is a bulk")
    };
    let info = String::from_utf8(info).unwrap();
    assert!(info.contains(&format!("run_id:{first}\r\n")), "{info}");
    assert!(info.contains("uptime_in_seconds:5\r\n"), "{info}");
    m.restart(true, "a".repeat(40));
    assert_eq!(run(&mut m, &["GET", "k"]), bulk("v"));
    let Value::Bulk(info) = run(&mut m, &["INFO"]) else {
        panic!("INFO is a bulk")
    };
    assert!(
        String::from_utf8(info)
            .unwrap()
            .contains("uptime_in_seconds:0\r\n")
    );
    m.restart(false, "b".repeat(40));
    assert_eq!(run(&mut m, &["GET", "k"]), Value::Nil);
    assert_eq!(
        run(&mut m, &["CONFIG", "GET", "maxmemory-policy"]),
        strings(&["maxmemory-policy", "noeviction"])
    );
    assert_eq!(run(&mut m, &["FLUSHALL"]), Value::ok());
    assert_eq!(run(&mut m, &["PING"]), Value::Status("PONG".into()));
}

/// Not a model property but a finding the model makes reproducible: at exactly the data key's
/// deadline PTTL is 0 (the key still exists), and cache_versioned.lua then takes its `else`
/// branch and writes the version key *without* a TTL, so it outlives the data by forever.
/// A later plain SET of the data key would then be read under that stale version. Kept as a
/// test so that whoever changes the script (e.g. `if pttl >= 0`) sees this flip.
#[test]
fn cache_versioned_at_the_exact_deadline_persists_the_version_key() {
    let (_, source) = redquorum::sim::scripts()
        .into_iter()
        .find(|(name, _)| *name == "cache_versioned")
        .unwrap();
    let mut m = master();
    run(&mut m, &["SET", "cd", "plain", "PX", "10"]);
    m.advance_ms(10);
    assert_eq!(run(&mut m, &["PTTL", "cd"]), Value::Int(0));
    assert_eq!(
        run(&mut m, &["EVAL", source, "3", "cd", "cv", "cn", "get"]),
        Value::Array(vec![bulk("1"), bulk("plain")])
    );
    assert_eq!(
        run(&mut m, &["PTTL", "cv"]),
        Value::Int(-1),
        "version key has no TTL"
    );
    m.advance_ms(1);
    assert_eq!(
        run(&mut m, &["EXISTS", "cd", "cv"]),
        Value::Int(1),
        "data gone, version stays"
    );
}
