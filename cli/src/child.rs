//! The command run under a lock: started in a process group of its own, so that signals reach
//! everything it started (a shell's children included), and terminated TERM-then-KILL.

use std::ffi::OsString;
use std::io;
use std::process::ExitStatus;

use tokio::process::{Child, Command};

use crate::exit;

pub struct Job {
    child: Child,
    /// Its process group id (= its pid, as group leader).
    group: libc::pid_t,
}

impl Job {
    /// Starts `command` with `env` added to its environment.
    pub fn start(command: &[OsString], env: &[(&str, String)]) -> Result<Job, (u8, String)> {
        let (program, args) = command
            .split_first()
            .ok_or((exit::FAILED, "no command given".to_owned()))?;
        let mut cmd = Command::new(program);
        cmd.args(args).envs(env.iter().map(|(k, v)| (k, v)));
        // Its own group: TERM and KILL must reach the command's own children too, or a
        // shell's child could keep writing after the lock is gone.
        cmd.process_group(0);
        let child = cmd.spawn().map_err(|e| {
            let code = match e.kind() {
                io::ErrorKind::NotFound => exit::NOT_FOUND,
                _ => exit::CANNOT_RUN,
            };
            (code, format!("cannot run {program:?}: {e}"))
        })?;
        let group = child.id().map_or(0, |pid| pid as libc::pid_t);
        Ok(Job { child, group })
    }

    /// Sends `signal` to the command's whole process group. A group that is gone is fine.
    pub fn signal(&self, signal: libc::c_int) {
        if self.group > 0 {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe {
                libc::kill(-self.group, signal);
            }
        }
    }

    /// Waits for the command to exit.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        self.child.wait().await
    }
}
