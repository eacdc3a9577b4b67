//! The real `redquorum` binary's modes against real masters: `lock --shared` / `--exclusive`
//! (the library's read-write lock), `lock --limit N` (its semaphore), `lock NAME` with no
//! command, `--conflict-exit-code`, `status` (exit codes, `--json`, elections), `elect
//! --listen`, and the configuration errors a newcomer hits.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use support::{redquorum, scratch, stderr_of, wait_for, wait_for_file};
use testcluster::Cluster;

fn kill(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) on a process this test started.
    unsafe { libc::kill(pid as i32, signal) };
}

/// `redquorum lock ARGS`: exit code and stderr.
fn lock(cluster: &Cluster, args: &[&str]) -> anyhow::Result<(Option<i32>, String)> {
    let mut child = redquorum(cluster, "lock").args(args).spawn()?;
    let status = wait_for(&mut child, Duration::from_secs(60));
    Ok((status.code(), stderr_of(&mut child)))
}

/// A holder running `sh -c 'echo x > MARK; sleep SECS'` under `lock ARGS`, once its command
/// runs.
fn holder(
    cluster: &Cluster,
    args: &[&str],
    mark: &std::path::Path,
    secs: &str,
) -> anyhow::Result<Child> {
    let child = redquorum(cluster, "lock")
        .args(args)
        .args(["--", "sh", "-c", r#"echo x > "$1"; sleep "$2""#, "h"])
        .arg(mark)
        .arg(secs)
        .spawn()?;
    wait_for_file(mark, Duration::from_secs(30));
    Ok(child)
}

#[test]
fn shared_readers_overlap_and_exclusive_excludes_them() -> anyhow::Result<()> {
    let cluster = Cluster::start(5)?;
    let dir = scratch("shared");
    // Two readers at once: the second starts while the first runs.
    let mut r1 = holder(&cluster, &["rw", "--shared"], &dir.join("r1"), "6")?;
    let mut r2 = holder(&cluster, &["rw", "--shared", "--try"], &dir.join("r2"), "1")?;
    // A writer is refused while they read; with --conflict-exit-code, its code.
    let (code, err) = lock(&cluster, &["rw", "--exclusive", "--try", "--", "true"])?;
    assert_eq!(code, Some(75), "{err}");
    assert!(err.contains("write lock \"rw\" is busy"), "{err}");
    let (code, err) = lock(
        &cluster,
        &[
            "rw",
            "--exclusive",
            "--try",
            "--conflict-exit-code",
            "9",
            "--",
            "true",
        ],
    )?;
    assert_eq!(code, Some(9), "{err}");
    // A plain lock of the same name is another lock: not excluded.
    assert_eq!(lock(&cluster, &["rw", "--try", "--", "true"])?.0, Some(0));
    assert_eq!(wait_for(&mut r1, Duration::from_secs(30)).code(), Some(0));
    assert_eq!(wait_for(&mut r2, Duration::from_secs(30)).code(), Some(0));
    // Readers gone: the writer gets it, and while it writes no reader does.
    let mut w = holder(
        &cluster,
        &["rw", "--exclusive", "--try"],
        &dir.join("w"),
        "2",
    )?;
    let (code, err) = lock(&cluster, &["rw", "--shared", "--try", "--", "true"])?;
    assert_eq!(code, Some(75), "{err}");
    assert_eq!(wait_for(&mut w, Duration::from_secs(30)).code(), Some(0));
    assert_eq!(
        lock(&cluster, &["rw", "--shared", "--try", "--", "true"])?.0,
        Some(0)
    );
    Ok(())
}

#[test]
fn limit_admits_n_holders_and_no_more() -> anyhow::Result<()> {
    let cluster = Cluster::start(5)?;
    let dir = scratch("limit");
    // Long enough that both still hold while the rivals below try, on a loaded machine.
    let mut a = holder(&cluster, &["pool", "--limit", "2"], &dir.join("a"), "8")?;
    let mut b = holder(
        &cluster,
        &["pool", "--limit", "2", "--try"],
        &dir.join("b"),
        "6",
    )?;
    let (code, err) = lock(&cluster, &["pool", "--limit", "2", "--try", "--", "true"])?;
    assert_eq!(code, Some(75), "{err}");
    assert!(
        err.contains("semaphore \"pool\" is busy: 0 of 2 permits free"),
        "{err}"
    );
    let (code, _) = lock(
        &cluster,
        &[
            "pool",
            "--limit",
            "2",
            "--try",
            "--conflict-exit-code",
            "3",
            "--",
            "true",
        ],
    )?;
    assert_eq!(code, Some(3));
    // A third permit on a semaphore of 3 is free (the check can fail the other way).
    assert_eq!(
        lock(&cluster, &["pool3", "--limit", "3", "--try", "--", "true"])?.0,
        Some(0)
    );
    assert_eq!(wait_for(&mut a, Duration::from_secs(30)).code(), Some(0));
    assert_eq!(wait_for(&mut b, Duration::from_secs(30)).code(), Some(0));
    assert_eq!(
        lock(&cluster, &["pool", "--limit", "2", "--try", "--", "true"])?.0,
        Some(0)
    );
    // Zero permits is a usage error.
    assert_eq!(
        lock(&cluster, &["pool", "--limit", "0", "--", "true"])?.0,
        Some(125)
    );
    Ok(())
}

#[test]
fn no_command_holds_until_interrupted_and_status_tells_held_from_free() -> anyhow::Result<()> {
    let cluster = Cluster::start(5)?;
    let mut hold = redquorum(&cluster, "lock")
        .args(["held", "--owner-id", "holder-7", "--ttl", "2s"])
        .spawn()?;
    let mut stdout = BufReader::new(hold.stdout.take().unwrap());
    let mut token = String::new();
    stdout.read_line(&mut token)?;
    let token: u64 = token.trim().parse()?;
    assert!(token > 0);
    // Held past its TTL (it is extended), and the busy message names the holder.
    std::thread::sleep(Duration::from_millis(2500));
    let (code, err) = lock(&cluster, &["held", "--try", "--", "true"])?;
    assert_eq!(code, Some(75), "{err}");
    assert!(err.contains("held by holder-7"), "{err}");
    // status: exit 0 while held, text and JSON.
    let out = redquorum(&cluster, "status").arg("held").output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("held by holder-7 on"), "{text}");
    let out = redquorum(&cluster, "status")
        .args(["held", "--json"])
        .output()?;
    assert_eq!(out.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(json["lock"]["state"], "held", "{json}");
    assert_eq!(json["lock"]["owner_id"], "holder-7", "{json}");
    assert_eq!(json["masters"].as_array().map(Vec::len), Some(5), "{json}");
    // Interrupted: gives the lock back, exits 0.
    kill(hold.id(), libc::SIGINT);
    let status = wait_for(&mut hold, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", stderr_of(&mut hold));
    let out = redquorum(&cluster, "status").arg("held").output()?;
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = redquorum(&cluster, "status")
        .args(["held", "--json"])
        .output()?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(json["lock"]["state"], "free", "{json}");
    // The next holder's token is larger.
    let mut next = redquorum(&cluster, "lock")
        .args(["held", "--try"])
        .spawn()?;
    let mut line = String::new();
    BufReader::new(next.stdout.take().unwrap()).read_line(&mut line)?;
    assert!(line.trim().parse::<u64>()? > token, "{line}");
    // Without --owner-id, the holder is named by the library's one rule: hostname/pid.
    let ours = redquorum::default_owner_id();
    let host = ours.rsplit_once('/').unwrap().0;
    let out = redquorum(&cluster, "status").arg("held").output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("held by {host}/{} on", next.id())),
        "{text}"
    );
    kill(next.id(), libc::SIGTERM);
    assert_eq!(wait_for(&mut next, Duration::from_secs(10)).code(), Some(0));
    Ok(())
}

#[test]
fn status_and_listen_see_elections() -> anyhow::Result<()> {
    let cluster = Cluster::start(5)?;
    let dir = scratch("listen");
    let mut listen = redquorum(&cluster, "elect")
        .args(["chair", "--listen"])
        .spawn()?;
    let mut lines = BufReader::new(listen.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().transpose()?.as_deref(), Some("none"));
    let mark = dir.join("leading");
    let mut leader = redquorum(&cluster, "elect")
        .args(["chair", "--value", "alpha", "--ttl", "3s", "--", "sh", "-c"])
        .arg(r#"echo x > "$1"; sleep 3"#)
        .arg("l")
        .arg(&mark)
        .spawn()?;
    wait_for_file(&mark, Duration::from_secs(30));
    let out = redquorum(&cluster, "status").arg("chair").output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let led = text
        .lines()
        .find(|l| l.contains("led by \"alpha\", term "))
        .unwrap_or_else(|| panic!("{text}"));
    // `... term N, lease M ms left`
    let words: Vec<&str> = led.split([' ', ',']).filter(|w| !w.is_empty()).collect();
    let term: u64 = words[words.len() - 5].parse()?;
    let left: u64 = words[words.len() - 3].parse()?;
    assert!(left > 0 && left <= 3000, "the 3 s lease: {led}");
    let out = redquorum(&cluster, "status")
        .args(["chair", "--json"])
        .output()?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(json["election"]["term"], term, "{json}");
    let left = json["election"]["lease_remaining_ms"].as_u64().unwrap_or(0);
    assert!(left > 0 && left <= 3000, "{json}");
    // A rival --try names the leader.
    let mut rival = redquorum(&cluster, "elect")
        .args(["chair", "--try", "--", "true"])
        .spawn()?;
    assert_eq!(
        wait_for(&mut rival, Duration::from_secs(30)).code(),
        Some(75)
    );
    let err = stderr_of(&mut rival);
    assert!(err.contains("\"alpha\" leads"), "{err}");
    let mut rival = redquorum(&cluster, "elect")
        .args(["chair", "--try", "--conflict-exit-code", "4", "--", "true"])
        .spawn()?;
    assert_eq!(
        wait_for(&mut rival, Duration::from_secs(30)).code(),
        Some(4)
    );
    assert_eq!(
        wait_for(&mut leader, Duration::from_secs(30)).code(),
        Some(0)
    );
    // The listener saw the leader come and go.
    assert_eq!(
        lines.next().transpose()?,
        Some(format!("{term} alpha")),
        "the listener's second line"
    );
    assert_eq!(lines.next().transpose()?.as_deref(), Some("none"));
    kill(listen.id(), libc::SIGINT);
    assert_eq!(
        wait_for(&mut listen, Duration::from_secs(10)).code(),
        Some(0)
    );
    let out = redquorum(&cluster, "status")
        .args(["chair", "--json"])
        .output()?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(json["election"]["state"], "none", "{json}");
    assert_eq!(out.status.code(), Some(1));
    Ok(())
}

/// Configuration errors are reported as such, with the expected form, before any master is
/// contacted (the masters here are a closed port).
#[test]
fn configuration_errors_in_the_users_terms() -> anyhow::Result<()> {
    let run = |env_masters: &str, args: &[&str]| -> anyhow::Result<(Option<i32>, String)> {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_redquorum"))
            .env("REDQUORUM_MASTERS", env_masters)
            .args(args)
            .stdin(Stdio::null())
            .output()?;
        Ok((
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    };
    // Nothing listens on port 1: reaching it would be "cannot reach the masters".
    let closed = "redis://127.0.0.1:1";
    // One minimum, one message, whatever internal limit a TTL would hit first.
    let mut messages = Vec::new();
    for ttl in ["0", "250ms", "300ms"] {
        let (code, err) = run(closed, &["lock", "x", "--ttl", ttl, "--", "true"])?;
        assert_eq!(code, Some(125), "{err}");
        assert!(
            err.contains("must be between 500ms (ten times --master-timeout 50ms) and 1day"),
            "{err}"
        );
        messages.push(err.split_once(": must").map(|(_, m)| m.to_owned()));
    }
    assert!(messages.windows(2).all(|w| w[0] == w[1]), "{messages:?}");
    // The maximum, checked before connecting.
    let (code, err) = run(closed, &["lock", "x", "--ttl", "25h", "--", "true"])?;
    assert_eq!(code, Some(125));
    assert!(err.contains("configuration error: --ttl 1day 1h"), "{err}");
    // --help states the minimum.
    let (_, _) = run(closed, &["lock", "--help"])?;
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_redquorum"))
        .args(["lock", "--help"])
        .output()?;
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("At least ten times --master-timeout"),
        "{help}"
    );
    // Every subcommand's --help lists its exit codes.
    for sub in ["lock", "elect", "status", "check"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_redquorum"))
            .args([sub, "--help"])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("Exit status:") && text.contains("125"),
            "{sub}: {text}"
        );
    }
    // Negative: no "use -- -5" tip.
    let (code, err) = run(closed, &["lock", "x", "--ttl", "-5s", "--", "true"])?;
    assert_eq!(code, Some(125));
    assert!(
        err.contains("cannot be negative") && !err.contains("-- -5"),
        "{err}"
    );
    // A URL without its scheme, an empty list, a zero timeout: configuration errors.
    for (masters, args, expected) in [
        (
            "127.0.0.1:6379",
            &["status", "x"][..],
            "expected a URL such as redis://127.0.0.1:6379",
        ),
        (
            "",
            &["status", "x"][..],
            "no masters: set --masters or REDQUORUM_MASTERS",
        ),
        (
            closed,
            &["status", "x", "--master-timeout", "0"][..],
            "--master-timeout must be positive",
        ),
    ] {
        let (code, err) = run(masters, args)?;
        assert_eq!(code, Some(125), "{err}");
        assert!(
            err.contains("configuration error") && err.contains(expected),
            "{masters:?} {args:?}: {err}"
        );
    }
    // A command given without `--`: a hint.
    let (code, err) = run(closed, &["lock", "x", "sleep", "1"])?;
    assert_eq!(code, Some(125));
    assert!(err.contains("hint: put the command after `--`"), "{err}");
    // The masters unreachable is not a configuration error.
    let (code, err) = run(closed, &["status", "x"])?;
    assert_eq!(code, Some(125));
    assert!(err.contains("cannot reach the masters"), "{err}");
    Ok(())
}

/// Go-style durations, an evicting master's warning reaching the user, and
/// `--refuse-evicting-masters` / `REDQUORUM_REFUSE_EVICTING_MASTERS`.
#[test]
fn durations_logging_and_master_flags() -> anyhow::Result<()> {
    let cluster = Cluster::start(3)?;
    let started = Instant::now();
    let (code, err) = lock(
        &cluster,
        &["d", "--ttl", "1m30s", "--wait", "1m", "--", "true"],
    )?;
    assert_eq!(code, Some(0), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));
    let mut c = redis::Client::open(cluster.direct_url(1))?.get_connection()?;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("allkeys-lru")
        .query(&mut c)?;
    // The library's warning reaches stderr without any flag.
    let (code, err) = lock(&cluster, &["d", "--", "true"])?;
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("WARN") && err.contains("allkeys-lru"), "{err}");
    // Refused, by flag and by environment.
    let (code, err) = lock(&cluster, &["d", "--refuse-evicting-masters", "--", "true"])?;
    assert_eq!(code, Some(125), "{err}");
    let mut child = redquorum(&cluster, "lock")
        .env("REDQUORUM_REFUSE_EVICTING_MASTERS", "true")
        .args(["d", "--", "true"])
        .spawn()?;
    assert_eq!(
        wait_for(&mut child, Duration::from_secs(30)).code(),
        Some(125)
    );
    // -v shows what happened; RUST_LOG chooses instead.
    let quiet = lock(&cluster, &["d", "--", "true"])?.1;
    assert!(!quiet.contains("acquired"), "{quiet}");
    let verbose = lock(&cluster, &["-v", "d", "--", "true"])?.1;
    assert!(
        verbose.contains("INFO") && verbose.contains("acquired"),
        "{verbose}"
    );
    let mut child = redquorum(&cluster, "lock")
        .env("RUST_LOG", "error")
        .args(["-v", "d", "--", "true"])
        .spawn()?;
    wait_for(&mut child, Duration::from_secs(30));
    let err = stderr_of(&mut child);
    assert!(!err.contains("INFO") && !err.contains("WARN"), "{err}");
    Ok(())
}

/// A closed stderr (a pipe whose reader left) must not make `redquorum` panic: its messages
/// are dropped, its exit code stays meaningful.
#[test]
fn a_closed_stderr_does_not_crash_redquorum() -> anyhow::Result<()> {
    let cluster = Cluster::start(3)?;
    let dir = scratch("closed-stderr");
    let mut h = holder(&cluster, &["busy"], &dir.join("h"), "2")?;
    let mut rival = redquorum(&cluster, "lock")
        .args(["busy", "--try", "--", "true"])
        .spawn()?;
    drop(rival.stderr.take());
    let status = wait_for(&mut rival, Duration::from_secs(30));
    assert_eq!(
        status.code(),
        Some(75),
        "the busy message to a closed stderr"
    );
    assert_eq!(wait_for(&mut h, Duration::from_secs(30)).code(), Some(0));
    Ok(())
}

/// The masters' options reach the library: `--no-fencing` (no token), `--interop-keys` (the
/// lock key is the bare name, as redsync writes it), `--restart-quarantine` (masters started
/// less than that ago do not count: freshly started test masters are all quarantined).
#[test]
fn fencing_interop_and_quarantine_options() -> anyhow::Result<()> {
    let cluster = Cluster::start(3)?;
    // No fencing: "-" instead of a token, and none in the command's environment.
    let mut hold = redquorum(&cluster, "lock")
        .args(["plain", "--no-fencing"])
        .spawn()?;
    let mut line = String::new();
    BufReader::new(hold.stdout.take().unwrap()).read_line(&mut line)?;
    assert_eq!(line.trim(), "-");
    kill(hold.id(), libc::SIGTERM);
    assert_eq!(wait_for(&mut hold, Duration::from_secs(10)).code(), Some(0));
    let out = redquorum(&cluster, "lock")
        .env("REDQUORUM_NO_FENCING", "true")
        .args([
            "plain",
            "--",
            "sh",
            "-c",
            "echo \"[${REDQUORUM_FENCING_TOKEN:-none}]\"",
        ])
        .output()?;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[none]");

    // Interop keys: while held, the key `interop-res` itself exists on every master.
    let dir = scratch("interop");
    let mut h = holder(
        &cluster,
        &[
            "interop-res",
            "--interop-keys",
            "{resource}",
            "--no-fencing",
        ],
        &dir.join("h"),
        "1",
    )?;
    for i in 0..cluster.len() {
        let mut c = redis::Client::open(cluster.direct_url(i))?.get_connection()?;
        let exists: i64 = redis::cmd("EXISTS").arg("interop-res").query(&mut c)?;
        assert_eq!(exists, 1, "master {i}");
    }
    assert_eq!(wait_for(&mut h, Duration::from_secs(30)).code(), Some(0));

    // Quarantine: every master started seconds ago, so none counts under a 1 h quarantine.
    let out = redquorum(&cluster, "status")
        .args(["q", "--restart-quarantine", "1h"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("quarantined"), "{text}");
    let out = redquorum(&cluster, "status").arg("q").output()?;
    assert_eq!(out.status.code(), Some(1));
    Ok(())
}
