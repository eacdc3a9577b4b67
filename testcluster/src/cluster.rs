//! [`Cluster`] and the fault enums: the public face of the harness.
//!
//! Every fault goes to the master's proxy when it has one, else to its host (see
//! `crate::host`), which knows how its backend does it.

use std::fmt;
use std::time::Duration;

use crate::builder::ClusterBuilder;
use crate::error::{Error, Result};
use crate::host::{self, AnyHost, DockerNet, Host};
use crate::ports;
use crate::proxy::{FaultProxy, Faults};
use crate::server::{self, Spec};
use crate::state::{MasterRecord, State};
use crate::tls::TestPki;

/// Where the masters run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// Local `redis-server` child processes on loopback ports.
    Process,
    /// Containers of the locally built [`DOCKER_IMAGE`](crate::DOCKER_IMAGE) on a private
    /// bridge network, one per cluster.
    Docker,
    /// Docker when `docker info` answers within about 3 seconds, else Process.
    Auto,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Process => "process",
            Backend::Docker => "docker",
            Backend::Auto => "auto",
        })
    }
}

impl std::str::FromStr for Backend {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "process" => Ok(Backend::Process),
            "docker" => Ok(Backend::Docker),
            "auto" => Ok(Backend::Auto),
            other => Err(Error::Config(format!(
                "unknown backend {other:?} (process, docker or auto)"
            ))),
        }
    }
}

/// What a restarted master finds on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataOnRestart {
    /// The AOF (written with `appendfsync always`) is replayed: every acknowledged write
    /// survives, even across SIGKILL.
    Keep,
    /// The data dir is wiped first: the master comes back empty, like a replacement machine.
    Lose,
}

/// How [`Cluster::cut_off`] isolates a master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Bytes are silently swallowed both ways and connections stay open: clients see
    /// timeouts, never errors (a partition, a dead switch).
    BlackHole,
    /// Existing connections are reset and new ones are reset right after accept: clients
    /// see errors at once (a crashed host whose kernel still answers).
    Reset,
}

/// What a master is doing right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Up and scheduled.
    Running,
    /// Stopped with SIGSTOP / `docker pause`: holds its connections, answers nothing.
    Paused,
    /// Killed or exited.
    Down,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Down => "down",
        })
    }
}

/// A set of independent Redis masters plus the means to hurt them.
///
/// All methods take `&self`, and `Cluster` is `Send + Sync`: share it with `Arc` between
/// test threads or tokio tasks. Methods block (they wait for processes), so from async code
/// call them via `tokio::task::spawn_blocking` or accept a few milliseconds of blocking.
///
/// # Drop
/// Dropping the cluster kills and reaps every server it started, stops its proxies and
/// removes its temp dirs. Servers also die if the test process itself is killed (they get
/// `SIGKILL` from the kernel when it goes), unless the cluster was built
/// [`detached`](ClusterBuilder::detached).
#[derive(Debug)]
pub struct Cluster {
    backend: Backend,
    pub(crate) nodes: Vec<Node>,
    /// False for clusters re-attached from a state file: dropping those leaves the
    /// servers alone (the CLI's `status` must not stop what `up` started).
    owned: bool,
    /// Carried through from an attached [`State`] so re-saving it keeps the CLI's helper.
    proxy_pid: Option<u32>,
    /// Docker only: the cluster's private network, removed with the cluster.
    pub(crate) network: Option<DockerNet>,
    /// The certificates of TLS masters ([`ClusterBuilder::tls`]).
    pub(crate) pki: Option<TestPki>,
}

/// One master: where it runs, and the proxy in front of it if any.
#[derive(Debug)]
pub(crate) struct Node {
    pub host: AnyHost,
    /// Set whenever clients are meant to go through a proxy, even one running in another
    /// process (the CLI's helper), where `proxy` is `None`.
    pub proxy_port: Option<u16>,
    pub proxy: Option<FaultProxy>,
}

impl Node {
    pub fn new(host: AnyHost) -> Node {
        Node {
            host,
            proxy_port: None,
            proxy: None,
        }
    }

    fn host(&self) -> &dyn Host {
        self.host.get()
    }
}

impl Cluster {
    /// An owned cluster with no masters yet, for the builder to fill.
    pub(crate) fn new(backend: Backend, masters: usize, network: Option<DockerNet>) -> Cluster {
        Cluster {
            backend,
            nodes: Vec::with_capacity(masters),
            owned: true,
            proxy_pid: None,
            network,
            pki: None,
        }
    }

    /// A builder with the defaults: 5 masters, process backend, no proxy, no faketime.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    /// Starts `masters` masters with the default settings.
    ///
    /// # Errors
    /// As [`ClusterBuilder::build`].
    pub fn start(masters: usize) -> Result<Cluster> {
        Cluster::builder().masters(masters).build()
    }

    /// Number of masters.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: a cluster has at least one master.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The backend the masters run on (never [`Backend::Auto`]).
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The URL clients should use for every master, in index order.
    pub fn urls(&self) -> Vec<String> {
        (0..self.len()).map(|i| self.url(i)).collect()
    }

    /// The URL clients should use for master `i`: through the proxy when there is one.
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn url(&self, i: usize) -> String {
        match self.nodes[i].proxy_port {
            Some(p) => format!("redis://127.0.0.1:{p}"),
            None => self.direct_url(i),
        }
    }

    /// True when clients reach the masters through fault proxies
    /// ([`ClusterBuilder::proxy`]).
    pub fn is_proxied(&self) -> bool {
        self.nodes.iter().any(|n| n.proxy_port.is_some())
    }

    /// The URL of master `i` itself, bypassing any proxy: for checks a test makes behind
    /// the client's back ("did the SET land?").
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn direct_url(&self, i: usize) -> String {
        self.nodes[i].host().direct_url()
    }

    /// The `rediss://` URL of master `i` when the cluster was built with
    /// [`ClusterBuilder::tls`]: its TLS port (never through the proxy), by IP address, which
    /// the server certificate names unless [`ClusterBuilder::tls_server_names`] said otherwise.
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn tls_url(&self, i: usize) -> Option<String> {
        let host = self.nodes[i].host();
        let tls = host.spec().tls?;
        let via_ip = self.network.as_ref().is_some_and(|n| n.via_ip);
        Some(match host.container() {
            Some(c) if via_ip => format!("rediss://{}:{}", c.ip, crate::host::engine::TLS_PORT),
            _ => format!("rediss://127.0.0.1:{}", tls.port),
        })
    }

    /// Every master's [`tls_url`](Cluster::tls_url), or `None` without TLS.
    pub fn tls_urls(&self) -> Option<Vec<String>> {
        (0..self.len()).map(|i| self.tls_url(i)).collect()
    }

    /// The `redis+unix://` URL of master `i`'s socket when the cluster was built with
    /// [`ClusterBuilder::unix_socket`] (on the docker backend, the socket is in the
    /// bind-mounted dir, reachable from the host).
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn unix_url(&self, i: usize) -> Option<String> {
        let spec = self.nodes[i].host().spec();
        spec.unix_socket
            .then(|| format!("redis+unix://{}", spec.socket_path().display()))
    }

    /// The certificates of a TLS cluster: the CA to trust, a client certificate for mutual TLS.
    pub fn pki(&self) -> Option<&TestPki> {
        self.pki.as_ref()
    }

    /// The name of master `i`'s container (docker backend only).
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn container(&self, i: usize) -> Option<String> {
        self.nodes[i].host().container().map(|c| c.name.clone())
    }

    /// The tail of master `i`'s server log, for panic messages.
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn log(&self, i: usize) -> String {
        self.nodes[i].host().spec().log_tail()
    }

    /// Every master's log tail, each under a `=== master i (url) ===` header.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for i in 0..self.len() {
            out.push_str(&format!("=== master {i} ({}) ===\n", self.direct_url(i)));
            out.push_str(&self.log(i));
            out.push('\n');
        }
        out
    }

    /// The pid of master `i`'s server, `None` when it is down.
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].host().pid()
    }

    fn node(&self, i: usize) -> Result<&Node> {
        self.nodes.get(i).ok_or(Error::NoSuchMaster {
            index: i,
            len: self.nodes.len(),
        })
    }

    /// What master `i` is doing.
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn status(&self, i: usize) -> Status {
        self.nodes[i].host().status()
    }

    /// True when master `i`'s server exists (running or paused).
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].host().is_running()
    }

    /// Freezes master `i` (SIGSTOP, or `docker pause`): it keeps its connections and its
    /// data but answers nothing, like a long GC pause or a VM migration. Returns once the
    /// kernel reports it stopped.
    ///
    /// # Errors
    /// [`Error::NoSuchMaster`], [`Error::NotRunning`] if it is down.
    pub fn pause(&self, i: usize) -> Result<()> {
        self.node(i)?.host().pause(i)
    }

    /// Undoes [`pause`](Cluster::pause) (SIGCONT).
    ///
    /// # Errors
    /// [`Error::NoSuchMaster`], [`Error::NotRunning`] if it is down.
    pub fn resume(&self, i: usize) -> Result<()> {
        self.node(i)?.host().resume(i)
    }

    /// Kills master `i` (SIGKILL) and reaps it. Its port stays reserved, so
    /// [`restart`](Cluster::restart) brings it back on the same URL. Killing a master that is
    /// already down is not an error.
    ///
    /// # Errors
    /// [`Error::NoSuchMaster`].
    pub fn kill(&self, i: usize) -> Result<()> {
        self.node(i)?.host().kill()
    }

    /// Kills master `i` if it is running, then starts it again on the same port and waits
    /// until it answers `PING`. With [`DataOnRestart::Keep`] it replays its AOF; with
    /// [`DataOnRestart::Lose`] it starts empty. A jumped clock stays jumped.
    ///
    /// # Errors
    /// [`Error::NoSuchMaster`], [`Error::NotReady`] with the log when it does not come back.
    pub fn restart(&self, i: usize, data: DataOnRestart) -> Result<()> {
        self.node(i)?.host().restart(i, data)
    }

    /// Moves master `i`'s wall clock by `offset_secs` (added to any earlier jump), as seen
    /// by the server through the clock shim (see [`ClusterBuilder::faketime`]); the change
    /// is visible to the server when this returns. Only `CLOCK_REALTIME` moves: key expiry (which
    /// Redis bases on the wall clock) jumps, the monotonic clock does not.
    ///
    /// # Errors
    /// [`Error::Unsupported`] unless the cluster was built with
    /// [`faketime(true)`](ClusterBuilder::faketime).
    pub fn jump_clock(&self, i: usize, offset_secs: i64) -> Result<()> {
        let now = self.clock_offset(i)?;
        self.set_clock_offset(i, now.saturating_add(offset_secs))
    }

    /// Sets master `i`'s total clock offset from real time (0 undoes every jump).
    ///
    /// # Errors
    /// As [`jump_clock`](Cluster::jump_clock).
    pub fn set_clock_offset(&self, i: usize, offset_secs: i64) -> Result<()> {
        let node = self.node(i)?;
        self.require_faketime(node)?;
        server::write_clock(&node.host().spec().clock_path(), offset_secs)
    }

    /// Master `i`'s current total clock offset in seconds.
    ///
    /// # Errors
    /// As [`jump_clock`](Cluster::jump_clock).
    pub fn clock_offset(&self, i: usize) -> Result<i64> {
        let node = self.node(i)?;
        self.require_faketime(node)?;
        Ok(server::read_clock(&node.host().spec().clock_path()))
    }

    fn require_faketime(&self, node: &Node) -> Result<()> {
        if node.host().spec().faketime.is_none() {
            return Err(Error::Unsupported {
                fault: "jump_clock",
                backend: self.backend,
                reason: "build the cluster with .faketime(true)",
            });
        }
        Ok(())
    }

    fn proxy(&self, i: usize, fault: &'static str) -> Result<&FaultProxy> {
        let node = self.node(i)?;
        match (&node.proxy, node.proxy_port) {
            (Some(p), _) => Ok(p),
            (None, Some(_)) => Err(Error::Unsupported {
                fault,
                backend: self.backend,
                reason: "the proxy runs in the `testcluster up --proxy` helper process; use the CLI's fault commands",
            }),
            (None, None) => Err(Error::Unsupported {
                fault,
                backend: self.backend,
                reason: "build the cluster with .proxy(true)",
            }),
        }
    }

    /// Isolates master `i` from its clients. See [`Cut`] for the two flavours.
    ///
    /// With a proxy (any backend) the proxy does it, for connections already open too, and
    /// the server stays reachable on [`direct_url`](Cluster::direct_url). On the docker
    /// backend without a proxy, [`Cut::BlackHole`] disconnects the container from its
    /// network: with container-IP URLs (a Linux engine) packets then go nowhere and
    /// clients time out; with published ports (other engines) new connections are refused.
    ///
    /// # Errors
    /// [`Error::Unsupported`] on the process backend without
    /// [`proxy(true)`](ClusterBuilder::proxy), and for [`Cut::Reset`] on docker without it.
    pub fn cut_off(&self, i: usize, how: Cut) -> Result<()> {
        let node = self.node(i)?;
        if node.proxy.is_none()
            && let Some(done) = node.host().cut_off(how)
        {
            return done;
        }
        self.proxy(i, "cut_off")?.set_cut(Some(how));
        Ok(())
    }

    /// Address takeover: master `i`'s address (its proxy) now reaches the server at `to`
    /// instead, for example a master of another [`Cluster`] that has been running for a while
    /// (a promoted replica, a pre-started standby behind a VIP). Open connections are reset.
    ///
    /// # Errors
    /// [`Error::Unsupported`] without [`proxy(true)`](ClusterBuilder::proxy).
    pub fn redirect(&self, i: usize, to: std::net::SocketAddr) -> Result<()> {
        self.proxy(i, "redirect")?.redirect(to);
        Ok(())
    }

    /// Undoes [`cut_off`](Cluster::cut_off), [`set_latency`](Cluster::set_latency) and
    /// [`drop_replies`](Cluster::drop_replies). Connections that lost bytes to the proxy
    /// meanwhile are reset (see [`FaultProxy::heal`]); clients must reconnect on them. A
    /// disconnected container is reconnected with its old IP.
    ///
    /// # Errors
    /// [`Error::Unsupported`] on the process backend without
    /// [`proxy(true)`](ClusterBuilder::proxy).
    pub fn heal(&self, i: usize) -> Result<()> {
        let node = self.node(i)?;
        if node.proxy.is_none()
            && let Some(done) = node.host().heal()
        {
            return done;
        }
        self.proxy(i, "heal")?.heal();
        Ok(())
    }

    /// Delays every chunk forwarded to and from master `i` by `one_way`, so a request and
    /// its reply gain at least twice that. `Duration::ZERO` removes the delay.
    ///
    /// # Errors
    /// [`Error::Unsupported`] without [`proxy(true)`](ClusterBuilder::proxy).
    pub fn set_latency(&self, i: usize, one_way: Duration) -> Result<()> {
        self.proxy(i, "set_latency")?.set_latency(one_way);
        Ok(())
    }

    /// While on, requests reach master `i` but its replies are swallowed: a `SET` lands,
    /// the client never hears about it and times out. Turning it off resets the
    /// connections that lost replies, as [`heal`](Cluster::heal) does.
    ///
    /// # Errors
    /// [`Error::Unsupported`] without [`proxy(true)`](ClusterBuilder::proxy).
    pub fn drop_replies(&self, i: usize, on: bool) -> Result<()> {
        self.proxy(i, "drop_replies")?.set_drop_replies(on);
        Ok(())
    }

    /// The proxy faults in force on master `i`.
    ///
    /// # Errors
    /// [`Error::Unsupported`] without [`proxy(true)`](ClusterBuilder::proxy).
    pub fn faults(&self, i: usize) -> Result<Faults> {
        Ok(self.proxy(i, "faults")?.faults())
    }

    /// A description of the running masters that [`Cluster::attach`] can turn back into a
    /// handle, e.g. from another process.
    pub fn state(&self) -> State {
        State {
            backend: self.backend,
            masters: self
                .nodes
                .iter()
                .map(|n| {
                    let host = n.host();
                    let spec = host.spec();
                    MasterRecord {
                        port: spec.port,
                        pid: host.recorded_pid(),
                        dir: spec.dir.clone(),
                        redis_server: spec.redis_server.clone(),
                        faketime: spec.faketime.clone(),
                        proxy_port: n.proxy_port,
                        container: host.container().map(|c| c.name.clone()),
                        ip: host.container().map(|c| c.ip.clone()),
                    }
                })
                .collect(),
            proxy_pid: self.proxy_pid,
            network: self.network.as_ref().map(|d| d.network.clone()),
            via_ip: self.network.as_ref().is_some_and(|d| d.via_ip),
        }
    }

    /// Gives up ownership: the servers keep running after this handle is gone.
    ///
    /// # Errors
    /// [`Error::Config`] unless the cluster was built
    /// [`detached`](ClusterBuilder::detached) (its servers would die with this process).
    pub fn into_state(mut self) -> Result<State> {
        if self.nodes.iter().any(|n| !n.host().outlives_us()) {
            return Err(Error::Config(
                "into_state needs a cluster built with .detached(true)".into(),
            ));
        }
        let state = self.state();
        self.owned = false;
        // The Child handles are dropped without waiting: the servers are reparented to
        // init when we exit, which reaps them.
        for n in &mut self.nodes {
            n.host.get_mut().forget();
            // In-process proxies cannot outlive us; the CLI restarts them in a helper.
            n.proxy = None;
        }
        Ok(state)
    }

    /// A handle on masters described by `state` (from [`Cluster::into_state`]). Dropping it
    /// leaves them running; [`Cluster::shutdown`] stops them. Restarts spawn detached.
    pub fn attach(state: &State) -> Cluster {
        let network = state.network.as_ref().map(|n| DockerNet {
            network: n.clone(),
            via_ip: state.via_ip,
        });
        let nodes = state
            .masters
            .iter()
            .map(|m| {
                let spec = Spec {
                    redis_server: m.redis_server.clone(),
                    port: m.port,
                    dir: m.dir.clone(),
                    faketime: m.faketime.clone(),
                    detached: true,
                    tls: None,
                    unix_socket: false,
                };
                let host = AnyHost::attached(
                    spec,
                    m.pid,
                    m.container.as_ref().zip(m.ip.as_ref()),
                    network.as_ref(),
                );
                let mut node = Node::new(host);
                node.proxy_port = m.proxy_port;
                node
            })
            .collect();
        Cluster {
            backend: state.backend,
            nodes,
            owned: false,
            proxy_pid: state.proxy_pid,
            network,
            pki: None,
        }
    }

    /// Stops every master and removes its files, whether or not this handle owns them.
    pub fn shutdown(mut self) {
        self.teardown();
        self.owned = false;
    }

    fn teardown(&mut self) {
        let containers: Vec<String> = self
            .nodes
            .iter()
            .filter_map(|n| n.host().container().map(|c| c.name.clone()))
            .collect();
        for node in &mut self.nodes {
            // Proxies first, so no client sees a half-dead master through them.
            node.proxy = None;
        }
        // All containers in one `docker rm`, then the network they were on.
        let containers: Vec<&str> = containers.iter().map(String::as_str).collect();
        host::remove_containers(
            &containers,
            self.network.as_ref().map(|d| d.network.as_str()),
        );
        for node in &mut self.nodes {
            let host = node.host.get_mut();
            host.stop();
            let spec = host.spec();
            let _ = std::fs::remove_dir_all(&spec.dir);
            ports::release(spec.port);
            if let Some(tls) = spec.tls {
                ports::release(tls.port);
            }
            if let Some(p) = node.proxy_port {
                ports::release(p);
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.owned {
            self.teardown();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn cluster_is_send_and_sync() {
        assert_send_sync::<Cluster>();
        assert_send_sync::<Error>();
    }

    #[test]
    fn zero_masters_is_a_config_error() {
        assert!(matches!(
            Cluster::builder().masters(0).build(),
            Err(Error::Config(_))
        ));
    }

    #[test]
    fn backend_round_trips_through_strings() {
        for b in [Backend::Process, Backend::Docker, Backend::Auto] {
            assert_eq!(b.to_string().parse::<Backend>().unwrap(), b);
        }
        assert!("podman".parse::<Backend>().is_err());
    }
}
