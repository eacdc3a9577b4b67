//! # redquorum
//!
//! Distributed locks over a quorum of N independent Redis masters (the **Redlock** algorithm),
//! done the way the spec asks and the way the other libraries do not: all masters are asked
//! **in parallel**, every call is bounded by a small per-master timeout, the round is decided as
//! soon as the outcome is certain, validity comes from a monotonic clock minus a drift
//! allowance, and a failed round is rolled back on every master. Locks carry **fencing tokens**
//! that increase over the quorum (ordered exactly as stated below).
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
//! - **Fencing tokens that increase**: a grant whose round started after another grant
//!   completed (any resource, any primitive, under the same key prefix) gets a larger token, so
//!   successive holders of one resource get strictly increasing tokens when each round starts
//!   after the previous grant. Rounds that overlap are not ordered: concurrent grants of
//!   different resources can share a token, and a round of one resource already in flight when
//!   the previous holder's grant completed can get a token not above it (a fenced store refuses
//!   it). This holds through any number of master restarts with or without data, failovers,
//!   address takeovers, `FLUSHALL`s and evictions of running masters, as long as at every
//!   moment a majority of the masters still holds its counter. Each master keeps its counter
//!   in one hash with the *generation* of its last seal (`<run_id>:<random>`, new at every
//!   seal); every client reads it at every connect (a client started after the fault knows as
//!   much as one that saw it), counts a vote only with the generation it knows, and a master
//!   that restarted, was replaced, flushed or lost its counter votes again only after a seal
//!   raised it from a quorum of sealed masters, a seal its master refuses if it arrives after
//!   the claim it was computed for is gone (see the proof in `src/fencing.rs`). The price:
//!   such a master waits until a quorum of *sealed* masters answers, and a brand-new namespace
//!   (no counter anywhere) needs every master to answer once before its first token. When a
//!   majority lost their counters at once, the seal falls back to the largest counter left on
//!   all masters and logs a warning: tokens then repeat only if every master that knew the
//!   last one lost it.
//!
//! ## What it does not guarantee
//! - **Safety when a master loses data.** A master that restarts without persistence forgets
//!   the keys it granted, and a second client can then win a quorum. Run masters with AOF
//!   (`appendfsync always`) or enable [`Builder::restart_quarantine`], which stops counting a
//!   restarted master's votes until every lock it may have granted has expired. The quarantine
//!   starts from the process's start time, or, for a new `run_id` a client sees after it was
//!   built (a promoted replica, a standby taking over the address), from when it saw it; a
//!   client *built* after such a takeover can only go by the newcomer's uptime.
//! - **Safety with evicting masters.** Lock keys and fencing counters must stay until they
//!   expire or are deleted: masters need `maxmemory-policy noeviction`. Under `volatile-*` or
//!   `allkeys-*` a lock key can vanish early, a double grant nothing detects (a missing counter
//!   is detected and re-sealed, an evicted lock key is not). Do not share lock masters with an
//!   evicting cache.
//! - **Safety against clock jumps on a master.** Redis expires keys by its wall clock; a clock
//!   that jumps forward expires a lock early. Nothing on the client can see this.
//! - **Safety against a paused holder.** A client paused (GC, swap, SIGSTOP) past its validity
//!   still believes it holds the lock. This is M. Kleppmann's critique of Redlock, and it is
//!   right: *only the protected resource can stop the stale write*, by checking the
//!   [fencing token](LockGuard::fencing_token). Use locks for efficiency without fencing; use
//!   fencing for correctness.
//!
//! ## Primitives
//! Beside the basic lock, five primitives run over the same masters with the same rules: one
//! Lua script per master (atomic there), one round decided at quorum with the same per-master
//! timeouts, validity (`ttl - elapsed - drift`), rollback of failed rounds on every master that
//! may have applied them, restart quarantine and fencing tokens (every acquire script increments
//! the same namespace counter, so tokens are ordered across all primitives). Each returns
//! a [`LockGuard`] with the same [`extend`](LockGuard::extend), [`release`](LockGuard::release),
//! drop and [`with_watchdog`](LockGuard::with_watchdog) (automatic extension with the lost-lock
//! signal). Each uses its own keys, except the multi-resource lock, which shares the basic
//! lock's.
//!
//! - **Multi-resource lock** ([`Redlock::acquire_many`], [`Redlock::with_locks`]): several
//!   resources in one round; a master grants all or none, so no partial hold exists to
//!   deadlock on, and a failed round is rolled back as a unit. Names are sorted and
//!   deduplicated. *Guarantees*: while valid, no other holder of any of the resources (multi or
//!   basic). *Not*: progress under heavy overlap is by retry with jitter, like contended basic
//!   locks; no ordering among waiters.
//! - **Reentrant lock** ([`Redlock::reentrant`] → [`ReentrantLock`]): an explicit owner id may
//!   hold the lock several times; each hold has its own guard and lease, and the lock is free
//!   when the last hold is released or expired. A failed round removes exactly the hold it
//!   added. *Guarantees*: no two owners hold it at once within validity. *Not*: any check that
//!   an owner id is used by one logical owner only (two processes with the same id share the
//!   lock); a re-entry gets a new, larger fencing token, not the outer one's.
//! - **Fair lock** ([`Redlock::fair_lock`] → [`FairLock`]): waiters are served by ticket. A
//!   waiter takes a ticket (one extra round: the largest ticket queued on a quorum, plus one),
//!   then a master grants only to the head of its queue; waiters that stop polling are dropped
//!   after the waiter timeout. *Guarantees*: mutual exclusion as the basic lock; first come,
//!   first served among waiters whose arrivals do not overlap (a later ticket round meets the
//!   earlier waiter on at least one master of its quorum); no starvation while holders release.
//!   *Not*: an order among waiters arriving at the same moment (consistent, by waiter id, but
//!   arbitrary); fairness against basic locks; a waiter paused longer than the waiter timeout
//!   keeps its place only if it re-joins before a later waiter is served.
//! - **Read-write lock** ([`Redlock::rw_lock`] → [`RwLock`]): many readers or one writer, with
//!   writer preference (a waiting writer's intent shuts out new readers). *Guarantees*: no
//!   writer overlaps a reader or another writer within validity (a read quorum and a write
//!   quorum share a master, which refused the later one); writers are not starved by readers.
//!   *Not*: readers are not protected from starvation by a stream of writers; granted read
//!   leases are not revoked for a waiting writer (a reader that keeps extending delays it).
//! - **Semaphore** ([`Redlock::semaphore`] → [`Semaphore`]): up to `permits` holders at once,
//!   each with its own lease. The permits are slots and each slot is a mutex over the quorum; a
//!   holder needs the same slot on a quorum. *Guarantees*: never more than `permits` holders
//!   within validity, also when masters disagree (a count per master would not give this: with
//!   5 masters and 2 permits, three holders can each be counted on 3 masters); a vanished
//!   holder's permit is free when its lease expires. [`Semaphore::available`] reports the slots
//!   a quorum of masters reports free, a snapshot. *Not*: fairness among waiters; every client
//!   must use the same `permits`; fencing tokens order the holders but a store shared by
//!   several holders at once cannot simply reject lower tokens.
//!
//! All of them share the basic lock's limits (next section): masters that lose data, clock
//! jumps and paused holders. Scripts that compare lease expiries (read leases, waiter and
//! writer deadlines, semaphore slots) use each master's own clock (`TIME`), as Redis' own key
//! expiry does; no client clock is ever compared with a master's.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! # async fn run(redlock: redquorum::Redlock) -> redquorum::Result<()> {
//! let ttl = Duration::from_secs(10);
//! let both = redlock.acquire_many(["account:1", "account:2"], ttl).await?;
//! both.release().await?;
//!
//! let job = redlock.reentrant("job-42");
//! let outer = job.acquire("catalog", ttl).await?;
//! let inner = job.acquire("catalog", ttl).await?; // same owner: granted
//! inner.release().await?;
//! outer.release().await?; // free now
//!
//! let turn = redlock.fair_lock("printer").acquire(ttl).await?; // first come, first served
//! turn.release().await?;
//!
//! let config = redlock.rw_lock("config");
//! let reading = config.read(ttl).await?;
//! reading.release().await?;
//! config
//!     .with_write(ttl, |lock| async move { /* rewrite; select on lock.lost() */ })
//!     .await?;
//!
//! let quota = redlock.semaphore("api-quota", 3);
//! let permit = quota.acquire(ttl).await?;
//! println!("{} permits left", quota.available().await?);
//! permit.release().await?;
//! # Ok(()) }
//! ```
//!
//! ## Inspection and hand-off
//! [`Redlock::inspect`] reports who holds a basic lock (its [owner id](Builder::owner_id)) and
//! for how long on each master, and the quorum's view (held / free / unknown). It is
//! **advisory**: a snapshot over masters read at slightly different moments, stale as soon as
//! it is returned; never a reason to skip an acquire.
//!
//! [`LockGuard::export`] turns a held basic lock into a [`LockHandle`] (serialisable with the
//! `serde` feature) without releasing it; [`Redlock::resume`] in another task or process takes
//! it over with an extend round, keeping the fencing token. The resumed validity is measured
//! from that round on the resumer's clock; a handle whose lock expired or was released fails
//! with [`Error::NotHeld`] and cannot take a lock someone else holds now.
//!
//! ## Sharding
//! When one group of masters no longer keeps up with the lock traffic (or tenants' locks should
//! be isolated), [`ShardedRedlock`] places each resource on one of several independent groups
//! (each a normal Redlock configuration with its own quorum) by the ketama ring over the group
//! names, weighted. Capacity grows with the groups; each lock keeps its group's quorum, fencing
//! and fault behaviour. A multi-resource lock takes its groups one by one in name order (no
//! deadlock) and gives back what it took if a later group fails.
//!
//! The topology (groups, weights, masters, max TTL, epoch) is stored on the masters of every
//! group, and every sharded acquire and extend script checks the client's epoch and the
//! digest of its spec against the stored ones: a client with an old view, or with another
//! spec of the same epoch, is refused (it then reloads and retries). Each group's share of a
//! lock is the multi-resource acquire, kept by the basic lock's lease.
//! [`ShardedRedlock::change_groups`] stores a *joint* topology (a resource whose ring owner
//! changes must be won on its old and its new group), waits one max TTL (plus drift) so that
//! every lock granted before has expired, then stores the final topology.
//!
//! *Guarantees* (proofs in `src/sharded/mod.rs`): no two holders of a resource within validity,
//! also during and after group changes and with clients that have not heard of a change (they are
//! refused on a quorum of every group); fencing tokens ([`ShardedGuard::fencing_token`]) of one
//! resource exceed the token of every grant that completed before the round started, across groups
//! and changes (as the basic lock's): `(epoch << 48) | counter` of the resource's owner group, with
//! a typed error rather than a wrap past `2^48` grants per group or `2^16` epochs. A change moves
//! exactly the resources whose ring owner changes; concurrent changes are serialised by a change
//! lock on a quorum of every group involved.
//!
//! *Not*: TTLs and extensions above the stored max TTL are refused, and a hold granted before a
//! change cannot be extended once the next change is stored (`with_lock` reports it lost; the hold
//! must be re-acquired); a group most of whose masters lose their topology state at once may accept
//! an old view again (restarts one after another are covered: a restarted master's topology is
//! sealed from a quorum before it votes; use AOF anyway); the other primitives (reentrant, fair,
//! read-write, semaphore) are not epoch-checked: [`ShardedRedlock::group_for`] refuses them with a
//! typed error, and [`ShardedRedlock::group_for_unchecked`] hands out the owner group unprotected
//! across changes; resuming an interrupted change needs a quorum of every group any joint spec
//! of its epoch names (it fails with [`Error::Unavailable`] rather than guess); a client built
//! only with groups no stored topology names starts a second namespace there; with unequal weights
//! libmemcached's formula re-scales every group's points on a change, so some resources also
//! move between groups that stay (counted in the tests).
//!
//! ## Layout
//! - `config`: [`Builder`] and input validation; `defaults`: every default and limit;
//!   `invalid`: the typed reasons of refused input. Plain data beneath the wire and the core:
//!   they import neither.
//! - `settings`: what the wire is set up with (per-master settings, credentials and TLS
//!   options, the fencing keys' names), filled in by the builders and read by the masters.
//! - `builder`: [`Builder::build`], the step from the builder's data to a connected
//!   [`Redlock`] (the core).
//! - `error`: [`Error`], with each master's [`MasterReply`] kept by index.
//! - `endpoint`: how one master is reached: its URL with the builder's credentials, over TCP,
//!   a Unix socket or TLS; the connect-time permission probe; how a client error counts as
//!   a master's reply (the refusals no retry cures included).
//! - `tls` (feature `tls`, default on): `TlsOptions` and the rustls stream, with the crypto
//!   provider chosen explicitly.
//! - `link`: the seam to the wire: one connection to one master and how it is opened
//!   (redis-rs; or, with the hidden `sim` feature, the deterministic simulator's network).
//! - [`metrics`]: the metric names (through the `metrics` facade, feature `metrics`) and the
//!   few places that record them.
//! - `master`: one master over its link: reconnect, per-call timeout, `run_id`, seal state;
//!   connecting a client's masters, and the refusals that fail the build.
//! - `batch`: batched rounds (group commit, opt-in with [`Builder::batching`]): script calls
//!   ready for a master while another is in flight leave together as one batch script call,
//!   each entry with its own reply; the script load at connect (every script and the batch
//!   script).
//! - `masters`: the master set and quorum: the one way every round asks the masters.
//! - `random`: every random number drawn (owner tokens, jitter), seedable by the simulator.
//! - `scripts`: the Lua scripts (`scripts/*.lua`, assembled from the shared pieces in
//!   `scripts/pieces/`, declared in one table), `EVALSHA` with `NOSCRIPT` recovery (a
//!   reload; acquires are never re-sent late as `EVAL`).
//! - `quorum`: vote counting with early decision, validity arithmetic, the fan-out loop.
//! - `notify`: release wake-ups for waiting acquirers (pub/sub), and their local FIFO queue.
//! - `lock`: [`Redlock`]: connect, the acquire calls, retry policy.
//! - `round`: one acquire round as named steps: prepare, send, decide, fence, validate, undo.
//! - `drop_guard`: one clean-up-on-drop guard for every cancellation path.
//! - `fencing`: sealing masters' fencing counters, the token write-back, and how tokens are
//!   ordered.
//! - `guard`: [`LockGuard`] (extend, release, drop).
//! - `interop`: the interop key layout ([`Builder::interop_keys`]): lock keys named as other
//!   Redlock clients name them, so their locks and ours exclude each other.
//! - `lease`: the auto-extending lease of [`Redlock::with_lock`] and
//!   [`LockGuard::with_watchdog`], its [`LockContext`] and [`LeaseState`] signals (jeopardy;
//!   lost no later than the validity deadline, also while a renewal hangs; the extension cap).
//! - `held`: what a hold is on the masters (keys and extend / release / rollback scripts), what
//!   one acquire round sends.
//! - `owner_id`: the holder's human-readable id stored next to the owner token.
//! - `inspect`: [`Redlock::inspect`], who holds a lock per master and over the quorum
//!   (advisory).
//! - `handoff`: [`LockGuard::export`] to a [`LockHandle`] and [`Redlock::resume`].
//! - `primitives/`: `multi`, `reentrant`, `fair`, `rwlock`, `semaphore`, each an acquire
//!   script plus a hold description over the shared round; `queue`: leaving a wait queue
//!   (fair lock, waiting writers).
//! - `selfcheck`: [`Redlock::masters_report`], what each master's eviction policy,
//!   persistence, version and `run_id` are; warnings (or a refusal) at build.
//! - `options`: [`LockOptions`], the one value every acquire call takes (a `Duration` is a
//!   TTL with the defaults): TTL, wait, lock-delay (the key outlives the TTL by the delay as a
//!   tombstone; a release deletes it) and extension cap; an option a call cannot honour is
//!   refused, never ignored.
//! - `election/`: [`Election`] (campaign, [`Election::leader`], [`Election::observe`]) and
//!   [`Leadership`]: a lock on a hash (owner, value, term, lease end) whose term is the fencing
//!   token, kept by the lease watchdog.
//! - `ring`: [`HashRing`], ketama consistent hashing byte-compatible with libmemcached.
//! - `sharded/`: [`ShardedRedlock`]: `topology` (groups, rings, placement, stored form),
//!   `store` (the topology on the masters), `acquire` (routing, group order, rollback, reload),
//!   `guard`, `lease` (`with_lock`), `change` (joint phase), `token` (sharded fencing tokens).
//! - `cache`: [`Cache`], a distributed cache over the ring: per-node batched pipelines, nodes
//!   that fail turn into misses, stampede-free [`Cache::get_or_compute`], compare-and-set.
//!
//! ## Election, lease signals, lock-delay
//! [`Redlock::election`] elects one leader at a time among candidates
//! ([`Election::campaign`] → [`Leadership`] with a strictly increasing [`Leadership::term`]);
//! [`Election::leader`] and [`Election::observe`] are advisory reads. Every watchdog reports a
//! [`LeaseState`] (held, jeopardy, capped, lost) and may be capped ([`LockOptions::max_lease`]).
//! [`LockOptions::lock_delay`] keeps an abandoned lock unavailable for a delay after its TTL.
//! The guide's coordination page (`docs/coordination.md`) gives their guarantees and
//! non-guarantees; the README lists them in short.
//!
//! ## Cancellation
//! Dropping an `acquire` future part-way rolls its round back in the background. Dropping a
//! [`LockGuard`] releases it in the background. Dropping a `with_lock` future stops the
//! automatic extension and releases the lock in the background. Dropping a fair-lock acquire
//! or a write acquire also leaves the waiter queue (withdraws the writer's intent) in the
//! background.
#![deny(missing_docs)]
#![warn(rust_2018_idioms, unreachable_pub)]

mod batch;
mod builder;
mod cache;
mod config;
pub mod defaults;
mod drop_guard;
mod election;
mod endpoint;
mod error;
mod fencing;
mod guard;
mod handoff;
mod held;
mod inspect;
mod interop;
pub mod invalid;
mod lease;
mod link;
mod lock;
mod master;
mod masters;
pub mod metrics;
mod notify;
mod options;
mod owner_id;
mod primitives;
mod quorum;
mod random;
mod ring;
mod round;
mod scripts;
mod selfcheck;
mod settings;
mod sharded;
#[cfg(feature = "sim")]
#[doc(hidden)]
pub mod sim;

/// Every Lua script as the masters run it (pieces expanded; `scripts` module), by name: for the
/// simulator's differential test, loadbench and this crate's tests. Not a public API.
#[doc(hidden)]
pub fn script_sources() -> Vec<(&'static str, &'static str)> {
    scripts::all()
        .into_iter()
        .map(|s| (s.name, s.source))
        .collect()
}
#[cfg(feature = "tls")]
mod tls;

pub use cache::{
    Cache, CacheBuilder, CacheStats, CasOutcome, ComputeError, WriteOutcome, WriteReport,
};
pub use config::Builder;
pub use election::{Election, Leader, Leadership};
pub use error::{Error, MasterReply, Replies, Result};
pub use guard::LockGuard;
pub use handoff::LockHandle;
pub use inspect::{Holder, Inspection, MasterView, QuorumView};
pub use interop::RESOURCE_PLACEHOLDER;
pub use lease::{LeaseState, LockContext};
pub use lock::Redlock;
pub use options::LockOptions;
pub use owner_id::default_owner_id;
pub use primitives::fair::FairLock;
pub use primitives::reentrant::ReentrantLock;
pub use primitives::rwlock::RwLock;
pub use primitives::semaphore::Semaphore;
pub use ring::{HashRing, RingNode};
pub use selfcheck::{MasterReport, MasterSettings, MastersReport, NO_EVICTION};
pub use sharded::{ChangeReport, ShardedBuilder, ShardedContext, ShardedGuard, ShardedRedlock};
#[cfg(feature = "tls")]
pub use tls::TlsOptions;

// Compiles the Rust blocks of the README and of the guide (`docs/`) as doctests, so neither can
// drift from the API. Doctest-only: the pages are not rendered into the crate docs.
#[cfg(doctest)]
mod guide_doctests {
    #[doc = include_str!("../README.md")]
    struct Readme;
    #[doc = include_str!("../docs/primitives.md")]
    struct Primitives;
    #[doc = include_str!("../docs/coordination.md")]
    struct Coordination;
    #[doc = include_str!("../docs/cli.md")]
    struct Cli;
    #[doc = include_str!("../docs/cache-and-ring.md")]
    struct CacheAndRing;
    #[doc = include_str!("../docs/sharding.md")]
    struct Sharding;
    #[doc = include_str!("../docs/production.md")]
    struct Production;
    #[doc = include_str!("../docs/failure-testing.md")]
    struct FailureTesting;
    #[doc = include_str!("../docs/simulation.md")]
    struct Simulation;
    #[doc = include_str!("../docs/performance.md")]
    struct Performance;
}
