//! The guard: a small process (this binary again, as `redquorum __guard`) that kills the
//! command's whole process group when `redquorum` dies without stopping it (SIGKILL, a crash,
//! the OOM killer). The guard leads a new process group and the command joins it, so the guard
//! knows the group from its birth: there is no moment when the command runs and the guard does
//! not know what to kill. It reads its stdin, a pipe from `redquorum`: `done` (the command is
//! stopped) lets it leave; end of file before `done` means `redquorum` is gone, and it kills its
//! group, the command's, itself included. The command's own parent-death signal (child.rs)
//! reaches only the command; the guard reaches what it started in the group as well.

use std::io::{self, BufRead, Write};
use std::process::{Child, ChildStdin, Command, Stdio};

/// The hidden first argument that makes `redquorum` a guard.
pub const ARG: &str = "__guard";

pub struct Guard {
    process: Child,
    stdin: ChildStdin,
}

impl Guard {
    /// Starts a guard, leader of a new process group (so a terminal's signals to `redquorum`'s
    /// group do not reach the command), for the command to join.
    pub fn start() -> io::Result<Guard> {
        use std::os::unix::process::CommandExt;
        // /proc/self/exe runs this very binary even if its file was replaced or deleted since.
        let exe = if cfg!(target_os = "linux") {
            "/proc/self/exe".into()
        } else {
            std::env::current_exe()?
        };
        let mut process = Command::new(exe)
            .arg(ARG)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        let stdin = process.stdin.take().ok_or(io::ErrorKind::BrokenPipe)?;
        Ok(Guard { process, stdin })
    }

    /// The process group the command must join (the guard's pid, as its leader).
    pub fn group(&self) -> libc::pid_t {
        self.process.id() as libc::pid_t
    }

    /// The command is stopped: the guard leaves without killing anything. Not waited for (a
    /// guard stopped by someone must not hang `redquorum`): reaped if it is already gone, else
    /// by init once `redquorum` exits.
    pub fn disarm(mut self) {
        let _ = writeln!(self.stdin, "done");
        drop(self.stdin);
        let _ = self.process.try_wait();
    }
}

/// The guard's whole life: ignore the signals that would end it (the command's group gets the
/// forwarded ones too), wait for `done` or end of file, and kill the group on end of file.
pub fn main() -> u8 {
    for signal in crate::signals::CAUGHT {
        // SAFETY: setting a signal's disposition to "ignore" has no memory-safety preconditions.
        unsafe {
            libc::signal(signal, libc::SIG_IGN);
        }
    }
    let done = io::stdin()
        .lock()
        .lines()
        .any(|line| line.is_ok_and(|l| l.trim() == "done"));
    if !done {
        // SAFETY: kill(2) has no memory-safety preconditions. 0: this process's own group,
        // the command's.
        unsafe {
            libc::kill(0, libc::SIGKILL);
        }
    }
    0
}
