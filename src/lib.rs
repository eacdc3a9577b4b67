//! # redquorum
//!
//! Distributed locks over a quorum of N independent Redis masters (the **Redlock** algorithm),
//! done the way the spec asks and the way the other libraries do not: all masters are asked
//! **in parallel**, every call is bounded by a small per-master timeout, the round is decided as
//! soon as the outcome is certain, validity comes from a monotonic clock minus a drift
//! allowance, and a failed round is rolled back on every master. Locks carry **fencing tokens**
//! that stay strictly increasing over the quorum.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! # async fn run() -> redquorum::Result<()> {
//! let redlock = redquorum::Redlock::builder()
//!     .masters([
//!         "redis://127.0.0.1:7001", "redis://127.0.0.1:7002", "redis://127.0.0.1:7003",
//!         "redis://127.0.0.1:7004", "redis://127.0.0.1:7005",
//!     ])
//!     .build()
//!     .await?;
//!
//! let lock = redlock.acquire("invoices", Duration::from_secs(10)).await?;
//! let token = lock.fencing_token().expect("fencing is on by default");
//! // ... write to the protected resource, passing `token` along ...
//! let released = lock.release().await?;
//! assert!(released);
//!
//! // Or let the library extend the lock while the work runs:
//! redlock
//!     .with_lock("reports", Duration::from_secs(5), |lock| async move {
//!         // lock.fencing_token(), and lock.lost() completes if the lease could not be renewed
//!     })
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! ## What it guarantees
//! - **Mutual exclusion within the validity window**, if the masters keep each key for its TTL
//!   and clocks advance at about the same rate: while [`LockGuard::is_valid`] is true, no other
//!   client can hold the same resource, because two holders would need two majorities of
//!   masters, which share a master, which granted `SET NX` once.
//! - **Bounded latency under faults**: a paused, black-holed or slow master costs at most one
//!   per-master timeout per round; a dead one costs nothing. Rounds decide at quorum.
//! - **No leftovers**: a failed round is rolled back on every master that may hold its key,
//!   including those that timed out (the `SET` may have landed). Release and extend act only
//!   on this owner's keys (compare-and-act Lua scripts); a failed extend never deletes and never
//!   re-creates a key.
//! - **Fencing tokens that strictly increase** across acquisitions of any resource under the
//!   same key prefix, as long as a majority of masters keep their counters.
//!
//! ## What it does not guarantee
//! - **Safety when a master loses data.** A master that restarts without persistence forgets
//!   the keys it granted, and a second client can then win a quorum. Run masters with AOF
//!   (`appendfsync always`) or enable [`Builder::restart_quarantine`], which stops counting a
//!   restarted master's votes until every lock it may have granted has expired.
//! - **Safety against clock jumps on a master.** Redis expires keys by its wall clock; a clock
//!   that jumps forward expires a lock early. Nothing on the client can see this.
//! - **Safety against a paused holder.** A client paused (GC, swap, SIGSTOP) past its validity
//!   still believes it holds the lock. This is M. Kleppmann's critique of Redlock, and it is
//!   right: *only the protected resource can stop the stale write*, by checking the
//!   [fencing token](LockGuard::fencing_token). Use locks for efficiency without fencing; use
//!   fencing for correctness.
//!
//! ## Layout
//! - `config`: [`Builder`], the `DEFAULT_*` constants, input validation.
//! - `error`: [`Error`], with each master's [`MasterReply`] kept by index.
//! - `master`: one master's multiplexed connection, reconnect, per-call timeout, `run_id`.
//! - `scripts`: the Lua scripts (in `scripts/*.lua`), `EVALSHA` with `NOSCRIPT` recovery.
//! - `quorum`: vote counting with early decision, validity arithmetic, concurrent fan-out.
//! - `notify`: release wake-ups for waiting acquirers (pub/sub), and their local FIFO queue.
//! - `lock`: [`Redlock`]: connect, acquire rounds, fencing write-back, retry policy.
//! - `guard`: [`LockGuard`] (extend, release, drop) and the auto-extending lease of
//!   [`Redlock::with_lock`].
//! - `ring`: [`HashRing`], ketama consistent hashing byte-compatible with libmemcached.
//!
//! ## Cancellation
//! Dropping an `acquire` future part-way rolls its round back in the background. Dropping a
//! [`LockGuard`] releases it in the background. Dropping a `with_lock` future stops the
//! automatic extension and releases the lock in the background.
#![deny(missing_docs)]
#![warn(rust_2018_idioms, unreachable_pub)]

mod config;
mod error;
mod guard;
mod lock;
mod master;
mod notify;
mod quorum;
mod ring;
mod scripts;

pub use config::{
    Builder, DEFAULT_ACQUIRE_WAIT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_DRIFT_FACTOR, DEFAULT_FENCING,
    DEFAULT_KEY_PREFIX, DEFAULT_MASTER_TIMEOUT, DEFAULT_RETRY_COUNT, DEFAULT_RETRY_DELAY,
    DEFAULT_RETRY_JITTER, DEFAULT_WAKE_UPS, DRIFT_FIXED, MAX_TTL, MIN_TTL_PER_TIMEOUT,
};
pub use error::{Error, MasterReply, Replies, Result};
pub use guard::{LockContext, LockGuard};
pub use lock::Redlock;
pub use ring::{HashRing, RingNode};
