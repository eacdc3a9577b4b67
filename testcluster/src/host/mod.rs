//! Where one master runs: everything about it that differs per [`Backend`](crate::Backend).
//!
//! [`Host`] is the contract, implemented by [`ProcessHost`] (a local `redis-server` child,
//! signalled directly) and [`DockerHost`] (a container, driven through the `docker` CLI).
//! A [`Cluster`](crate::Cluster) keeps one [`AnyHost`] per master and delegates every
//! fault to it; faults that go through the [`FaultProxy`](crate::FaultProxy) never reach
//! the host. Starting is not part of the trait: each backend's builder needs different
//! inputs (see `ProcessHost::start`, `DockerHost::start`).

mod docker;
pub(crate) mod engine;
mod process;

use std::fmt;
use std::time::Duration;

pub(crate) use docker::{Container, DockerHost, DockerNet, remove as remove_containers};
pub(crate) use process::ProcessHost;

use crate::cluster::{Cut, DataOnRestart, Status};
use crate::error::{Error, Result};
use crate::server::{NotReady, READY_TIMEOUT, Spec};

/// How many times a restart retries when its port is briefly taken by someone else.
const BIND_RETRIES: usize = 20;
const BIND_RETRY_PAUSE: Duration = Duration::from_millis(100);
/// How many fresh ports a first start tries before giving up.
pub(crate) const FIRST_START_ATTEMPTS: usize = 5;

/// One master's server, as far as its backend is concerned. `index` arguments only label
/// errors.
pub(crate) trait Host: fmt::Debug + Send + Sync {
    /// Port, dir, log, clock file: the parts every backend shares.
    fn spec(&self) -> &Spec;
    /// The server's own URL, bypassing any proxy.
    fn direct_url(&self) -> String;
    /// The container, on backends that have one.
    fn container(&self) -> Option<&Container>;
    /// The server's host pid, `None` when it is down.
    fn pid(&self) -> Option<u32>;
    /// The pid a [`State`](crate::State) should remember, if the host is found by pid.
    fn recorded_pid(&self) -> Option<u32>;
    /// Running, paused or down.
    fn status(&self) -> Status;
    /// True while the server exists (running or paused).
    fn is_running(&self) -> bool;
    /// Freezes the server; returns once it is frozen. [`Error::NotRunning`] when down.
    fn pause(&self, index: usize) -> Result<()>;
    /// Undoes [`pause`](Host::pause). [`Error::NotRunning`] when down.
    fn resume(&self, index: usize) -> Result<()>;
    /// Kills the server; a server already down is fine.
    fn kill(&self) -> Result<()>;
    /// Kills the server if it runs, starts it again on the same address and waits until it
    /// answers `PING`.
    fn restart(&self, index: usize, data: DataOnRestart) -> Result<()>;
    /// Waits until a server just started answers `PING`.
    fn wait_first_start(&mut self, index: usize) -> Result<()>;
    /// Cuts the server off by the backend's own network, when it has one: `None` means
    /// "not here, ask the proxy".
    fn cut_off(&self, how: Cut) -> Option<Result<()>>;
    /// Undoes [`cut_off`](Host::cut_off); `None` as there.
    fn heal(&self) -> Option<Result<()>>;
    /// True when the server keeps running after this process exits.
    fn outlives_us(&self) -> bool;
    /// Lets go of the server without stopping it (the handle becomes a [`State`](crate::State)).
    fn forget(&mut self);
    /// Stops the server for good (teardown). Files and ports are the caller's.
    fn stop(&mut self);
}

/// A [`Host`] of either backend, without boxing.
#[derive(Debug)]
pub(crate) enum AnyHost {
    Process(ProcessHost),
    Docker(DockerHost),
}

impl AnyHost {
    pub fn get(&self) -> &dyn Host {
        match self {
            AnyHost::Process(h) => h,
            AnyHost::Docker(h) => h,
        }
    }

    pub fn get_mut(&mut self) -> &mut dyn Host {
        match self {
            AnyHost::Process(h) => h,
            AnyHost::Docker(h) => h,
        }
    }
}

impl AnyHost {
    /// The host of a master recorded in a [`State`](crate::State): a container when the
    /// record names one (with its IP) on a recorded network, else a process found by pid.
    pub fn attached(
        spec: Spec,
        pid: Option<u32>,
        container: Option<(&String, &String)>,
        network: Option<&DockerNet>,
    ) -> AnyHost {
        match (container, network) {
            (Some((name, ip)), Some(net)) => {
                let container = Container {
                    name: name.clone(),
                    ip: ip.clone(),
                };
                DockerHost::new(spec, container, net.clone()).into()
            }
            _ => ProcessHost::attached(spec, pid).into(),
        }
    }
}

impl From<ProcessHost> for AnyHost {
    fn from(h: ProcessHost) -> AnyHost {
        AnyHost::Process(h)
    }
}

impl From<DockerHost> for AnyHost {
    fn from(h: DockerHost) -> AnyHost {
        AnyHost::Docker(h)
    }
}

/// The error for a master that did not come up, with its log.
pub(crate) fn not_ready(index: usize, spec: &Spec, why: &NotReady) -> Error {
    Error::NotReady {
        index,
        port: spec.port,
        waited: READY_TIMEOUT,
        why: why.describe(),
        log: spec.log_tail(),
    }
}
