//! What the wire is set up with: plain data that the builders fill in and the masters read
//! (the per-master settings, how a master is reached, the fencing keys' names). It sits beneath
//! both the builders (`config.rs`, `cache/builder.rs`) and the wire (`master.rs`,
//! `endpoint.rs`), so neither has to import the other.

use std::fmt;
use std::time::Duration;

/// How every master of a client is set up.
pub(crate) struct Settings {
    /// Bound on each call.
    pub(crate) timeout: Duration,
    /// Bound on opening a connection.
    pub(crate) connect_timeout: Duration,
    /// The delayed-restart window, if any.
    pub(crate) quarantine: Option<Duration>,
    /// The fencing keys read at every connect, when fencing is on.
    pub(crate) fence: Option<FenceKeys>,
    /// Credentials and TLS options (endpoint.rs).
    pub(crate) access: Access,
    /// The key the permission probe reads at connect (endpoint.rs); `None`: no probe.
    pub(crate) probe_key: Option<String>,
    /// Group commit of script calls (batch.rs); off: one `EVALSHA` per call.
    pub(crate) batching: bool,
    /// A simulated network instead of redis-rs (`sim` feature).
    #[cfg(feature = "sim")]
    pub(crate) network: Option<std::sync::Arc<dyn crate::sim::Network>>,
}

/// The fencing hash of a namespace: counter and generation in one key (see fencing.rs).
#[derive(Clone, Debug)]
pub(crate) struct FenceKeys {
    pub(crate) counter: String,
}

/// A username and password the builder applies to every master whose URL carries none.
#[derive(Clone)]
pub(crate) struct Credentials {
    pub(crate) username: Option<String>,
    pub(crate) password: String,
}

impl fmt::Debug for Credentials {
    // Hand-written: the password never reaches a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// What every master of one client is reached with, besides its URL.
#[derive(Clone, Debug, Default)]
pub(crate) struct Access {
    pub(crate) credentials: Option<Credentials>,
    #[cfg(feature = "tls")]
    pub(crate) tls: crate::tls::TlsOptions,
}

impl Access {
    pub(crate) fn set_credentials(&mut self, username: Option<String>, password: String) {
        self.credentials = Some(Credentials { username, password });
    }
}

/// The resource whose lock key the permission probe reads.
pub(crate) const PROBE_RESOURCE: &str = "redquorum-permission-probe";
