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
pub struct ElectArgs {
    #[command(flatten)]
    connection: Connection,
    /// The election's name.
    name: String,
    /// Time to live of the leadership on the masters; it is extended every third of it. A
    /// leader that vanishes without resigning is replaced within about this time.
    #[arg(long, value_parser = crate::duration::parse, default_value = "10s")]
    ttl: Duration,
    /// What this candidate publishes as the leader's value while it leads. Default: the
    /// owner id (hostname/pid unless --owner-id).
    #[arg(long)]
    value: Option<String>,
    /// Give up (exit 75) if this candidate does not lead within this time. Default: wait
    /// forever.
    #[arg(long, value_parser = crate::duration::parse)]
    wait: Option<Duration>,
    /// Time between SIGTERM and SIGKILL when the command must be stopped. Default: a tenth of
    /// the TTL.
    #[arg(long, value_parser = crate::duration::parse)]
    grace: Option<Duration>,
    /// The command and its arguments.
    #[arg(required = true, last = true)]
    command: Vec<OsString>,
}

pub async fn run(args: ElectArgs) -> u8 {
    let timeout = args.connection.master_timeout();
    let Setup {
        schedule,
        redlock,
        mut signals,
    } = match set_up(&args.connection, args.ttl, args.grace).await {
        Ok(setup) => setup,
        Err(code) => return code,
    };
    let what = format!("the leadership of {:?}", args.name);
    let leadership =
        match interruptible(campaign(&redlock, &args), &mut signals, timeout, &what).await {
            Ok(leadership) => leadership,
            Err(code) => return code,
        };
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
        .unwrap_or_else(|| args.connection.owner_id());
    let election = redlock.election(&args.name).ttl(args.ttl);
    let wait = args.wait.unwrap_or(Duration::MAX);
    match election.campaign_with_wait(value, wait).await {
        Ok(leadership) => Ok(leadership),
        Err(Error::Contended { .. }) => {
            eprintln!(
                "redquorum: election {:?}: another leader held on",
                args.name
            );
            Err(exit::BUSY)
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
