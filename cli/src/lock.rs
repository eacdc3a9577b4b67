//! `redquorum lock NAME -- CMD ARGS...`: runs CMD while holding the lock, extends it, and stops
//! CMD before the lock's validity runs out when it cannot be kept.

use std::ffi::OsString;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redquorum::{Error, LockGuard, Redlock};
use tokio::time::{Instant, sleep_until, timeout_at};

use crate::child::Job;
use crate::exit;
use crate::masters::Connection;
use crate::signals::Forwarded;

#[derive(clap::Args, Debug)]
pub struct LockArgs {
    #[command(flatten)]
    connection: Connection,
    /// The lock's name (the resource).
    name: String,
    /// Time to live of the lock on the masters; it is extended every third of it.
    #[arg(long, value_parser = crate::duration::parse, default_value = "30s")]
    ttl: Duration,
    /// Give up (exit 75) if the lock is not acquired within this time. Default: wait forever.
    #[arg(long, value_parser = crate::duration::parse, conflicts_with = "try_once")]
    wait: Option<Duration>,
    /// Try once; exit 75 at once if the lock is held.
    #[arg(long = "try", id = "try_once")]
    try_once: bool,
    /// Time between SIGTERM and SIGKILL when the command must be stopped. Default: a tenth of
    /// the TTL.
    #[arg(long, value_parser = crate::duration::parse)]
    grace: Option<Duration>,
    /// The command and its arguments.
    #[arg(required = true, last = true)]
    command: Vec<OsString>,
}

/// When the command must be stopped, relative to the lock's validity deadline.
struct Schedule {
    /// SIGTERM this long before the deadline: the grace plus the margin.
    term_before: Duration,
    /// SIGKILL this long before the deadline: what redquorum needs to notice a timer, send
    /// the signal and have the kernel end the process, on a loaded machine.
    kill_before: Duration,
    /// How often to extend while all is well, and to retry while an extension fails.
    extend_every: Duration,
    retry_every: Duration,
}

impl Schedule {
    fn new(args: &LockArgs) -> Result<Schedule, String> {
        let ttl = args.ttl;
        let grace = args.grace.unwrap_or(ttl / 10);
        let kill_before = (ttl / 20).max(args.connection.master_timeout() * 2);
        let schedule = Schedule {
            term_before: grace + kill_before,
            kill_before,
            extend_every: ttl / 3,
            retry_every: (ttl / 20).max(args.connection.master_timeout()),
        };
        // An extension that succeeds on time must leave the command running.
        if schedule.term_before >= ttl / 2 {
            return Err(format!(
                "grace {grace:?} plus the kill margin {kill_before:?} must be under half the ttl {ttl:?}"
            ));
        }
        Ok(schedule)
    }
}

/// Why the command is being stopped.
#[derive(Clone, Copy)]
enum Stop {
    /// A quorum of masters no longer holds the lock.
    Lost,
    /// No extension succeeded in time.
    Jeopardy,
}

pub async fn run(args: LockArgs) -> u8 {
    let schedule = match Schedule::new(&args) {
        Ok(s) => s,
        Err(why) => return fail(&why),
    };
    let redlock = match args.connection.connect().await {
        Ok(r) => r,
        Err(e) => return fail(&format!("cannot reach the masters: {e}")),
    };
    // Caught from here on: while waiting (so that an interrupted wait rolls its round back)
    // and with no gap before the command starts.
    let mut signals = match Forwarded::catch() {
        Ok(s) => s,
        Err(e) => return fail(&format!("cannot catch signals: {e}")),
    };
    let acquired = tokio::select! {
        got = acquire(&redlock, &args) => Ok(got),
        signal = signals.next() => Err(signal),
    };
    let guard = match acquired {
        Ok(Ok(guard)) => guard,
        Ok(Err(code)) => return code,
        Err(signal) => {
            // The dropped acquire rolls a round in flight back in the background: let those
            // calls leave before exiting, or its keys would block others for a whole TTL.
            tokio::time::sleep(args.connection.master_timeout() * 2).await;
            eprintln!("redquorum: interrupted while waiting for {:?}", args.name);
            return 128u8.saturating_add(signal as u8);
        }
    };
    let mut env = vec![("REDQUORUM_LOCK", args.name.clone())];
    if let Some(token) = guard.fencing_token() {
        env.push(("REDQUORUM_FENCING_TOKEN", token.to_string()));
    }
    let job = match Job::start(&args.command, &env) {
        Ok(job) => job,
        Err((code, why)) => {
            let _ = guard.release().await;
            eprintln!("redquorum: {why}");
            return code;
        }
    };
    supervise(guard, job, signals, &args, &schedule).await
}

/// Acquires the lock as asked; the exit code when it is not.
async fn acquire(redlock: &Redlock, args: &LockArgs) -> Result<LockGuard, u8> {
    let got = if args.try_once {
        redlock.try_acquire(&args.name, args.ttl).await
    } else {
        let wait = args.wait.unwrap_or(Duration::MAX);
        redlock
            .acquire_with_wait(&args.name, args.ttl, wait)
            .await
            .map(Some)
    };
    match got {
        Ok(Some(guard)) => Ok(guard),
        Ok(None) | Err(Error::Contended { .. }) => {
            eprintln!("redquorum: lock {:?} is busy", args.name);
            Err(exit::BUSY)
        }
        Err(e) => Err(fail(&format!("cannot acquire {:?}: {e}", args.name))),
    }
}

/// Runs until the command exits: extends the lock, forwards signals, and stops the command
/// (TERM, then KILL) before the validity deadline when the lock cannot be kept.
async fn supervise(
    mut guard: LockGuard,
    mut job: Job,
    mut signals: Forwarded,
    args: &LockArgs,
    schedule: &Schedule,
) -> u8 {
    let mut next_extend = Instant::now() + schedule.extend_every;
    // Once the command is being stopped: why, and when it gets SIGKILL.
    let mut stopping: Option<(Stop, Instant)> = None;
    let mut killed = false;
    let grace = schedule.term_before - schedule.kill_before;
    let status = loop {
        let deadline = guard.valid_until();
        let term_at = deadline
            .checked_sub(schedule.term_before)
            .unwrap_or(deadline);
        let kill_at = deadline
            .checked_sub(schedule.kill_before)
            .unwrap_or(deadline);
        let kill_time = stopping.map_or(kill_at, |(_, at)| at);
        tokio::select! {
            status = job.wait() => break status,
            signal = signals.next() => job.signal(signal),
            _ = sleep_until(next_extend), if stopping.is_none() => {
                // Bounded by the TERM time: a hanging round must not delay the stop.
                match timeout_at(term_at, guard.extend(args.ttl)).await {
                    Ok(Ok(())) => next_extend = Instant::now() + schedule.extend_every,
                    Ok(Err(Error::NotHeld { .. })) => {
                        // Gone now, whatever the local validity says: stop at once, KILL
                        // after the grace (never later than the kill margin).
                        stopping = Some((Stop::Lost, kill_at.min(Instant::now() + grace)));
                        job.signal(libc::SIGTERM);
                    }
                    // Jeopardy: validity is left; retry until the TERM time.
                    failed => {
                        if let Ok(Err(e)) = failed {
                            eprintln!("redquorum: lock {:?} in jeopardy, extension failed: {e}",
                                args.name);
                        }
                        next_extend = Instant::now() + schedule.retry_every;
                    }
                }
            }
            _ = sleep_until(term_at), if stopping.is_none() => {
                stopping = Some((Stop::Jeopardy, kill_at));
                job.signal(libc::SIGTERM);
            }
            _ = sleep_until(kill_time), if stopping.is_some() && !killed => {
                killed = true;
                job.signal(libc::SIGKILL);
            }
        }
    };
    let exited = Instant::now();
    if stopping.is_some() && !killed {
        // The command gave in to SIGTERM; whatever it started and left behind must not keep
        // running without the lock either.
        job.signal(libc::SIGKILL);
    }
    let deadline = guard.valid_until();
    // Give the lock back either way; a lost one only answers "not held".
    let _ = guard.release().await;
    let status = match status {
        Ok(status) => status,
        Err(e) => return fail(&format!("cannot wait for the command: {e}")),
    };
    match stopping {
        None => exit::of_child(status),
        Some((why, _)) => {
            report_stop(&args.name, why, exited, deadline);
            exit::LOST
        }
    }
}

/// Says on stderr why the command was stopped and how long before the validity deadline it
/// was gone (the figure tests and operators look at).
fn report_stop(name: &str, why: Stop, exited: Instant, deadline: Instant) {
    let why = match why {
        Stop::Lost => "was lost",
        Stop::Jeopardy => "could not be extended in time",
    };
    let now_wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let now = Instant::now();
    let before_ms = deadline.saturating_duration_since(exited).as_millis();
    let after_ms = exited.saturating_duration_since(deadline).as_millis();
    // The deadline on the wall clock, for comparison with other processes' observations.
    let deadline_unix_ms = if deadline >= now {
        now_wall + (deadline - now)
    } else {
        now_wall.saturating_sub(now - deadline)
    }
    .as_millis();
    eprintln!(
        "redquorum: lock {name:?} {why}; the command was stopped: exited {before_ms} ms before \
         the validity deadline (late_ms={after_ms} deadline_unix_ms={deadline_unix_ms})"
    );
}

fn fail(why: &str) -> u8 {
    eprintln!("redquorum: {why}");
    exit::FAILED
}
