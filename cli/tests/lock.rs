//! The real `redquorum` binary against five real masters: exclusion between invocations,
//! the command stopped before the validity deadline when a majority pauses, exit codes, and
//! signal forwarding.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use support::{
    group_alive, group_of, overlaps, redquorum, scratch, sections, stderr_of, unix_ms, wait_for,
    wait_for_file,
};
use testcluster::Cluster;

/// A child that logs its start and end (wall clock, ns) with its fencing token, around a
/// critical section of `$2` seconds (log file: `$1`).
const LOGGING_CHILD: &str = r#"echo "S $(date +%s%N) ${REDQUORUM_FENCING_TOKEN:-none}" >> "$1"; sleep "$2"; echo "E $(date +%s%N) ${REDQUORUM_FENCING_TOKEN:-none}" >> "$1""#;

#[test]
fn concurrent_invocations_never_overlap() -> anyhow::Result<()> {
    const RUNS: usize = 8;
    let cluster = Cluster::start(5)?;
    let dir = scratch("overlap");
    let log = dir.join("log");
    let mut children = Vec::new();
    for _ in 0..RUNS {
        let mut cmd = redquorum(&cluster, "lock");
        cmd.args(["shared", "--ttl", "2s", "--wait", "60s", "--"])
            .args(["sh", "-c", LOGGING_CHILD, "child"])
            .arg(&log)
            .arg("0.15");
        children.push(cmd.spawn()?);
    }
    for child in &mut children {
        let status = wait_for(child, Duration::from_secs(90));
        assert_eq!(status.code(), Some(0), "{}", stderr_of(child));
    }
    let found = sections(&std::fs::read_to_string(&log)?);
    assert_eq!(found.len(), RUNS, "{found:?}");
    assert_eq!(overlaps(&found), 0, "critical sections overlap: {found:?}");
    // Fencing tokens increase in the order the sections ran.
    let tokens: Vec<u64> = found.iter().map(|s| s.2.parse().unwrap()).collect();
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");

    // The check can fail: the same children on distinct locks do overlap.
    let log = dir.join("control");
    let mut children = Vec::new();
    for i in 0..4 {
        let mut cmd = redquorum(&cluster, "lock");
        // Long sections, so that staggered process starts on a loaded machine still overlap.
        cmd.args([&format!("own-{i}"), "--ttl", "2s", "--"])
            .args(["sh", "-c", LOGGING_CHILD, "child"])
            .arg(&log)
            .arg("1.5");
        children.push(cmd.spawn()?);
    }
    for child in &mut children {
        wait_for(child, Duration::from_secs(60));
    }
    let found = sections(&std::fs::read_to_string(&log)?);
    assert!(
        overlaps(&found) > 0,
        "control runs should overlap: {found:?}"
    );
    Ok(())
}

/// The worst case: a majority of masters paused (SIGSTOP) while the command runs, and a command
/// that ignores SIGTERM. The command (its whole process group) must be gone before the lock's
/// validity deadline: `redquorum` must KILL it in time, not at or after the TTL.
#[test]
fn a_paused_majority_stops_the_command_before_validity_ends() -> anyhow::Result<()> {
    let cluster = Cluster::start(5)?;
    let dir = scratch("paused");
    let pidfile = dir.join("pid");
    let ttl = Duration::from_secs(3);
    let mut cmd = redquorum(&cluster, "lock");
    cmd.args(["paused", "--ttl", "3s", "--grace", "300ms", "--"])
        .args([
            "sh",
            "-c",
            r#"trap "" TERM; echo $$ > "$1"; sleep 60"#,
            "child",
        ])
        .arg(&pidfile);
    let mut child = cmd.spawn()?;
    let pgid = group_of(
        wait_for_file(&pidfile, Duration::from_secs(30))
            .trim()
            .parse()?,
    );
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
    println!("pause at {paused_at}, command gone at {died_at}; redquorum: {stderr}");
    assert_eq!(status.code(), Some(124), "{stderr}");
    assert!(!group_alive(pgid), "the command's group outlived redquorum");
    let deadline: u128 = stderr
        .split("deadline_unix_ms=")
        .nth(1)
        .and_then(|s| s.trim_end_matches([')', '\n']).parse().ok())
        .unwrap_or_else(|| panic!("no deadline reported: {stderr}"));
    assert!(stderr.contains("late_ms=0"), "{stderr}");
    // Independent of what redquorum says: every extension that could have succeeded started
    // before the pause, so no validity outlasts `paused_at + ttl`.
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
    println!(
        "paused majority: command gone {} ms after the pause, {} ms before redquorum's validity \
         deadline (as seen by the test), {} ms before pause + ttl; redquorum: {}",
        died_at - paused_at,
        deadline - died_at,
        bound - died_at,
        stderr.trim()
    );
    Ok(())
}

#[test]
fn exit_codes() -> anyhow::Result<()> {
    let cluster = Cluster::start(5)?;
    let run = |args: &[&str]| -> anyhow::Result<(Option<i32>, String, Duration)> {
        let started = Instant::now();
        let mut child = redquorum(&cluster, "lock").args(args).spawn()?;
        let status = wait_for(&mut child, Duration::from_secs(60));
        Ok((status.code(), stderr_of(&mut child), started.elapsed()))
    };
    // The child's status passes through; a signal death reads as 128 + signal.
    assert_eq!(run(&["codes", "--", "sh", "-c", "exit 7"])?.0, Some(7));
    assert_eq!(run(&["codes", "--", "true"])?.0, Some(0));
    assert_eq!(
        run(&["codes", "--", "sh", "-c", "kill -9 $$"])?.0,
        Some(137)
    );
    assert_eq!(run(&["codes", "--", "/nonexistent/cmd"])?.0, Some(127));
    // The lock was released after each run: a --try right after gets it.
    assert_eq!(run(&["codes", "--try", "--", "true"])?.0, Some(0));

    // Busy: held by another invocation.
    let dir = scratch("codes");
    let mark = dir.join("holding");
    let mut holder = redquorum(&cluster, "lock")
        .args([
            "codes",
            "--ttl",
            "5s",
            "--",
            "sh",
            "-c",
            r#"echo x > "$1"; sleep 3"#,
            "h",
        ])
        .arg(&mark)
        .spawn()?;
    wait_for_file(&mark, Duration::from_secs(30));
    let (code, err, _) = run(&["codes", "--try", "--", "true"])?;
    assert_eq!(code, Some(75), "{err}");
    let (code, err, took) = run(&["codes", "--wait", "700ms", "--", "true"])?;
    assert_eq!(code, Some(75), "{err}");
    assert!(took >= Duration::from_millis(700), "{took:?}");
    assert_eq!(
        wait_for(&mut holder, Duration::from_secs(30)).code(),
        Some(0)
    );

    // Lost: the keys vanish from every master (as after an operator's DEL, or data loss); the
    // next extension finds them gone and the command is stopped at once, long before the TTL.
    let mut victim = redquorum(&cluster, "lock")
        .args([
            "victim",
            "--ttl",
            "1500ms",
            "--",
            "sh",
            "-c",
            r#"echo x > "$1"; sleep 60"#,
            "v",
        ])
        .arg(dir.join("victim"))
        .spawn()?;
    wait_for_file(&dir.join("victim"), Duration::from_secs(30));
    let deleted = Instant::now();
    for i in 0..cluster.len() {
        let mut c = redis::Client::open(cluster.direct_url(i))?.get_connection()?;
        let _: () = redis::cmd("DEL")
            .arg("redquorum:lock:victim")
            .query(&mut c)?;
    }
    let status = wait_for(&mut victim, Duration::from_secs(30));
    let err = stderr_of(&mut victim);
    assert_eq!(status.code(), Some(124), "{err}");
    assert!(err.contains("was lost"), "{err}");
    // One extension interval (ttl/3), a round and the stop: inside the TTL (1.5 s), with room
    // for a loaded machine.
    assert!(
        deleted.elapsed() < Duration::from_millis(1500),
        "{:?}",
        deleted.elapsed()
    );

    // Lost again, with a command that obeys SIGTERM but left a child behind that ignores it:
    // that child must not outlive redquorum (it would keep working without the lock).
    let pidfile = dir.join("straggler");
    let mut victim = redquorum(&cluster, "lock")
        .args(["victim", "--ttl", "1500ms", "--", "sh", "-c"])
        .arg(r#"(trap "" TERM; exec sleep 60) & echo $$ > "$1"; wait"#)
        .args(["v"])
        .arg(&pidfile)
        .spawn()?;
    let pgid = group_of(
        wait_for_file(&pidfile, Duration::from_secs(30))
            .trim()
            .parse()?,
    );
    for i in 0..cluster.len() {
        let mut c = redis::Client::open(cluster.direct_url(i))?.get_connection()?;
        let _: () = redis::cmd("DEL")
            .arg("redquorum:lock:victim")
            .query(&mut c)?;
    }
    let status = wait_for(&mut victim, Duration::from_secs(30));
    assert_eq!(status.code(), Some(124), "{}", stderr_of(&mut victim));
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        !group_alive(pgid),
        "a child of the command outlived the lock"
    );

    // Bad arguments are redquorum's own failure.
    assert_eq!(
        run(&["codes", "--ttl", "2 days", "--", "true"])?.0,
        Some(125)
    );
    assert_eq!(run(&["codes", "--ttl", "10ms", "--", "true"])?.0, Some(125));
    Ok(())
}

#[test]
fn signals_reach_the_command_and_its_status_is_reported() -> anyhow::Result<()> {
    let cluster = Cluster::start(5)?;
    let dir = scratch("signals");
    for (signal, code) in [(libc::SIGTERM, 42), (libc::SIGINT, 43)] {
        let mark = dir.join(format!("ready-{signal}"));
        let script = r#"trap "exit 42" TERM; trap "exit 43" INT; echo x > "$1"; while :; do sleep 0.05; done"#;
        let mut child = redquorum(&cluster, "lock")
            .args(["--owner-id", "signal-test", "sig", "--ttl", "3s", "--"])
            .args(["sh", "-c", script, "s"])
            .arg(&mark)
            .spawn()?;
        wait_for_file(&mark, Duration::from_secs(30));

        // While it runs, `status` shows who holds the lock.
        let shown = redquorum(&cluster, "status")
            .arg("sig")
            .stdin(Stdio::null())
            .output()?;
        let text = String::from_utf8_lossy(&shown.stdout);
        assert_eq!(shown.status.code(), Some(0), "{text}");
        assert!(text.contains("held by signal-test on"), "{text}");

        // A second invocation waiting for the lock is interrupted: it exits at once with
        // 128 + the signal, without running its command.
        let mut waiter = redquorum(&cluster, "lock")
            .args(["sig", "--wait", "60s", "--", "sh", "-c", "exit 9"])
            .spawn()?;
        std::thread::sleep(Duration::from_millis(500));
        // SAFETY: kill(2) on processes this test started.
        unsafe { libc::kill(waiter.id() as i32, signal) };
        let status = wait_for(&mut waiter, Duration::from_secs(5));
        assert_eq!(
            status.code(),
            Some(128 + signal),
            "{}",
            stderr_of(&mut waiter)
        );

        // SAFETY: as above.
        unsafe { libc::kill(child.id() as i32, signal) };
        let status = wait_for(&mut child, Duration::from_secs(30));
        assert_eq!(status.code(), Some(code), "{}", stderr_of(&mut child));
    }
    // Released on the way out.
    let shown = redquorum(&cluster, "status").arg("sig").output()?;
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(text.contains(": free on"), "{text}");
    Ok(())
}
