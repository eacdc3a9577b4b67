//! The signals `redquorum` passes on to the command: SIGINT and SIGTERM (what a terminal, a
//! service manager or `kill` send to stop it).

use tokio::signal::unix::{Signal, SignalKind, signal};

pub struct Forwarded {
    interrupt: Signal,
    terminate: Signal,
}

impl Forwarded {
    /// Starts catching SIGINT and SIGTERM (from here on they no longer kill `redquorum`).
    pub fn catch() -> std::io::Result<Forwarded> {
        Ok(Forwarded {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// The next signal caught.
    pub async fn next(&mut self) -> libc::c_int {
        tokio::select! {
            _ = self.interrupt.recv() => libc::SIGINT,
            _ = self.terminate.recv() => libc::SIGTERM,
        }
    }
}
