//! `redquorum status NAME`: who holds the lock NAME, per master and over the quorum, and who
//! leads the election NAME (advisory snapshots).

use redquorum::{Inspection, MasterView, QuorumView, Redlock};

use crate::exit;
use crate::masters::Connection;

/// The lock is held (by a quorum) or the election has a leader.
pub const HELD: u8 = 0;
/// A quorum says the lock is free, and the election has no leader.
pub const FREE: u8 = 1;
/// Neither can be told: the masters disagree or too few answered.
pub const UNKNOWN: u8 = 2;

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Exit status: 0 held (the lock, or the election has a leader); 1 free; \
    2 unknown (masters disagree or too few answered); 125 redquorum failed (configuration, \
    masters unreachable)."
)]
pub struct StatusArgs {
    #[command(flatten)]
    connection: Connection,
    /// The lock's (and the election's) name.
    name: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: StatusArgs) -> u8 {
    if let Err(why) = args.connection.check(None) {
        eprintln!("redquorum: configuration error: {why}");
        return exit::FAILED;
    }
    let redlock = match args.connection.connect(None).await {
        Ok(r) => r,
        Err(e) => return crate::masters::connect_failed(&e),
    };
    let inspection = match redlock.inspect(&args.name).await {
        Ok(i) => i,
        Err(e) => {
            eprintln!("redquorum: cannot inspect {:?}: {e}", args.name);
            return exit::FAILED;
        }
    };
    // `Err`: fewer than a quorum answered, the leader is unknown.
    let leader = redlock.election(&args.name).leader_lease().await;
    let code = match (&inspection.quorum, &leader) {
        (QuorumView::Held { .. }, _) | (_, Ok(Some(_))) => HELD,
        (QuorumView::Free { .. }, Ok(None)) => FREE,
        _ => UNKNOWN,
    };
    if args.json {
        println!("{}", json(&redlock, &inspection, &leader));
        return code;
    }
    println!(
        "lock {:?}: {} (quorum {} of {}; advisory snapshot)",
        inspection.resource,
        inspection.quorum,
        redlock.quorum(),
        redlock.masters()
    );
    for (i, view) in inspection.masters.iter().enumerate() {
        println!("  master {i}: {view}");
    }
    match &leader {
        Ok(Some((l, left))) => println!(
            "election {:?}: led by {:?}, term {}, lease {} ms left",
            args.name,
            l.value,
            l.term,
            left.as_millis()
        ),
        Ok(None) => println!("election {:?}: no leader", args.name),
        Err(e) => println!("election {:?}: unknown ({e})", args.name),
    }
    code
}

fn json(
    redlock: &Redlock,
    inspection: &Inspection,
    leader: &redquorum::Result<Option<(redquorum::Leader, std::time::Duration)>>,
) -> serde_json::Value {
    use serde_json::json;
    let ms = |d: &Option<std::time::Duration>| d.map(|d| d.as_millis() as u64);
    let quorum = match &inspection.quorum {
        QuorumView::Held {
            owner_id,
            masters,
            remaining,
        } => json!({"state": "held", "owner_id": owner_id, "masters": masters,
                    "remaining_ms": ms(remaining)}),
        QuorumView::Free { masters } => json!({"state": "free", "masters": masters}),
        QuorumView::Unknown => json!({"state": "unknown"}),
    };
    let masters: Vec<_> = inspection
        .masters
        .iter()
        .map(|view| match view {
            MasterView::Free => json!({"state": "free"}),
            MasterView::Held(h) => json!({"state": "held", "owner_id": h.owner_id,
                                          "remaining_ms": ms(&h.remaining)}),
            MasterView::Unknown(why) => json!({"state": "unknown", "error": why.to_string()}),
        })
        .collect();
    let election = match leader {
        Ok(Some((l, left))) => json!({"state": "led", "leader": l.value, "term": l.term,
                                       "lease_remaining_ms": left.as_millis() as u64}),
        Ok(None) => json!({"state": "none"}),
        Err(e) => json!({"state": "unknown", "error": e.to_string()}),
    };
    json!({
        "name": inspection.resource,
        "quorum": redlock.quorum(),
        "masters_total": redlock.masters(),
        "lock": quorum,
        "masters": masters,
        "election": election,
    })
}

/// `", held by X (N ms left)"` for a busy message: who holds the basic lock `name`, as a
/// quorum says; empty when that cannot be told.
pub async fn holder_of(redlock: &Redlock, name: &str) -> String {
    match redlock.inspect(name).await.map(|i| i.quorum) {
        Ok(QuorumView::Held {
            owner_id,
            remaining,
            ..
        }) => {
            let owner = owner_id.as_deref().unwrap_or("an unnamed holder");
            match remaining {
                Some(left) => format!(": held by {owner} ({} ms left)", left.as_millis()),
                None => format!(": held by {owner}"),
            }
        }
        _ => String::new(),
    }
}
