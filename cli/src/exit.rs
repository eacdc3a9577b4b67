//! The exit codes of `redquorum`, following `flock(1)` and `timeout(1)` where they have one.
//! The command's own status is passed through otherwise, so these values are reserved.

use std::process::ExitStatus;

/// The lock was busy: `--try` found it held, or `--wait` ran out (sysexits' `EX_TEMPFAIL`:
/// try again later).
pub const BUSY: u8 = 75;
/// The lock was lost or could not be renewed in time, and the command was terminated before
/// its validity ran out (as `timeout(1)` reports a command it had to stop).
pub const LOST: u8 = 124;
/// `redquorum` itself failed: bad arguments, masters unreachable (as `timeout(1)` and
/// `env(1)`).
pub const FAILED: u8 = 125;
/// The command was found but could not be run (as the shell and `env(1)`).
pub const CANNOT_RUN: u8 = 126;
/// The command was not found (as the shell and `env(1)`).
pub const NOT_FOUND: u8 = 127;

/// The exit code that reports a child's status the way a shell does: its exit code, or
/// 128 + the signal that killed it.
pub fn of_child(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(signal)) => 128u8.saturating_add(signal as u8),
        (None, None) => FAILED,
    }
}

/// The exit codes of `lock`, for its --help.
pub const LOCK_HELP: &str = "Exit status: the command's own (128+N if signal N killed it); \
75 busy: --try found the lock held or --wait ran out (or --conflict-exit-code); 124 the lock \
was lost or could not be extended, and the command was stopped before its validity ended; 125 \
redquorum failed (configuration, masters unreachable); 126 the command could not be run; 127 \
not found; 128+N signal N (PIPE, ALRM) stopped the command, or any caught signal interrupted \
the wait. HUP, INT, TERM, QUIT, USR1 and USR2 are forwarded to the command. Without a \
command: 0 once a signal ended the hold, 124 lost.";

/// The exit codes of `elect`, for its --help.
pub const ELECT_HELP: &str = "Exit status: the command's own (128+N if signal N killed it); \
75 another candidate led: --try, or --wait ran out (or --conflict-exit-code); 124 the \
leadership was lost or could not be extended, and the command was stopped before its \
validity ended; 125 redquorum failed (configuration, masters unreachable); 126 the command \
could not be run; 127 not found; 128+N signal N (PIPE, ALRM) stopped the command, or any \
caught signal interrupted the campaign. HUP, INT, TERM, QUIT, USR1 and USR2 are forwarded to \
the command. --listen: 0 once a signal ended it, 125 on failure.";
