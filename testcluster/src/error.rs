use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::Backend;

/// Shorthand for `Result<T, testcluster::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while starting masters or injecting a fault.
///
/// A fault a backend cannot inject is reported as [`Error::Unsupported`], never silently
/// skipped: a test that believes it cut a master off while nothing happened would pass for
/// the wrong reason.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The fault cannot be injected with this backend or this configuration.
    #[error("{fault} is not supported by the {backend} backend: {reason}")]
    Unsupported {
        /// The fault that was asked for, e.g. `"cut_off"`.
        fault: &'static str,
        /// The backend the cluster runs on (never [`Backend::Auto`]).
        backend: Backend,
        /// What is missing, e.g. "build the cluster with .proxy(true)".
        reason: &'static str,
    },

    /// A master index past the end of the cluster.
    #[error("no master {index}: the cluster has {len} masters")]
    NoSuchMaster {
        /// The index that was asked for.
        index: usize,
        /// How many masters the cluster has.
        len: usize,
    },

    /// A master did not answer `PING` in time, or exited while starting.
    #[error(
        "master {index} on port {port} did not become ready within {waited:?}: {why}\n--- server log (tail) ---\n{log}"
    )]
    NotReady {
        /// Which master.
        index: usize,
        /// The port it was started on.
        port: u16,
        /// How long the harness waited.
        waited: Duration,
        /// Short reason, e.g. "process exited with status 1".
        why: String,
        /// The tail of the server's log, so the failure can be diagnosed from CI output.
        log: String,
    },

    /// A program (redis-server, docker) could not be started at all.
    #[error("could not run {program}")]
    Spawn {
        /// Program name or path.
        program: String,
        /// Why the spawn failed.
        #[source]
        source: io::Error,
    },

    /// A file-system or socket operation failed.
    #[error("{context}")]
    Io {
        /// What the harness was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// No free loopback port could be found.
    #[error("no free loopback port after {attempts} attempts")]
    NoFreePort {
        /// How many ports were tried.
        attempts: usize,
    },

    /// A `docker` command failed.
    #[error("docker {command} failed: {stderr}")]
    Docker {
        /// The docker sub-command and its main arguments.
        command: String,
        /// What docker printed on stderr.
        stderr: String,
    },

    /// The builder was given an impossible configuration.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// The CLI state file is missing or unreadable.
    #[error("state file {path}: {reason}")]
    State {
        /// Where the state file was looked for.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// The operation needs a running master (e.g. pause) but it is down.
    #[error("master {index} is not running")]
    NotRunning {
        /// Which master.
        index: usize,
    },
}

impl Error {
    /// True for [`Error::Unsupported`]: the fault exists but this backend cannot inject it.
    pub fn is_unsupported(&self) -> bool {
        matches!(self, Error::Unsupported { .. })
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
