//! The data commands of one master (the ones our scripts call, plus the few the library sends
//! directly), with Redis 7.0's reply shapes and error texts.

use std::collections::BTreeMap;

use crate::data::{Data, Hash, ScoreBound, SortedSet};
use crate::keyspace::Keyspace;
use crate::numbers::{format_g17, parse_f64, parse_i64};
use crate::value::{NOT_FLOAT, NOT_INTEGER, SYNTAX, Value, WRONGTYPE};

/// The state data commands read and write: the keyspace, the wall clock it is judged by, and
/// what PUBLISH sent.
#[derive(Clone, Debug, Default)]
pub struct Store {
    /// Database 0.
    pub keyspace: Keyspace,
    /// The master's wall clock in microseconds since the Unix epoch (TIME shows it; expiry
    /// compares its milliseconds, as Redis' `mstime()`).
    pub now_us: u64,
    /// Every PUBLISH so far, in order: (channel, message).
    pub published: Vec<(Vec<u8>, Vec<u8>)>,
    /// Subscriber counts per channel, set by the caller: PUBLISH returns them.
    pub subscribers: BTreeMap<Vec<u8>, i64>,
}

impl Store {
    /// The wall clock in milliseconds, what expiry is judged by.
    pub fn now_ms(&self) -> u64 {
        self.now_us / 1000
    }
}

/// Minimum argument count (name included) and whether more are allowed: Redis' arity, where a
/// negative arity -n means "at least n". Only the commands modelled here.
fn arity(name: &str) -> Option<i32> {
    Some(match name {
        "del" | "exists" | "mget" => -2,
        "get" | "hgetall" | "hlen" | "incr" | "pttl" | "zcard" | "type" => 2,
        "set" => -3,
        "hdel" | "pexpire" | "zrem" => -3,
        "hexists" | "hget" | "publish" | "zscore" => 3,
        "hmget" => -3,
        "hincrby" => 4,
        "hset" | "zadd" | "zrange" | "zrangebyscore" | "zrevrange" => -4,
        "zremrangebyscore" => 4,
        "time" => 1,
        "ping" => -1,
        _ => return None,
    })
}

/// Outcome of checking a command name and argument count.
pub enum Lookup {
    /// No such data command here (the caller may know it: EVAL, SCRIPT, INFO...).
    Unknown,
    /// Known, but with the wrong number of arguments.
    WrongArity,
    /// Known, and the count fits.
    Ok,
}

/// Checks a lower-cased command name and the full argument count (name included).
pub fn lookup(name: &str, argc: usize) -> Lookup {
    match arity(name) {
        None => Lookup::Unknown,
        Some(n) if n >= 0 && argc != n as usize => Lookup::WrongArity,
        Some(n) if n < 0 && argc < n.unsigned_abs() as usize => Lookup::WrongArity,
        Some(_) => Lookup::Ok,
    }
}

/// The Redis error for a wrong argument count.
pub fn wrong_arity(name: &str) -> Value {
    Value::err(format!("wrong number of arguments for '{name}' command"))
}

/// Runs a data command whose name (lower case) and arity were checked by [`lookup`].
/// `args[0]` is the command name.
pub fn run(store: &mut Store, name: &str, args: &[Vec<u8>]) -> Value {
    let now = store.now_ms();
    let ks = &mut store.keyspace;
    let a = &args[1..];
    let result = match name {
        "ping" => match a {
            [] => Ok(Value::Status("PONG".into())),
            [message] => Ok(Value::bulk(message.clone())),
            _ => Ok(wrong_arity(name)),
        },
        "time" => {
            let us = store.now_us;
            Ok(Value::Array(vec![
                Value::bulk((us / 1_000_000).to_string()),
                Value::bulk((us % 1_000_000).to_string()),
            ]))
        }
        "publish" => {
            let receivers = store.subscribers.get(&a[0]).copied().unwrap_or(0);
            store.published.push((a[0].clone(), a[1].clone()));
            Ok(Value::Int(receivers))
        }
        "del" => Ok(Value::Int(
            a.iter().filter(|k| ks.remove(k, now)).count() as i64
        )),
        // Redis counts a key named twice twice.
        "exists" => Ok(Value::Int(
            a.iter().filter(|k| ks.exists(k, now)).count() as i64
        )),
        "type" => Ok(Value::Status(
            ks.lookup(&a[0], now)
                .map_or("none", |e| e.data.type_name())
                .into(),
        )),
        "get" => get_string(ks, &a[0], now).map(|v| v.map_or(Value::Nil, Value::Bulk)),
        // MGET answers nil for a key of another type instead of failing.
        "mget" => Ok(Value::Array(
            a.iter()
                .map(|k| match get_string(ks, k, now) {
                    Ok(Some(v)) => Value::Bulk(v),
                    _ => Value::Nil,
                })
                .collect(),
        )),
        "set" => set(ks, a, now),
        "incr" => incr(ks, &a[0], now),
        "pexpire" => pexpire(ks, a, now),
        "pttl" => Ok(Value::Int(match ks.lookup(&a[0], now) {
            None => -2,
            Some(e) => match e.expires_at {
                None => -1,
                // At exactly the deadline the key is still there, with 0 ms left.
                Some(when) => when.saturating_sub(now) as i64,
            },
        })),
        "hget" => hash(ks, &a[0], now).map(|h| match h.and_then(|h| h.get(&a[1])) {
            Some(v) => Value::bulk(v),
            None => Value::Nil,
        }),
        "hexists" => hash(ks, &a[0], now)
            .map(|h| Value::Int(h.is_some_and(|h| h.get(&a[1]).is_some()) as i64)),
        "hlen" => hash(ks, &a[0], now).map(|h| Value::Int(h.map_or(0, |h| h.len() as i64))),
        "hgetall" => hash(ks, &a[0], now).map(|h| {
            Value::Array(h.map_or_else(Vec::new, |h| {
                h.iter()
                    .flat_map(|(f, v)| [Value::bulk(f), Value::bulk(v)])
                    .collect()
            }))
        }),
        "hmget" => hash(ks, &a[0], now).map(|h| {
            Value::Array(
                a[1..]
                    .iter()
                    .map(|f| {
                        h.as_ref()
                            .and_then(|h| h.get(f))
                            .map_or(Value::Nil, Value::bulk)
                    })
                    .collect(),
            )
        }),
        "hincrby" => hincrby(ks, a, now),
        "hset" => hset(ks, a, now),
        "hdel" => hdel(ks, a, now),
        "zadd" => zadd(ks, a, now),
        "zcard" => zset(ks, &a[0], now).map(|z| Value::Int(z.map_or(0, |z| z.len() as i64))),
        "zscore" => zset(ks, &a[0], now).map(|z| match z.and_then(|z| z.score(&a[1])) {
            Some(s) => Value::bulk(format_g17(s)),
            None => Value::Nil,
        }),
        "zrem" => zrem(ks, a, now),
        "zrange" => zrange(ks, a, now, false),
        "zrevrange" => zrange(ks, a, now, true),
        "zrangebyscore" => zrangebyscore(ks, a, now),
        "zremrangebyscore" => zremrangebyscore(ks, a, now),
        other => unreachable!("lookup() accepted unknown command {other}"),
    };
    result.unwrap_or_else(|e| e)
}

/// A command's outcome: an error reply travels as `Err` so `?` can stop early.
type Reply = Result<Value, Value>;

fn wrongtype() -> Value {
    Value::Error(WRONGTYPE.into())
}

fn not_integer() -> Value {
    Value::Error(NOT_INTEGER.into())
}

fn int_arg(bytes: &[u8]) -> Result<i64, Value> {
    parse_i64(bytes).ok_or_else(not_integer)
}

fn get_string(ks: &mut Keyspace, key: &[u8], now: u64) -> Result<Option<Vec<u8>>, Value> {
    match ks.lookup(key, now).map(|e| &e.data) {
        None => Ok(None),
        Some(Data::Str(v)) => Ok(Some(v.clone())),
        Some(_) => Err(wrongtype()),
    }
}

fn hash<'a>(ks: &'a mut Keyspace, key: &[u8], now: u64) -> Result<Option<&'a mut Hash>, Value> {
    match ks.lookup(key, now).map(|e| &mut e.data) {
        None => Ok(None),
        Some(Data::Hash(h)) => Ok(Some(h)),
        Some(_) => Err(wrongtype()),
    }
}

fn zset<'a>(
    ks: &'a mut Keyspace,
    key: &[u8],
    now: u64,
) -> Result<Option<&'a mut SortedSet>, Value> {
    match ks.lookup(key, now).map(|e| &mut e.data) {
        None => Ok(None),
        Some(Data::ZSet(z)) => Ok(Some(z)),
        Some(_) => Err(wrongtype()),
    }
}

/// SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL].
fn set(ks: &mut Keyspace, a: &[Vec<u8>], now: u64) -> Reply {
    let (key, value) = (&a[0], &a[1]);
    let (mut nx, mut xx, mut get, mut keepttl) = (false, false, false, false);
    let mut expire: Option<(&str, &[u8])> = None;
    let mut i = 2;
    while i < a.len() {
        let opt = String::from_utf8_lossy(&a[i]).to_ascii_lowercase();
        match opt.as_str() {
            "nx" if !xx => nx = true,
            "xx" if !nx => xx = true,
            "get" => get = true,
            "keepttl" if expire.is_none() => keepttl = true,
            "ex" | "px" | "exat" | "pxat" if expire.is_none() && !keepttl && i + 1 < a.len() => {
                let unit = match opt.as_str() {
                    "ex" => "ex",
                    "px" => "px",
                    "exat" => "exat",
                    _ => "pxat",
                };
                expire = Some((unit, &a[i + 1]));
                i += 1;
            }
            _ => return Err(Value::Error(SYNTAX.into())),
        }
        i += 1;
    }
    // The expire time is validated before the key is looked at, so a bad PX fails even when
    // NX would not have set anything.
    let expires_at = match expire {
        None => None,
        Some((unit, raw)) => {
            let n = int_arg(raw)?;
            let invalid = || Value::err("invalid expire time in 'set' command");
            if n <= 0 {
                return Err(invalid());
            }
            let ms = match unit {
                "ex" | "exat" => n.checked_mul(1000).ok_or_else(invalid)?,
                _ => n,
            };
            let at = match unit {
                "ex" | "px" => (now as i64).checked_add(ms).ok_or_else(invalid)?,
                _ => ms,
            };
            Some(at as u64)
        }
    };
    let old = ks.lookup(key, now).map(|e| (e.data.clone(), e.expires_at));
    let old_value = match (&old, get) {
        (Some((Data::Str(v), _)), true) => Value::bulk(v.clone()),
        (Some(_), true) => return Err(wrongtype()),
        _ => Value::Nil,
    };
    if (nx && old.is_some()) || (xx && old.is_none()) {
        return Ok(Value::Nil);
    }
    let expires_at = if keepttl {
        old.and_then(|(_, at)| at)
    } else {
        expires_at
    };
    ks.insert(key, Data::Str(value.clone()), expires_at);
    Ok(if get { old_value } else { Value::ok() })
}

/// INCR key: keeps the key's TTL; the value must be a string2ll integer.
fn incr(ks: &mut Keyspace, key: &[u8], now: u64) -> Reply {
    let current = match ks.lookup(key, now) {
        None => 0,
        Some(e) => match &e.data {
            Data::Str(v) => int_arg(v)?,
            _ => return Err(wrongtype()),
        },
    };
    let next = current
        .checked_add(1)
        .ok_or_else(|| Value::err("increment or decrement would overflow"))?;
    let text = next.to_string().into_bytes();
    match ks.lookup(key, now) {
        Some(e) => e.data = Data::Str(text),
        None => ks.insert(key, Data::Str(text), None),
    }
    Ok(Value::Int(next))
}

/// PEXPIRE key ms: 0 when the key is missing; a deadline not in the future deletes the key
/// (and still answers 1), as Redis' `checkAlreadyExpired` does.
fn pexpire(ks: &mut Keyspace, a: &[Vec<u8>], now: u64) -> Reply {
    if let Some(option) = a.get(2) {
        // NX/XX/GT/LT exist in Redis 7 but none of our scripts use them.
        return Err(Value::err(format!(
            "Unsupported option {} (not modelled by redquorum-sim)",
            String::from_utf8_lossy(option)
        )));
    }
    let ms = int_arg(&a[1])?;
    let when = (now as i64)
        .checked_add(ms)
        .ok_or_else(|| Value::err("invalid expire time in 'pexpire' command"))?;
    let Some(entry) = ks.lookup(&a[0], now) else {
        return Ok(Value::Int(0));
    };
    if when <= now as i64 {
        ks.remove(&a[0], now);
    } else {
        entry.expires_at = Some(when as u64);
    }
    Ok(Value::Int(1))
}

/// HSET key field value [field value ...]: the number of new fields; keeps the TTL.
fn hset(ks: &mut Keyspace, a: &[Vec<u8>], now: u64) -> Reply {
    if a.len().is_multiple_of(2) {
        return Err(wrong_arity("hset"));
    }
    let key = &a[0];
    if hash(ks, key, now)?.is_none() {
        ks.insert(key, Data::Hash(Hash::default()), None);
    }
    let h = hash(ks, key, now)?.expect("just created");
    let added = a[1..].chunks(2).filter(|fv| h.set(&fv[0], &fv[1])).count();
    Ok(Value::Int(added as i64))
}

/// HINCRBY key field increment: a missing key or field counts from 0.
fn hincrby(ks: &mut Keyspace, a: &[Vec<u8>], now: u64) -> Reply {
    let by = int_arg(&a[2])?;
    let current = match hash(ks, &a[0], now)?.and_then(|h| h.get(&a[1])) {
        None => 0,
        Some(v) => parse_i64(v).ok_or_else(|| Value::err("hash value is not an integer"))?,
    };
    let next = current
        .checked_add(by)
        .ok_or_else(|| Value::err("increment or decrement would overflow"))?;
    if hash(ks, &a[0], now)?.is_none() {
        ks.insert(&a[0], Data::Hash(Hash::default()), None);
    }
    let h = hash(ks, &a[0], now)?.expect("just created");
    h.set(&a[1], next.to_string().as_bytes());
    Ok(Value::Int(next))
}

fn hdel(ks: &mut Keyspace, a: &[Vec<u8>], now: u64) -> Reply {
    let removed = match hash(ks, &a[0], now)? {
        None => 0,
        Some(h) => a[1..].iter().filter(|f| h.remove(f)).count(),
    };
    ks.remove_if_empty(&a[0]);
    Ok(Value::Int(removed as i64))
}

/// ZADD key [NX|XX] [GT|LT] [CH] score member [score member ...].
fn zadd(ks: &mut Keyspace, a: &[Vec<u8>], now: u64) -> Reply {
    let (mut nx, mut xx, mut gt, mut lt, mut ch) = (false, false, false, false, false);
    let mut i = 1;
    while i < a.len() {
        match String::from_utf8_lossy(&a[i]).to_ascii_lowercase().as_str() {
            "nx" => nx = true,
            "xx" => xx = true,
            "gt" => gt = true,
            "lt" => lt = true,
            "ch" => ch = true,
            "incr" => return Err(Value::err("ZADD INCR is not modelled by redquorum-sim")),
            _ => break,
        }
        i += 1;
    }
    let pairs = &a[i..];
    if pairs.is_empty() || !pairs.len().is_multiple_of(2) {
        return Err(Value::Error(SYNTAX.into()));
    }
    if nx && xx {
        return Err(Value::err(
            "XX and NX options at the same time are not compatible",
        ));
    }
    if (gt && lt) || (nx && (gt || lt)) {
        return Err(Value::err(
            "GT, LT, and/or NX options at the same time are not compatible",
        ));
    }
    // Every score is parsed before anything changes.
    let mut parsed = Vec::with_capacity(pairs.len() / 2);
    for pair in pairs.chunks(2) {
        let score = parse_f64(&pair[0]).ok_or_else(|| Value::Error(NOT_FLOAT.into()))?;
        parsed.push((score, &pair[1]));
    }
    let key = &a[0];
    if zset(ks, key, now)?.is_none() {
        if xx {
            return Ok(Value::Int(0));
        }
        ks.insert(key, Data::ZSet(SortedSet::default()), None);
    }
    let z = zset(ks, key, now)?.expect("just created");
    let (mut added, mut changed) = (0, 0);
    for (score, member) in parsed {
        match z.score(member) {
            None if !xx => {
                z.insert(score, member);
                added += 1;
            }
            Some(old) if !(nx || old == score || (gt && score <= old) || (lt && score >= old)) => {
                z.insert(score, member);
                changed += 1;
            }
            _ => {}
        }
    }
    ks.remove_if_empty(key);
    Ok(Value::Int(if ch { added + changed } else { added }))
}

fn zrem(ks: &mut Keyspace, a: &[Vec<u8>], now: u64) -> Reply {
    let removed = match zset(ks, &a[0], now)? {
        None => 0,
        Some(z) => a[1..].iter().filter(|m| z.remove(m)).count(),
    };
    ks.remove_if_empty(&a[0]);
    Ok(Value::Int(removed as i64))
}

fn with_scores(items: impl Iterator<Item = (f64, Vec<u8>)>, scores: bool) -> Value {
    Value::Array(
        items
            .flat_map(|(s, m)| {
                let mut out = vec![Value::Bulk(m)];
                if scores {
                    out.push(Value::bulk(format_g17(s)));
                }
                out
            })
            .collect(),
    )
}

/// ZRANGE / ZREVRANGE key start stop [WITHSCORES], by rank only (the BYSCORE/BYLEX/LIMIT forms
/// of Redis 6.2+ ZRANGE are not used by our scripts and answer an error here).
fn zrange(ks: &mut Keyspace, a: &[Vec<u8>], now: u64, mut rev: bool) -> Reply {
    let mut scores = false;
    for opt in &a[3..] {
        match String::from_utf8_lossy(opt).to_ascii_lowercase().as_str() {
            "withscores" => scores = true,
            "rev" if !rev => rev = true,
            "byscore" | "bylex" | "limit" => {
                return Err(Value::err(
                    "ZRANGE BYSCORE/BYLEX/LIMIT not modelled by redquorum-sim",
                ));
            }
            _ => return Err(Value::Error(SYNTAX.into())),
        }
    }
    let (start, stop) = (int_arg(&a[1])?, int_arg(&a[2])?);
    let Some(z) = zset(ks, &a[0], now)? else {
        return Ok(Value::Array(vec![]));
    };
    let len = z.len() as i64;
    let start = if start < 0 {
        (start + len).max(0)
    } else {
        start
    };
    let stop = if stop < 0 {
        stop + len
    } else {
        stop.min(len - 1)
    };
    if start > stop || start >= len {
        return Ok(Value::Array(vec![]));
    }
    let items: Vec<(f64, Vec<u8>)> = if rev {
        z.iter().rev().map(|(s, m)| (s, m.to_vec())).collect()
    } else {
        z.iter().map(|(s, m)| (s, m.to_vec())).collect()
    };
    let picked = items
        .into_iter()
        .skip(start as usize)
        .take((stop - start + 1) as usize);
    Ok(with_scores(picked, scores))
}

/// Parses a score bound: `-inf`, `+inf`, a float, or `(` before any of them for exclusive.
pub fn parse_bound(raw: &[u8]) -> Option<ScoreBound> {
    let (exclusive, number) = match raw.split_first() {
        Some((b'(', rest)) => (true, rest),
        _ => (false, raw),
    };
    parse_f64(number).map(|value| ScoreBound { value, exclusive })
}

fn bounds(min: &[u8], max: &[u8]) -> Result<(ScoreBound, ScoreBound), Value> {
    match (parse_bound(min), parse_bound(max)) {
        (Some(min), Some(max)) => Ok((min, max)),
        _ => Err(Value::err("min or max is not a float")),
    }
}

/// ZRANGEBYSCORE key min max [WITHSCORES] [LIMIT offset count].
fn zrangebyscore(ks: &mut Keyspace, a: &[Vec<u8>], now: u64) -> Reply {
    let (mut scores, mut limit) = (false, None);
    let mut i = 3;
    while i < a.len() {
        match String::from_utf8_lossy(&a[i]).to_ascii_lowercase().as_str() {
            "withscores" => scores = true,
            "limit" if i + 2 < a.len() => {
                limit = Some((int_arg(&a[i + 1])?, int_arg(&a[i + 2])?));
                i += 2;
            }
            _ => return Err(Value::Error(SYNTAX.into())),
        }
        i += 1;
    }
    let (min, max) = bounds(&a[1], &a[2])?;
    let Some(z) = zset(ks, &a[0], now)? else {
        return Ok(Value::Array(vec![]));
    };
    let mut items = z.range_by_score(min, max);
    if let Some((offset, count)) = limit {
        // A negative offset gives nothing; a negative count means "all the rest".
        items = if offset < 0 {
            vec![]
        } else {
            let rest = items.into_iter().skip(offset as usize);
            if count < 0 {
                rest.collect()
            } else {
                rest.take(count as usize).collect()
            }
        };
    }
    Ok(with_scores(items.into_iter(), scores))
}

fn zremrangebyscore(ks: &mut Keyspace, a: &[Vec<u8>], now: u64) -> Reply {
    let (min, max) = bounds(&a[1], &a[2])?;
    let removed = match zset(ks, &a[0], now)? {
        None => 0,
        Some(z) => z.remove_range_by_score(min, max),
    };
    ks.remove_if_empty(&a[0]);
    Ok(Value::Int(removed as i64))
}
