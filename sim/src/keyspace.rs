//! One database of a master: keys, their values and their expiry deadlines.

use std::collections::BTreeMap;

use crate::data::Data;

/// A key's value and its expiry deadline (absolute, in ms of the master's wall clock).
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The value.
    pub data: Data,
    /// When the key expires; `None` for a persistent key.
    pub expires_at: Option<u64>,
}

/// The keyspace of database 0, the only one the library uses.
///
/// Expiry is lazy, as Redis' passive expiry: a key past its deadline is dropped when touched.
/// Redis also samples keys in the background (active expiry); that changes memory, never a
/// reply, because every lookup here treats a key past its deadline as absent.
#[derive(Clone, Debug, Default)]
pub struct Keyspace {
    keys: BTreeMap<Vec<u8>, Entry>,
}

/// Whether a deadline has passed at `now`. Redis' `keyIsExpired` is `now > when`: at exactly
/// the deadline the key still exists (with PTTL 0); one ms later it is gone.
pub fn is_expired(expires_at: Option<u64>, now_ms: u64) -> bool {
    matches!(expires_at, Some(when) if now_ms > when)
}

impl Keyspace {
    /// The live entry of a key, dropping it first if it has expired.
    pub fn lookup(&mut self, key: &[u8], now_ms: u64) -> Option<&mut Entry> {
        if self
            .keys
            .get(key)
            .is_some_and(|e| is_expired(e.expires_at, now_ms))
        {
            self.keys.remove(key);
        }
        self.keys.get_mut(key)
    }

    /// The live entry of a key at `now`, without touching the keyspace (for checks behind the
    /// clients' backs).
    pub fn peek(&self, key: &[u8], now_ms: u64) -> Option<&Entry> {
        self.keys
            .get(key)
            .filter(|e| !is_expired(e.expires_at, now_ms))
    }

    /// Whether a key is live.
    pub fn exists(&mut self, key: &[u8], now_ms: u64) -> bool {
        self.lookup(key, now_ms).is_some()
    }

    /// Stores a value with a deadline, replacing whatever the key held.
    pub fn insert(&mut self, key: &[u8], data: Data, expires_at: Option<u64>) {
        self.keys.insert(key.to_vec(), Entry { data, expires_at });
    }

    /// Deletes a key; returns whether it was live.
    pub fn remove(&mut self, key: &[u8], now_ms: u64) -> bool {
        self.lookup(key, now_ms).is_some() && self.keys.remove(key).is_some()
    }

    /// Drops a hash or sorted set that a removal left empty: Redis never keeps empty aggregates.
    pub fn remove_if_empty(&mut self, key: &[u8]) {
        let empty = match self.keys.get(key).map(|e| &e.data) {
            Some(Data::Hash(h)) => h.is_empty(),
            Some(Data::ZSet(z)) => z.is_empty(),
            _ => false,
        };
        if empty {
            self.keys.remove(key);
        }
    }

    /// Deletes every key (FLUSHALL, a restart without data).
    pub fn clear(&mut self) {
        self.keys.clear();
    }

    /// The live keys and their entries at `now`, in key order: what a dump of the master shows.
    pub fn live(&self, now_ms: u64) -> impl Iterator<Item = (&[u8], &Entry)> {
        self.keys
            .iter()
            .filter(move |(_, e)| !is_expired(e.expires_at, now_ms))
            .map(|(k, e)| (k.as_slice(), e))
    }
}
