//! Real Redis masters for integration tests, with a failure-injection harness.
//!
//! `testcluster` starts N independent `redis-server` masters (local processes, or Docker
//! containers) on free ports, waits until each answers `PING`, and lets a test hurt them:
//! pause (SIGSTOP), kill, restart with or without their data, cut them off or slow them
//! through a TCP proxy, lose replies, and jump their wall clock (a libfaketime-style
//! preload shim).
//! Everything is synchronous (std threads and processes), so it works from plain `#[test]`s
//! and from `#[tokio::test(flavor = "multi_thread")]` alike.
//!
//! What it guarantees: every server and helper thread it started is gone when the
//! [`Cluster`] is dropped, even if the test panicked, and servers die with the test process
//! if that is killed. A fault a backend cannot inject returns [`Error::Unsupported`]; it is
//! never silently skipped. What it does not do: replication, Redis Cluster mode, AUTH (tests
//! create ACL users themselves). TLS ([`ClusterBuilder::tls`]) and Unix sockets
//! ([`ClusterBuilder::unix_socket`]) are extra listeners next to the plain port, which the
//! harness keeps for its own probes; clusters re-attached from a [`State`] (the CLI) have
//! neither.
//!
//! # Layout
//! - [`checker`]: a mutual-exclusion checker and a fenced store model for lock tests.
//! - `cluster`: [`Cluster`] and the fault enums, the public face; every fault goes to the
//!   master's proxy or to its host.
//! - `builder`: [`ClusterBuilder`], which starts the masters on one backend.
//! - `host`: one master's life cycle per backend, behind the `Host` trait: `host/process`
//!   (a child process, signals) and `host/docker` (a container, `docker` commands,
//!   network disconnect).
//! - `docker`: the `docker` CLI, the locally built image, private networks, stale-container
//!   reaping.
//! - `process`: spawning, signalling and readiness-polling local `redis-server`s; the
//!   per-master `Spec` (port, dir, log, clock file) both backends share.
//! - `proxy`: [`FaultProxy`], the TCP proxy behind cut-off, latency and lost replies.
//! - `ports`: free loopback ports that stay reserved across restarts.
//! - `state`: [`State`], the text form the CLI keeps between invocations.
//! - `tls`: [`TestPki`] (a CA, server and client certificates made with `rcgen` per cluster)
//!   and the `redis-server` TLS arguments.
//! - [`resp`]: a tiny blocking RESP client for readiness checks and raw assertions.
//! - `error`: the typed [`Error`].
//!
//! # Example
//! A user testing that their own code survives one of three masters freezing:
//!
//! ```no_run
//! use std::time::Duration;
//! use testcluster::{resp, Cluster};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cluster = Cluster::start(3)?;
//! // Hand cluster.urls() to the code under test, e.g. a Redlock client.
//! let urls = cluster.urls();
//!
//! cluster.pause(1)?;
//! // A paused master holds its connections open and answers nothing.
//! assert!(resp::cmd(&urls[1], &["PING"], Duration::from_millis(200)).is_err());
//! // ... exercise your code here: a quorum of 2 out of 3 is still reachable ...
//! assert!(resp::ping(&urls[0], Duration::from_secs(1)), "{}", cluster.logs());
//!
//! cluster.resume(1)?;
//! assert!(resp::ping(&urls[1], Duration::from_secs(1)), "{}", cluster.log(1));
//! # Ok(())
//! # }
//! // Dropping `cluster` kills and reaps the three servers and removes their temp dirs.
//! ```
#![deny(missing_docs)]

mod builder;
pub mod checker;
mod cluster;
mod error;
mod host;
mod ports;
mod proxy;
pub mod resp;
mod server;
mod state;
mod tls;

pub use builder::{ClusterBuilder, DEFAULT_MASTERS, DEFAULT_REDIS_SERVER};
pub use cluster::{Backend, Cluster, Cut, DataOnRestart, Status};
pub use error::{Error, Result};
pub use host::engine::{IMAGE as DOCKER_IMAGE, engine_available as docker_available};
pub use proxy::{FaultProxy, Faults};
pub use state::State;
pub use tls::{TestPki, TlsMode};
