//! The guard: a small process (this binary again, as `redquorum __guard`) that kills the
//! command's whole process group when `redquorum` dies without stopping it (SIGKILL, a crash,
//! the OOM killer). `redquorum` writes the group id on the guard's stdin, then `done` once the
//! command is stopped; end of file before `done` means `redquorum` is gone, so the command must
//! go too. The command's own parent-death signal (child.rs) reaches only the command itself;
//! the guard reaches the processes it started in its group as well.

use std::io::{self, BufRead, Write};
use std::process::{Child, ChildStdin, Command, Stdio};

/// The hidden first argument that makes `redquorum` a guard.
pub const ARG: &str = "__guard";

pub struct Guard {
    process: Child,
    stdin: ChildStdin,
}

impl Guard {
    /// Starts a guard (in a process group of its own, so that a terminal's signals to
    /// `redquorum`'s group do not reach it).
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

    /// Tells the guard which group to kill should `redquorum` die.
    pub fn watch(&mut self, group: libc::pid_t) -> io::Result<()> {
        writeln!(self.stdin, "{group}")?;
        self.stdin.flush()
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

/// The guard's whole life: ignore the signals that would end it, read the group, wait for
/// `done` or end of file, and kill the group on end of file.
pub fn main() -> u8 {
    for signal in crate::signals::CAUGHT {
        // SAFETY: setting a signal's disposition to "ignore" has no memory-safety preconditions.
        unsafe {
            libc::signal(signal, libc::SIG_IGN);
        }
    }
    let mut lines = io::stdin().lock().lines();
    let group: libc::pid_t = match lines.next() {
        Some(Ok(line)) => line.trim().parse().unwrap_or(0),
        // `redquorum` died before the command started, or was stopped before it.
        _ => return 0,
    };
    let done = loop {
        match lines.next() {
            Some(Ok(line)) if line.trim() == "done" => break true,
            Some(Ok(_)) => continue,
            _ => break false,
        }
    };
    if !done && group > 1 {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe {
            libc::kill(-group, libc::SIGKILL);
        }
    }
    0
}
