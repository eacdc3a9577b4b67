//! Every random number the library draws: owner tokens (which must be unguessable), retry
//! jitter and release ids. One place, so that the simulator can seed them all (`sim.rs`).

use std::cell::RefCell;
use std::time::Duration;

use rand_chacha::ChaCha12Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

/// A random 128-bit owner token from the OS CSPRNG, as 32 lowercase hex digits.
pub(crate) fn token() -> String {
    format!("{:032x}", u128::from_le_bytes(bytes()))
}

/// Uniform in `0..=max`.
pub(crate) fn jitter(max: Duration) -> Duration {
    let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return Duration::ZERO;
    }
    let draw = u64::from_le_bytes(bytes::<8>());
    Duration::from_nanos(draw % nanos.saturating_add(1).max(1))
}

/// A random `u64`.
pub(crate) fn u64() -> u64 {
    u64::from_le_bytes(bytes())
}

fn bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    #[cfg(feature = "sim")]
    if crate::sim::fill_seeded(&mut out) {
        return out;
    }
    THREAD_RNG.with(|rng| rng.borrow_mut().fill(&mut out));
    out
}

/// Bytes drawn from one seed before the stream is seeded again from the OS.
const RESEED_AFTER: usize = 64 * 1024;

thread_local! {
    static THREAD_RNG: RefCell<ThreadRng> = RefCell::new(ThreadRng::from_os());
}

/// What `rand::rng()` is (ChaCha12 per thread, seeded from the OS CSPRNG and seeded again
/// every 64 KiB), without `rand` itself: this crate's only OS randomness is then `getrandom`
/// 0.2, the version `ring` (TLS) already brings, instead of a second one (`rand` 0.9 pulls
/// `getrandom` 0.3). One system call per 64 KiB instead of one per draw.
struct ThreadRng {
    stream: ChaCha12Rng,
    drawn: usize,
}

impl ThreadRng {
    fn from_os() -> Self {
        let mut seed = [0u8; 32];
        // As `rand::rng()`, panics only when the OS has no randomness to give.
        getrandom::getrandom(&mut seed).expect("the OS random source failed");
        ThreadRng {
            stream: ChaCha12Rng::from_seed(seed),
            drawn: 0,
        }
    }

    fn fill(&mut self, out: &mut [u8]) {
        if self.drawn >= RESEED_AFTER {
            *self = ThreadRng::from_os();
        }
        self.stream.fill_bytes(out);
        self.drawn += out.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_distinct_hex() {
        let (a, b) = (token(), token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn the_stream_is_seeded_again_after_64_kib() {
        let mut rng = ThreadRng::from_os();
        let mut block = [0u8; 1024];
        for _ in 0..RESEED_AFTER / block.len() {
            rng.fill(&mut block);
        }
        assert_eq!(rng.drawn, RESEED_AFTER);
        let before = rng.stream.get_seed();
        rng.fill(&mut block);
        assert_eq!(rng.drawn, block.len(), "a fresh stream after the threshold");
        assert_ne!(rng.stream.get_seed(), before);
    }

    #[test]
    fn jitter_stays_in_range() {
        let max = Duration::from_millis(20);
        assert!((0..1000).all(|_| jitter(max) <= max));
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
    }
}
