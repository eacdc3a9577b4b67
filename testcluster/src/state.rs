//! A cluster described as text, so the CLI can find what an earlier `up` started.
//!
//! The format is line-based, one master per line, tab-separated `key=value` fields, so it
//! needs no serde and a human can read it when something is left behind.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::cluster::Backend;
use crate::error::{Error, Result};

const HEADER: &str = "testcluster-state v1";

/// Enough about a running cluster to re-attach to it (see [`crate::Cluster::attach`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub(crate) backend: Backend,
    pub(crate) masters: Vec<MasterRecord>,
    pub(crate) proxy_pid: Option<u32>,
    /// Docker only: the cluster's network and whether clients use container IPs.
    pub(crate) network: Option<String>,
    pub(crate) via_ip: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MasterRecord {
    pub port: u16,
    pub pid: Option<u32>,
    pub dir: PathBuf,
    pub redis_server: PathBuf,
    pub faketime: Option<PathBuf>,
    pub proxy_port: Option<u16>,
    pub container: Option<String>,
    pub ip: Option<String>,
}

impl State {
    /// The backend the masters run on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The pid of the process serving the masters' proxies (the CLI's helper), if any.
    pub fn proxy_pid(&self) -> Option<u32> {
        self.proxy_pid
    }

    /// Records the pid of the process serving the proxies.
    pub fn set_proxy_pid(&mut self, pid: Option<u32>) {
        self.proxy_pid = pid;
    }

    /// Number of masters.
    pub fn len(&self) -> usize {
        self.masters.len()
    }

    /// True when no master is recorded.
    pub fn is_empty(&self) -> bool {
        self.masters.is_empty()
    }

    /// Reads a state file.
    ///
    /// # Errors
    /// [`Error::State`] when it is missing or malformed.
    pub fn load(path: &Path) -> Result<State> {
        let text = fs::read_to_string(path).map_err(|e| Error::State {
            path: path.into(),
            reason: e.to_string(),
        })?;
        text.parse().map_err(|e: Error| Error::State {
            path: path.into(),
            reason: e.to_string(),
        })
    }

    /// Writes a state file atomically (write to a temp file, rename), creating its dir.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        }
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, self.to_string())
            .and_then(|()| fs::rename(&tmp, path))
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))
    }
}

fn opt<T: fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map(ToString::to_string).unwrap_or_default()
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{HEADER}")?;
        writeln!(f, "backend={}", self.backend)?;
        writeln!(f, "proxy_pid={}", opt(&self.proxy_pid))?;
        if let Some(n) = &self.network {
            writeln!(f, "network={n}")?;
            writeln!(f, "via_ip={}", self.via_ip)?;
        }
        for m in &self.masters {
            writeln!(
                f,
                "master\tport={}\tpid={}\tproxy_port={}\tdir={}\tredis_server={}\tfaketime={}\tcontainer={}\tip={}",
                m.port,
                opt(&m.pid),
                opt(&m.proxy_port),
                m.dir.display(),
                m.redis_server.display(),
                opt(&m.faketime.as_ref().map(|p| p.display().to_string())),
                opt(&m.container),
                opt(&m.ip),
            )?;
        }
        Ok(())
    }
}

impl FromStr for State {
    type Err = Error;

    fn from_str(s: &str) -> Result<State> {
        let bad = |why: String| Error::Config(why);
        let mut lines = s.lines();
        if lines.next() != Some(HEADER) {
            return Err(bad(format!("first line is not {HEADER:?}")));
        }
        let backend = lines
            .next()
            .and_then(|l| l.strip_prefix("backend="))
            .ok_or_else(|| bad("missing backend= line".into()))?
            .parse()?;
        let mut masters = Vec::new();
        let mut proxy_pid = None;
        let mut network = None;
        let mut via_ip = false;
        for line in lines.filter(|l| !l.trim().is_empty()) {
            if let Some(v) = line.strip_prefix("network=") {
                network = Some(v.to_string());
                continue;
            }
            if let Some(v) = line.strip_prefix("via_ip=") {
                via_ip = v == "true";
                continue;
            }
            if let Some(v) = line.strip_prefix("proxy_pid=") {
                proxy_pid = (!v.is_empty())
                    .then(|| v.parse().map_err(|_| bad(format!("bad proxy_pid={v}"))))
                    .transpose()?;
                continue;
            }
            let mut fields = line.split('\t');
            if fields.next() != Some("master") {
                return Err(bad(format!("unexpected line {line:?}")));
            }
            let get = |key: &str| -> Option<&str> {
                line.split('\t')
                    .skip(1)
                    .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
                    .filter(|v| !v.is_empty())
            };
            let num = |key: &str| -> Result<Option<u32>> {
                get(key)
                    .map(|v| v.parse().map_err(|_| bad(format!("bad {key}={v}"))))
                    .transpose()
            };
            let port = num("port")?.ok_or_else(|| bad(format!("no port in {line:?}")))?;
            let to_port = |p: u32| u16::try_from(p).map_err(|_| bad(format!("bad port {p}")));
            masters.push(MasterRecord {
                port: to_port(port)?,
                pid: num("pid")?,
                proxy_port: num("proxy_port")?.map(to_port).transpose()?,
                dir: get("dir")
                    .map(PathBuf::from)
                    .ok_or_else(|| bad(format!("no dir in {line:?}")))?,
                redis_server: get("redis_server").unwrap_or("redis-server").into(),
                faketime: get("faketime").map(PathBuf::from),
                container: get("container").map(String::from),
                ip: get("ip").map(String::from),
            });
        }
        Ok(State {
            backend,
            masters,
            proxy_pid,
            network,
            via_ip,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_text() {
        let s = State {
            backend: Backend::Process,
            masters: vec![
                MasterRecord {
                    port: 21000,
                    pid: Some(42),
                    dir: "/tmp/testcluster-1-0".into(),
                    redis_server: "/usr/bin/redis-server".into(),
                    faketime: Some("/lib/faketime.so".into()),
                    proxy_port: Some(21001),
                    container: Some("testcluster-1-0-0".into()),
                    ip: Some("10.100.3.10".into()),
                },
                MasterRecord {
                    port: 21002,
                    pid: None,
                    dir: "/tmp/with space".into(),
                    redis_server: "redis-server".into(),
                    faketime: None,
                    proxy_port: None,
                    container: None,
                    ip: None,
                },
            ],
            proxy_pid: Some(7),
            network: Some("testcluster-1-0".into()),
            via_ip: true,
        };
        let text = s.to_string();
        assert_eq!(text.parse::<State>().unwrap(), s);
        assert!("garbage".parse::<State>().is_err());
    }
}
