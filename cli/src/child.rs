//! The command run under a lock: started in a process group apart from `redquorum`'s (the
//! guard's), so that signals reach everything it started (a shell's children included), and
//! terminated TERM-then-KILL.
//!
//! Should `redquorum` die without stopping it (SIGKILL, a crash), two things end the command:
//! its parent-death signal (SIGKILL, set in the child before exec) and the guard (guard.rs),
//! which kills its whole process group. What can still escape: a process that leaves the
//! group (`setsid`, `setpgid`, a daemon that double-forks into a new session), and anything
//! started elsewhere on the command's behalf (a systemd unit, a job in a queue, a remote
//! shell). See the guide's `docs/cli.md`.

use std::ffi::OsString;
use std::io;
use std::process::ExitStatus;

use tokio::process::{Child, Command};

use crate::exit;
use crate::guard::Guard;

pub struct Job {
    child: Child,
    /// Its process group id (the guard's pid, the group's leader).
    group: libc::pid_t,
    guard: Guard,
}

impl Job {
    /// Starts `command` with `env` added to its environment.
    ///
    /// Must run on the main thread: Linux sends the parent-death signal when the *thread* that
    /// forked the child exits, and only the main thread lives exactly as long as `redquorum`
    /// (the CLI runs a current-thread runtime on it, and spawning is synchronous).
    pub fn start(command: &[OsString], env: &[(&str, String)]) -> Result<Job, (u8, String)> {
        let (program, args) = command
            .split_first()
            .ok_or((exit::FAILED, "no command given".to_owned()))?;
        if !on_main_thread() {
            return Err((
                exit::FAILED,
                "internal error: the command must be started from the main thread".to_owned(),
            ));
        }
        let guard =
            Guard::start().map_err(|e| (exit::FAILED, format!("cannot start the guard: {e}")))?;
        let group = guard.group();
        let mut cmd = Command::new(program);
        cmd.args(args).envs(env.iter().map(|(k, v)| (k, v)));
        // The guard's group, not ours: TERM and KILL must reach the command's own children
        // too, or a shell's child could keep writing after the lock is gone; and the guard
        // knows this group before the command exists. (A guard gone already: EPERM, not run.)
        cmd.process_group(group);
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: the closure runs between fork and exec and calls only async-signal-safe
        // functions (prctl, getppid, raise), allocating nothing.
        unsafe {
            cmd.pre_exec(move || {
                set_parent_death_signal()?;
                // `redquorum` died before the prctl: the signal will never come.
                if libc::getppid() != parent {
                    libc::raise(libc::SIGKILL);
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| {
            let code = match e.kind() {
                io::ErrorKind::NotFound => exit::NOT_FOUND,
                _ => exit::CANNOT_RUN,
            };
            (code, format!("cannot run {program:?}: {e}"))
        })?;
        Ok(Job {
            child,
            group,
            guard,
        })
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

    /// Once the command exited: kills whatever it left running in its group (nothing may run
    /// on after the lock is given back), then disarms the guard.
    pub fn finish(self) {
        let Job { group, guard, .. } = self;
        guard.disarm();
        if group > 0 {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe {
                libc::kill(-group, libc::SIGKILL);
            }
        }
    }
}

#[cfg(target_os = "linux")]
fn set_parent_death_signal() -> io::Result<()> {
    // SAFETY: prctl(2) with PR_SET_PDEATHSIG takes a signal number and nothing else.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn set_parent_death_signal() -> io::Result<()> {
    // No parent-death signal here: the guard alone ends the command's group.
    Ok(())
}

#[cfg(target_os = "linux")]
fn on_main_thread() -> bool {
    // SAFETY: gettid(2) and getpid(2) have no preconditions.
    unsafe { libc::gettid() == libc::getpid() }
}

#[cfg(not(target_os = "linux"))]
fn on_main_thread() -> bool {
    true
}
