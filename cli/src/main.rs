//! `redquorum`: run commands under a Redlock held over a quorum of Redis masters, and look at
//! locks. One file per subcommand; adding one is a variant here and a module.
//!
//! Exit codes: see `exit.rs` (and the guide's `docs/cli.md`).

// `eprintln!` and `println!` panic when the stream is closed (EPIPE); a panic while a command
// runs would end `redquorum` without giving the lock back (the guard then kills the command,
// but the lock waits for its TTL). These two, defined before the modules, replace them there.
macro_rules! eprintln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
macro_rules! println {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod check;
mod child;
mod duration;
mod elect;
mod exit;
mod guard;
mod lock;
mod masters;
mod signals;
mod status;
mod supervise;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "redquorum", version, about)]
struct Cli {
    /// More log output on stderr: -v info, -vv debug, -vvv trace (default: the library's
    /// warnings). RUST_LOG, when set, takes precedence (e.g. RUST_LOG=redquorum=debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a command while holding a lock; stop it before the lock's validity runs out if the
    /// lock cannot be kept. Without a command, hold the lock until interrupted.
    Lock(lock::LockArgs),
    /// Run a command only while this process leads an election; resign when it exits. With
    /// --listen, print the leader each time it changes.
    Elect(elect::ElectArgs),
    /// Show who holds a lock, per master and over the quorum, and who leads the election of
    /// that name (advisory).
    Status(status::StatusArgs),
    /// Check the masters' settings a lock's safety depends on.
    Check(check::CheckArgs),
}

fn main() -> std::process::ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == guard::ARG) {
        return guard::main().into();
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { exit::FAILED } else { 0 };
            let _ = e.print();
            if e.kind() == clap::error::ErrorKind::UnknownArgument && command_without_dashes() {
                eprintln!(
                    "hint: put the command after `--`: redquorum lock NAME [OPTIONS] -- CMD [ARGS...]"
                );
            }
            return code.into();
        }
    };
    init_logging(cli.verbose);
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
    // The runtime runs on the main thread: the command is spawned from it (child.rs).
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

/// `lock` or `elect` with words after the name and no `--`: most likely a command.
fn command_without_dashes() -> bool {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sub = args.iter().position(|a| a == "lock" || a == "elect");
    sub.is_some() && !args.iter().any(|a| a == "--")
}

/// The library's `tracing` events on stderr: warnings by default, more with `-v`; RUST_LOG
/// replaces both.
fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}
