//! `redquorum status NAME`: who holds the lock, per master and over the quorum (advisory).

use crate::exit;
use crate::masters::Connection;

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    connection: Connection,
    /// The lock's name (the resource).
    name: String,
}

pub async fn run(args: StatusArgs) -> u8 {
    let redlock = match args.connection.connect().await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("redquorum: cannot reach the masters: {e}");
            return exit::FAILED;
        }
    };
    let inspection = match redlock.inspect(&args.name).await {
        Ok(i) => i,
        Err(e) => {
            eprintln!("redquorum: cannot inspect {:?}: {e}", args.name);
            return exit::FAILED;
        }
    };
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
    0
}
