//! The value types a key can hold, with the iteration orders Redis shows for small values.

use std::cmp::Ordering;

/// What one key holds.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    /// A string (also what INCR works on).
    Str(Vec<u8>),
    /// A hash.
    Hash(Hash),
    /// A sorted set.
    ZSet(SortedSet),
}

impl Data {
    /// The name TYPE answers with.
    pub fn type_name(&self) -> &'static str {
        match self {
            Data::Str(_) => "string",
            Data::Hash(_) => "hash",
            Data::ZSet(_) => "zset",
        }
    }
}

/// A hash in insertion order. Redis keeps small hashes (up to 128 fields of up to 64 bytes:
/// `hash-max-listpack-*`) as a listpack, which HGETALL walks in insertion order, updating a
/// field in place; a script iterating HGETALL (the semaphore scripts do) sees that order.
/// Larger hashes become hash tables with an unspecified order, which this model does not follow.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Hash {
    fields: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Hash {
    /// The value of a field.
    pub fn get(&self, field: &[u8]) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(f, _)| f == field)
            .map(|(_, v)| v.as_slice())
    }

    /// Sets a field, in place if it exists; returns whether it is new.
    pub fn set(&mut self, field: &[u8], value: &[u8]) -> bool {
        match self.fields.iter_mut().find(|(f, _)| f == field) {
            Some((_, v)) => {
                *v = value.to_vec();
                false
            }
            None => {
                self.fields.push((field.to_vec(), value.to_vec()));
                true
            }
        }
    }

    /// Removes a field; returns whether it was there.
    pub fn remove(&mut self, field: &[u8]) -> bool {
        let before = self.fields.len();
        self.fields.retain(|(f, _)| f != field);
        self.fields.len() != before
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether no field is left (Redis then deletes the key).
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Fields and values in HGETALL order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields
            .iter()
            .map(|(f, v)| (f.as_slice(), v.as_slice()))
    }
}

/// A sorted set: members ordered by score, then by member bytes (memcmp), as Redis orders them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SortedSet {
    // Kept sorted; our sets hold a few waiters or readers, so a vector is simplest and exact.
    entries: Vec<(f64, Vec<u8>)>,
}

/// One end of a score range (ZRANGEBYSCORE, ZREMRANGEBYSCORE): `(x` is exclusive.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScoreBound {
    /// The score.
    pub value: f64,
    /// Whether the bound itself is excluded.
    pub exclusive: bool,
}

fn order(a: &(f64, Vec<u8>), b: &(f64, Vec<u8>)) -> Ordering {
    a.0.partial_cmp(&b.0)
        .expect("scores are never NaN")
        .then_with(|| a.1.cmp(&b.1))
}

impl SortedSet {
    /// The score of a member.
    pub fn score(&self, member: &[u8]) -> Option<f64> {
        self.entries
            .iter()
            .find(|(_, m)| m == member)
            .map(|(s, _)| *s)
    }

    /// Adds or re-scores a member; returns whether it is new.
    pub fn insert(&mut self, score: f64, member: &[u8]) -> bool {
        let existed = self.remove(member);
        let entry = (score, member.to_vec());
        let at = self
            .entries
            .partition_point(|e| order(e, &entry) == Ordering::Less);
        self.entries.insert(at, entry);
        !existed
    }

    /// Removes a member; returns whether it was there.
    pub fn remove(&mut self, member: &[u8]) -> bool {
        let before = self.entries.len();
        self.entries.retain(|(_, m)| m != member);
        self.entries.len() != before
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no member is left (Redis then deletes the key).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Members with scores, lowest score first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (f64, &[u8])> + ExactSizeIterator {
        self.entries.iter().map(|(s, m)| (*s, m.as_slice()))
    }

    /// Members whose score lies within `[min, max]` (bounds possibly exclusive), in order.
    pub fn range_by_score(&self, min: ScoreBound, max: ScoreBound) -> Vec<(f64, Vec<u8>)> {
        self.entries
            .iter()
            .filter(|(s, _)| in_range(*s, min, max))
            .cloned()
            .collect()
    }

    /// Removes the members within a score range; returns how many.
    pub fn remove_range_by_score(&mut self, min: ScoreBound, max: ScoreBound) -> usize {
        let before = self.entries.len();
        self.entries.retain(|(s, _)| !in_range(*s, min, max));
        before - self.entries.len()
    }
}

fn in_range(score: f64, min: ScoreBound, max: ScoreBound) -> bool {
    let above = if min.exclusive {
        score > min.value
    } else {
        score >= min.value
    };
    let below = if max.exclusive {
        score < max.value
    } else {
        score <= max.value
    };
    above && below
}
