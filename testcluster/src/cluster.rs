//! `Cluster` and its builder: the public face of the harness.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use crate::docker;
use crate::error::{Error, Result};
use crate::ports;
use crate::process::{self, NotReady, Spec};
use crate::proxy::{FaultProxy, Faults};
use crate::state::{MasterRecord, State};

/// Masters started by [`Cluster::builder`] unless told otherwise (the usual Redlock N).
pub const DEFAULT_MASTERS: usize = 5;
/// The `redis-server` used unless [`ClusterBuilder::redis_server`] or the
/// `TESTCLUSTER_REDIS_SERVER` environment variable says otherwise; looked up on `PATH`.
pub const DEFAULT_REDIS_SERVER: &str = "redis-server";

/// How many times a restart retries when its port is briefly taken by someone else.
const BIND_RETRIES: usize = 20;
const BIND_RETRY_PAUSE: Duration = Duration::from_millis(100);
/// How many fresh ports a first start tries before giving up.
const FIRST_START_ATTEMPTS: usize = 5;
/// Containers get `.10` up to `.209` in their network's /24.
const MAX_DOCKER_MASTERS: usize = 200;
/// How long `Backend::Auto` waits for `docker info`.
const AUTO_DOCKER_PROBE: Duration = Duration::from_secs(3);

static DIR_COUNTER: AtomicUsize = AtomicUsize::new(0);

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

/// Configures and starts a [`Cluster`].
#[must_use]
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    masters: usize,
    backend: Backend,
    proxy: bool,
    faketime: bool,
    redis_server: PathBuf,
    faketime_lib: Option<PathBuf>,
    detached: bool,
}

impl Default for ClusterBuilder {
    fn default() -> Self {
        ClusterBuilder {
            masters: DEFAULT_MASTERS,
            backend: Backend::Process,
            proxy: false,
            faketime: false,
            redis_server: std::env::var_os("TESTCLUSTER_REDIS_SERVER")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_REDIS_SERVER)),
            faketime_lib: std::env::var_os("TESTCLUSTER_FAKETIME_LIB").map(PathBuf::from),
            detached: false,
        }
    }
}

impl ClusterBuilder {
    /// Number of masters. Default [`DEFAULT_MASTERS`] (5); must be at least 1.
    pub fn masters(mut self, n: usize) -> Self {
        self.masters = n;
        self
    }

    /// Where the masters run. Default [`Backend::Process`].
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// Put a fault proxy in front of every master, so [`Cluster::cut_off`],
    /// [`Cluster::set_latency`] and [`Cluster::drop_replies`] work. Default off.
    pub fn proxy(mut self, on: bool) -> Self {
        self.proxy = on;
        self
    }

    /// Preload a clock shim into every master so [`Cluster::jump_clock`] works. Default off.
    ///
    /// The shim (built from this crate's `csrc/clockshim.c`) is a small, allocation-free
    /// subset of libfaketime: it reads the same `FAKETIME_TIMESTAMP_FILE` format and fakes
    /// only the wall clock. libfaketime itself deadlocks at start-up in any redis-server
    /// linked with jemalloc, which is Debian's and the official image's; use
    /// [`faketime_lib`](ClusterBuilder::faketime_lib) for a redis built with libc malloc.
    pub fn faketime(mut self, on: bool) -> Self {
        self.faketime = on;
        self
    }

    /// The `redis-server` binary. Default [`DEFAULT_REDIS_SERVER`] from `PATH`, or
    /// `$TESTCLUSTER_REDIS_SERVER`.
    pub fn redis_server(mut self, path: impl Into<PathBuf>) -> Self {
        self.redis_server = path.into();
        self
    }

    /// Preload this libfaketime-compatible library instead of the built-in shim when
    /// [`faketime`](ClusterBuilder::faketime) is on; it gets `FAKETIME_TIMESTAMP_FILE`,
    /// `FAKETIME_NO_CACHE=1` and `FAKETIME_DONT_FAKE_MONOTONIC=1`. Default: the built-in
    /// shim, or `$TESTCLUSTER_FAKETIME_LIB`.
    pub fn faketime_lib(mut self, path: impl Into<PathBuf>) -> Self {
        self.faketime_lib = Some(path.into());
        self
    }

    /// Start servers in their own session so they can outlive this process once the
    /// cluster is turned into a [`State`] with [`Cluster::into_state`] (what the CLI does).
    /// Dropping a detached cluster still stops everything. Default off: without it the
    /// servers die with the process even if it is killed.
    pub fn detached(mut self, on: bool) -> Self {
        self.detached = on;
        self
    }

    /// Starts the masters and waits until each answers `PING`.
    ///
    /// # Errors
    /// [`Error::Config`] for zero masters or a missing libfaketime, [`Error::Spawn`] when
    /// redis-server cannot be run, [`Error::NotReady`] (with the server log) when a master
    /// does not come up, [`Error::Unsupported`] for a backend that is not available.
    pub fn build(self) -> Result<Cluster> {
        if self.masters == 0 {
            return Err(Error::Config("a cluster needs at least one master".into()));
        }
        if self.faketime {
            match &self.faketime_lib {
                Some(lib) if !lib.exists() => {
                    return Err(Error::Config(format!(
                        "faketime library {} does not exist",
                        lib.display()
                    )));
                }
                None if !process::clock_shim_available() => {
                    return Err(Error::Config(
                        "faketime(true) but this build has no clock shim (no C compiler at build time); set faketime_lib".into(),
                    ));
                }
                _ => {}
            }
        }
        let backend = match self.backend {
            Backend::Auto if docker::engine_available(AUTO_DOCKER_PROBE) => Backend::Docker,
            Backend::Auto => Backend::Process,
            b => b,
        };
        match backend {
            Backend::Docker => self.build_docker(),
            _ => self.build_process(),
        }
    }

    fn build_docker(self) -> Result<Cluster> {
        if self.masters > MAX_DOCKER_MASTERS {
            return Err(Error::Config(format!(
                "the docker backend supports at most {MAX_DOCKER_MASTERS} masters"
            )));
        }
        docker::ensure_image(&self.redis_server)?;
        static REAPED: std::sync::Once = std::sync::Once::new();
        REAPED.call_once(docker::reap_stale);
        let n = DIR_COUNTER.fetch_add(1, Ordering::Relaxed);
        let network = format!("testcluster-{}-{n}", std::process::id());
        // Detached (CLI) clusters outlive their creator, so must not look stale to reap_stale.
        let owner = if self.detached {
            "testcluster.owner=cli".to_string()
        } else {
            format!("testcluster.owner=pid-{}", std::process::id())
        };
        let prefix = docker::create_network(&network, &owner)?;
        let mut cluster = Cluster {
            backend: Backend::Docker,
            nodes: Vec::with_capacity(self.masters),
            owned: true,
            proxy_pid: None,
            docker: Some(DockerNet {
                network: network.clone(),
                via_ip: true,
            }),
        };
        for index in 0..self.masters {
            let ip = format!("{prefix}.{}", 10 + index);
            let name = format!("{network}-{index}");
            let mut spec = self.new_spec()?;
            spec.prepare(true)?;
            let mut started = Err(Error::NoFreePort { attempts: 0 });
            for _ in 0..FIRST_START_ATTEMPTS {
                started = docker::run_container(&docker::RunArgs {
                    spec: &spec,
                    name: &name,
                    network: &network,
                    ip: &ip,
                    owner_label: &owner,
                });
                match &started {
                    Err(Error::Docker { stderr, .. }) if is_port_taken(stderr) => {
                        let _ = docker::docker(&["rm", "-f", &name], docker::CMD_TIMEOUT);
                        ports::release(spec.port);
                        spec.port = ports::reserve()?;
                    }
                    _ => break,
                }
            }
            let mut node = Node::new(spec, None);
            node.container = Some(Container { name, ip });
            cluster.nodes.push(node);
            started?;
        }
        for index in 0..self.masters {
            let node = &cluster.nodes[index];
            let name = &node.container.as_ref().expect("docker node").name;
            process::wait_ready_at(&node.spec.url(), &node.spec, 10, || container_exited(name))
                .map_err(|e| cluster.not_ready(index, &e))?;
        }
        // Container IPs are only routable from the engine's own host (not Docker Desktop);
        // with them, a network disconnect is a true black hole for clients.
        let via_ip = cluster
            .nodes
            .iter()
            .all(|n| crate::resp::ping(&n.container_url(), Duration::from_millis(500)));
        if let Some(d) = &mut cluster.docker {
            d.via_ip = via_ip;
        }
        if self.proxy {
            for index in 0..cluster.nodes.len() {
                let upstream = crate::resp::parse_addr(&cluster.direct_url(index))
                    .map_err(|e| Error::io("parsing a container address", e))?;
                let p = start_proxy(upstream)?;
                let node = &mut cluster.nodes[index];
                node.proxy_port = Some(p.port());
                node.proxy = Some(p);
            }
        }
        Ok(cluster)
    }

    fn build_process(self) -> Result<Cluster> {
        let mut cluster = Cluster {
            backend: Backend::Process,
            nodes: Vec::with_capacity(self.masters),
            owned: true,
            proxy_pid: None,
            docker: None,
        };
        // Spawn everything first and wait afterwards: startup is mostly waiting.
        let mut pending = Vec::with_capacity(self.masters);
        for index in 0..self.masters {
            let spec = self.new_spec()?;
            spec.prepare(true)?;
            let child = spec.spawn();
            let mut node = Node::new(spec, None);
            if self.proxy {
                let proxy = start_proxy(SocketAddr::from((Ipv4Addr::LOCALHOST, node.spec.port)));
                match proxy {
                    Ok(p) => {
                        node.proxy_port = Some(p.port());
                        node.proxy = Some(p);
                    }
                    Err(e) => {
                        if let Ok(mut c) = child {
                            let _ = c.kill();
                            let _ = c.wait();
                        }
                        cluster.nodes.push(node);
                        return Err(e);
                    }
                }
            }
            let child = match child {
                Ok(c) => c,
                Err(e) => {
                    cluster.nodes.push(node);
                    return Err(e);
                }
            };
            node.run().pid = Some(child.id());
            node.run().child = Some(child);
            cluster.nodes.push(node);
            pending.push(index);
        }
        for index in pending {
            cluster.finish_first_start(index)?;
        }
        Ok(cluster)
    }

    fn new_spec(&self) -> Result<Spec> {
        let n = DIR_COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("testcluster-{}-{n}", std::process::id()));
        let faketime = self.faketime.then(|| {
            self.faketime_lib
                .clone()
                .unwrap_or_else(|| dir.join(process::CLOCK_SHIM_NAME))
        });
        Ok(Spec {
            redis_server: self.redis_server.clone(),
            port: ports::reserve()?,
            dir,
            faketime,
            detached: self.detached,
        })
    }
}

/// A proxy on a reserved port; retries a few ports in case another process won the race.
fn start_proxy(upstream: SocketAddr) -> Result<FaultProxy> {
    let mut last = None;
    for _ in 0..FIRST_START_ATTEMPTS {
        let port = ports::reserve()?;
        match FaultProxy::start(port, upstream) {
            Ok(p) => return Ok(p),
            Err(e) => {
                ports::release(port);
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or(Error::NoFreePort {
        attempts: FIRST_START_ATTEMPTS,
    }))
}

fn is_port_taken(docker_stderr: &str) -> bool {
    docker_stderr.contains("port is already allocated")
        || docker_stderr.contains("address already in use")
}

fn container_exited(name: &str) -> Option<String> {
    match docker::status(name).as_deref() {
        Some("running") | Some("paused") | Some("created") | Some("restarting") => None,
        Some(other) => Some(format!("container is {other}")),
        None => Some("container is gone".into()),
    }
}

/// The cluster's private docker network.
#[derive(Debug, Clone)]
struct DockerNet {
    network: String,
    /// Clients use container IPs (true) or the published loopback ports (false).
    via_ip: bool,
}

/// A master's container: fixed name and fixed IP, so restarts and reconnects keep its URL.
#[derive(Debug, Clone)]
struct Container {
    name: String,
    ip: String,
}

/// A master's mutable run state.
#[derive(Debug, Default)]
struct Run {
    /// Present for servers this process spawned; waiting on it reaps the zombie.
    child: Option<Child>,
    /// Also set for servers re-attached from a state file (CLI), where there is no `Child`.
    pid: Option<u32>,
}

#[derive(Debug)]
struct Node {
    spec: Spec,
    /// Set whenever clients are meant to go through a proxy, even one running in another
    /// process (the CLI's helper), where `proxy` is `None`.
    proxy_port: Option<u16>,
    proxy: Option<FaultProxy>,
    container: Option<Container>,
    run: Mutex<Run>,
}

impl Node {
    fn new(spec: Spec, proxy_port: Option<u16>) -> Node {
        Node {
            spec,
            proxy_port,
            proxy: None,
            container: None,
            run: Mutex::new(Run::default()),
        }
    }

    fn container_url(&self) -> String {
        match &self.container {
            Some(c) => format!("redis://{}:6379", c.ip),
            None => self.spec.url(),
        }
    }

    fn run(&self) -> MutexGuard<'_, Run> {
        // A panicking test thread must not wedge the harness for the others.
        self.run.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Run {
    fn alive(&mut self) -> bool {
        if let Some(child) = &mut self.child {
            match child.try_wait() {
                Ok(None) => return true,
                _ => {
                    self.child = None;
                    self.pid = None;
                    return false;
                }
            }
        }
        match self.pid {
            Some(pid) if process::pid_is_redis(pid) => true,
            _ => {
                self.pid = None;
                false
            }
        }
    }

    fn exited(&mut self) -> Option<String> {
        match &mut self.child {
            Some(child) => match child.try_wait() {
                Ok(Some(status)) => Some(status.to_string()),
                Ok(None) => None,
                Err(e) => Some(e.to_string()),
            },
            None => match self.pid {
                Some(pid) if process::pid_is_redis(pid) => None,
                _ => Some("process is gone".into()),
            },
        }
    }

    /// SIGKILL and reap; bounded even for servers we did not spawn.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        } else if let Some(pid) = self.pid
            && process::pid_is_redis(pid)
        {
            let _ = process::signal(pid, libc::SIGKILL);
            process::wait_gone(pid, Duration::from_secs(5));
        }
        self.pid = None;
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
    nodes: Vec<Node>,
    /// False for clusters re-attached from a state file: dropping those leaves the
    /// servers alone (the CLI's `status` must not stop what `up` started).
    owned: bool,
    /// Carried through from an attached [`State`] so re-saving it keeps the CLI's helper.
    proxy_pid: Option<u32>,
    docker: Option<DockerNet>,
}

impl Cluster {
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
        match &self.docker {
            Some(d) if d.via_ip => self.nodes[i].container_url(),
            _ => self.nodes[i].spec.url(),
        }
    }

    /// The name of master `i`'s container (docker backend only).
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn container(&self, i: usize) -> Option<String> {
        self.nodes[i].container.as_ref().map(|c| c.name.clone())
    }

    /// The tail of master `i`'s server log, for panic messages.
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn log(&self, i: usize) -> String {
        self.nodes[i].spec.log_tail()
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
        if let Some(c) = &self.nodes[i].container {
            return docker::pid(&c.name);
        }
        let mut run = self.nodes[i].run();
        if run.alive() { run.pid } else { None }
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
        if let Some(c) = &self.nodes[i].container {
            return match docker::status(&c.name).as_deref() {
                Some("running") => Status::Running,
                Some("paused") => Status::Paused,
                _ => Status::Down,
            };
        }
        let mut run = self.nodes[i].run();
        if !run.alive() {
            return Status::Down;
        }
        match run.pid.and_then(process::proc_state) {
            Some('T') | Some('t') => Status::Paused,
            _ => Status::Running,
        }
    }

    /// True when master `i`'s server exists (running or paused).
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn is_running(&self, i: usize) -> bool {
        if self.nodes[i].container.is_some() {
            return self.status(i) != Status::Down;
        }
        self.nodes[i].run().alive()
    }

    /// Freezes master `i` (SIGSTOP, or `docker pause`): it keeps its connections and its
    /// data but answers nothing, like a long GC pause or a VM migration. Returns once the
    /// kernel reports it stopped.
    ///
    /// # Errors
    /// [`Error::NoSuchMaster`], [`Error::NotRunning`] if it is down.
    pub fn pause(&self, i: usize) -> Result<()> {
        self.signal_and_wait(i, libc::SIGSTOP, true)
    }

    /// Undoes [`pause`](Cluster::pause) (SIGCONT).
    ///
    /// # Errors
    /// [`Error::NoSuchMaster`], [`Error::NotRunning`] if it is down.
    pub fn resume(&self, i: usize) -> Result<()> {
        self.signal_and_wait(i, libc::SIGCONT, false)
    }

    fn signal_and_wait(&self, i: usize, sig: libc::c_int, stopped: bool) -> Result<()> {
        let node = self.node(i)?;
        if let Some(c) = &node.container {
            let _run = node.run();
            let (want_from, cmd) = if stopped {
                (Status::Running, "pause")
            } else {
                (Status::Paused, "unpause")
            };
            return match self.status(i) {
                Status::Down => Err(Error::NotRunning { index: i }),
                s if s == want_from => {
                    docker::docker(&[cmd, &c.name], docker::CMD_TIMEOUT).map(|_| ())
                }
                _ => Ok(()),
            };
        }
        let mut run = node.run();
        let pid = match (run.alive(), run.pid) {
            (true, Some(pid)) => pid,
            _ => return Err(Error::NotRunning { index: i }),
        };
        process::signal(pid, sig).map_err(|e| Error::io(format!("signalling pid {pid}"), e))?;
        // Signals are asynchronous; a test that pauses and immediately measures must not
        // race the scheduler. 200 x 5 ms bounds the wait.
        for _ in 0..200 {
            let is_stopped = matches!(process::proc_state(pid), Some('T') | Some('t'));
            if is_stopped == stopped {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(5));
        }
        Err(Error::io(
            format!("pid {pid} did not change state after signal {sig}"),
            std::io::Error::from(std::io::ErrorKind::TimedOut),
        ))
    }

    /// Kills master `i` (SIGKILL) and reaps it. Its port stays reserved, so
    /// [`restart`](Cluster::restart) brings it back on the same URL. Killing a master that is
    /// already down is not an error.
    ///
    /// # Errors
    /// [`Error::NoSuchMaster`].
    pub fn kill(&self, i: usize) -> Result<()> {
        let node = self.node(i)?;
        if node.container.is_none() {
            node.run().kill();
            return Ok(());
        }
        let _run = node.run();
        self.kill_container(i, node)
    }

    fn kill_container(&self, i: usize, node: &Node) -> Result<()> {
        let c = node.container.as_ref().expect("only called for containers");
        match self.status(i) {
            Status::Down => Ok(()),
            s => {
                // The engine refuses to kill a paused container.
                if s == Status::Paused {
                    docker::docker(&["unpause", &c.name], docker::CMD_TIMEOUT)?;
                }
                docker::docker(&["kill", &c.name], docker::CMD_TIMEOUT)?;
                Ok(())
            }
        }
    }

    /// Kills master `i` if it is running, then starts it again on the same port and waits
    /// until it answers `PING`. With [`DataOnRestart::Keep`] it replays its AOF; with
    /// [`DataOnRestart::Lose`] it starts empty. A jumped clock stays jumped.
    ///
    /// # Errors
    /// [`Error::NoSuchMaster`], [`Error::NotReady`] with the log when it does not come back.
    pub fn restart(&self, i: usize, data: DataOnRestart) -> Result<()> {
        let node = self.node(i)?;
        if let Some(c) = &node.container {
            let _run = node.run();
            self.kill_container(i, node)?;
            node.spec.prepare(false)?;
            if data == DataOnRestart::Lose {
                node.spec.wipe_data()?;
            }
            let mut started = Ok(String::new());
            for _ in 0..BIND_RETRIES {
                started = docker::docker(&["start", &c.name], docker::CMD_TIMEOUT);
                match &started {
                    Err(Error::Docker { stderr, .. }) if is_port_taken(stderr) => {
                        thread::sleep(BIND_RETRY_PAUSE)
                    }
                    _ => break,
                }
            }
            started?;
            return process::wait_ready_at(&self.direct_url(i), &node.spec, 10, || {
                container_exited(&c.name)
            })
            .map_err(|e| self.not_ready(i, &e));
        }
        let mut run = node.run();
        run.kill();
        node.spec.prepare(false)?;
        if data == DataOnRestart::Lose {
            node.spec.wipe_data()?;
        }
        let mut last = NotReady::TimedOut;
        for _ in 0..BIND_RETRIES {
            let child = node.spec.spawn()?;
            run.pid = Some(child.id());
            run.child = Some(child);
            match process::wait_ready(&node.spec, || run.exited()) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    run.kill();
                    let retry = matches!(
                        e,
                        NotReady::Exited {
                            addr_in_use: true,
                            ..
                        }
                    );
                    last = e;
                    if !retry {
                        break;
                    }
                    thread::sleep(BIND_RETRY_PAUSE);
                }
            }
        }
        Err(self.not_ready(i, &last))
    }

    fn not_ready(&self, i: usize, why: &NotReady) -> Error {
        let spec = &self.nodes[i].spec;
        Error::NotReady {
            index: i,
            port: spec.port,
            waited: process::READY_TIMEOUT,
            why: why.describe(),
            log: spec.log_tail(),
        }
    }

    /// Waits for the first start of master `index`; on a bind race moves it to a fresh port
    /// (nobody knows its URL yet).
    fn finish_first_start(&mut self, index: usize) -> Result<()> {
        for _ in 0..FIRST_START_ATTEMPTS {
            let node = &self.nodes[index];
            let res = {
                let mut run = node.run();
                process::wait_ready(&node.spec, || run.exited())
            };
            match res {
                Ok(()) => return Ok(()),
                Err(NotReady::Exited {
                    addr_in_use: true, ..
                }) => {
                    let old = &mut self.nodes[index];
                    old.run().kill();
                    ports::release(old.spec.port);
                    old.spec.port = ports::reserve()?;
                    let child = old.spec.spawn()?;
                    let mut run = old.run();
                    run.pid = Some(child.id());
                    run.child = Some(child);
                }
                Err(e) => return Err(self.not_ready(index, &e)),
            }
        }
        Err(self.not_ready(index, &NotReady::TimedOut))
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
        process::write_clock(&node.spec.clock_path(), offset_secs)
    }

    /// Master `i`'s current total clock offset in seconds.
    ///
    /// # Errors
    /// As [`jump_clock`](Cluster::jump_clock).
    pub fn clock_offset(&self, i: usize) -> Result<i64> {
        let node = self.node(i)?;
        self.require_faketime(node)?;
        Ok(process::read_clock(&node.spec.clock_path()))
    }

    fn require_faketime(&self, node: &Node) -> Result<()> {
        if node.spec.faketime.is_none() {
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
        if let (None, Some(c), Some(d)) = (&node.proxy, &node.container, &self.docker) {
            if how == Cut::Reset {
                return Err(Error::Unsupported {
                    fault: "cut_off(Reset)",
                    backend: self.backend,
                    reason: "a network disconnect cannot reset connections; build the cluster with .proxy(true)",
                });
            }
            let _run = node.run();
            // Idempotent, and correct for a CLI invocation that has no memory of earlier ones.
            return match docker::docker(
                &["network", "disconnect", "-f", &d.network, &c.name],
                docker::CMD_TIMEOUT,
            ) {
                Err(Error::Docker { stderr, .. }) if stderr.contains("is not connected") => Ok(()),
                r => r.map(|_| ()),
            };
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
        if let (None, Some(c), Some(d)) = (&node.proxy, &node.container, &self.docker) {
            let _run = node.run();
            return match docker::docker(
                &["network", "connect", "--ip", &c.ip, &d.network, &c.name],
                docker::CMD_TIMEOUT,
            ) {
                Err(Error::Docker { stderr, .. }) if stderr.contains("already exists") => Ok(()),
                r => r.map(|_| ()),
            };
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
                .map(|n| MasterRecord {
                    port: n.spec.port,
                    pid: {
                        let mut run = n.run();
                        if run.alive() { run.pid } else { None }
                    },
                    dir: n.spec.dir.clone(),
                    redis_server: n.spec.redis_server.clone(),
                    faketime: n.spec.faketime.clone(),
                    proxy_port: n.proxy_port,
                    container: n.container.as_ref().map(|c| c.name.clone()),
                    ip: n.container.as_ref().map(|c| c.ip.clone()),
                })
                .collect(),
            proxy_pid: self.proxy_pid,
            network: self.docker.as_ref().map(|d| d.network.clone()),
            via_ip: self.docker.as_ref().is_some_and(|d| d.via_ip),
        }
    }

    /// Gives up ownership: the servers keep running after this handle is gone.
    ///
    /// # Errors
    /// [`Error::Config`] unless the cluster was built
    /// [`detached`](ClusterBuilder::detached) (its servers would die with this process).
    pub fn into_state(mut self) -> Result<State> {
        if self.docker.is_none() && self.nodes.iter().any(|n| !n.spec.detached) {
            return Err(Error::Config(
                "into_state needs a cluster built with .detached(true)".into(),
            ));
        }
        let state = self.state();
        self.owned = false;
        // The Child handles are dropped without waiting: the servers are reparented to
        // init when we exit, which reaps them.
        for n in &mut self.nodes {
            n.run().child = None;
            // In-process proxies cannot outlive us; the CLI restarts them in a helper.
            n.proxy = None;
        }
        Ok(state)
    }

    /// A handle on masters described by `state` (from [`Cluster::into_state`]). Dropping it
    /// leaves them running; [`Cluster::shutdown`] stops them. Restarts spawn detached.
    pub fn attach(state: &State) -> Cluster {
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
                };
                let mut node = Node::new(spec, m.proxy_port);
                node.run().pid = m.pid;
                if let (Some(name), Some(ip)) = (&m.container, &m.ip) {
                    node.container = Some(Container {
                        name: name.clone(),
                        ip: ip.clone(),
                    });
                }
                node
            })
            .collect();
        Cluster {
            backend: state.backend,
            nodes,
            owned: false,
            proxy_pid: state.proxy_pid,
            docker: state.network.as_ref().map(|n| DockerNet {
                network: n.clone(),
                via_ip: state.via_ip,
            }),
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
            .filter_map(|n| n.container.as_ref().map(|c| c.name.clone()))
            .collect();
        for node in &mut self.nodes {
            // Proxies first, so no client sees a half-dead master through them.
            node.proxy = None;
        }
        if !containers.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(containers.iter().map(String::as_str));
            let _ = docker::docker(&args, docker::CMD_TIMEOUT);
        }
        if let Some(d) = &self.docker {
            let _ = docker::docker(&["network", "rm", &d.network], docker::CMD_TIMEOUT);
        }
        for node in &mut self.nodes {
            node.run().kill();
            let _ = std::fs::remove_dir_all(&node.spec.dir);
            ports::release(node.spec.port);
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
