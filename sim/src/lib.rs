//! A deterministic, in-process model of Redis masters, for simulation testing of redquorum.
//!
//! [`SimMaster`] models one Redis 7.0 master as the library sees it:
//! - a keyspace (database 0) of strings, hashes and sorted sets, with per-key expiry judged by
//!   the master's own simulated wall clock, which the caller sets (it may jump, as a real wall
//!   clock may); expired keys are absent to every command (lazy expiry);
//! - the commands our Lua scripts call and the ones the library sends directly, with Redis'
//!   reply shapes and error texts;
//! - the script cache (SCRIPT LOAD / EXISTS / FLUSH, EVAL, EVALSHA and NOSCRIPT) and our
//!   `scripts/*.lua` (as the library assembles them from their pieces) run **unmodified** in
//!   an embedded Lua 5.1, the version Redis embeds, with Redis' type conversions, error format
//!   and read-only globals;
//! - identity: `run_id` (from a seeded RNG) and uptime in INFO, and restarts with or without
//!   data (the script cache is always lost).
//!
//! It does not model: networking, clients, pub/sub delivery (PUBLISH only records and returns
//! a subscriber count the caller sets), replication, persistence (a restart keeps or drops
//! data as told), eviction (CONFIG answers `noeviction`), memory, databases other than 0,
//! large-hash ordering (hashes keep insertion order, like Redis' listpacks below 128 fields),
//! script timeouts (`BUSY`), RESP3, and commands the library does not use (they answer an
//! "unknown command" error). Scripts see a clock frozen during their run, as in Redis 7.
//!
//! `sim/tests/differential.rs` runs every script on this model and on a real `redis-server`
//! and compares replies and keyspaces, so the model cannot drift from Redis unnoticed.
#![deny(missing_docs)]

mod cache;
pub mod commands;
mod coordination;
pub mod data;
pub mod handoff;
pub mod history;
pub mod keyspace;
pub mod lua;
pub mod master;
pub mod net;
pub mod numbers;
mod primitives;
pub mod run;
pub mod sharded;
pub mod shrink;
pub mod trace;
pub mod value;

pub use data::{Data, Hash, SortedSet};
pub use master::{NOSCRIPT, SimMaster, random_run_id};
pub use value::Value;
