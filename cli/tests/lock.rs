//! The real `redquorum` binary against five real masters: exclusion between invocations,
//! the command stopped before the validity deadline when a majority pauses, exit codes, and
//! signal forwarding.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use support::{
    assert_distinct_names_overlap, assert_stopped_when_deleted, delete_everywhere,
    exclusive_sections, group_alive, group_in, paused_majority, redquorum, scratch, stderr_of,
    wait_for, wait_for_file,
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
    // No overlap, and fencing tokens increase in the order the sections ran.
    let found = exclusive_sections(
        &mut children,
        Duration::from_secs(90),
        &log,
        "critical sections ran",
    )?;
    assert_eq!(found.len(), RUNS, "{found:?}");

    // The check can fail: the same children on distinct locks do overlap.
    assert_distinct_names_overlap(&cluster, "lock", "2s", LOGGING_CHILD, &dir.join("control"))
}

/// The worst case: a majority of masters paused (SIGSTOP) while the command runs, and a command
/// that ignores SIGTERM. The command (its whole process group) must be gone before the lock's
/// validity deadline: `redquorum` must KILL it in time, not at or after the TTL.
#[test]
fn a_paused_majority_stops_the_command_before_validity_ends() -> anyhow::Result<()> {
    let cluster = Cluster::start(5)?;
    let run = paused_majority(&cluster, "lock")?;
    println!(
        "paused majority: command gone {} ms after the pause, {} ms before redquorum's validity \
         deadline (as seen by the test), {} ms before pause + ttl; redquorum: {}",
        run.died_at - run.paused_at,
        run.deadline - run.died_at,
        run.bound - run.died_at,
        run.stderr.trim()
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
    assert_stopped_when_deleted(&cluster, "lock", "redquorum:lock:victim", &dir)?;

    // Lost again, with a command that obeys SIGTERM but left a child behind that ignores it:
    // that child must not outlive redquorum (it would keep working without the lock).
    let pidfile = dir.join("straggler");
    let mut victim = redquorum(&cluster, "lock")
        .args(["victim", "--ttl", "1500ms", "--", "sh", "-c"])
        .arg(r#"(trap "" TERM; exec sleep 60) & echo $$ > "$1"; wait"#)
        .args(["v"])
        .arg(&pidfile)
        .spawn()?;
    let pgid = group_in(&pidfile);
    delete_everywhere(&cluster, "redquorum:lock:victim")?;
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
