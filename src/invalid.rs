//! Why input was refused: the typed reasons behind [`Error::InvalidConfig`] and
//! [`Error::InvalidArgument`], so a caller can match on the cause instead of parsing a
//! message. Their `Display` is the message the error prints.
//!
//! [`Error::InvalidConfig`]: crate::Error::InvalidConfig
//! [`Error::InvalidArgument`]: crate::Error::InvalidArgument

use std::time::Duration;

/// A builder setting, or a stored topology, that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigReason {
    /// A duration that must be positive is zero; `setting` names it ("master timeout",
    /// "connect timeout", "restart quarantine", "node timeout", "fill wait").
    #[error("{setting} must be positive")]
    NotPositive {
        /// The setting, in words.
        setting: &'static str,
    },
    /// The clock drift factor is outside `[0, 0.5)`.
    #[error("drift factor {0} must be in [0, 0.5)")]
    DriftFactor(f64),
    /// A retry count of zero.
    #[error("retry count must be at least 1")]
    NoRetries,
    /// The retry delay plus its jitter is over 60 s.
    #[error("retry delay plus jitter must be at most 60 s")]
    RetryDelayTooLong,
    /// An empty fencing key.
    #[error("fencing key must not be empty")]
    EmptyFenceKey,
    /// The interop key template does not contain the resource placeholder exactly once.
    #[error("interop key template {template:?} must contain {{resource}} exactly once")]
    InteropTemplate {
        /// The template given.
        template: String,
    },
    /// The interop lock keys would share the library's own key space: the template starts
    /// with the key prefix, or the key prefix is empty.
    #[error(
        "the interop key template must not start with the key prefix, and the key prefix must \
         not be empty (lock keys would share the library's own key space)"
    )]
    InteropSharesPrefix,
    /// An owner id that is empty, longer than [`MAX_OWNER_ID_LEN`](crate::defaults::MAX_OWNER_ID_LEN)
    /// bytes, or holds control characters.
    #[error("owner id {id:?}: {problem}")]
    OwnerId {
        /// The id given.
        id: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A cache given both node URLs and a lock client.
    #[error("set either nodes or redlock, not both")]
    NodesAndRedlock,
    /// The cache's fill lock TTL is one the lock client refuses.
    #[error("fill lock ttl {ttl:?}: {reason}")]
    FillLockTtl {
        /// The TTL given.
        ttl: Duration,
        /// Why the lock client refuses it.
        reason: String,
    },
    /// A TLS setting that does not parse: the server name of a URL, or a PEM.
    #[error("TLS: {0}")]
    Tls(String),
    /// A sharded lock's group list is unusable: no group, a name empty or with whitespace, a
    /// name given twice, a weight of zero, no masters or a URL with whitespace.
    #[error("sharded groups: {0}")]
    Groups(String),
    /// A sharded lock's `max_ttl` is zero or over the library's maximum TTL.
    #[error("max_ttl must be positive and at most {max:?}")]
    ShardedMaxTtl {
        /// The largest TTL allowed.
        max: Duration,
    },
    /// The topology epochs of a sharded namespace are used up.
    #[error("topology epochs are used up (max {max})")]
    EpochsUsedUp {
        /// The largest epoch.
        max: u64,
    },
    /// A change was asked to finish while the stored topology is not joint.
    #[error("finishing a change whose topology is not joint")]
    NotJoint,
    /// A stored topology does not parse (written by another version, or damaged).
    #[error("stored topology {epoch}: {part}")]
    StoredTopology {
        /// The epoch it was stored under.
        epoch: u64,
        /// The part that does not parse.
        part: &'static str,
    },
    /// A sharded fencing token's epoch or group counter is past what the token can encode.
    #[error(
        "fencing token out of range: epoch {epoch} (max {max_epoch}), group counter {counter} \
         (max 2^{counter_bits} - 1)"
    )]
    TokenOutOfRange {
        /// The epoch.
        epoch: u64,
        /// The largest epoch a token encodes.
        max_epoch: u64,
        /// The group's counter.
        counter: u64,
        /// Bits of the token for the counter.
        counter_bits: u32,
    },
}

/// An argument of a call that is out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArgumentReason {
    /// A semaphore with zero permits.
    #[error("a semaphore needs at least one permit")]
    NoPermits,
    /// A reentrant lock with an empty owner id.
    #[error("reentrant owner id is empty")]
    EmptyReentrantOwner,
    /// A resource whose lock key is the fencing key.
    #[error("resource {resource:?} names the fencing key {key:?}")]
    NamesFenceKey {
        /// The resource given.
        resource: String,
        /// Its lock key.
        key: String,
    },
    /// A resource whose lock key (under an interop template) is under the key prefix, which
    /// holds the library's own keys.
    #[error(
        "resource {resource:?}: its lock key {key:?} is under the key prefix {prefix:?}, which \
         holds this library's own keys"
    )]
    UnderKeyPrefix {
        /// The resource given.
        resource: String,
        /// Its lock key.
        key: String,
        /// The key prefix.
        prefix: String,
    },
    /// A lock-delay over the maximum TTL.
    #[error("lock-delay {delay:?} must be at most {max:?}")]
    LockDelayTooLong {
        /// The delay given.
        delay: Duration,
        /// The largest allowed.
        max: Duration,
    },
    /// A lease cap of zero.
    #[error("max lease must be positive")]
    ZeroMaxLease,
    /// A [`LockOptions`](crate::LockOptions) setting the call cannot honour (a wait for a
    /// single try, a lock-delay for a primitive whose keys do not keep one).
    #[error("{call} does not support the {option} option")]
    Unsupported {
        /// The option, as its `LockOptions` setter is named.
        option: &'static str,
        /// The call, e.g. `"try_acquire"`, `"FairLock::acquire"`.
        call: &'static str,
    },
    /// A lock handle without the owner token.
    #[error("lock handle without owner token")]
    HandleWithoutToken,
    /// An election with an empty name.
    #[error("election name is empty")]
    EmptyElectionName,
    /// A candidate value over the limit.
    #[error("candidate value is {len} bytes, at most {max}")]
    CandidateValueTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An election on a client without fencing (the term is the fencing token).
    #[error("elections need fencing on (the term is the fencing token)")]
    ElectionWithoutFencing,
    /// An election observe interval of zero.
    #[error("observe interval must be positive")]
    ZeroObserveInterval,
    /// A waiter timeout shorter than twice the retry delay, jitter and per-master timeout.
    #[error(
        "waiter timeout {timeout:?} is shorter than {min:?} (twice the retry delay, jitter and \
         per-master timeout)"
    )]
    WaiterTimeoutTooShort {
        /// The timeout given.
        timeout: Duration,
        /// The shortest allowed.
        min: Duration,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    /// The typed reasons print the messages the string errors printed.
    #[test]
    fn messages_name_the_setting_and_the_values() {
        let e = Error::InvalidConfig(ConfigReason::NotPositive {
            setting: "master timeout",
        });
        assert_eq!(
            e.to_string(),
            "invalid configuration: master timeout must be positive"
        );
        let e = Error::InvalidConfig(ConfigReason::InteropTemplate {
            template: "locks".into(),
        });
        assert_eq!(
            e.to_string(),
            "invalid configuration: interop key template \"locks\" must contain {resource} \
             exactly once"
        );
        let e = Error::InvalidArgument(ArgumentReason::LockDelayTooLong {
            delay: Duration::from_secs(3),
            max: Duration::from_secs(2),
        });
        assert_eq!(
            e.to_string(),
            "invalid argument: lock-delay 3s must be at most 2s"
        );
        assert!(e.is_invalid_input());
    }
}
