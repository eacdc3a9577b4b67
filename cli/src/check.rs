//! `redquorum check`: the masters self-check (eviction policy, persistence, version, run id)
//! as a table, with an exit code a script or a deployment check can test.

use redquorum::MastersReport;

use crate::exit;
use crate::masters::Connection;

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Exit status: 0 every master told its policy and none evicts; 1 a master \
    may evict lock keys before they expire; 2 a master could not be checked; 125 redquorum \
    failed (configuration, masters unreachable)."
)]
pub struct CheckArgs {
    #[command(flatten)]
    connection: Connection,
}

/// A master's `maxmemory-policy` evicts keys: a lock can be granted twice under memory
/// pressure. Takes precedence over [`UNCHECKED`].
pub const EVICTING: u8 = 1;
/// No evicting master was found, but at least one master could not be checked (down, timed
/// out, denied) or did not tell its policy.
pub const UNCHECKED: u8 = 2;

pub async fn run(args: CheckArgs) -> u8 {
    if let Err(why) = args.connection.check(None) {
        eprintln!("redquorum: configuration error: {why}");
        return exit::FAILED;
    }
    let redlock = match args.connection.connect(None).await {
        Ok(r) => r,
        Err(e) => return crate::masters::connect_failed(&e),
    };
    let report = redlock.masters_report().await;
    print!("{report}");
    let code = verdict(&report);
    match code {
        EVICTING => eprintln!("redquorum: a master may evict lock keys before they expire"),
        UNCHECKED => eprintln!("redquorum: not every master could be checked"),
        _ => {}
    }
    code
}

/// The exit code for `report`: 0 when every master told its policy and none evicts.
/// Persistence remarks are printed but do not count: whether a master without an append-only
/// file is safe depends on the clients' restart quarantine, which this command cannot know.
fn verdict(report: &MastersReport) -> u8 {
    if report.first_evicting().is_some() {
        return EVICTING;
    }
    let all_known = report
        .masters
        .iter()
        .all(|m| m.settings.as_ref().is_ok_and(|s| s.evicts().is_some()));
    if all_known { 0 } else { UNCHECKED }
}
