//! `redquorum lock NAME -- CMD ARGS...`: runs CMD while holding the lock, extends it, and stops
//! CMD before the lock's validity runs out when it cannot be kept.

use std::ffi::OsString;
use std::time::Duration;

use redquorum::{Error, LockGuard, Redlock};
use tokio::time::{Instant, sleep_until, timeout_at};

use crate::exit;
use crate::masters::Connection;
use crate::supervise::{Lease, News, Setup, fail, hold, interruptible, run_command, set_up};

#[derive(clap::Args, Debug)]
#[command(after_help = crate::exit::LOCK_HELP)]
pub struct LockArgs {
    #[command(flatten)]
    connection: Connection,
    /// The lock's name (the resource).
    name: String,
    /// Time to live of the lock on the masters; it is extended every third of it. At least
    /// ten times --master-timeout (500ms with the default 50ms), at most 1 day.
    #[arg(long, value_parser = crate::duration::parse, default_value = "30s",
          allow_hyphen_values = true)]
    ttl: Duration,
    /// Give up (exit 75) if the lock is not acquired within this time. Default: wait forever.
    #[arg(long, value_parser = crate::duration::parse, conflicts_with = "try_once",
          allow_hyphen_values = true)]
    wait: Option<Duration>,
    /// Try once; exit 75 at once if the lock is held.
    #[arg(long = "try", id = "try_once")]
    try_once: bool,
    /// Time between SIGTERM and SIGKILL when the command must be stopped. Default: a tenth of
    /// the TTL.
    #[arg(long, value_parser = crate::duration::parse, allow_hyphen_values = true)]
    grace: Option<Duration>,
    /// Who holds the lock, as `status` and the busy message of a rival show it. Default:
    /// hostname/pid. Recorded by the plain lock only (not --shared, --exclusive, --limit).
    #[arg(long)]
    owner_id: Option<String>,
    /// A read lock of the read-write lock NAME (like `flock -s`): shared with other
    /// `--shared` holders, excluded by `--exclusive` ones. Not excluded by a plain `lock
    /// NAME`, which is another lock.
    #[arg(long, conflicts_with_all = ["exclusive", "limit"])]
    shared: bool,
    /// The write lock of the read-write lock NAME: excludes every `--shared` and `--exclusive`
    /// holder of NAME (waiting writers keep new readers out).
    #[arg(long, conflicts_with = "limit")]
    exclusive: bool,
    /// A semaphore: at most N holders of NAME at once (like `consul lock -n`). Every holder
    /// must use the same N.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    limit: Option<u32>,
    /// The exit code when the lock is busy (`--try`, `--wait` ran out), instead of 75 (like
    /// `flock -E`).
    #[arg(long, value_name = "CODE", default_value_t = exit::BUSY)]
    conflict_exit_code: u8,
    /// The command and its arguments. Without one, the lock is held until SIGINT or SIGTERM
    /// (or another caught signal) and its fencing token printed on stdout.
    #[arg(last = true)]
    command: Vec<OsString>,
}

impl LockArgs {
    /// What kind of lock, for messages.
    fn kind(&self) -> &'static str {
        if self.shared {
            "read lock"
        } else if self.exclusive {
            "write lock"
        } else if self.limit.is_some() {
            "semaphore"
        } else {
            "lock"
        }
    }
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
    } = match set_up(
        &args.connection,
        args.ttl,
        args.grace,
        args.owner_id.as_deref(),
    )
    .await
    {
        Ok(setup) => setup,
        Err(code) => return code,
    };
    let what = format!("{} {:?}", args.kind(), args.name);
    let guard = match interruptible(acquire(&redlock, &args), &mut signals, timeout, &what).await {
        Ok(guard) => guard,
        Err(code) => return code,
    };
    tracing::info!(token = ?guard.fencing_token(), "acquired {what}");
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
        name: what,
        ttl: args.ttl,
        cadence,
    };
    if args.command.is_empty() {
        use std::io::Write;
        let token = lock
            .guard
            .fencing_token()
            .map_or("-".to_owned(), |t| t.to_string());
        let mut out = std::io::stdout();
        let _ = writeln!(out, "{token}").and_then(|()| out.flush());
        return hold(lock, signals, &schedule).await;
    }
    run_command(lock, &args.command, &env, signals, &schedule).await
}

/// Acquires the lock as asked; the exit code when it is not.
async fn acquire(redlock: &Redlock, args: &LockArgs) -> Result<LockGuard, u8> {
    let (name, ttl) = (args.name.as_str(), args.ttl);
    let got = if args.try_once {
        if args.shared {
            redlock.rw_lock(name).try_read(ttl).await
        } else if args.exclusive {
            redlock.rw_lock(name).try_write(ttl).await
        } else if let Some(n) = args.limit {
            redlock.semaphore(name, n).try_acquire(ttl).await
        } else {
            redlock.try_acquire(name, ttl).await
        }
    } else {
        let wait = args.wait.unwrap_or(Duration::MAX);
        if args.shared {
            redlock
                .rw_lock(name)
                .read(redquorum::LockOptions::new(ttl).wait(wait))
                .await
        } else if args.exclusive {
            redlock
                .rw_lock(name)
                .write(redquorum::LockOptions::new(ttl).wait(wait))
                .await
        } else if let Some(n) = args.limit {
            redlock
                .semaphore(name, n)
                .acquire(redquorum::LockOptions::new(ttl).wait(wait))
                .await
        } else {
            redlock
                .acquire(name, redquorum::LockOptions::new(ttl).wait(wait))
                .await
        }
        .map(Some)
    };
    match got {
        Ok(Some(guard)) => Ok(guard),
        Ok(None) | Err(Error::Contended { .. }) => {
            // Who holds it, where the library can tell: the plain lock's owner id, a
            // semaphore's free permits (the read-write lock has no inspection).
            let holder = if let Some(n) = args.limit {
                match redlock.semaphore(name, n).available().await {
                    Ok(free) => format!(": {free} of {n} permits free"),
                    Err(_) => String::new(),
                }
            } else if args.shared || args.exclusive {
                String::new()
            } else {
                crate::status::holder_of(redlock, name).await
            };
            eprintln!("redquorum: {} {name:?} is busy{holder}", args.kind());
            Err(args.conflict_exit_code)
        }
        Err(e) => Err(fail(&format!(
            "cannot acquire {} {name:?}: {e}",
            args.kind()
        ))),
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
        self.name.clone()
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
                            "redquorum: {} in jeopardy, extension failed: {e}",
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
