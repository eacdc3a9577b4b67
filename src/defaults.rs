//! Every default and limit of the library in one place: what a builder uses when a setting
//! is not given, and the bounds it checks a setting against.

use std::time::Duration;

#[cfg(doc)]
use crate::{Builder, Cache, Election, Error, Redlock, ShardedBuilder};

pub use crate::quorum::DRIFT_FIXED;

// The lock client (`Redlock::builder`).

/// Default number of acquire rounds: unbounded, so the acquire wait alone ends the retries.
pub const DEFAULT_RETRY_COUNT: Option<u32> = None;
/// Default base delay between two acquire rounds.
pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_millis(20);
/// Default random jitter added to each retry delay (uniform in `0..=jitter`), so that
/// contending clients do not retry in lockstep.
pub const DEFAULT_RETRY_JITTER: Duration = Duration::from_millis(20);
/// Default bound on every single call to one master. Small against the TTL, as the Redlock spec
/// asks (5–50 ms for a 10 s TTL): a paused or black-holed master costs at most this much.
pub const DEFAULT_MASTER_TIMEOUT: Duration = Duration::from_millis(50);
/// Default bound on opening a connection to one master (at build and on reconnect).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Default clock drift factor: the validity of a lock is shortened by `ttl * factor + 2 ms`.
pub const DEFAULT_DRIFT_FACTOR: f64 = 0.01;
/// Default time [`Redlock::acquire`] keeps retrying before it gives up.
pub const DEFAULT_ACQUIRE_WAIT: Duration = Duration::from_secs(10);
/// Default prefix of every key this crate writes.
pub const DEFAULT_KEY_PREFIX: &str = "redquorum:";
/// Fencing tokens are on by default: they are what makes a lock safe against paused holders.
pub const DEFAULT_FENCING: bool = true;
/// Default waiter timeout of fair locks and of writers waiting on a read-write lock: how long a
/// waiter's place (or a writer's intent) outlives its last attempt. A waiter that vanishes holds
/// up the queue this long at most; a waiter that cannot poll within it loses its place.
pub const DEFAULT_WAITER_TIMEOUT: Duration = Duration::from_secs(1);
/// Waiting acquirers are woken by release messages (pub/sub) by default; see
/// [`Builder::wake_ups`].
pub const DEFAULT_WAKE_UPS: bool = true;
/// Script calls are each sent as their own `EVALSHA` by default; batching is opt-in, see
/// [`Builder::batching`] (measured: no gain in masters' CPU or throughput on the 2-core test
/// machine, and single-task latency 8-9% worse; guide, `docs/performance.md`).
pub const DEFAULT_BATCHING: bool = false;

// The cache (`Cache::builder`).
/// Default bound on every exchange with one cache node (a whole per-node pipeline counts as
/// one). As with the lock's [`DEFAULT_MASTER_TIMEOUT`]: a paused
/// or black-holed node costs a read at most this much, and its keys count as misses.
pub const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_millis(50);
/// Default prefix of every cache data key (`<prefix><key>`).
pub const DEFAULT_CACHE_KEY_PREFIX: &str = "redquorum:cache:";
/// By default the ring places a key by the key alone, without the prefix, as libmemcached
/// does unless `MEMCACHED_BEHAVIOR_HASH_WITH_PREFIX_KEY` is set.
pub const DEFAULT_HASH_WITH_PREFIX: bool = false;
/// Default TTL of the lock that lets one caller across all processes compute a missing value
/// in [`Cache::get_or_compute`]. It is extended while the computation runs, so it bounds only
/// how long a crashed computing process holds the others up.
pub const DEFAULT_FILL_LOCK_TTL: Duration = Duration::from_secs(5);
/// Default time a [`Cache::get_or_compute`] caller waits for another caller's computation
/// before it fails with [`Error::FillTimeout`]. Longer than [`DEFAULT_FILL_LOCK_TTL`], so that
/// a caller outlives the lock of a computing process that died and computes itself.
pub const DEFAULT_FILL_WAIT: Duration = Duration::from_secs(10);

// Elections (`Redlock::election`).
/// A reasonable leadership TTL for [`Election::campaign`] (`campaign(value,
/// DEFAULT_ELECTION_TTL)`); the CLI's `elect` uses its own `--ttl`.
pub const DEFAULT_ELECTION_TTL: Duration = Duration::from_secs(10);
/// How often [`Election::observe`] reads the leader unless [`Election::observe_interval`] says
/// otherwise.
pub const DEFAULT_OBSERVE_INTERVAL: Duration = Duration::from_millis(100);

// Sharded locks (`ShardedRedlock::builder`).
/// The default [`ShardedBuilder::max_ttl`]: the longest lock a sharded client grants, and how
/// long the joint phase of a group change lasts.
pub const DEFAULT_SHARD_MAX_TTL: Duration = Duration::from_secs(60);

// Limits: what the builders and calls check their input against.
/// Largest TTL accepted. Longer leases are almost always a bug (and a crashed holder would block
/// the resource for that long); use [`Redlock::with_lock`] to hold a lock for long work.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// The per-master timeout must be at most this fraction of a lock's TTL: a round may take up to
/// one timeout, and that time is lost from the validity.
pub const MIN_TTL_PER_TIMEOUT: u32 = 10;
/// Longest value a candidate may publish (it is stored on every master and read by every
/// observer).
pub const MAX_VALUE_LEN: usize = 64 * 1024;
/// The longest owner id accepted, in bytes: it is written to every master with every lock.
pub const MAX_OWNER_ID_LEN: usize = 256;
