//! `redquorum`: run commands under a Redlock held over a quorum of Redis masters, and look at
//! locks. One file per subcommand; adding one is a variant here and a module.
//!
//! Exit codes: see `exit.rs` (and the README's CLI section).

mod check;
mod child;
mod duration;
mod elect;
mod exit;
mod lock;
mod masters;
mod signals;
mod status;
mod supervise;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "redquorum", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a command while holding a lock; stop it before the lock's validity runs out if the
    /// lock cannot be kept.
    Lock(lock::LockArgs),
    /// Run a command only while this process leads an election; resign when it exits.
    Elect(elect::ElectArgs),
    /// Show who holds a lock, per master and over the quorum (advisory).
    Status(status::StatusArgs),
    /// Check the masters' settings a lock's safety depends on (exit 1: a master evicts keys;
    /// 2: a master could not be checked).
    Check(check::CheckArgs),
}

fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { exit::FAILED } else { 0 };
            let _ = e.print();
            return code.into();
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("redquorum: cannot start the runtime: {e}");
            return exit::FAILED.into();
        }
    };
    let code = runtime.block_on(async move {
        match cli.command {
            Command::Lock(args) => lock::run(args).await,
            Command::Elect(args) => elect::run(args).await,
            Command::Status(args) => status::run(args).await,
            Command::Check(args) => check::run(args).await,
        }
    });
    code.into()
}
