//! [`DockerHost`]: a master as a container on the cluster's private network.
//!
//! The `docker` CLI helpers, the image and the network live in `engine.rs`; this is
//! one master's life cycle on top of them.

use std::sync::{Mutex, MutexGuard};
use std::thread;

use super::engine;
use super::{BIND_RETRIES, BIND_RETRY_PAUSE, FIRST_START_ATTEMPTS, Host, not_ready};
use crate::cluster::{Cut, DataOnRestart, Status};
use crate::error::{Error, Result};
use crate::ports;
use crate::server::{self, Spec};

/// The cluster's private docker network.
#[derive(Debug, Clone)]
pub(crate) struct DockerNet {
    pub network: String,
    /// Clients use container IPs (true) or the published loopback ports (false).
    pub via_ip: bool,
}

/// A master's container: fixed name and fixed IP, so restarts and reconnects keep its URL.
#[derive(Debug, Clone)]
pub(crate) struct Container {
    pub name: String,
    pub ip: String,
}

/// One container of [`IMAGE`](engine::IMAGE), driven through the `docker` CLI.
#[derive(Debug)]
pub(crate) struct DockerHost {
    spec: Spec,
    container: Container,
    /// A copy of the cluster's network; `via_ip` is settled once every master is up.
    pub net: DockerNet,
    /// Serialises the docker commands of one master (pause vs kill vs restart ...).
    lock: Mutex<()>,
}

impl DockerHost {
    /// A host for a container that may or may not exist yet (see
    /// [`start`](DockerHost::start)).
    pub fn new(spec: Spec, container: Container, net: DockerNet) -> DockerHost {
        DockerHost {
            spec,
            container,
            net,
            lock: Mutex::new(()),
        }
    }

    /// Creates and starts the container; does not wait for it to be ready. On a port race
    /// the container is recreated on a fresh published port.
    pub fn start(&mut self, owner_label: &str) -> Result<()> {
        let name = &self.container.name;
        let mut started = Err(Error::NoFreePort { attempts: 0 });
        for _ in 0..FIRST_START_ATTEMPTS {
            started = engine::run_container(&engine::RunArgs {
                spec: &self.spec,
                name,
                network: &self.net.network,
                ip: &self.container.ip,
                owner_label,
            });
            match &started {
                Err(Error::Docker { stderr, .. }) if is_port_taken(stderr) => {
                    let _ = engine::docker(&["rm", "-f", name], engine::CMD_TIMEOUT);
                    ports::release(self.spec.port);
                    self.spec.port = ports::reserve()?;
                }
                _ => break,
            }
        }
        started
    }

    /// The URL of the container's own IP, whether or not clients use it.
    pub fn container_url(&self) -> String {
        format!("redis://{}:6379", self.container.ip)
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        // A panicking test thread must not wedge the harness for the others.
        self.lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn name(&self) -> &str {
        &self.container.name
    }

    fn pause_or_unpause(&self, index: usize, stopped: bool) -> Result<()> {
        let _lock = self.lock();
        let (want_from, cmd) = if stopped {
            (Status::Running, "pause")
        } else {
            (Status::Paused, "unpause")
        };
        match self.status() {
            Status::Down => Err(Error::NotRunning { index }),
            s if s == want_from => {
                engine::docker(&[cmd, self.name()], engine::CMD_TIMEOUT).map(|_| ())
            }
            _ => Ok(()),
        }
    }

    /// Call with the lock held.
    fn kill_locked(&self) -> Result<()> {
        match self.status() {
            Status::Down => Ok(()),
            s => {
                // The engine refuses to kill a paused container.
                if s == Status::Paused {
                    engine::docker(&["unpause", self.name()], engine::CMD_TIMEOUT)?;
                }
                engine::docker(&["kill", self.name()], engine::CMD_TIMEOUT)?;
                Ok(())
            }
        }
    }

    fn exited(&self) -> Option<String> {
        match engine::status(self.name()).as_deref() {
            Some("running") | Some("paused") | Some("created") | Some("restarting") => None,
            Some(other) => Some(format!("container is {other}")),
            None => Some("container is gone".into()),
        }
    }
}

fn is_port_taken(docker_stderr: &str) -> bool {
    docker_stderr.contains("port is already allocated")
        || docker_stderr.contains("address already in use")
}

impl Host for DockerHost {
    fn spec(&self) -> &Spec {
        &self.spec
    }

    fn direct_url(&self) -> String {
        if self.net.via_ip {
            self.container_url()
        } else {
            self.spec.url()
        }
    }

    fn container(&self) -> Option<&Container> {
        Some(&self.container)
    }

    fn pid(&self) -> Option<u32> {
        engine::pid(self.name())
    }

    /// Containers are found again by name, never by pid.
    fn recorded_pid(&self) -> Option<u32> {
        None
    }

    fn status(&self) -> Status {
        match engine::status(self.name()).as_deref() {
            Some("running") => Status::Running,
            Some("paused") => Status::Paused,
            _ => Status::Down,
        }
    }

    fn is_running(&self) -> bool {
        self.status() != Status::Down
    }

    fn pause(&self, index: usize) -> Result<()> {
        self.pause_or_unpause(index, true)
    }

    fn resume(&self, index: usize) -> Result<()> {
        self.pause_or_unpause(index, false)
    }

    fn kill(&self) -> Result<()> {
        let _lock = self.lock();
        self.kill_locked()
    }

    fn restart(&self, index: usize, data: DataOnRestart) -> Result<()> {
        let _lock = self.lock();
        self.kill_locked()?;
        self.spec.prepare(false)?;
        if data == DataOnRestart::Lose {
            self.spec.wipe_data()?;
        }
        let mut started = Ok(String::new());
        for _ in 0..BIND_RETRIES {
            started = engine::docker(&["start", self.name()], engine::CMD_TIMEOUT);
            match &started {
                Err(Error::Docker { stderr, .. }) if is_port_taken(stderr) => {
                    thread::sleep(BIND_RETRY_PAUSE)
                }
                _ => break,
            }
        }
        started?;
        server::wait_ready_at(&self.direct_url(), &self.spec, 10, || self.exited())
            .map_err(|e| not_ready(index, &self.spec, &e))
    }

    /// Waits on the published port: `via_ip` is only settled once every master is up.
    fn wait_first_start(&mut self, index: usize) -> Result<()> {
        server::wait_ready_at(&self.spec.url(), &self.spec, 10, || self.exited())
            .map_err(|e| not_ready(index, &self.spec, &e))
    }

    /// [`Cut::BlackHole`] disconnects the container from its network.
    fn cut_off(&self, how: Cut) -> Option<Result<()>> {
        if how == Cut::Reset {
            return Some(Err(Error::Unsupported {
                fault: "cut_off(Reset)",
                backend: crate::Backend::Docker,
                reason: "a network disconnect cannot reset connections; build the cluster with .proxy(true)",
            }));
        }
        let _lock = self.lock();
        // Idempotent, and correct for a CLI invocation that has no memory of earlier ones.
        Some(
            match engine::docker(
                &[
                    "network",
                    "disconnect",
                    "-f",
                    &self.net.network,
                    self.name(),
                ],
                engine::CMD_TIMEOUT,
            ) {
                Err(Error::Docker { stderr, .. }) if stderr.contains("is not connected") => Ok(()),
                r => r.map(|_| ()),
            },
        )
    }

    /// Reconnects the container with its old IP.
    fn heal(&self) -> Option<Result<()>> {
        let _lock = self.lock();
        Some(
            match engine::docker(
                &[
                    "network",
                    "connect",
                    "--ip",
                    &self.container.ip,
                    &self.net.network,
                    self.name(),
                ],
                engine::CMD_TIMEOUT,
            ) {
                Err(Error::Docker { stderr, .. }) if stderr.contains("already exists") => Ok(()),
                r => r.map(|_| ()),
            },
        )
    }

    /// Containers are not children of this process.
    fn outlives_us(&self) -> bool {
        true
    }

    fn forget(&mut self) {}

    /// Nothing: the cluster removes all its containers with one `docker rm` (see
    /// [`remove`]).
    fn stop(&mut self) {}
}

/// Removes `containers` (with their volumes), then `network`; errors are ignored, this is
/// teardown.
pub(crate) fn remove(containers: &[&str], network: Option<&str>) {
    if !containers.is_empty() {
        let mut args = vec!["rm", "-f", "-v"];
        args.extend(containers);
        let _ = engine::docker(&args, engine::CMD_TIMEOUT);
    }
    if let Some(network) = network {
        let _ = engine::docker(&["network", "rm", network], engine::CMD_TIMEOUT);
    }
}
