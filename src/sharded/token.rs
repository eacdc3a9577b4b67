//! Sharded fencing tokens: `(epoch << 48) | group counter`, ordered across groups and epochs
//! (the proof is in the module docs of `sharded`, "Fencing tokens").

use crate::error::{Error, Result};
use crate::invalid::ConfigReason;

/// Bits of the group counter in a token.
pub(crate) const COUNTER_BITS: u32 = 48;
/// The largest epoch a token can carry.
pub(crate) const MAX_EPOCH: u64 = (1 << (64 - COUNTER_BITS)) - 1;

/// The sharded token of a grant whose owner group returned `counter` under `epoch`; `None`
/// when fencing is off in that group.
///
/// # Errors
/// [`Error::InvalidConfig`] when the counter or the epoch do not fit (never wraps).
pub(crate) fn compose(epoch: u64, counter: Option<u64>) -> Result<Option<u64>> {
    let Some(counter) = counter else {
        return Ok(None);
    };
    if counter >> COUNTER_BITS != 0 || epoch > MAX_EPOCH {
        return Err(Error::InvalidConfig(ConfigReason::TokenOutOfRange {
            epoch,
            max_epoch: MAX_EPOCH,
            counter,
            counter_bits: COUNTER_BITS,
        }));
    }
    Ok(Some(epoch << COUNTER_BITS | counter))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_order_before_counters_and_nothing_wraps() {
        let small_epoch_big_counter = compose(3, Some((1 << COUNTER_BITS) - 1)).unwrap();
        let big_epoch_small_counter = compose(4, Some(1)).unwrap();
        assert!(small_epoch_big_counter < big_epoch_small_counter);
        assert!(compose(3, Some(5)).unwrap() < compose(3, Some(6)).unwrap());
        assert_eq!(compose(3, None).unwrap(), None);
        assert!(compose(3, Some(1 << COUNTER_BITS)).is_err());
        assert!(compose(MAX_EPOCH + 1, Some(1)).is_err());
        assert_eq!(
            compose(MAX_EPOCH, Some(1)).unwrap(),
            Some(u64::MAX - (1 << 48) + 2)
        );
    }
}
