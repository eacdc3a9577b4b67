//! Free loopback ports that stay ours for the life of a master.
//!
//! The usual trick (bind port 0, read it, close) hands out a port from the kernel's
//! ephemeral range. That is fine for a server that starts once, but a master that is killed
//! and restarted "on the same URL" leaves its port free for a while, and in the ephemeral
//! range any outgoing connection of any test may take it as its local port, so the restart
//! fails with EADDRINUSE. We therefore pick random ports *below* the ephemeral range, check
//! them with a bind, and remember in-process which ones we handed out so parallel tests in
//! one binary never collide. Parallel processes (nextest) rely on the bind check and on the
//! randomness; restart still retries a bind race for a bounded time.

use std::collections::HashSet;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, TcpListener};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

static TAKEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
static SALT: AtomicU64 = AtomicU64::new(0);

const ATTEMPTS: usize = 500;
/// Low end of our range; below it live well-known services people run on dev machines.
const LOW: u16 = 20_000;

fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

fn random_u64() -> u64 {
    // RandomState is seeded randomly per process; the salt makes successive calls differ.
    let mut h = RandomState::new().build_hasher();
    h.write_u64(SALT.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    h.finish()
}

fn bindable(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// Reserves a free loopback port until [`release`] is called.
pub(crate) fn reserve() -> Result<u16> {
    let high = ephemeral_low();
    let use_random_range = high > LOW + 1000;
    for _ in 0..ATTEMPTS {
        let port = if use_random_range {
            LOW + (random_u64() % u64::from(high - LOW)) as u16
        } else {
            // Unusual kernel config: fall back to whatever the kernel picks.
            match TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|l| l.local_addr()) {
                Ok(a) => a.port(),
                Err(_) => continue,
            }
        };
        let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
        let taken = taken.get_or_insert_with(HashSet::new);
        if taken.contains(&port) || !bindable(port) {
            continue;
        }
        taken.insert(port);
        return Ok(port);
    }
    Err(Error::NoFreePort { attempts: ATTEMPTS })
}

/// Gives a port back to the in-process pool.
pub(crate) fn release(port: u16) {
    let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(t) = taken.as_mut() {
        t.remove(&port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_ports_are_distinct_and_bindable() {
        let ports: Vec<u16> = (0..50).map(|_| reserve().unwrap()).collect();
        let set: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(set.len(), ports.len());
        for p in &ports {
            assert!(*p < ephemeral_low() || ephemeral_low() <= LOW + 1000);
            assert!(bindable(*p));
            release(*p);
        }
    }
}
