//! Shared parts of the differential test: a real redis-server, a client for it, and the
//! comparison of two masters' replies and keyspaces.

pub mod compare;
pub mod resp;
pub mod server;

use redquorum_sim::{SimMaster, Value};

/// Something that runs a Redis command: the real server or the model.
pub trait Exec {
    /// Runs one command (`args[0]` is its name).
    fn exec(&mut self, args: &[Vec<u8>]) -> Value;
}

impl Exec for SimMaster {
    fn exec(&mut self, args: &[Vec<u8>]) -> Value {
        self.execute(args)
    }
}

/// Byte-string arguments from text.
pub fn args(items: &[&str]) -> Vec<Vec<u8>> {
    items.iter().map(|s| s.as_bytes().to_vec()).collect()
}
