//! The signals `redquorum` catches once a lock or a leadership may be held: every signal whose
//! default action would end it (SIGKILL and SIGSTOP aside, which cannot be caught). Ending
//! `redquorum` without stopping the command first would leave the command running after the
//! lock is gone (its keys expire, or the next holder takes over), so none of them is left to its
//! default action.
//!
//! - Signals a user or a terminal sends to stop or poke a program (HUP, INT, TERM, QUIT, USR1,
//!   USR2) are *forwarded* to the command's process group: the command decides (a daemon may
//!   reload on HUP or USR1), and `redquorum` exits with the command's status once it exits.
//! - Signals meant for `redquorum` itself (PIPE: its output is gone; ALRM: a timer armed on
//!   it) *stop* the command on the kill schedule (TERM, then KILL after the grace), then the
//!   lock is given back and `redquorum` exits with 128 + the signal.
//! - Job-control stops (TSTP: a terminal's ^Z; TTIN, TTOU: a background read or write) are
//!   caught and dropped: their default action stops `redquorum` but not the command, which
//!   runs in a process group of its own, so the lock would expire while the command runs on.
//!   They are caught (not ignored), so the command starts with their default actions.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Every signal caught, in the order `next` polls them.
pub const CAUGHT: [libc::c_int; 8] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGPIPE,
    libc::SIGALRM,
];

/// Job-control stops, caught so that they cannot stop `redquorum`, and then dropped.
pub const DROPPED: [libc::c_int; 3] = [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU];

/// What to do with a signal caught while the command runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Pass it on to the command.
    Forward,
    /// Stop the command on the kill schedule, then exit with 128 + the signal.
    Stop,
}

pub fn action(signal: libc::c_int) -> Action {
    match signal {
        libc::SIGPIPE | libc::SIGALRM => Action::Stop,
        _ => Action::Forward,
    }
}

pub struct Caught {
    streams: Vec<(libc::c_int, Signal)>,
    /// Kept (never polled) so that tokio's handler stays installed for [`DROPPED`].
    _dropped: Vec<Signal>,
}

impl Caught {
    /// Starts catching every signal of [`CAUGHT`]: from here on none of them ends `redquorum`
    /// (tokio never restores a default action once it caught a signal).
    pub fn catch() -> std::io::Result<Caught> {
        let streams = CAUGHT
            .iter()
            .map(|&s| Ok((s, signal(SignalKind::from_raw(s))?)))
            .collect::<std::io::Result<_>>()?;
        let dropped = DROPPED
            .iter()
            .map(|&s| signal(SignalKind::from_raw(s)))
            .collect::<std::io::Result<_>>()?;
        Ok(Caught {
            streams,
            _dropped: dropped,
        })
    }

    /// The next signal caught.
    pub async fn next(&mut self) -> libc::c_int {
        std::future::poll_fn(|cx| {
            for (number, stream) in &mut self.streams {
                // `None` (a closed stream) cannot happen while the runtime lives; not a signal.
                if let std::task::Poll::Ready(Some(())) = stream.poll_recv(cx) {
                    return std::task::Poll::Ready(*number);
                }
            }
            std::task::Poll::Pending
        })
        .await
    }
}
