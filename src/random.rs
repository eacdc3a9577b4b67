//! Every random number the library draws: owner tokens (which must be unguessable), retry
//! jitter and release ids. One place, so that the simulator can seed them all (`sim.rs`).

use std::time::Duration;

use rand::Rng;

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
    rand::rng().fill(&mut out[..]);
    out
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
    fn jitter_stays_in_range() {
        let max = Duration::from_millis(20);
        assert!((0..1000).all(|_| jitter(max) <= max));
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
    }
}
