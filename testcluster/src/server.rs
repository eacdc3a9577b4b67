//! One `redis-server` as both backends run it: its [`Spec`] (port, temp dir, log, clock file),
//! its command line, spawning and readiness; and the process-level helpers (signals, `/proc`
//! state, the clock shim and file) that the process host (`host/process.rs`) and the cluster
//! use. The backends themselves live in `host/`.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::resp;
use crate::tls::{self, TlsSpec};

/// File name of a master's Unix socket inside its dir.
const SOCKET_FILE: &str = "redis.sock";

/// The clock shim built from `csrc/clockshim.c` (see there for why not libfaketime).
const CLOCK_SHIM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/libtcclock.so"));
/// File name of the shim inside a master's dir.
pub(crate) const CLOCK_SHIM_NAME: &str = "clockshim.so";

pub(crate) fn clock_shim_bytes() -> &'static [u8] {
    CLOCK_SHIM
}

/// False when the crate was built without a C compiler: no shim, no `faketime(true)`.
pub(crate) fn clock_shim_available() -> bool {
    !cfg!(tc_no_clock_shim) && !CLOCK_SHIM.is_empty()
}

/// How long a clock change takes to reach a server: the shim re-reads its file at most
/// once a millisecond.
const CLOCK_PROPAGATION: Duration = Duration::from_millis(3);

/// How long a master gets to answer PING after a (re)start. Generous because tests run in
/// parallel on small CI machines, and AOF loading on restart counts too.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(10);
const READY_POLL: Duration = Duration::from_millis(20);

/// Everything needed to (re)start one master; it never changes after the first start,
/// so a restart comes back on the same port with the same data dir.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub redis_server: PathBuf,
    pub port: u16,
    pub dir: PathBuf,
    /// Library to preload so the clock can be jumped: `dir/clockshim.so` (written by
    /// `prepare`) or a libfaketime-compatible library the user chose.
    pub faketime: Option<PathBuf>,
    /// Own session and no parent-death signal, so the server outlives this process (CLI).
    pub detached: bool,
    /// A TLS port next to the plain one (the harness's own probes stay on the plain one);
    /// the certificates are in `dir`.
    pub tls: Option<TlsSpec>,
    /// Also listen on the Unix socket [`socket_path`](Spec::socket_path).
    pub unix_socket: bool,
}

impl Spec {
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("redis.log")
    }
    pub fn stderr_path(&self) -> PathBuf {
        self.dir.join("stderr.log")
    }
    pub fn clock_path(&self) -> PathBuf {
        self.dir.join("faketime.rc")
    }
    pub fn socket_path(&self) -> PathBuf {
        self.dir.join(SOCKET_FILE)
    }

    /// Creates the dir layout; `fresh` wipes a leftover dir from a crashed earlier run.
    pub fn prepare(&self, fresh: bool) -> Result<()> {
        if fresh && self.dir.exists() {
            let _ = fs::remove_dir_all(&self.dir);
        }
        fs::create_dir_all(self.data_dir())
            .map_err(|e| Error::io(format!("creating {}", self.data_dir().display()), e))?;
        if let Some(lib) = &self.faketime {
            if !self.clock_path().exists() {
                write_clock(&self.clock_path(), 0)?;
            }
            if *lib == self.dir.join(CLOCK_SHIM_NAME) && !lib.exists() {
                fs::write(lib, CLOCK_SHIM)
                    .map_err(|e| Error::io(format!("writing {}", lib.display()), e))?;
            }
        }
        Ok(())
    }

    pub fn wipe_data(&self) -> Result<()> {
        let d = self.data_dir();
        if d.exists() {
            fs::remove_dir_all(&d).map_err(|e| Error::io(format!("wiping {}", d.display()), e))?;
        }
        fs::create_dir_all(&d).map_err(|e| Error::io(format!("creating {}", d.display()), e))
    }

    fn command(&self) -> Result<Command> {
        let mut cmd = Command::new(&self.redis_server);
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--protected-mode", "no"])
            .args(["--daemonize", "no", "--save", ""])
            // appendfsync always: DataOnRestart::Keep must survive SIGKILL, not just a clean stop.
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(self.data_dir())
            .arg("--logfile")
            .arg(self.log_path())
            .args(self.listener_args(&self.dir.display().to_string(), None))
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        // Errors before the logfile is opened (bad argument, bad lib) go to stderr.
        let stderr = File::create(self.stderr_path())
            .map_err(|e| Error::io(format!("creating {}", self.stderr_path().display()), e))?;
        cmd.stderr(stderr);
        if let Some(lib) = &self.faketime {
            cmd.env("LD_PRELOAD", lib)
                .env("FAKETIME_TIMESTAMP_FILE", self.clock_path())
                // Both only matter to a real libfaketime; the shim always re-reads and never
                // fakes monotonic clocks. Only the wall clock jumps: keys expire on it, while
                // the server's event loop keeps a sane monotonic clock.
                .env("FAKETIME_NO_CACHE", "1")
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
        if self.detached {
            // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::setsid() < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        } else {
            // SAFETY: prctl is async-signal-safe. A test binary killed by a timeout or an
            // abort would otherwise leave redis-servers running forever.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        Ok(cmd)
    }

    /// The TLS and Unix socket arguments, with this spec's files under `dir` (as the server
    /// sees it) and TLS on `tls_port` (default: the spec's own TLS port).
    pub fn listener_args(&self, dir: &str, tls_port: Option<u16>) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(tls) = &self.tls {
            args.extend(tls::server_args(
                tls_port.unwrap_or(tls.port),
                tls.mode,
                dir,
            ));
        }
        if self.unix_socket {
            args.extend([
                "--unixsocket".into(),
                format!("{dir}/{SOCKET_FILE}"),
                "--unixsocketperm".into(),
                "700".into(),
            ]);
        }
        args
    }

    /// Spawns the server; does not wait for it to be ready.
    pub fn spawn(&self) -> Result<Child> {
        let cmd = self.command()?;
        let program = self.redis_server.display().to_string();
        let child = if self.detached {
            let mut cmd = cmd;
            cmd.spawn()
        } else {
            spawn_from_spawner_thread(cmd)
        };
        child.map_err(|source| Error::Spawn { program, source })
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Tail of the server log plus anything printed on stderr.
    pub fn log_tail(&self) -> String {
        let mut out = tail(&self.log_path(), 16 * 1024);
        let err = tail(&self.stderr_path(), 4 * 1024);
        if !err.trim().is_empty() {
            out.push_str("\n--- stderr ---\n");
            out.push_str(&err);
        }
        out
    }
}

/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the process.
/// Tests create clusters from short-lived threads (each `#[test]`, tokio blocking threads,
/// a `OnceLock` initialised by whichever test came first), so every child is forked from one
/// thread that lives as long as the process.
fn spawn_from_spawner_thread(cmd: Command) -> std::io::Result<Child> {
    type Job = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        thread::Builder::new()
            .name("testcluster-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawning the testcluster spawner thread");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    tx.lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, reply_tx))
        .map_err(|_| std::io::Error::other("spawner thread is gone"))?;
    reply_rx
        .recv_timeout(Duration::from_secs(30))
        .map_err(|_| std::io::Error::other("spawner thread did not answer"))?
}

/// Why a start did not produce a ready server.
#[derive(Debug)]
pub(crate) enum NotReady {
    /// The process exited; `addr_in_use` tells a bind race from a real failure.
    Exited {
        status: String,
        addr_in_use: bool,
    },
    TimedOut,
}

impl NotReady {
    pub fn describe(&self) -> String {
        match self {
            NotReady::Exited { status, .. } => format!("process exited ({status})"),
            NotReady::TimedOut => "no PONG".into(),
        }
    }
}

/// Polls PING until PONG; stops early when the process exits (bad config, port taken).
pub(crate) fn wait_ready(
    spec: &Spec,
    exited: impl FnMut() -> Option<String>,
) -> std::result::Result<(), NotReady> {
    wait_ready_at(&spec.url(), spec, 1, exited)
}

/// As [`wait_ready`] on any URL; `exited` is only asked every `check_every` polls because
/// for containers it costs a `docker inspect`.
pub(crate) fn wait_ready_at(
    url: &str,
    spec: &Spec,
    check_every: usize,
    mut exited: impl FnMut() -> Option<String>,
) -> std::result::Result<(), NotReady> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let max_polls = (READY_TIMEOUT.as_millis() / READY_POLL.as_millis()) as usize + 1;
    for poll in 0..max_polls {
        if poll % check_every.max(1) == check_every.max(1) - 1
            && let Some(status) = exited()
        {
            let log = spec.log_tail();
            return Err(NotReady::Exited {
                status,
                addr_in_use: log.contains("Address already in use"),
            });
        }
        if resp::ping(url, Duration::from_millis(200)) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            break;
        }
        thread::sleep(READY_POLL);
    }
    Err(NotReady::TimedOut)
}

pub(crate) fn signal(pid: u32, sig: libc::c_int) -> std::io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(std::io::Error::other)?;
    // SAFETY: plain syscall; pid > 0 so it never targets a process group.
    if pid <= 0 || unsafe { libc::kill(pid, sig) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Process state letter from /proc (R, S, T, Z, ...), `None` when the pid is gone.
pub(crate) fn proc_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may contain spaces and parentheses; the state follows the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    after.trim_start().chars().next()
}

/// True when `pid` is a live (possibly stopped) redis-server; guards against pid reuse
/// for masters this process did not spawn (the CLI).
pub(crate) fn pid_is_redis(pid: u32) -> bool {
    match proc_state(pid) {
        None | Some('Z') | Some('X') => false,
        Some(_) => fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains("redis-server"))
            .unwrap_or(false),
    }
}

/// Waits (bounded) for a process we did not spawn to disappear after SIGKILL.
pub(crate) fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    for _ in 0..(timeout.as_millis() / 10 + 1) {
        if !pid_is_redis(pid) {
            return true;
        }
        if Instant::now() >= deadline {
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    !pid_is_redis(pid)
}

pub(crate) fn write_clock(path: &Path, offset_secs: i64) -> Result<()> {
    // Write-then-rename so a server reading with FAKETIME_NO_CACHE never sees a torn file.
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, format!("{offset_secs:+}s\n"))
        .and_then(|()| fs::rename(&tmp, path))
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    thread::sleep(CLOCK_PROPAGATION);
    Ok(())
}

pub(crate) fn read_clock(path: &Path) -> i64 {
    fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().trim_end_matches('s').parse().ok())
        .unwrap_or(0)
}

fn tail(path: &Path, max: u64) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if len > max {
        let _ = f.seek(SeekFrom::Start(len - max));
    }
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_file_round_trips() {
        let dir = std::env::temp_dir().join(format!("testcluster-unit-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("faketime.rc");
        write_clock(&p, 120).unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "+120s\n");
        assert_eq!(read_clock(&p), 120);
        write_clock(&p, -5).unwrap();
        assert_eq!(read_clock(&p), -5);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn own_process_state_is_readable() {
        let s = proc_state(std::process::id()).unwrap();
        assert!(matches!(s, 'R' | 'S'), "{s}");
        assert!(!pid_is_redis(std::process::id()));
    }
}
