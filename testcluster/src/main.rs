//! `testcluster`: start and hurt Redis masters from a shell.
//!
//! `up` starts the masters in the background (in their own session, so they outlive this
//! command), records them in `.testcluster/state` (or `$TESTCLUSTER_STATE`) and prints one
//! URL per line. Every other command reads that file.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use testcluster::{Backend, Cluster, DataOnRestart, State};

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
        /// Preload libfaketime so `clock` works.
        #[arg(long)]
        faketime: bool,
        /// redis-server binary (default: from PATH).
        #[arg(long)]
        redis_server: Option<PathBuf>,
    },
    /// Stop every master in the state file and remove it.
    Down,
    /// One line per master: index, url, backend, pid, running/paused/down.
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
    /// Jump master N's wall clock, e.g. `clock 2 +30s` or `clock 2 -5s` (needs `up --faketime`).
    Clock {
        n: usize,
        #[arg(allow_hyphen_values = true)]
        offset: String,
    },
}

fn state_path() -> PathBuf {
    std::env::var_os("TESTCLUSTER_STATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".testcluster/state"))
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

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Up {
            masters,
            backend,
            faketime,
            redis_server,
        } => {
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
                .faketime(faketime)
                .detached(true);
            if let Some(r) = redis_server {
                b = b.redis_server(r);
            }
            let cluster = b.build()?;
            let urls = cluster.urls();
            // Save before giving up ownership: if saving fails, dropping the cluster stops it.
            cluster.state().save(&path)?;
            cluster.into_state()?;
            for u in urls {
                println!("{u}");
            }
        }
        Cmd::Down => {
            let (c, path) = attached()?;
            c.shutdown();
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
        Cmd::Status => {
            let (c, _) = attached()?;
            for i in 0..c.len() {
                let pid = c
                    .pid(i)
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "-".into());
                println!(
                    "{i}\t{}\t{}\tpid={pid}\t{}",
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
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_offset;

    #[test]
    fn parses_clock_offsets() {
        assert_eq!(parse_offset("+30s").unwrap(), 30);
        assert_eq!(parse_offset("-5m").unwrap(), -300);
        assert_eq!(parse_offset("2h").unwrap(), 7200);
        assert_eq!(parse_offset("+1d").unwrap(), 86_400);
        assert_eq!(parse_offset("17").unwrap(), 17);
        assert!(parse_offset("soon").is_err());
    }
}
