//! The step from a [`Builder`] to a connected [`Redlock`]: the builder is plain data
//! (config.rs, beneath the wire); connecting it is the core's (lock.rs).

use crate::config::Builder;
#[cfg(doc)]
use crate::error::Error;
use crate::error::Result;
use crate::lock::Redlock;

impl Builder {
    /// Validates the settings, connects to every master concurrently, checks that no two URLs
    /// are the same server, and returns the client.
    ///
    /// A master that is down does not fail the build as long as a quorum is reachable; the
    /// client keeps trying to connect to it in the background.
    ///
    /// # Errors
    /// [`Error::NoMasters`], [`Error::InvalidUrl`], [`Error::InvalidConfig`],
    /// [`Error::DuplicateMaster`], or [`Error::QuorumUnreachable`] when fewer than a quorum of
    /// masters answer within the connect timeout; [`Error::Tls`] or [`Error::Denied`] when a
    /// master's certificate does not verify or it denies the credentials or a permission the
    /// client needs, whatever the others answered; [`Error::EvictingMaster`] with
    /// [`refuse_evicting_masters`](Self::refuse_evicting_masters).
    ///
    /// Once connected, it reads every master's settings ([`Redlock::masters_report`]) and
    /// logs a `tracing` warning for an evicting `maxmemory-policy`, and for a master without
    /// an append-only file while the restart quarantine is off.
    pub async fn build(self) -> Result<Redlock> {
        self.validate()?;
        Redlock::connect(self).await
    }
}
