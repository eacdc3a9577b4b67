//! `testcluster`: start and hurt Redis masters from a shell.
//!
//! `up` starts the masters in the background (in their own session, so they outlive this
//! command), records them in `.testcluster/state` (or `$TESTCLUSTER_STATE`) and prints one
//! URL per line. Every other command reads that file.
//!
//! With `up --proxy`, a detached helper process (`testcluster serve-proxies`, started by
//! `up`) runs one fault proxy per master, and the printed URLs point at the proxies.
//! `cut`, `heal`, `latency` and `drop-replies` write a small control file per master that
//! the helper polls; each command returns once the helper has applied it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use testcluster::{Backend, Cluster, Cut, DataOnRestart, FaultProxy, Faults, State, resp};

/// How long the proxy helper keeps serving if nobody runs `down`: a forgotten helper must
/// not live forever.
const DEFAULT_PROXY_LIFETIME: Duration = Duration::from_secs(24 * 3600);
const PROXY_POLL: Duration = Duration::from_millis(20);
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Parser)]
#[command(
    name = "testcluster",
    version,
    about = "Real Redis masters with fault injection"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start masters in the background and print one URL per line.
    Up {
        /// Number of masters.
        #[arg(long, default_value_t = testcluster::DEFAULT_MASTERS)]
        masters: usize,
        /// process, docker or auto.
        #[arg(long, default_value = "process")]
        backend: Backend,
        /// Put a fault proxy (served by a background helper) in front of each master.
        #[arg(long)]
        proxy: bool,
        /// Preload the clock shim so `clock` works.
        #[arg(long)]
        faketime: bool,
        /// redis-server binary (default: from PATH).
        #[arg(long)]
        redis_server: Option<PathBuf>,
    },
    /// Stop every master (and the proxy helper) in the state file and remove it.
    Down,
    /// One line per master: index, url, backend, pid or container, running/paused/down,
    /// proxy faults.
    Status,
    /// Freeze master N (SIGSTOP).
    Pause { n: usize },
    /// Unfreeze master N (SIGCONT).
    Resume { n: usize },
    /// Kill master N (SIGKILL); `restart` brings it back on the same URL.
    Kill { n: usize },
    /// Restart master N on the same URL, with its data unless --lose-data.
    Restart {
        n: usize,
        /// Wipe its data dir first.
        #[arg(long)]
        lose_data: bool,
    },
    /// Jump master N's wall clock, e.g. `clock 2 +30s` or `clock 2 -5m` (needs `up --faketime`).
    /// Jumps add up; prints the total offset.
    Clock {
        n: usize,
        #[arg(allow_hyphen_values = true)]
        offset: String,
    },
    /// Cut master N off behind its proxy: black hole (default) or --reset (needs `up --proxy`).
    Cut {
        n: usize,
        /// Reset connections instead of swallowing bytes.
        #[arg(long)]
        reset: bool,
    },
    /// Remove every proxy fault from master N (needs `up --proxy`).
    Heal { n: usize },
    /// Delay each chunk to and from master N, e.g. `latency 1 100ms` (needs `up --proxy`).
    Latency { n: usize, delay: String },
    /// Swallow master N's replies (`on`) or stop doing so (`off`) (needs `up --proxy`).
    DropReplies { n: usize, on_off: String },
    /// Internal: serve the proxies recorded in the state file (started by `up --proxy`).
    #[command(hide = true)]
    ServeProxies,
}

fn state_path() -> PathBuf {
    std::env::var_os("TESTCLUSTER_STATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".testcluster/state"))
}

/// Control file for master `i`'s proxy faults, and the helper's acknowledgement of it.
fn control_paths(state: &Path, i: usize) -> (PathBuf, PathBuf) {
    let name = state
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("state");
    (
        state.with_file_name(format!("{name}.faults.{i}")),
        state.with_file_name(format!("{name}.faults.{i}.applied")),
    )
}

fn parse_offset(s: &str) -> anyhow::Result<i64> {
    let t = s.trim();
    let (num, mult) = match t.chars().last() {
        Some('s') => (&t[..t.len() - 1], 1),
        Some('m') => (&t[..t.len() - 1], 60),
        Some('h') => (&t[..t.len() - 1], 3600),
        Some('d') => (&t[..t.len() - 1], 86_400),
        _ => (t, 1),
    };
    let n: i64 = num
        .trim_start_matches('+')
        .parse()
        .with_context(|| format!("bad clock offset {s:?} (expected e.g. +30s, -5m)"))?;
    Ok(n * mult)
}

fn parse_delay(s: &str) -> anyhow::Result<Duration> {
    let t = s.trim();
    let bad = || format!("bad delay {s:?} (expected e.g. 100ms, 1s, 0)");
    if let Some(ms) = t.strip_suffix("ms") {
        return Ok(Duration::from_millis(ms.parse().with_context(bad)?));
    }
    if let Some(secs) = t.strip_suffix('s') {
        return Ok(Duration::from_secs_f64(secs.parse().with_context(bad)?));
    }
    Ok(Duration::from_millis(t.parse().with_context(bad)?))
}

fn attached() -> anyhow::Result<(Cluster, PathBuf)> {
    let path = state_path();
    let state = State::load(&path).context("no cluster is up here (run `testcluster up`)")?;
    Ok((Cluster::attach(&state), path))
}

fn check_index(c: &Cluster, n: usize) -> anyhow::Result<()> {
    if n >= c.len() {
        bail!(
            "no master {n}: the cluster has {} (0..{})",
            c.len(),
            c.len()
        );
    }
    Ok(())
}

fn port_of(url: &str) -> anyhow::Result<u16> {
    Ok(resp::parse_addr(url)?.port())
}

/// True when `pid` is a `testcluster` process (guards `down` against pid reuse).
fn is_our_helper(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("serve-proxies"))
        .unwrap_or(false)
}

fn stop_helper(pid: Option<u32>) {
    let Some(pid) = pid.filter(|p| is_our_helper(*p)) else {
        return;
    };
    let Ok(p) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: plain kill(2) on a positive pid we checked is our helper.
    unsafe { libc::kill(p, libc::SIGTERM) };
    for _ in 0..200 {
        if !is_our_helper(pid) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn remove_control_files(path: &Path, n: usize) {
    for i in 0..n {
        let (c, a) = control_paths(path, i);
        let _ = std::fs::remove_file(c);
        let _ = std::fs::remove_file(a);
    }
}

fn up(
    masters: usize,
    backend: Backend,
    proxy: bool,
    faketime: bool,
    redis_server: Option<PathBuf>,
) -> anyhow::Result<()> {
    let path = state_path();
    if path.exists() {
        bail!(
            "{} exists: a cluster is already up here (run `testcluster down` first)",
            path.display()
        );
    }
    let mut b = Cluster::builder()
        .masters(masters)
        .backend(backend)
        .proxy(proxy)
        .faketime(faketime)
        .detached(true);
    if let Some(r) = redis_server {
        b = b.redis_server(r);
    }
    let cluster = b.build()?;
    let urls = cluster.urls();
    // Save before giving up ownership: if saving fails, dropping the cluster stops it.
    cluster.state().save(&path)?;
    let mut state = cluster.into_state()?;
    if proxy && let Err(e) = start_helper(&path, &mut state, &urls) {
        stop_helper(state.proxy_pid());
        Cluster::attach(&state).shutdown();
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    for u in urls {
        println!("{u}");
    }
    Ok(())
}

fn start_helper(path: &Path, state: &mut State, urls: &[String]) -> anyhow::Result<()> {
    let log = path.with_file_name("proxy.log");
    let stderr =
        std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("serve-proxies")
        .env("TESTCLUSTER_STATE", std::path::absolute(path)?)
        .stdin(Stdio::null())
        // Not our stdout: `$(testcluster up --proxy)` would otherwise wait for the helper.
        .stdout(Stdio::null())
        .stderr(stderr);
    // SAFETY: setsid is async-signal-safe; it detaches the helper from our terminal so
    // Ctrl-C in the shell that ran `up` does not stop it.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().context("starting the proxy helper")?;
    state.set_proxy_pid(Some(child.id()));
    state.save(path)?;
    // The helper binds the ports our in-process proxies just released.
    let deadline = Instant::now() + Duration::from_secs(10);
    for u in urls {
        while !resp::ping(u, Duration::from_millis(200)) {
            if Instant::now() > deadline {
                let log_text = std::fs::read_to_string(&log).unwrap_or_default();
                bail!("proxy helper did not serve {u} within 10s; its log:\n{log_text}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

fn serve_proxies() -> anyhow::Result<()> {
    let path = state_path();
    let state = State::load(&path)?;
    let c = Cluster::attach(&state);
    let me = std::process::id();
    let mut proxies = Vec::with_capacity(c.len());
    for i in 0..c.len() {
        let listen = port_of(&c.url(i))?;
        let upstream = resp::parse_addr(&c.direct_url(i))?;
        let mut started = None;
        // The ports were released a moment ago by `up`; allow for TIME_WAIT-free rebinding.
        for _ in 0..100 {
            match FaultProxy::start(listen, upstream) {
                Ok(p) => {
                    started = Some(p);
                    break;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        proxies.push(started.with_context(|| format!("binding proxy port {listen}"))?);
    }
    let mut applied = vec![String::new(); proxies.len()];
    let started = Instant::now();
    let lifetime = std::env::var("TESTCLUSTER_PROXY_LIFETIME_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_PROXY_LIFETIME);
    let max_polls = (lifetime.as_millis() / PROXY_POLL.as_millis()) as u64 + 1;
    for _ in 0..max_polls {
        if started.elapsed() > lifetime {
            break;
        }
        // `down` removed the state, or a new `up` replaced it: this helper is stale.
        match State::load(&path) {
            Ok(s) if s.proxy_pid().is_none_or(|p| p == me) => {}
            _ => break,
        }
        for (i, p) in proxies.iter().enumerate() {
            let (ctl, ack) = control_paths(&path, i);
            let text = std::fs::read_to_string(&ctl).unwrap_or_else(|_| "pass".into());
            if text.trim() == applied[i] {
                continue;
            }
            match text.parse::<Faults>() {
                Ok(f) => {
                    p.set_faults(f);
                    applied[i] = text.trim().to_string();
                    let _ = std::fs::write(&ack, &applied[i]);
                }
                Err(e) => eprintln!("master {i}: ignoring {}: {e}", ctl.display()),
            }
        }
        std::thread::sleep(PROXY_POLL);
    }
    Ok(())
}

/// Changes master `n`'s proxy faults through the helper and waits until it applied them.
fn change_faults(n: usize, change: impl FnOnce(&mut Faults)) -> anyhow::Result<()> {
    let (c, path) = attached()?;
    check_index(&c, n)?;
    let state = State::load(&path)?;
    if !c.is_proxied() {
        bail!("proxy faults need a cluster started with `testcluster up --proxy`");
    }
    if !state.proxy_pid().is_some_and(is_our_helper) {
        bail!(
            "the proxy helper is not running (see {})",
            path.with_file_name("proxy.log").display()
        );
    }
    let (ctl, ack) = control_paths(&path, n);
    let current = std::fs::read_to_string(&ctl).unwrap_or_else(|_| "pass".into());
    let mut faults: Faults = current.parse()?;
    change(&mut faults);
    let text = faults.to_string();
    let tmp = ctl.with_extension("tmp");
    std::fs::write(&tmp, &text).and_then(|()| std::fs::rename(&tmp, &ctl))?;
    let deadline = Instant::now() + ACK_TIMEOUT;
    while std::fs::read_to_string(&ack).unwrap_or_default() != text {
        if Instant::now() > deadline {
            bail!("the proxy helper did not apply {text:?} within {ACK_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Up {
            masters,
            backend,
            proxy,
            faketime,
            redis_server,
        } => up(masters, backend, proxy, faketime, redis_server)?,
        Cmd::Down => {
            let (c, path) = attached()?;
            let pid = State::load(&path)?.proxy_pid();
            stop_helper(pid);
            let n = c.len();
            c.shutdown();
            remove_control_files(&path, n);
            let _ = std::fs::remove_file(path.with_file_name("proxy.log"));
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            // Only our default dir, and only when empty: $TESTCLUSTER_STATE may live in a
            // directory of the user's.
            if let Some(dir) = path.parent().filter(|d| d.ends_with(".testcluster")) {
                let _ = std::fs::remove_dir(dir);
            }
        }
        Cmd::Status => {
            let (c, path) = attached()?;
            for i in 0..c.len() {
                let who = match c.container(i) {
                    Some(name) => format!("container={name}"),
                    None => format!(
                        "pid={}",
                        c.pid(i)
                            .map(|p| p.to_string())
                            .unwrap_or_else(|| "-".into())
                    ),
                };
                let faults = if !c.is_proxied() {
                    String::new()
                } else {
                    let ctl = control_paths(&path, i).0;
                    let f = std::fs::read_to_string(ctl).unwrap_or_else(|_| "pass".into());
                    format!("\tproxy:{}", f.trim())
                };
                println!(
                    "{i}\t{}\t{}\t{who}\t{}{faults}",
                    c.url(i),
                    c.backend(),
                    c.status(i)
                );
            }
        }
        Cmd::Pause { n } => {
            let (c, _) = attached()?;
            check_index(&c, n)?;
            c.pause(n)?;
        }
        Cmd::Resume { n } => {
            let (c, _) = attached()?;
            check_index(&c, n)?;
            c.resume(n)?;
        }
        Cmd::Kill { n } => {
            let (c, path) = attached()?;
            check_index(&c, n)?;
            c.kill(n)?;
            c.state().save(&path)?;
        }
        Cmd::Restart { n, lose_data } => {
            let (c, path) = attached()?;
            check_index(&c, n)?;
            let data = if lose_data {
                DataOnRestart::Lose
            } else {
                DataOnRestart::Keep
            };
            let res = c.restart(n, data);
            // Record the new pid even if readiness failed, so `down` can still stop it.
            c.state().save(&path)?;
            res?;
        }
        Cmd::Clock { n, offset } => {
            let (c, _) = attached()?;
            check_index(&c, n)?;
            c.jump_clock(n, parse_offset(&offset)?)?;
            println!("{:+}s", c.clock_offset(n)?);
        }
        Cmd::Cut { n, reset } => {
            let how = if reset { Cut::Reset } else { Cut::BlackHole };
            let (c, _) = attached()?;
            check_index(&c, n)?;
            if c.is_proxied() {
                change_faults(n, |f| f.cut = Some(how))?
            } else {
                // Docker without proxy: a network disconnect, done by the library itself.
                c.cut_off(n, how)
                    .context("without `up --proxy` only `--backend docker` can cut a master off")?
            }
        }
        Cmd::Heal { n } => {
            let (c, _) = attached()?;
            check_index(&c, n)?;
            if c.is_proxied() {
                change_faults(n, |f| *f = Faults::default())?
            } else {
                c.heal(n)
                    .context("nothing to heal: start the cluster with `up --proxy`")?
            }
        }
        Cmd::Latency { n, delay } => {
            let d = parse_delay(&delay)?;
            change_faults(n, |f| f.latency = d)?
        }
        Cmd::DropReplies { n, on_off } => {
            let on = match on_off.as_str() {
                "on" | "true" | "1" => true,
                "off" | "false" | "0" => false,
                other => bail!("expected on or off, got {other:?}"),
            };
            change_faults(n, |f| f.drop_replies = on)?
        }
        Cmd::ServeProxies => serve_proxies()?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_clock_offsets() {
        assert_eq!(parse_offset("+30s").unwrap(), 30);
        assert_eq!(parse_offset("-5m").unwrap(), -300);
        assert_eq!(parse_offset("2h").unwrap(), 7200);
        assert_eq!(parse_offset("+1d").unwrap(), 86_400);
        assert_eq!(parse_offset("17").unwrap(), 17);
        assert!(parse_offset("soon").is_err());
    }

    #[test]
    fn parses_delays() {
        assert_eq!(parse_delay("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(parse_delay("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_delay("0").unwrap(), Duration::ZERO);
        assert!(parse_delay("fast").is_err());
    }
}
