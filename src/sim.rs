//! Hooks for the deterministic simulator (the `sim` feature; not a public API): a simulated
//! network that stands in for redis-rs under the library's `link` module, and a seeded source for the
//! library's randomness (owner tokens, retry jitter), so that a seed replays exactly.
//!
//! The simulator lives in the workspace crate `redquorum-sim`; see its docs.

use std::cell::RefCell;
use std::sync::Arc;

use futures::future::BoxFuture;
// ChaCha12 is what `rand::rngs::StdRng` is (the same stream for the same seed).
use rand_chacha::ChaCha12Rng as StdRng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use redis::{RedisResult, Value};

/// Every Lua script as the library sends it (pieces expanded; see the library's `scripts`
/// module), by name: what the differential test runs on the model and on `redis-server`.
pub fn scripts() -> Vec<(&'static str, &'static str)> {
    crate::script_sources()
}

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

/// Decides whether the client stalls at a point of the protocol: called with the point's name
/// and the owner token of the lock concerned; `Some(d)` freezes the calling task for `d` (in
/// the simulator's virtual time), as a paused process (GC, VM steal, a busy runtime) would be.
pub type Stalls = Box<dyn FnMut(&'static str, &str) -> Option<std::time::Duration>>;

thread_local! {
    static STALLS: RefCell<Option<Stalls>> = const { RefCell::new(None) };
}

/// From now on, on this thread, the library asks `stalls` at each stall point (`None`: never
/// stalls). The points, in the order of a grant:
/// - `acquire.quorum`: a quorum of the acquire's replies has arrived, nothing done with them;
/// - `acquire.fenced`: the fencing write-back is done, the validity not yet checked;
/// - `acquire.validated`: the validity was checked; the guard is about to be handed out (a
///   stall here may outlast the validity: a documented non-guarantee of every lock service);
/// - `extend.quorum`: a quorum of an extend's replies has arrived, its validity not computed;
/// - `extend.validated`: the extend's validity was checked (as `acquire.validated`);
/// - `lease.renewed`: the watchdog has its renewal's outcome, not yet signalled.
pub fn set_stalls(stalls: Option<Stalls>) {
    STALLS.with(|s| *s.borrow_mut() = stalls);
}

/// A stall point (see [`set_stalls`]): freezes the calling task if the simulator says so.
pub(crate) async fn stall(point: &'static str, owner: &str) {
    let pause = STALLS.with(|s| s.borrow_mut().as_mut().and_then(|f| f(point, owner)));
    if let Some(pause) = pause {
        tokio::time::sleep(pause).await;
    }
}
