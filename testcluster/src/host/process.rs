//! [`ProcessHost`]: a master as a local `redis-server` child process.

use std::process::Child;
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use super::{BIND_RETRIES, BIND_RETRY_PAUSE, Container, FIRST_START_ATTEMPTS, Host, not_ready};
use crate::cluster::{Cut, DataOnRestart, Status};
use crate::error::{Error, Result};
use crate::ports;
use crate::server::{self, NotReady, Spec};

/// A master's mutable run state.
#[derive(Debug, Default)]
struct Run {
    /// Present for servers this process spawned; waiting on it reaps the zombie.
    child: Option<Child>,
    /// Also set for servers re-attached from a state file (CLI), where there is no `Child`.
    pid: Option<u32>,
}

impl Run {
    fn alive(&mut self) -> bool {
        if let Some(child) = &mut self.child {
            match child.try_wait() {
                Ok(None) => return true,
                _ => {
                    self.child = None;
                    self.pid = None;
                    return false;
                }
            }
        }
        match self.pid {
            Some(pid) if server::pid_is_redis(pid) => true,
            _ => {
                self.pid = None;
                false
            }
        }
    }

    fn exited(&mut self) -> Option<String> {
        match &mut self.child {
            Some(child) => match child.try_wait() {
                Ok(Some(status)) => Some(status.to_string()),
                Ok(None) => None,
                Err(e) => Some(e.to_string()),
            },
            None => match self.pid {
                Some(pid) if server::pid_is_redis(pid) => None,
                _ => Some("process is gone".into()),
            },
        }
    }

    /// SIGKILL and reap; bounded even for servers we did not spawn.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        } else if let Some(pid) = self.pid
            && server::pid_is_redis(pid)
        {
            let _ = server::signal(pid, libc::SIGKILL);
            server::wait_gone(pid, Duration::from_secs(5));
        }
        self.pid = None;
    }

    fn set_child(&mut self, child: Child) {
        self.pid = Some(child.id());
        self.child = Some(child);
    }
}

/// One `redis-server` child on a loopback port, signalled directly.
#[derive(Debug)]
pub(crate) struct ProcessHost {
    spec: Spec,
    run: Mutex<Run>,
}

impl ProcessHost {
    /// A host for a server not started yet (see [`start`](ProcessHost::start)).
    pub fn new(spec: Spec) -> ProcessHost {
        ProcessHost {
            spec,
            run: Mutex::new(Run::default()),
        }
    }

    /// A host for a server started by another process (a state file), known by its pid.
    pub fn attached(spec: Spec, pid: Option<u32>) -> ProcessHost {
        let host = ProcessHost::new(spec);
        host.run().pid = pid;
        host
    }

    /// Spawns the server; does not wait for it to be ready (see
    /// [`Host::wait_first_start`]).
    pub fn start(&mut self) -> Result<()> {
        let child = self.spec.spawn()?;
        self.run().set_child(child);
        Ok(())
    }

    fn run(&self) -> MutexGuard<'_, Run> {
        // A panicking test thread must not wedge the harness for the others.
        self.run.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn signal_and_wait(&self, index: usize, sig: libc::c_int, stopped: bool) -> Result<()> {
        let mut run = self.run();
        let pid = match (run.alive(), run.pid) {
            (true, Some(pid)) => pid,
            _ => return Err(Error::NotRunning { index }),
        };
        server::signal(pid, sig).map_err(|e| Error::io(format!("signalling pid {pid}"), e))?;
        // Signals are asynchronous; a test that pauses and immediately measures must not
        // race the scheduler. 200 x 5 ms bounds the wait.
        for _ in 0..200 {
            let is_stopped = matches!(server::proc_state(pid), Some('T') | Some('t'));
            if is_stopped == stopped {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(5));
        }
        Err(Error::io(
            format!("pid {pid} did not change state after signal {sig}"),
            std::io::Error::from(std::io::ErrorKind::TimedOut),
        ))
    }
}

impl Host for ProcessHost {
    fn spec(&self) -> &Spec {
        &self.spec
    }

    fn direct_url(&self) -> String {
        self.spec.url()
    }

    fn container(&self) -> Option<&Container> {
        None
    }

    fn pid(&self) -> Option<u32> {
        let mut run = self.run();
        if run.alive() { run.pid } else { None }
    }

    fn recorded_pid(&self) -> Option<u32> {
        self.pid()
    }

    fn status(&self) -> Status {
        let mut run = self.run();
        if !run.alive() {
            return Status::Down;
        }
        match run.pid.and_then(server::proc_state) {
            Some('T') | Some('t') => Status::Paused,
            _ => Status::Running,
        }
    }

    fn is_running(&self) -> bool {
        self.run().alive()
    }

    fn pause(&self, index: usize) -> Result<()> {
        self.signal_and_wait(index, libc::SIGSTOP, true)
    }

    fn resume(&self, index: usize) -> Result<()> {
        self.signal_and_wait(index, libc::SIGCONT, false)
    }

    fn kill(&self) -> Result<()> {
        self.run().kill();
        Ok(())
    }

    fn restart(&self, index: usize, data: DataOnRestart) -> Result<()> {
        let mut run = self.run();
        run.kill();
        self.spec.prepare(false)?;
        if data == DataOnRestart::Lose {
            self.spec.wipe_data()?;
        }
        let mut last = NotReady::TimedOut;
        for _ in 0..BIND_RETRIES {
            run.set_child(self.spec.spawn()?);
            match server::wait_ready(&self.spec, || run.exited()) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    run.kill();
                    let retry = matches!(
                        e,
                        NotReady::Exited {
                            addr_in_use: true,
                            ..
                        }
                    );
                    last = e;
                    if !retry {
                        break;
                    }
                    thread::sleep(BIND_RETRY_PAUSE);
                }
            }
        }
        Err(not_ready(index, &self.spec, &last))
    }

    /// On a bind race moves the server to a fresh port: nobody knows its URL yet.
    fn wait_first_start(&mut self, index: usize) -> Result<()> {
        for _ in 0..FIRST_START_ATTEMPTS {
            let res = {
                let mut run = self.run();
                server::wait_ready(&self.spec, || run.exited())
            };
            match res {
                Ok(()) => return Ok(()),
                Err(NotReady::Exited {
                    addr_in_use: true, ..
                }) => {
                    self.run().kill();
                    ports::release(self.spec.port);
                    self.spec.port = ports::reserve()?;
                    let child = self.spec.spawn()?;
                    self.run().set_child(child);
                }
                Err(e) => return Err(not_ready(index, &self.spec, &e)),
            }
        }
        Err(not_ready(index, &self.spec, &NotReady::TimedOut))
    }

    fn cut_off(&self, _how: Cut) -> Option<Result<()>> {
        None
    }

    fn heal(&self) -> Option<Result<()>> {
        None
    }

    fn outlives_us(&self) -> bool {
        self.spec.detached
    }

    fn forget(&mut self) {
        // The Child handle is dropped without waiting: the server is reparented to init
        // when we exit, which reaps it.
        self.run().child = None;
    }

    fn stop(&mut self) {
        self.run().kill();
    }
}
