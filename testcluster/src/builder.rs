//! [`ClusterBuilder`]: configures a [`Cluster`] and starts its masters on one backend.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::cluster::{Backend, Cluster, Node};
use crate::error::{Error, Result};
use crate::host::engine;
use crate::host::{AnyHost, Container, DockerHost, DockerNet, FIRST_START_ATTEMPTS, ProcessHost};
use crate::ports;
use crate::proxy::FaultProxy;
use crate::server::{self, Spec};
use crate::tls::{TestPki, TlsMode, TlsSpec};

/// Masters started by [`Cluster::builder`] unless told otherwise (the usual Redlock N).
pub const DEFAULT_MASTERS: usize = 5;
/// The `redis-server` used unless [`ClusterBuilder::redis_server`] or the
/// `TESTCLUSTER_REDIS_SERVER` environment variable says otherwise; looked up on `PATH`.
pub const DEFAULT_REDIS_SERVER: &str = "redis-server";

/// Containers get `.10` up to `.209` in their network's /24.
const MAX_DOCKER_MASTERS: usize = 200;
/// How long `Backend::Auto` waits for `docker info`.
const AUTO_DOCKER_PROBE: Duration = Duration::from_secs(3);

static DIR_COUNTER: AtomicUsize = AtomicUsize::new(0);

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
    tls: Option<TlsMode>,
    tls_server_names: Option<Vec<String>>,
    unix_socket: bool,
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
            tls: None,
            tls_server_names: None,
            unix_socket: false,
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
    /// cluster is turned into a [`State`](crate::State) with [`Cluster::into_state`] (what
    /// the CLI does). Dropping a detached cluster still stops everything. Default off:
    /// without it the servers die with the process even if it is killed.
    pub fn detached(mut self, on: bool) -> Self {
        self.detached = on;
        self
    }

    /// Give every master a TLS port too ([`Cluster::tls_url`]), with certificates generated
    /// for this cluster ([`Cluster::pki`]). The plain port stays, for the harness's own
    /// probes and for tests mixing plain and TLS clients. Default: no TLS.
    pub fn tls(mut self, mode: TlsMode) -> Self {
        self.tls = Some(mode);
        self
    }

    /// The names the masters' certificate is valid for. Default: `localhost`, `127.0.0.1`
    /// and, on the docker backend, every container's IP. Set it to test hostname checks.
    pub fn tls_server_names(mut self, names: Vec<String>) -> Self {
        self.tls_server_names = Some(names);
        self
    }

    /// Also listen on a Unix socket ([`Cluster::unix_url`]). Default off.
    pub fn unix_socket(mut self, on: bool) -> Self {
        self.unix_socket = on;
        self
    }

    /// The PKI for a TLS cluster whose masters are also reachable at `addresses`.
    fn pki(&self, addresses: &[String]) -> Result<Option<TestPki>> {
        if self.tls.is_none() {
            return Ok(None);
        }
        let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        names.extend(addresses.iter().cloned());
        let names = self.tls_server_names.clone().unwrap_or(names);
        TestPki::generate(&names).map(Some)
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
                None if !server::clock_shim_available() => {
                    return Err(Error::Config(
                        "faketime(true) but this build has no clock shim (no C compiler at build time); set faketime_lib".into(),
                    ));
                }
                _ => {}
            }
        }
        let backend = match self.backend {
            Backend::Auto if engine::engine_available(AUTO_DOCKER_PROBE) => Backend::Docker,
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
        engine::ensure_image(&self.redis_server)?;
        static REAPED: std::sync::Once = std::sync::Once::new();
        REAPED.call_once(engine::reap_stale);
        let n = DIR_COUNTER.fetch_add(1, Ordering::Relaxed);
        let network = format!("testcluster-{}-{n}", std::process::id());
        // Detached (CLI) clusters outlive their creator, so must not look stale to reap_stale.
        let owner = if self.detached {
            "testcluster.owner=cli".to_string()
        } else {
            format!("testcluster.owner=pid-{}", std::process::id())
        };
        let prefix = engine::create_network(&network, &owner)?;
        let net = DockerNet {
            network: network.clone(),
            via_ip: true,
        };
        let mut cluster = Cluster::new(Backend::Docker, self.masters, Some(net.clone()));
        let ips: Vec<String> = (0..self.masters)
            .map(|i| format!("{prefix}.{}", 10 + i))
            .collect();
        cluster.pki = self.pki(&ips)?;
        let mut container_urls = Vec::with_capacity(self.masters);
        for (index, ip) in ips.iter().enumerate() {
            let container = Container {
                name: format!("{network}-{index}"),
                ip: ip.clone(),
            };
            let spec = self.new_spec()?;
            spec.prepare(true)?;
            if let Some(pki) = &cluster.pki {
                pki.write_server_files(&spec.dir)?;
            }
            let mut host = DockerHost::new(spec, container, net.clone());
            container_urls.push(host.container_url());
            let started = host.start(&owner);
            cluster.nodes.push(Node::new(host.into()));
            started?;
        }
        for (index, node) in cluster.nodes.iter_mut().enumerate() {
            node.host.get_mut().wait_first_start(index)?;
        }
        // Container IPs are only routable from the engine's own host (not Docker Desktop);
        // with them, a network disconnect is a true black hole for clients.
        let via_ip = container_urls
            .iter()
            .all(|url| crate::resp::ping(url, Duration::from_millis(500)));
        for node in &mut cluster.nodes {
            if let AnyHost::Docker(d) = &mut node.host {
                d.net.via_ip = via_ip;
            }
        }
        if let Some(d) = &mut cluster.network {
            d.via_ip = via_ip;
        }
        if self.proxy {
            for node in &mut cluster.nodes {
                let upstream = crate::resp::parse_addr(&node.host.get().direct_url())
                    .map_err(|e| Error::io("parsing a container address", e))?;
                let p = start_proxy(upstream)?;
                node.proxy_port = Some(p.port());
                node.proxy = Some(p);
            }
        }
        Ok(cluster)
    }

    fn build_process(self) -> Result<Cluster> {
        let mut cluster = Cluster::new(Backend::Process, self.masters, None);
        cluster.pki = self.pki(&[])?;
        // Spawn everything first and wait afterwards: startup is mostly waiting.
        for _ in 0..self.masters {
            let spec = self.new_spec()?;
            spec.prepare(true)?;
            if let Some(pki) = &cluster.pki {
                pki.write_server_files(&spec.dir)?;
            }
            let upstream = SocketAddr::from((Ipv4Addr::LOCALHOST, spec.port));
            let mut host = ProcessHost::new(spec);
            let started = host.start();
            let mut node = Node::new(host.into());
            if self.proxy {
                match start_proxy(upstream) {
                    Ok(p) => {
                        node.proxy_port = Some(p.port());
                        node.proxy = Some(p);
                    }
                    Err(e) => {
                        node.host.get_mut().stop();
                        cluster.nodes.push(node);
                        return Err(e);
                    }
                }
            }
            cluster.nodes.push(node);
            started?;
        }
        for (index, node) in cluster.nodes.iter_mut().enumerate() {
            node.host.get_mut().wait_first_start(index)?;
        }
        Ok(cluster)
    }

    fn new_spec(&self) -> Result<Spec> {
        let n = DIR_COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("testcluster-{}-{n}", std::process::id()));
        let faketime = self.faketime.then(|| {
            self.faketime_lib
                .clone()
                .unwrap_or_else(|| dir.join(server::CLOCK_SHIM_NAME))
        });
        Ok(Spec {
            redis_server: self.redis_server.clone(),
            port: ports::reserve()?,
            dir,
            faketime,
            detached: self.detached,
            tls: match self.tls {
                Some(mode) => Some(TlsSpec {
                    port: ports::reserve()?,
                    mode,
                }),
                None => None,
            },
            unix_socket: self.unix_socket,
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
