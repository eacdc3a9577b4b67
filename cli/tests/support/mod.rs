//! Running the real `redquorum` binary against a test cluster.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use testcluster::Cluster;

/// Generous for a loaded 2-core machine, still at most a tenth of every TTL used.
pub const MASTER_TIMEOUT: &str = "100ms";

/// `redquorum SUBCOMMAND` aimed at `cluster` (masters from the environment, as users set them).
pub fn redquorum(cluster: &Cluster, subcommand: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_redquorum"));
    cmd.env("REDQUORUM_MASTERS", cluster.urls().join(","))
        .arg(subcommand)
        .args(["--master-timeout", MASTER_TIMEOUT])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Waits for `child` at most `limit`; kills it and panics past that.
pub fn wait_for(child: &mut Child, limit: Duration) -> ExitStatus {
    let until = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > until {
            let _ = child.kill();
            panic!("redquorum did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Everything `child` wrote to stderr (after it exited).
pub fn stderr_of(child: &mut Child) -> String {
    use std::io::Read;
    let mut text = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut text);
    }
    text
}

/// Waits until `path` exists and has content (a child's "I am running" mark).
pub fn wait_for_file(path: &Path, limit: Duration) -> String {
    let until = Instant::now() + limit;
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && text.ends_with('\n')
        {
            return text;
        }
        assert!(
            Instant::now() < until,
            "{path:?} did not appear within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// Deletes `key` on every master, bypassing any proxy (an operator's `DEL`, or data loss).
pub fn delete_everywhere(cluster: &Cluster, key: &str) -> anyhow::Result<()> {
    for i in 0..cluster.len() {
        let mut c = redis::Client::open(cluster.direct_url(i))?.get_connection()?;
        let _: () = redis::cmd("DEL").arg(key).query(&mut c)?;
    }
    Ok(())
}

/// A scratch directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("redquorum-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The fields of `/proc/PID/stat` after the parenthesised command name (state, ppid, pgrp,
/// ...), if the process exists.
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// The pid a command wrote to `pidfile` once it runs (waits up to 30 s for it).
pub fn pid_in(pidfile: &Path) -> i32 {
    let text = wait_for_file(pidfile, Duration::from_secs(30));
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{pidfile:?} holds no pid ({e}): {text:?}"))
}

/// The process group of the command whose pid is in `pidfile`, once it runs.
pub fn group_in(pidfile: &Path) -> i32 {
    group_of(pid_in(pidfile))
}

/// The process group of `pid` (the command's group is its guard's, not its own pid).
pub fn group_of(pid: i32) -> i32 {
    stat_fields(pid)
        .and_then(|f| f.get(2)?.parse().ok())
        .unwrap_or_else(|| panic!("no process {pid}"))
}

/// Whether `pid` is running (a zombie does not count).
pub fn process_alive(pid: i32) -> bool {
    stat_fields(pid).is_some_and(|f| f.first().is_some_and(|state| state != "Z"))
}

/// Whether any process of group `pgid` is still running. Zombies do not count: they cannot
/// act any more, and in a container whose init reaps lazily they linger long after death.
pub fn group_alive(pgid: i32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|e| {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            return false;
        };
        // After the parenthesised command name: state, ppid, pgrp.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return false;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string()
    })
}

/// The critical sections in a log of lines `S|E <unix ns> <token>` (children logging their
/// start and end), as (start, end, token), by start.
pub fn sections(log: &str) -> Vec<(u128, u128, String)> {
    let mut starts = std::collections::HashMap::new();
    let mut out = Vec::new();
    for line in log.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        let (kind, at, token) = (parts[0], parts[1].parse::<u128>().unwrap(), parts[2]);
        match kind {
            "S" => {
                starts.insert(token.to_owned(), at);
            }
            _ => out.push((starts[token], at, token.to_owned())),
        }
    }
    out.sort();
    out
}

pub fn overlaps(sections: &[(u128, u128, String)]) -> usize {
    sections.windows(2).filter(|w| w[1].0 < w[0].1).count()
}

/// The control run of an exclusion test: the same `logging_child` (arguments: the log file,
/// then the section's length in seconds) under four *distinct* names of `redquorum
/// SUBCOMMAND` does run at once, so the overlap check can fail.
pub fn assert_distinct_names_overlap(
    cluster: &Cluster,
    subcommand: &str,
    ttl: &str,
    logging_child: &str,
    log: &Path,
) -> anyhow::Result<()> {
    let mut children = Vec::new();
    for i in 0..4 {
        let mut cmd = redquorum(cluster, subcommand);
        // Long sections, so that staggered process starts on a loaded machine still overlap.
        cmd.args([&format!("own-{i}"), "--ttl", ttl, "--"])
            .args(["sh", "-c", logging_child, "child"])
            .arg(log)
            .arg("1.5");
        children.push(cmd.spawn()?);
    }
    for child in &mut children {
        wait_for(child, Duration::from_secs(60));
    }
    let found = sections(&std::fs::read_to_string(log)?);
    assert!(
        overlaps(&found) > 0,
        "control runs should overlap: {found:?}"
    );
    Ok(())
}

/// What [`paused_majority`] saw, in unix ms on this process's clock.
pub struct PausedMajority {
    /// `redquorum`'s stderr.
    pub stderr: String,
    pub paused_at: u128,
    /// When the command's process group was seen gone.
    pub died_at: u128,
    /// The validity deadline `redquorum` reported.
    pub deadline: u128,
    /// `paused_at + ttl`: no validity can outlast it.
    pub bound: u128,
}

/// The worst case: a majority of masters paused (SIGSTOP) while `redquorum SUBCOMMAND paused`
/// runs a command that ignores SIGTERM. Asserts what holds for every subcommand: exit code
/// 124, the command's process group gone, no late stop (`late_ms=0`), and death before both
/// `paused_at + ttl` and the reported deadline (every extension that could have succeeded
/// started before the pause).
pub fn paused_majority(cluster: &Cluster, subcommand: &str) -> anyhow::Result<PausedMajority> {
    let dir = scratch(&format!("{subcommand}-paused"));
    let pidfile = dir.join("pid");
    let ttl = Duration::from_secs(3);
    let mut cmd = redquorum(cluster, subcommand);
    cmd.args(["paused", "--ttl", "3s", "--grace", "300ms", "--"])
        .args([
            "sh",
            "-c",
            r#"trap "" TERM; echo $$ > "$1"; sleep 60"#,
            "child",
        ])
        .arg(&pidfile);
    let mut child = cmd.spawn()?;
    let pgid = group_in(&pidfile);
    // Let a few extensions happen, then pause a majority.
    std::thread::sleep(Duration::from_millis(1500));
    let paused_at = unix_ms();
    for i in 0..3 {
        cluster.pause(i)?;
    }
    // Watch the command's process group die, on this process's own clock.
    let watch_until = Instant::now() + Duration::from_secs(15);
    while group_alive(pgid) && Instant::now() < watch_until {
        std::thread::sleep(Duration::from_millis(2));
    }
    let died_at = unix_ms();
    let status = wait_for(&mut child, Duration::from_secs(15));
    for i in 0..3 {
        cluster.resume(i)?;
    }
    let stderr = stderr_of(&mut child);
    println!("{subcommand}: pause at {paused_at}, command gone at {died_at}; redquorum: {stderr}");
    assert_eq!(status.code(), Some(124), "{stderr}");
    assert!(!group_alive(pgid), "the command's group outlived redquorum");
    assert!(stderr.contains("late_ms=0"), "{stderr}");
    let deadline: u128 = stderr
        .split("deadline_unix_ms=")
        .nth(1)
        .and_then(|s| s.trim_end_matches([')', '\n']).parse().ok())
        .unwrap_or_else(|| panic!("no deadline reported: {stderr}"));
    let bound = paused_at + ttl.as_millis();
    assert!(
        died_at < bound,
        "died {} ms after the pause",
        died_at - paused_at
    );
    assert!(
        died_at < deadline,
        "died {} ms after the deadline",
        died_at - deadline
    );
    Ok(PausedMajority {
        stderr,
        paused_at,
        died_at,
        deadline,
        bound,
    })
}

/// Waits for every child (each must exit 0 within `limit`), then reads the critical sections
/// they logged to `log` and asserts that none overlap (`what`: who must not overlap) and that
/// their fencing tokens (terms) strictly increase in the order the sections ran.
pub fn exclusive_sections(
    children: &mut [Child],
    limit: Duration,
    log: &Path,
    what: &str,
) -> anyhow::Result<Vec<(u128, u128, String)>> {
    for child in children.iter_mut() {
        let status = wait_for(child, limit);
        assert_eq!(status.code(), Some(0), "{}", stderr_of(child));
    }
    let found = sections(&std::fs::read_to_string(log)?);
    assert_eq!(overlaps(&found), 0, "{what} at once: {found:?}");
    let tokens: Vec<u64> = found.iter().map(|s| s.2.parse().unwrap()).collect();
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");
    Ok(found)
}

/// `redquorum SUBCOMMAND victim --ttl 1500ms` runs a command; then `key` (its lock or
/// leadership) vanishes from every master. The next extension finds it gone and the command
/// is stopped at once (exit 124, "was lost"): one extension interval (ttl/3), a round and the
/// stop, inside the TTL (1.5 s) with room for a loaded machine.
pub fn assert_stopped_when_deleted(
    cluster: &Cluster,
    subcommand: &str,
    key: &str,
    dir: &Path,
) -> anyhow::Result<()> {
    let mark = dir.join(format!("{subcommand}-victim"));
    let mut victim = redquorum(cluster, subcommand)
        .args(["victim", "--ttl", "1500ms", "--", "sh", "-c"])
        .arg(r#"echo x > "$1"; sleep 60"#)
        .arg("v")
        .arg(&mark)
        .spawn()?;
    wait_for_file(&mark, Duration::from_secs(30));
    let deleted = Instant::now();
    delete_everywhere(cluster, key)?;
    let status = wait_for(&mut victim, Duration::from_secs(30));
    let err = stderr_of(&mut victim);
    assert_eq!(status.code(), Some(124), "{err}");
    assert!(err.contains("was lost"), "{err}");
    assert!(
        deleted.elapsed() < Duration::from_millis(1500),
        "{:?}",
        deleted.elapsed()
    );
    Ok(())
}
