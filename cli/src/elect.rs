//! `redquorum elect NAME -- CMD ARGS...`: campaigns until this process leads, runs CMD only
//! while it leads (stopped before the leadership's validity runs out when it cannot be kept),
//! and resigns when CMD exits, so the next candidate takes over at once.

use std::ffi::OsString;
use std::time::Duration;

use redquorum::{Error, Leadership, LeaseState, Redlock};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::exit;
use crate::masters::Connection;
use crate::supervise::{Lease, News, Setup, fail, interruptible, run_command, set_up};

#[derive(clap::Args, Debug)]
#[command(after_help = crate::exit::ELECT_HELP)]
pub struct ElectArgs {
    #[command(flatten)]
    connection: Connection,
    /// The election's name.
    name: String,
    /// Time to live of the leadership on the masters; it is extended every third of it. A
    /// leader that vanishes without resigning is replaced within about this time. At least
    /// ten times --master-timeout (500ms with the default 50ms), at most 1 day.
    #[arg(long, value_parser = crate::duration::parse, default_value = "10s",
          allow_hyphen_values = true)]
    ttl: Duration,
    /// What this candidate publishes as the leader's value while it leads (what `status`
    /// and `--listen` show). Default: hostname/pid.
    #[arg(long)]
    value: Option<String>,
    /// Give up (exit 75) if this candidate does not lead within this time. Default: wait
    /// forever.
    #[arg(long, value_parser = crate::duration::parse, conflicts_with = "try_once",
          allow_hyphen_values = true)]
    wait: Option<Duration>,
    /// Campaign once; exit 75 at once if another candidate leads.
    #[arg(long = "try", id = "try_once")]
    try_once: bool,
    /// Time between SIGTERM and SIGKILL when the command must be stopped. Default: a tenth of
    /// the TTL.
    #[arg(long, value_parser = crate::duration::parse, allow_hyphen_values = true)]
    grace: Option<Duration>,
    /// The exit code when another candidate leads (`--try`, `--wait` ran out), instead of 75.
    #[arg(long, value_name = "CODE", default_value_t = exit::BUSY)]
    conflict_exit_code: u8,
    /// Do not campaign: print the leader ("TERM VALUE", or "none") now and each time it
    /// changes, until interrupted (like `etcdctl elect --listen`).
    #[arg(long, conflicts_with_all = ["try_once", "wait", "value"])]
    listen: bool,
    /// The command and its arguments.
    #[arg(required_unless_present = "listen", last = true)]
    command: Vec<OsString>,
}

pub async fn run(args: ElectArgs) -> u8 {
    let timeout = args.connection.master_timeout();
    let Setup {
        schedule,
        redlock,
        mut signals,
    } = match set_up(&args.connection, args.ttl, args.grace, None).await {
        Ok(setup) => setup,
        Err(code) => return code,
    };
    if args.listen {
        return listen(&redlock, &args.name, &mut signals).await;
    }
    let what = format!("the leadership of {:?}", args.name);
    let leadership =
        match interruptible(campaign(&redlock, &args), &mut signals, timeout, &what).await {
            Ok(leadership) => leadership,
            Err(code) => return code,
        };
    tracing::info!(term = leadership.term(), "acquired {what}");
    let env = [
        ("REDQUORUM_ELECTION", args.name.clone()),
        ("REDQUORUM_TERM", leadership.term().to_string()),
    ];
    let leading = Leading {
        states: leadership.states(),
        deadline: leadership.deadlines(),
        leadership,
        name: args.name.clone(),
    };
    run_command(leading, &args.command, &env, signals, &schedule).await
}

/// Campaigns as asked; the exit code when this candidate does not lead.
async fn campaign(redlock: &Redlock, args: &ElectArgs) -> Result<Leadership, u8> {
    let value = args
        .value
        .clone()
        .unwrap_or_else(redquorum::default_owner_id);
    let election = redlock.election(&args.name);
    // A zero wait is one round: the library does not start a second one past the deadline.
    let wait = if args.try_once {
        Duration::ZERO
    } else {
        args.wait.unwrap_or(Duration::MAX)
    };
    let options = redquorum::LockOptions::new(args.ttl).wait(wait);
    match election.campaign(value, options).await {
        Ok(leadership) => Ok(leadership),
        Err(Error::Contended { .. }) => {
            let leader = match election.leader().await {
                Ok(Some(l)) => format!(": {:?} leads (term {})", l.value, l.term),
                _ => String::new(),
            };
            eprintln!(
                "redquorum: election {:?}: another leader held on{leader}",
                args.name
            );
            Err(args.conflict_exit_code)
        }
        Err(e) => Err(fail(&format!("cannot campaign in {:?}: {e}", args.name))),
    }
}

/// The leadership while the command runs: the library's watchdog extends it; this follows
/// the watchdog's signals.
struct Leading {
    leadership: Leadership,
    states: watch::Receiver<LeaseState>,
    /// Moves at every successful renewal (the state does not change then).
    deadline: watch::Receiver<Instant>,
    name: String,
}

impl Lease for Leading {
    fn describe(&self) -> String {
        format!("leadership of {:?}", self.name)
    }

    fn valid_until(&self) -> Instant {
        *self.deadline.borrow()
    }

    async fn next(&mut self, _term_at: Instant) -> News {
        loop {
            // Both are cancel-safe. The watchdog gone without saying so cannot be trusted:
            // lost.
            let changed = tokio::select! {
                renewed = self.deadline.changed() => match renewed {
                    Ok(()) => return News::Kept,
                    Err(_) => Err(()),
                },
                state = self.states.changed() => state.map_err(|_| ()),
            };
            if changed.is_err() {
                return News::Lost;
            }
            let state = *self.states.borrow_and_update();
            match state {
                LeaseState::Held => return News::Kept,
                LeaseState::Lost => return News::Lost,
                // Validity is left; the supervisor stops the command at the TERM time unless
                // a renewal succeeds before it.
                LeaseState::Jeopardy => eprintln!(
                    "redquorum: leadership of {:?} in jeopardy, a renewal failed",
                    self.name
                ),
                LeaseState::Capped => eprintln!(
                    "redquorum: leadership of {:?} reached its extension cap",
                    self.name
                ),
            }
        }
    }

    async fn give_back(self) {
        let _ = self.leadership.resign().await;
    }
}

/// `elect --listen`: the leader now and at each change, one line each, until a caught signal
/// (exit 0).
async fn listen(redlock: &Redlock, name: &str, signals: &mut crate::signals::Caught) -> u8 {
    use futures::StreamExt;
    use std::io::Write;
    let changes = match redlock.election(name).observe() {
        Ok(changes) => changes,
        Err(e) => return fail(&format!("cannot observe the election: {e}")),
    };
    let mut changes = std::pin::pin!(changes);
    loop {
        let change = tokio::select! {
            _ = signals.next() => return 0,
            change = changes.next() => change,
        };
        let line = match change {
            Some(Some(leader)) => format!("{} {}", leader.term, leader.value),
            Some(None) => "none".to_owned(),
            None => return fail("the leader's observation ended"),
        };
        let mut out = std::io::stdout();
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            return 0;
        }
    }
}
