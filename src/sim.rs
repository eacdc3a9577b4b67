//! Hooks for the deterministic simulator (the `sim` feature; not a public API): a simulated
//! network that stands in for redis-rs under the library's `link` module, and a seeded source for the
//! library's randomness (owner tokens, retry jitter), so that a seed replays exactly.
//!
//! The simulator lives in the workspace crate `redquorum-sim`; see its docs.

use std::cell::RefCell;
use std::sync::Arc;

use futures::future::BoxFuture;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use redis::{RedisResult, Value};

/// A simulated network of masters.
pub trait Network: Send + Sync + 'static {
    /// Opens a connection to master `index` (or fails, as a real connect would).
    fn connect(&self, index: usize) -> BoxFuture<'static, RedisResult<Arc<dyn Connection>>>;
}

/// One simulated connection to one master.
pub trait Connection: Send + Sync + 'static {
    /// Sends one command (packed RESP bytes). The command must be on its way when this returns,
    /// whatever then happens to the returned future (a real connection queues it at once);
    /// the future yields the reply, an error, or never completes (a lost message).
    fn send(&self, packed: Vec<u8>) -> BoxFuture<'static, RedisResult<Value>>;
}

thread_local! {
    static SEEDED: RefCell<Option<StdRng>> = const { RefCell::new(None) };
}

/// From now on, on this thread, the library draws its random numbers from `seed` instead of
/// the OS (the simulator runs on one thread).
pub fn seed_rng(seed: u64) {
    SEEDED.with(|r| *r.borrow_mut() = Some(StdRng::seed_from_u64(seed)));
}

/// Back to the OS's randomness on this thread.
pub fn unseed_rng() {
    SEEDED.with(|r| *r.borrow_mut() = None);
}

/// Fills `bytes` from the seeded source, if this thread has one.
pub(crate) fn fill_seeded(bytes: &mut [u8]) -> bool {
    SEEDED.with(|r| match r.borrow_mut().as_mut() {
        Some(rng) => {
            rng.fill_bytes(bytes);
            true
        }
        None => false,
    })
}
