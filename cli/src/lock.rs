//! `redquorum lock NAME -- CMD ARGS...`: runs CMD while holding the lock, extends it, and stops
//! CMD before the lock's validity runs out when it cannot be kept.

use std::ffi::OsString;
use std::time::Duration;

use redquorum::{Error, LockGuard, Redlock};
use tokio::time::{Instant, sleep_until, timeout_at};

use crate::exit;
use crate::masters::Connection;
use crate::supervise::{Lease, News, Setup, fail, interruptible, run_command, set_up};

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

/// How often the lock is extended while all is well, and retried while an extension fails.
struct Cadence {
    extend_every: Duration,
    retry_every: Duration,
}

pub async fn run(args: LockArgs) -> u8 {
    let timeout = args.connection.master_timeout();
    let Setup {
        schedule,
        redlock,
        mut signals,
    } = match set_up(&args.connection, args.ttl, args.grace).await {
        Ok(setup) => setup,
        Err(code) => return code,
    };
    let what = format!("{:?}", args.name);
    let guard = match interruptible(acquire(&redlock, &args), &mut signals, timeout, &what).await {
        Ok(guard) => guard,
        Err(code) => return code,
    };
    let mut env = vec![("REDQUORUM_LOCK", args.name.clone())];
    if let Some(token) = guard.fencing_token() {
        env.push(("REDQUORUM_FENCING_TOKEN", token.to_string()));
    }
    let cadence = Cadence {
        extend_every: args.ttl / 3,
        retry_every: (args.ttl / 20).max(timeout),
    };
    let lock = HeldLock {
        next_extend: Instant::now() + cadence.extend_every,
        guard,
        name: args.name.clone(),
        ttl: args.ttl,
        cadence,
    };
    run_command(lock, &args.command, &env, signals, &schedule).await
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

/// The lock while the command runs: `redquorum` extends it itself, on its own schedule.
struct HeldLock {
    guard: LockGuard,
    name: String,
    ttl: Duration,
    cadence: Cadence,
    next_extend: Instant,
}

impl Lease for HeldLock {
    fn describe(&self) -> String {
        format!("lock {:?}", self.name)
    }

    fn valid_until(&self) -> Instant {
        self.guard.valid_until()
    }

    async fn next(&mut self, term_at: Instant) -> News {
        loop {
            sleep_until(self.next_extend).await;
            // Bounded by the TERM time: a hanging round must not delay the stop. (Cancelled
            // half-way, an extension changes nothing locally: the guard's validity moves only
            // when a round completes.)
            match timeout_at(term_at, self.guard.extend(self.ttl)).await {
                Ok(Ok(())) => {
                    self.next_extend = Instant::now() + self.cadence.extend_every;
                    return News::Kept;
                }
                Ok(Err(Error::NotHeld { .. })) => return News::Lost,
                // Jeopardy: validity is left; retry until the TERM time.
                failed => {
                    if let Ok(Err(e)) = failed {
                        eprintln!(
                            "redquorum: lock {:?} in jeopardy, extension failed: {e}",
                            self.name
                        );
                    }
                    self.next_extend = Instant::now() + self.cadence.retry_every;
                }
            }
        }
    }

    async fn give_back(self) {
        let _ = self.guard.release().await;
    }
}
