//! The options every subcommand shares: which masters, and how to talk to them.

use std::time::Duration;

use redquorum::Redlock;

#[derive(clap::Args, Debug)]
pub struct Connection {
    /// The Redis masters, comma-separated URLs (redis://host:port; TLS URLs where the library
    /// supports them).
    #[arg(
        long,
        env = "REDQUORUM_MASTERS",
        value_delimiter = ',',
        required = true
    )]
    masters: Vec<String>,
    /// Bound on each call to one master.
    #[arg(long, value_parser = crate::duration::parse, default_value = "50ms")]
    master_timeout: Duration,
    /// Prefix of the keys written (must match the other users of the lock).
    #[arg(long, default_value = redquorum::DEFAULT_KEY_PREFIX)]
    key_prefix: String,
    /// Who holds the lock, as `redquorum status` shows it. Default: hostname/pid.
    #[arg(long)]
    owner_id: Option<String>,
}

impl Connection {
    pub fn master_timeout(&self) -> Duration {
        self.master_timeout
    }

    /// The owner id given, else the library's default rule (`hostname/pid`).
    pub fn owner_id(&self) -> String {
        self.owner_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .or_else(|| std::env::var("HOSTNAME").ok())
                .unwrap_or_else(|| "unknown-host".to_owned());
            format!("{host}/{}", std::process::id())
        })
    }

    pub async fn connect(&self) -> redquorum::Result<Redlock> {
        let mut builder = Redlock::builder()
            .masters(self.masters.iter().map(|m| m.trim().to_owned()))
            .master_timeout(self.master_timeout)
            .key_prefix(self.key_prefix.clone());
        if let Some(id) = &self.owner_id {
            builder = builder.owner_id(id.clone());
        }
        builder.build().await
    }
}
