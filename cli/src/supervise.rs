//! Running a command under a lease (a lock, a leadership): what `lock` and `elect` share. The
//! lease is kept alive (each kind its own way, behind [`Lease`]), signals are forwarded, and
//! when the lease cannot be kept the command is stopped (TERM, then KILL) **before** the
//! lease's validity deadline, not after it. Every signal that would end `redquorum` is caught
//! first (signals.rs), so the lease is never given back while the command runs.

use std::ffi::OsString;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::{Instant, sleep_until};

use crate::child::Job;
use crate::exit;
use crate::masters::show;
use crate::signals::{Action, Caught};

/// What the supervisor needs from a held lease.
pub trait Lease {
    /// What is held, for messages: `lock "x"`, `leadership of "x"`.
    fn describe(&self) -> String;
    /// The local validity deadline as of the last successful renewal.
    fn valid_until(&self) -> Instant;
    /// Keeps the lease alive until there is news of it: `Kept` after a renewal (the deadline
    /// moved), `Lost` when a quorum says it is gone. A renewal round must not run past
    /// `term_at`. Dropped whenever something else happens first, so it must be cancel-safe.
    fn next(&mut self, term_at: Instant) -> impl Future<Output = News>;
    /// Gives the lease back once the command has exited (a lost one only answers "not held").
    fn give_back(self) -> impl Future<Output = ()>;
}

/// What [`Lease::next`] learnt.
pub enum News {
    Kept,
    Lost,
}

/// When the command must be stopped, relative to the lease's validity deadline.
pub struct Schedule {
    /// SIGTERM this long before the deadline: the grace plus the margin.
    term_before: Duration,
    /// SIGKILL this long before the deadline: what redquorum needs to notice a timer, send
    /// the signal and have the kernel end the process, on a loaded machine.
    kill_before: Duration,
}

impl Schedule {
    /// `grace` (default a tenth of the TTL) between TERM and KILL; the KILL margin is
    /// max(TTL/20, 2 × the master timeout).
    pub fn new(
        ttl: Duration,
        grace: Option<Duration>,
        master_timeout: Duration,
    ) -> Result<Schedule, String> {
        let grace = grace.unwrap_or(ttl / 10);
        let kill_before = (ttl / 20).max(master_timeout * 2);
        let schedule = Schedule {
            term_before: grace + kill_before,
            kill_before,
        };
        // A renewal that succeeds on time (every third of the TTL) must leave the command
        // running.
        if schedule.term_before >= ttl / 2 {
            let most = (ttl / 2).saturating_sub(kill_before);
            return Err(format!(
                "--grace {}: too long for --ttl {} (the command is stopped grace + {} before the \
                 lock's validity ends, which must be under half the TTL): use a --grace under {}",
                show(grace),
                show(ttl),
                show(kill_before),
                show(most)
            ));
        }
        Ok(schedule)
    }

    fn grace(&self) -> Duration {
        self.term_before - self.kill_before
    }
}

/// Why the command is being stopped.
#[derive(Clone, Copy)]
enum Stop {
    /// A quorum of masters no longer holds the lease.
    Lost,
    /// No renewal succeeded in time.
    Jeopardy,
    /// A signal meant for `redquorum` itself (signals.rs).
    Signal(libc::c_int),
}

/// Waits for `acquiring` (an acquire or a campaign), unless a caught signal comes first:
/// then the exit code 128 + the signal, after a round in flight had time to be rolled back.
pub async fn interruptible<T>(
    acquiring: impl Future<Output = Result<T, u8>>,
    signals: &mut Caught,
    master_timeout: Duration,
    what: &str,
) -> Result<T, u8> {
    let signal = tokio::select! {
        got = acquiring => return got,
        signal = signals.next() => signal,
    };
    // The dropped acquire rolls a round in flight back in the background: let those calls
    // leave before exiting, or its keys would block others for a whole TTL.
    tokio::time::sleep(master_timeout * 2).await;
    eprintln!("redquorum: interrupted while waiting for {what}");
    Err(128u8.saturating_add(signal as u8))
}

/// Starts `command` with `env` and supervises it under `lease`; the exit code.
pub async fn run_command(
    lease: impl Lease,
    command: &[OsString],
    env: &[(&str, String)],
    signals: Caught,
    schedule: &Schedule,
) -> u8 {
    match Job::start(command, env) {
        Ok(job) => supervise(lease, job, signals, schedule).await,
        Err((code, why)) => {
            lease.give_back().await;
            eprintln!("redquorum: {why}");
            code
        }
    }
}

/// Runs until the command exits: keeps the lease, forwards signals, and stops the command
/// (TERM, then KILL) before the validity deadline when the lease cannot be kept.
async fn supervise(mut lease: impl Lease, mut job: Job, mut signals: Caught, s: &Schedule) -> u8 {
    // Once the command is being stopped: why, and when it gets SIGKILL.
    let mut stopping: Option<(Stop, Instant)> = None;
    let mut killed = false;
    let status = loop {
        let deadline = lease.valid_until();
        let term_at = deadline.checked_sub(s.term_before).unwrap_or(deadline);
        let kill_at = deadline.checked_sub(s.kill_before).unwrap_or(deadline);
        let kill_time = stopping.map_or(kill_at, |(_, at)| at);
        tokio::select! {
            status = job.wait() => break status,
            signal = signals.next() => match crate::signals::action(signal) {
                Action::Forward => {
                    tracing::info!(signal, "forwarding a signal to the command");
                    job.signal(signal);
                }
                Action::Stop if stopping.is_none() => {
                    stopping = Some((Stop::Signal(signal), kill_at.min(Instant::now() + s.grace())));
                    job.signal(libc::SIGTERM);
                }
                Action::Stop => {}
            },
            news = lease.next(term_at), if stopping.is_none() => {
                if let News::Lost = news {
                    // Gone now, whatever the local validity says: stop at once, KILL after
                    // the grace (never later than the kill margin).
                    stopping = Some((Stop::Lost, kill_at.min(Instant::now() + s.grace())));
                    job.signal(libc::SIGTERM);
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
    tracing::info!(?status, "the command exited; giving the lease back");
    // Whatever the command started and left behind in its group must not keep running
    // without the lease: killed before the lease is given back.
    job.finish();
    let deadline = lease.valid_until();
    let what = lease.describe();
    lease.give_back().await;
    let status = match status {
        Ok(status) => status,
        Err(e) => {
            eprintln!("redquorum: cannot wait for the command: {e}");
            return exit::FAILED;
        }
    };
    match stopping {
        None => exit::of_child(status),
        Some((Stop::Signal(signal), _)) => {
            eprintln!("redquorum: the command was stopped on signal {signal}; {what} given back");
            128u8.saturating_add(signal as u8)
        }
        Some((why, _)) => {
            report_stop(&what, why, exited, deadline);
            exit::LOST
        }
    }
}

/// Holds `lease` with no command (`lock NAME` alone): until a caught signal, then gives it
/// back and exits 0; or until it is lost or cannot be extended before the TERM time, then
/// exits [`exit::LOST`] (the holder of the fencing token must stop using it).
pub async fn hold(mut lease: impl Lease, mut signals: Caught, s: &Schedule) -> u8 {
    let why = loop {
        let deadline = lease.valid_until();
        let term_at = deadline.checked_sub(s.term_before).unwrap_or(deadline);
        tokio::select! {
            _ = signals.next() => {
                lease.give_back().await;
                return 0;
            }
            news = lease.next(term_at) => if let News::Lost = news {
                break "was lost";
            },
            _ = sleep_until(term_at) => break "could not be extended in time",
        }
    };
    let what = lease.describe();
    lease.give_back().await;
    eprintln!("redquorum: {what} {why}; stop using its fencing token");
    exit::LOST
}

/// Says on stderr why the command was stopped and how long before the validity deadline it
/// was gone (the figure tests and operators look at).
fn report_stop(what: &str, why: Stop, exited: Instant, deadline: Instant) {
    let why = match why {
        Stop::Lost => "was lost",
        Stop::Jeopardy => "could not be extended in time",
        Stop::Signal(_) => "was given back on a signal",
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
        "redquorum: {what} {why}; the command was stopped: exited {before_ms} ms before \
         the validity deadline (late_ms={after_ms} deadline_unix_ms={deadline_unix_ms})"
    );
}

/// What `lock` and `elect` set up before they wait: when to stop the command, the client, and
/// the signals, caught from here on (so that an interrupted wait rolls its round back, and no
/// gap is left before the command starts).
pub struct Setup {
    pub schedule: Schedule,
    pub redlock: redquorum::Redlock,
    pub signals: Caught,
}

/// Builds the [`Setup`]; on failure, the exit code (the reason is on stderr).
pub async fn set_up(
    connection: &crate::masters::Connection,
    ttl: Duration,
    grace: Option<Duration>,
    owner_id: Option<&str>,
) -> Result<Setup, u8> {
    connection
        .check(Some(ttl))
        .map_err(|why| fail(&format!("configuration error: {why}")))?;
    let schedule = Schedule::new(ttl, grace, connection.master_timeout())
        .map_err(|why| fail(&format!("configuration error: {why}")))?;
    let redlock = connection
        .connect(owner_id)
        .await
        .map_err(|e| crate::masters::connect_failed(&e))?;
    let signals = Caught::catch().map_err(|e| fail(&format!("cannot catch signals: {e}")))?;
    Ok(Setup {
        schedule,
        redlock,
        signals,
    })
}

/// Reports why redquorum itself failed; the exit code for it.
pub fn fail(why: &str) -> u8 {
    eprintln!("redquorum: {why}");
    exit::FAILED
}
