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
