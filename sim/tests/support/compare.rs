//! Comparing two masters: a dump of every live key (type, value, TTL) read through commands,
//! and an equality that tolerates the few milliseconds by which the two clocks differ.

use redquorum_sim::Value;

use super::{Exec, args};

/// How far two wall-clock-derived numbers (TTLs, deadlines stored as scores or text) may
/// differ. The model's clock is set from the real server's TIME just before each step, and the
/// real server runs the step a little later (more on a loaded machine), so the two differ by
/// that delay; every TTL or deadline the tests use is either under 10 ms (and waited out) or
/// at least 10 s, so this tolerance cannot hide a wrong base or a wrong unit.
pub const CLOCK_TOLERANCE_MS: i64 = 250;

/// One key as a client sees it.
#[derive(Clone)]
pub struct KeyDump {
    /// The key.
    pub key: Vec<u8>,
    /// TYPE.
    pub kind: String,
    /// PTTL (-1 for a persistent key).
    pub pttl: i64,
    /// The value as a flat list: GET, HGETALL, or ZRANGE 0 -1 WITHSCORES.
    pub value: Vec<Vec<u8>>,
}

impl std::fmt::Debug for KeyDump {
    // Text, not byte arrays: a failure report must be readable.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let value: Vec<String> = self.value.iter().map(|v| text(v)).collect();
        write!(
            f,
            "{} {} pttl={} {:?}",
            text(&self.key),
            self.kind,
            self.pttl,
            value
        )
    }
}

fn flat(v: Value) -> Vec<Vec<u8>> {
    match v {
        Value::Bulk(b) => vec![b],
        Value::Array(items) => items.into_iter().flat_map(flat).collect(),
        Value::Nil => vec![],
        other => vec![format!("{other:?}").into_bytes()],
    }
}

/// Reads the given keys (in sorted order) through commands.
pub fn dump(master: &mut dyn Exec, mut keys: Vec<Vec<u8>>) -> Vec<KeyDump> {
    keys.sort();
    keys.into_iter()
        .filter_map(|key| {
            let k = String::from_utf8_lossy(&key).into_owned();
            let Value::Status(kind) = master.exec(&args(&["TYPE", &k])) else {
                panic!("TYPE answers a status")
            };
            let Value::Int(pttl) = master.exec(&args(&["PTTL", &k])) else {
                panic!("PTTL answers an integer")
            };
            let value = match kind.as_str() {
                // Expired between listing and reading: it is gone for both purposes.
                "none" => return None,
                "string" => master.exec(&args(&["GET", &k])),
                "hash" => master.exec(&args(&["HGETALL", &k])),
                // By member, not by score: deadlines in scores are read from two clocks that
                // may differ by a millisecond, which can swap two members' order (seen in CI);
                // the scores themselves are still compared, within the clock tolerance.
                "zset" => by_member(master.exec(&args(&["ZRANGE", &k, "0", "-1", "WITHSCORES"]))),
                other => panic!("unexpected type {other} for {k}"),
            };
            if pttl == -2 {
                return None;
            }
            Some(KeyDump {
                key,
                kind,
                pttl,
                value: flat(value),
            })
        })
        .collect()
}

/// A `ZRANGE .. WITHSCORES` reply with its (member, score) pairs sorted by member.
fn by_member(reply: Value) -> Value {
    let Value::Array(items) = reply else {
        return reply;
    };
    let mut pairs: Vec<(Value, Value)> = items
        .chunks(2)
        .map(|pair| (pair[0].clone(), pair.get(1).cloned().unwrap_or(Value::Nil)))
        .collect();
    pairs.sort_by_key(|(member, _)| format!("{member:?}"));
    Value::Array(pairs.into_iter().flat_map(|(m, s)| [m, s]).collect())
}

/// Splits text into runs of ASCII digits and runs of anything else.
fn tokens(bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=bytes.len() {
        if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
            out.push(&bytes[start..i]);
            start = i;
        }
    }
    out
}

/// Equal, except that numbers of 12 digits or more (epoch milliseconds: deadlines in scores
/// and in semaphore leases) may differ by the clock tolerance.
pub fn fuzzy_eq(a: &[u8], b: &[u8]) -> bool {
    if a == b {
        return true;
    }
    let (ta, tb) = (tokens(a), tokens(b));
    ta.len() == tb.len()
        && ta.iter().zip(&tb).all(|(x, y)| {
            if x == y {
                return true;
            }
            let time_like = |t: &[u8]| t.len() >= 12 && t.iter().all(u8::is_ascii_digit);
            if !(time_like(x) && time_like(y)) {
                return false;
            }
            let parse = |t: &[u8]| std::str::from_utf8(t).unwrap().parse::<i64>().unwrap();
            (parse(x) - parse(y)).abs() <= CLOCK_TOLERANCE_MS
        })
}

/// Differences between two dumps, as readable lines (empty when they agree). A key present on
/// one side only is tolerated when it was about to expire there (PTTL within the tolerance):
/// the two clocks straddled its deadline.
pub fn diff(real: &[KeyDump], sim: &[KeyDump]) -> Vec<String> {
    let mut out = Vec::new();
    let about_to_expire = |d: &KeyDump| d.pttl >= 0 && d.pttl <= CLOCK_TOLERANCE_MS;
    for r in real {
        if !sim.iter().any(|s| s.key == r.key) && !about_to_expire(r) {
            out.push(format!("only on redis-server: {r:?}"));
        }
    }
    for s in sim {
        let Some(r) = real.iter().find(|r| r.key == s.key) else {
            if !about_to_expire(s) {
                out.push(format!("only on SimMaster: {s:?}"));
            }
            continue;
        };
        // Read as present (TYPE, PTTL) but empty by the value read: it expired between the
        // reads (Redis keeps no empty hash, zset or string), which a loaded machine makes
        // likely for a key a few milliseconds from expiry (seen: a semaphore hash at pttl=3).
        if about_to_expire(r) && r.value.is_empty() {
            continue;
        }
        let pttl_ok = if r.pttl < 0 || s.pttl < 0 {
            r.pttl == s.pttl
        } else {
            (r.pttl - s.pttl).abs() <= CLOCK_TOLERANCE_MS
        };
        let value_ok = r.value.len() == s.value.len()
            && r.value.iter().zip(&s.value).all(|(a, b)| fuzzy_eq(a, b));
        if r.kind != s.kind || !pttl_ok || !value_ok {
            out.push(format!(
                "differs:\n  redis-server {r:?}\n  SimMaster    {s:?}"
            ));
        }
    }
    out
}

/// Replies equal, except for epoch-millisecond numbers (a deadline read back, e.g. when a
/// random run lets a fair-lock ticket script read the deadline set): those may differ by the
/// clock tolerance, like in the keyspace.
pub fn reply_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => {
            x == y || (*x >= 1_000_000_000_000 && (x - y).abs() <= CLOCK_TOLERANCE_MS)
        }
        (Value::Bulk(x), Value::Bulk(y)) => fuzzy_eq(x, y),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| reply_eq(x, y))
        }
        _ => a == b,
    }
}
