//! The real `redquorum elect` against five real masters: candidates never run their commands at
//! once, the next one takes over right after a command exits (resignation), terms strictly
//! increase, the leader's command is stopped before the validity deadline when a majority
//! pauses, a leadership deleted behind its back stops the command, exit codes and signals.

mod support;

use std::time::{Duration, Instant};

use support::{
    assert_distinct_names_overlap, assert_stopped_when_deleted, exclusive_sections,
    paused_majority, redquorum, scratch, stderr_of, wait_for, wait_for_file,
};
use testcluster::Cluster;

/// A child that logs its start and end (wall clock, ns) with its term and the election's name
/// from the environment, around a section of `$2` seconds (log file: `$1`).
const LOGGING_CHILD: &str = r#"echo "S $(date +%s%N) ${REDQUORUM_TERM:-none}" >> "$1"; [ -n "$REDQUORUM_ELECTION" ] || exit 3; sleep "$2"; echo "E $(date +%s%N) ${REDQUORUM_TERM:-none}" >> "$1""#;

fn median(mut values: Vec<u128>) -> u128 {
    values.sort();
    values[values.len() / 2]
}

#[test]
fn candidates_lead_one_at_a_time_and_hand_over_on_resign() -> anyhow::Result<()> {
    const CANDIDATES: usize = 11;
    let cluster = Cluster::start(5)?;
    let dir = scratch("elect-handover");
    let log = dir.join("log");
    let mut children = Vec::new();
    for i in 0..CANDIDATES {
        let mut cmd = redquorum(&cluster, "elect");
        // A 10 s TTL: a takeover by expiry instead of resignation could not happen within
        // the bound asserted below.
        cmd.args([
            "leader",
            "--ttl",
            "10s",
            "--value",
            &format!("candidate-{i}"),
        ])
        .args(["--", "sh", "-c", LOGGING_CHILD, "child"])
        .arg(&log)
        .arg("0.3");
        children.push(cmd.spawn()?);
    }
    // Never two leaders, and terms strictly increase in the order the leaders ran.
    let found = exclusive_sections(
        &mut children,
        Duration::from_secs(120),
        &log,
        "two leaders ran",
    )?;
    assert_eq!(found.len(), CANDIDATES, "{found:?}");
    // Hand-over: from one command's end to the next one's start (both logged by the children,
    // so this includes the resignation, the wake-up, the campaign and starting `sh`).
    let gaps_ms: Vec<u128> = found
        .windows(2)
        .map(|w| (w[1].0 - w[0].1) / 1_000_000)
        .collect();
    println!(
        "elect hand-over after resign (command end to next command start): median {} ms, max {} ms, all {gaps_ms:?}",
        median(gaps_ms.clone()),
        gaps_ms.iter().max().unwrap()
    );
    // Far below the 10 s TTL: the leadership was resigned, not left to expire.
    assert!(
        gaps_ms.iter().all(|&g| g < 3000),
        "a hand-over waited for the TTL: {gaps_ms:?}"
    );

    // The check can fail: the same children in distinct elections do run at once.
    assert_distinct_names_overlap(
        &cluster,
        "elect",
        "10s",
        LOGGING_CHILD,
        &dir.join("control"),
    )
}

/// The worst case for a leader: a majority of masters paused while its command runs, and a
/// command that ignores SIGTERM. The command's process group must be gone before the
/// leadership's validity deadline.
#[test]
fn a_paused_majority_stops_the_leaders_command_before_validity_ends() -> anyhow::Result<()> {
    let cluster = Cluster::start(5)?;
    let run = paused_majority(&cluster, "elect")?;
    let (stderr, died_at, deadline) = (&run.stderr, run.died_at, run.deadline);
    assert!(stderr.contains("leadership of \"paused\""), "{stderr}");
    // Nor much earlier: the command ignores SIGTERM, so it can only die of the SIGKILL, due
    // at the deadline less the kill margin (200 ms here); TERM was due 300 ms before that.
    // Stopping at a stale deadline (one not moved by the renewals) would be far earlier.
    assert!(
        deadline - died_at < 600,
        "stopped {} ms before the deadline: too early",
        deadline - died_at
    );
    println!(
        "elect, paused majority: command gone {} ms after the pause, {} ms before redquorum's \
         validity deadline (as seen by the test), {} ms before pause + ttl; redquorum: {}",
        died_at - run.paused_at,
        deadline - died_at,
        run.bound - died_at,
        stderr.trim()
    );
    Ok(())
}

#[test]
fn exit_codes_signals_and_a_deleted_leadership() -> anyhow::Result<()> {
    let cluster = Cluster::start(5)?;
    let dir = scratch("elect-codes");
    let run = |args: &[&str]| -> anyhow::Result<(Option<i32>, String, Duration)> {
        let started = Instant::now();
        let mut child = redquorum(&cluster, "elect").args(args).spawn()?;
        let status = wait_for(&mut child, Duration::from_secs(60));
        Ok((status.code(), stderr_of(&mut child), started.elapsed()))
    };
    // A leader whose renewals succeed keeps running for many TTLs (each renewal moves the
    // stop times).
    let (code, err, took) = run(&["long", "--ttl", "1s", "--", "sleep", "3.5"])?;
    assert_eq!(code, Some(0), "stopped after {took:?}: {err}");
    // The child's status passes through, and the environment names the election and term.
    assert_eq!(run(&["codes", "--", "sh", "-c", "exit 7"])?.0, Some(7));
    let (code, err, _) = run(&[
        "codes",
        "--",
        "sh",
        "-c",
        r#"[ "$REDQUORUM_ELECTION" = codes ] && [ "$REDQUORUM_TERM" -gt 0 ]"#,
    ])?;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        run(&["codes", "--", "sh", "-c", "kill -9 $$"])?.0,
        Some(137)
    );
    assert_eq!(run(&["codes", "--", "/nonexistent/cmd"])?.0, Some(127));
    // Each run resigned: a candidate with a short wait leads at once.
    let (code, err, took) = run(&["codes", "--wait", "2s", "--", "true"])?;
    assert_eq!(code, Some(0), "{err}");
    assert!(took < Duration::from_secs(2), "{took:?}");

    // Busy: another process leads for longer than --wait.
    let mark = dir.join("leading");
    let mut leader = redquorum(&cluster, "elect")
        .args(["codes", "--ttl", "5s", "--", "sh", "-c"])
        .arg(r#"trap "exit 42" TERM; echo x > "$1"; while :; do sleep 0.05; done"#)
        .arg("l")
        .arg(&mark)
        .spawn()?;
    wait_for_file(&mark, Duration::from_secs(30));
    let (code, err, took) = run(&["codes", "--wait", "700ms", "--", "true"])?;
    assert_eq!(code, Some(75), "{err}");
    assert!(took >= Duration::from_millis(700), "{took:?}");
    // A candidate interrupted while campaigning exits 128 + the signal without running CMD.
    let ran = dir.join("waiter-ran");
    let mut waiter = redquorum(&cluster, "elect")
        .args(["codes", "--", "sh", "-c", r#"echo x > "$1""#, "w"])
        .arg(&ran)
        .spawn()?;
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: kill(2) on a process this test started.
    unsafe { libc::kill(waiter.id() as i32, libc::SIGINT) };
    let status = wait_for(&mut waiter, Duration::from_secs(5));
    assert_eq!(status.code(), Some(130), "{}", stderr_of(&mut waiter));
    assert!(!ran.exists(), "an interrupted candidate ran its command");
    // SIGTERM to redquorum reaches the command, whose status is reported.
    // SAFETY: as above.
    unsafe { libc::kill(leader.id() as i32, libc::SIGTERM) };
    let status = wait_for(&mut leader, Duration::from_secs(30));
    assert_eq!(status.code(), Some(42), "{}", stderr_of(&mut leader));

    // Lost: the leadership vanishes from every master (an operator's DEL, data loss); the
    // next renewal finds it gone and the command is stopped at once, long before the TTL.
    assert_stopped_when_deleted(&cluster, "elect", "redquorum:election:victim", &dir)?;

    // Bad arguments are redquorum's own failure.
    assert_eq!(run(&["codes", "--ttl", "10ms", "--", "true"])?.0, Some(125));
    assert_eq!(
        run(&["codes", "--ttl", "1s", "--grace", "600ms", "--", "true"])?.0,
        Some(125)
    );
    Ok(())
}
