//! The crate's one error type, and what each master answered in a round.

use std::fmt;
use std::time::Duration;

/// A `Result` whose error is this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What one master answered in one round of a quorum operation.
///
/// A quorum failure keeps one of these per master, by index, so that a caller (or a log) can see
/// *why* no quorum was reached: which masters refused, which timed out, which were down.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MasterReply {
    /// The master did what was asked (set the key, extended it, deleted it).
    Granted,
    /// The master answered no: the key is held by another owner (or, for extend and release, no
    /// longer holds this owner's token).
    Refused,
    /// The master did not answer within the per-master timeout.
    TimedOut,
    /// There is no usable connection to the master (refused, reset, reconnecting).
    Unavailable(String),
    /// The master answered with an error reply (for example `OOM`, `READONLY`, a script error).
    ServerError(String),
    /// The master answered that it cannot serve for now: `LOADING` (it is replaying its AOF or
    /// RDB after a start) or `BUSY` (a long script or function is running). It will serve again
    /// without anyone's help, so an acquire keeps retrying within its wait.
    Busy(String),
    /// The master's votes are not counted: it restarted less than the configured maximum lock TTL
    /// ago and may have lost keys it had granted (delayed-restart protection).
    Quarantined,
    /// The round was decided before this master answered; its answer is not known.
    NoAnswer,
    /// Fencing is on and this master's fencing counter is not sealed for its current server
    /// process (it restarted, was replaced, or lost the counter): its vote waits until the
    /// counter has been raised from a quorum of the others.
    Unsealed,
    /// The master had lost its scripts (`SCRIPT FLUSH`, restart): it did not run the acquire
    /// and they are being loaded again.
    NoScript,
    /// The TLS handshake failed: the master's certificate is not signed by a trusted CA, does
    /// not name the host of its URL, or the master refused the client's certificate (or its
    /// absence). A configuration error: it fails [`build`](crate::Builder::build).
    Tls(String),
    /// The master denied this client: wrong username or password (`WRONGPASS`), or the ACL
    /// user lacks a command or key the client needs (`NOPERM`). A configuration error: it fails
    /// [`build`](crate::Builder::build).
    Denied(String),
}

impl MasterReply {
    /// Whether this reply is a failure of the master (as opposed to an answer, yes or no).
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            Self::TimedOut
                | Self::Unavailable(_)
                | Self::ServerError(_)
                | Self::Busy(_)
                | Self::Quarantined
                | Self::Unsealed
                | Self::NoScript
                | Self::Tls(_)
                | Self::Denied(_)
        )
    }

    /// Whether this failure may end by itself within an acquire wait: a timeout (a pause, a
    /// load spike), a busy master ([`Busy`](Self::Busy)), or a master repairing itself (its
    /// scripts being reloaded, its fencing counter waiting to be sealed). An acquire whose round
    /// failed for want of a quorum retries when one of the failures is transient, and fails at
    /// once when all are hard (refused connections, error replies).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::TimedOut | Self::Busy(_) | Self::NoScript | Self::Unsealed
        )
    }
}

impl fmt::Display for MasterReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Granted => f.write_str("granted"),
            Self::Refused => f.write_str("refused"),
            Self::TimedOut => f.write_str("timed out"),
            Self::Unavailable(why) => write!(f, "unavailable ({why})"),
            Self::ServerError(msg) => write!(f, "error reply ({msg})"),
            Self::Busy(msg) => write!(f, "busy ({msg})"),
            Self::Quarantined => f.write_str("quarantined after a restart"),
            Self::NoAnswer => f.write_str("no answer before the round was decided"),
            Self::Unsealed => f.write_str("fencing counter not sealed since a restart or loss"),
            Self::NoScript => f.write_str("scripts were flushed; reloading"),
            Self::Tls(why) => write!(f, "TLS failed ({why})"),
            Self::Denied(msg) => write!(f, "denied ({msg})"),
        }
    }
}

/// The replies of every master in one round, by master index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Replies(pub(crate) Vec<MasterReply>);

impl Replies {
    /// The replies of a round's script answers (`None`: no answer before the round was
    /// decided): `granted` tells a yes from a no; an error reply is kept as it is.
    pub(crate) fn from_answers(
        answers: &[Option<std::result::Result<redis::Value, MasterReply>>],
        granted: impl Fn(&redis::Value) -> bool,
    ) -> Self {
        let reply = |a: &Option<std::result::Result<redis::Value, MasterReply>>| match a {
            None => MasterReply::NoAnswer,
            Some(Ok(v)) if granted(v) => MasterReply::Granted,
            Some(Ok(_)) => MasterReply::Refused,
            Some(Err(reply)) => reply.clone(),
        };
        Replies(answers.iter().map(reply).collect())
    }

    /// The replies, indexed like the masters given to the builder.
    pub fn as_slice(&self) -> &[MasterReply] {
        &self.0
    }

    /// How many masters granted.
    pub fn granted(&self) -> usize {
        self.0
            .iter()
            .filter(|r| matches!(r, MasterReply::Granted))
            .count()
    }

    /// How many masters answered no (the key is someone else's, or no longer this owner's).
    pub fn refused(&self) -> usize {
        self.0
            .iter()
            .filter(|r| matches!(r, MasterReply::Refused))
            .count()
    }

    /// How many masters failed (timed out, unavailable, error reply, quarantined).
    pub fn failures(&self) -> usize {
        self.0.iter().filter(|r| r.is_failure()).count()
    }
}

impl fmt::Display for Replies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, reply) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "master {i}: {reply}")?;
        }
        Ok(())
    }
}

/// Everything that can go wrong in this crate.
///
/// Question methods ([`is_contended`](Error::is_contended), [`is_timeout`](Error::is_timeout),
/// [`is_unavailable`](Error::is_unavailable), [`is_invalid_input`](Error::is_invalid_input)) let
/// callers branch without matching on variants, which may grow.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The builder was given no master URLs.
    #[error("no masters configured")]
    NoMasters,
    /// A master URL could not be parsed.
    #[error("master {index}: invalid url {url}")]
    InvalidUrl {
        /// Position of the URL in the list given to the builder.
        index: usize,
        /// The URL, with any password redacted.
        url: String,
        /// What the parser said.
        #[source]
        source: redis::RedisError,
    },
    /// Two configured masters are the same server (same address, or the same `run_id` behind two
    /// addresses); counting it twice would break the quorum arithmetic.
    #[error("masters {first} and {second} are the same server ({why})")]
    DuplicateMaster {
        /// Index of the first occurrence.
        first: usize,
        /// Index of the duplicate.
        second: usize,
        /// `"same address"` or `"same run_id <id>"`.
        why: String,
    },
    /// A master's TLS handshake failed at build: its certificate is not signed by a trusted CA
    /// or does not name the host of its URL, or it refused the client's certificate (or its
    /// absence).
    #[error("master {index} ({url}): TLS failed: {reason}")]
    Tls {
        /// Position of the master in the list given to the builder.
        index: usize,
        /// Its URL, with any password redacted.
        url: String,
        /// What TLS said.
        reason: String,
    },
    /// A master denied the client at build: wrong username or password, or the ACL user lacks
    /// a command or key pattern the client needs (the `NOPERM` reply names it).
    #[error("master {index} ({url}): denied: {reason}")]
    Denied {
        /// Position of the master in the list given to the builder.
        index: usize,
        /// Its URL, with any password redacted.
        url: String,
        /// The master's reply.
        reason: String,
    },
    /// A builder setting is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The resource name is empty (or a multi-resource lock was given no resource).
    #[error("resource name is empty")]
    EmptyResource,
    /// An argument of a lock primitive is out of range: zero semaphore permits, an empty
    /// reentrant owner id, a waiter timeout shorter than the retry interval.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The TTL is zero, too large, or leaves no validity after drift and the per-master timeout.
    #[error("invalid ttl {ttl:?}: {reason}")]
    InvalidTtl {
        /// The TTL that was asked for.
        ttl: Duration,
        /// Why it was rejected.
        reason: String,
    },
    /// Fewer than a quorum of masters could be reached when the client was built.
    #[error("only {reachable} of {masters} masters reachable, a quorum needs {quorum}: {replies}")]
    QuorumUnreachable {
        /// Masters that answered.
        reachable: usize,
        /// Masters configured.
        masters: usize,
        /// Masters needed for a quorum.
        quorum: usize,
        /// What each master answered.
        replies: Replies,
    },
    /// The lock is held by someone else and was not freed within the acquire wait (or the retry
    /// count ran out).
    #[error(
        "resource {resource:?} still held by another owner after {attempts} attempts in {waited:?}: {replies}"
    )]
    Contended {
        /// The resource asked for.
        resource: String,
        /// Rounds tried.
        attempts: u32,
        /// Time spent.
        waited: Duration,
        /// What each master answered in the last round.
        replies: Replies,
    },
    /// The acquire wait ran out while no round could complete inside the validity window (the
    /// masters were too slow for the TTL), without any sign of another owner.
    #[error("acquire of {resource:?} timed out after {attempts} attempts in {waited:?}: {replies}")]
    Timeout {
        /// The resource asked for.
        resource: String,
        /// Rounds tried.
        attempts: u32,
        /// Time spent.
        waited: Duration,
        /// What each master answered in the last round.
        replies: Replies,
    },
    /// So many masters failed (down, timed out, error replies) that no quorum is possible; the
    /// operation failed fast instead of retrying.
    #[error("no quorum possible, {failed} of {masters} masters failed: {replies}")]
    Unavailable {
        /// Masters that failed.
        failed: usize,
        /// Masters configured.
        masters: usize,
        /// What each master answered.
        replies: Replies,
    },
    /// Extend or release found that this owner no longer holds the lock on a quorum.
    #[error("lock on {resource:?} is no longer held on a quorum: {replies}")]
    NotHeld {
        /// The resource.
        resource: String,
        /// What each master answered.
        replies: Replies,
    },
    /// A lock held by [`Redlock::with_lock`](crate::Redlock::with_lock) could not be extended
    /// before its validity ran out; the closure ran (part of the time) without the lock.
    #[error("lock on {resource:?} was lost while the closure ran")]
    LockLost {
        /// The resource.
        resource: String,
    },
    /// [`Cache::get_or_compute`](crate::Cache::get_or_compute) waited its whole fill wait for
    /// another caller (in this process or another) to compute the value, and none did.
    #[error("cache key {key:?} still not filled by another caller after {waited:?}")]
    FillTimeout {
        /// The cache key, without the prefix.
        key: String,
        /// Time spent waiting.
        waited: Duration,
    },
    /// A cache write reached its node (or may have), but no reply came back: the connection
    /// broke or the node timed out after it was sent. Whether it was applied is unknown. It was
    /// not sent again, since a second copy could overwrite a newer write or report a conflict
    /// with itself: read the key back (for example with
    /// [`Cache::get_versioned`](crate::Cache::get_versioned)) before retrying.
    #[error("outcome of the write of cache key {key:?} on node {node} is unknown: {reply}")]
    OutcomeUnknown {
        /// The cache key, without the prefix.
        key: String,
        /// The index of the key's node in the ring.
        node: usize,
        /// What the node did instead of replying (timed out, or its connection broke).
        reply: MasterReply,
    },
    /// A master's `maxmemory-policy` evicts keys and the builder was told to refuse such
    /// masters ([`Builder::refuse_evicting_masters`](crate::Builder::refuse_evicting_masters)).
    #[error(
        "master {index} ({addr}) evicts keys (maxmemory-policy {policy}); locks need noeviction"
    )]
    EvictingMaster {
        /// Position of the master in the builder's list.
        index: usize,
        /// Its URL, password redacted.
        addr: String,
        /// The policy it reported.
        policy: String,
    },
    /// A lock primitive was used on a client built with the interop key layout
    /// ([`Builder::interop_keys`](crate::Builder::interop_keys)), which only the basic and
    /// multi-resource locks support: the others keep state no other Redlock client knows, so
    /// they would not exclude its locks.
    #[error("the {primitive} does not support the interop key layout")]
    InteropUnsupported {
        /// Which primitive: "reentrant lock", "fair lock", "read-write lock", "semaphore".
        primitive: &'static str,
    },
    /// A typed cache value could not be encoded, or the stored bytes could not be decoded as
    /// the requested type.
    #[error("cache value of key {key:?} could not be encoded or decoded")]
    Codec {
        /// The cache key, without the prefix.
        key: String,
        /// What the codec said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A sharded lock's masters store a newer topology than this client could load and act
    /// on (see [`ShardedRedlock`](crate::ShardedRedlock)), or a topology change lost a race
    /// with another one. Nothing was granted.
    #[error("stale topology: {reason}")]
    StaleTopology {
        /// The client's topology epoch.
        epoch: u64,
        /// What the masters or the change said.
        reason: String,
    },
    /// A sharded client's groups disagree with the topology stored on the masters (a group's
    /// key prefix or fencing key, or a group name given with other masters), or another
    /// topology was stored first. Nothing was granted; the stored topology is unchanged.
    #[error("topology mismatch: {reason}")]
    TopologyMismatch {
        /// What differs.
        reason: String,
    },
    /// A sharded client refused an operation that its topology epoch check does not cover:
    /// the reentrant, fair, read-write and semaphore primitives on a resource's owner group
    /// ([`ShardedRedlock::group_for`](crate::ShardedRedlock::group_for)) would not be
    /// protected across a group change (a holder on the old owner and one on the new).
    #[error("not epoch-checked across sharded group changes: {reason}")]
    NotEpochChecked {
        /// What was refused, and what to use instead.
        reason: String,
    },
}

impl Error {
    /// The lock is held by someone else (the acquire wait or retry count ran out).
    pub fn is_contended(&self) -> bool {
        matches!(self, Self::Contended { .. })
    }

    /// The operation ran out of time (acquire wait, rounds that could not finish within the
    /// lock's validity, or a cache fill wait).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            Self::Timeout { .. } | Self::Contended { .. } | Self::FillTimeout { .. }
        )
    }

    /// A cache value could not be encoded or decoded (see [`Error::Codec`]).
    pub fn is_codec(&self) -> bool {
        matches!(self, Self::Codec { .. })
    }

    /// A cache write may or may not have been applied (see [`Error::OutcomeUnknown`]).
    pub fn is_outcome_unknown(&self) -> bool {
        matches!(self, Self::OutcomeUnknown { .. })
    }

    /// Too many masters are down or failing for a quorum.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::Unavailable { .. } | Self::QuorumUnreachable { .. }
        )
    }

    /// The caller passed a bad argument or configuration; retrying cannot help.
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            Self::NoMasters
                | Self::InvalidUrl { .. }
                | Self::DuplicateMaster { .. }
                | Self::InvalidConfig(_)
                | Self::EmptyResource
                | Self::InvalidArgument(_)
                | Self::InvalidTtl { .. }
                | Self::Tls { .. }
                | Self::Denied { .. }
                | Self::InteropUnsupported { .. }
                | Self::EvictingMaster { .. }
                | Self::NotEpochChecked { .. }
        )
    }

    /// The lock was lost or is no longer held.
    pub fn is_lost(&self) -> bool {
        matches!(self, Self::NotHeld { .. } | Self::LockLost { .. })
    }

    /// The per-master replies of the failed round, where the error has them.
    pub fn replies(&self) -> Option<&Replies> {
        match self {
            Self::QuorumUnreachable { replies, .. }
            | Self::Contended { replies, .. }
            | Self::Timeout { replies, .. }
            | Self::Unavailable { replies, .. }
            | Self::NotHeld { replies, .. } => Some(replies),
            _ => None,
        }
    }
}

/// What a redacted secret is shown as.
const MASK: &str = "***";

/// Query parameters shown as they are; every other one is masked. An allow-list, so that a
/// password under a spelling we did not think of (`p%61ss=`, `PASSWORD=`) is masked too.
const SHOWN_PARAMS: [&str; 3] = ["db", "protocol", "user"];

/// Masks every password a master URL can carry, so that the URL can be shown in errors,
/// `Debug` output and logs: the userinfo of `redis://[user:]password@host` (any scheme), and
/// the query parameters of `redis+unix:///path?pass=..` (and `unix:`) URLs, the only places
/// the client library reads a password from.
///
/// A URL the client library can parse is taken apart with its own parser, so what is masked
/// is exactly what it would send as a password. Anything else is masked more widely.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(mut parsed) = redis::parse_redis_url(url) else {
        return redact_unparsed(url);
    };
    let before = parsed.to_string();
    let masked_userinfo = if parsed.password().is_some() {
        parsed.set_password(Some(MASK))
    } else if !parsed.username().is_empty() {
        // `redis://secret@host` is a common slip for `redis://:secret@host`.
        parsed.set_username(MASK)
    } else {
        Ok(())
    };
    if masked_userinfo.is_err() {
        return redact_unparsed(url);
    }
    if let Some(query) = parsed.query().map(redact_query) {
        parsed.set_query(Some(&query));
    }
    let after = parsed.to_string();
    // Nothing masked: keep the caller's spelling rather than the parser's.
    if after == before {
        url.to_owned()
    } else {
        after
    }
}

/// Masks a URL the client library cannot parse (it is never used, but it is echoed in
/// [`Error::InvalidUrl`]): everything up to the last `@` may be userinfo, whatever it contains.
fn redact_unparsed(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let masked = match url[start..].rfind('@') {
        Some(at) => format!("{}{MASK}{}", &url[..start], &url[start + at..]),
        None => url.to_owned(),
    };
    match masked.split_once('?') {
        Some((base, query)) => format!("{base}?{}", redact_query(query)),
        None => masked,
    }
}

/// Masks the value of every query parameter not known to be harmless (a bare segment, which
/// may be the tail of a password holding an unescaped `&`, entirely).
fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if SHOWN_PARAMS.contains(&key) => pair.to_owned(),
            Some((key, _)) => format!("{key}={MASK}"),
            None if pair.is_empty() || SHOWN_PARAMS.contains(&pair) => pair.to_owned(),
            None => MASK.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_in_userinfo() {
        assert_eq!(redact_url("redis://u:secret@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact_url("redis://:secret@h:1"), "redis://:***@h:1");
        assert_eq!(redact_url("redis://secret@h:1"), "redis://***@h:1");
        assert_eq!(
            redact_url("rediss://u:secret@h:1#insecure"),
            "rediss://u:***@h:1#insecure"
        );
        assert_eq!(redact_url("valkey://:secret@h"), "valkey://:***@h");
        assert_eq!(
            redact_url("valkeys://u:secret@h:1/2"),
            "valkeys://u:***@h:1/2"
        );
    }

    #[test]
    fn redacts_percent_encoded_passwords() {
        // The client decodes these before sending them: `p@ss/w:rd`.
        assert_eq!(
            redact_url("redis://u:p%40ss%2Fw%3Ard@h:1"),
            "redis://u:***@h:1"
        );
        // A raw `@` in the password: the parser splits at the last one.
        assert_eq!(redact_url("redis://u:p@ss@h:1"), "redis://u:***@h:1");
    }

    #[test]
    fn redacts_passwords_in_unix_socket_queries() {
        assert_eq!(
            redact_url("redis+unix:///run/redis.sock?pass=secret"),
            "redis+unix:///run/redis.sock?pass=***"
        );
        assert_eq!(
            redact_url("redis+unix:///run/redis.sock?db=1&pass=secret"),
            "redis+unix:///run/redis.sock?db=1&pass=***"
        );
        assert_eq!(
            redact_url("unix:///run/redis.sock?user=app&password=secret&protocol=3"),
            "unix:///run/redis.sock?user=app&password=***&protocol=3"
        );
        assert_eq!(
            redact_url("unix:/run/redis.sock?pass=secret"),
            "unix:/run/redis.sock?pass=***"
        );
        assert_eq!(
            redact_url("valkey+unix:///run/v.sock?pass=secret"),
            "valkey+unix:///run/v.sock?pass=***"
        );
    }

    #[test]
    fn redacts_odd_spellings_of_query_passwords() {
        for url in [
            // The client decodes parameter names: this is `pass`.
            "redis+unix:///s?p%61ss=secret",
            "redis+unix:///s?PASS=secret",
            "redis+unix:///s?pass=se%63ret",
            "redis+unix:///s?pass=secret&pass=secret",
            // An unescaped `&` in the password leaves its tail as a bare parameter.
            "redis+unix:///s?pass=x&secret",
            "redis+unix:///s?db=1&pass=secret#frag",
        ] {
            let shown = redact_url(url);
            assert!(
                !shown.contains("secret") && !shown.contains("se%63"),
                "{url} -> {shown}"
            );
            assert!(shown.starts_with("redis+unix:///s?"), "{url} -> {shown}");
        }
    }

    #[test]
    fn redacts_urls_the_client_cannot_parse() {
        for url in [
            "redis+unix:///s?db=x&pass=secret",
            "redis://:pa/secret@h:1",
            "redis://:pa?secret@h:1",
            "redis://u:secret@h:notaport",
            "redis://u:secret@/nohost",
            "http://u:secret@h",
            "secret@h",
        ] {
            let shown = redact_url(url);
            assert!(!shown.contains("secret"), "{url} -> {shown}");
        }
        assert_eq!(redact_url("redis://u:secret@h:x"), "redis://***@h:x");
        assert_eq!(redact_url("not a url at all"), "not a url at all");
    }

    #[test]
    fn leaves_urls_without_passwords_as_written() {
        for url in [
            "redis://h:1",
            "redis://127.0.0.1:6379/3",
            "redis://[::1]:6379",
            "rediss://h:1/0#insecure",
            "redis+unix:///run/redis.sock",
            "redis+unix:///run/redis.sock?db=2&protocol=resp3&user=app",
            "unix:///tmp/r.sock",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }

    #[test]
    fn only_timeouts_busy_and_self_repairing_masters_are_transient() {
        let busy = MasterReply::Busy("LOADING".into());
        assert!(busy.is_failure() && busy.is_transient());
        for transient in [
            MasterReply::TimedOut,
            MasterReply::NoScript,
            MasterReply::Unsealed,
        ] {
            assert!(
                transient.is_failure() && transient.is_transient(),
                "{transient}"
            );
        }
        for hard in [
            MasterReply::Unavailable("refused".into()),
            MasterReply::ServerError("OOM".into()),
            MasterReply::Quarantined,
        ] {
            assert!(hard.is_failure() && !hard.is_transient(), "{hard}");
        }
        assert!(!MasterReply::Refused.is_transient());
        assert_eq!(busy.to_string(), "busy (LOADING)");
    }

    #[test]
    fn error_is_send_sync_static() {
        fn check<T: Send + Sync + 'static + std::error::Error>() {}
        check::<Error>();
    }

    #[test]
    fn display_is_lowercase_without_trailing_punctuation() {
        let e = Error::Unavailable {
            failed: 3,
            masters: 5,
            replies: Replies(vec![MasterReply::Granted, MasterReply::TimedOut]),
        };
        let s = e.to_string();
        assert!(s.starts_with("no quorum possible"));
        assert!(s.contains("master 1: timed out"));
        assert!(!s.ends_with('.'));
    }

    #[test]
    fn outcome_unknown_is_its_own_kind() {
        let e = Error::OutcomeUnknown {
            key: "doc".into(),
            node: 2,
            reply: MasterReply::Unavailable("connection reset".into()),
        };
        assert!(e.is_outcome_unknown());
        assert!(!e.is_timeout() && !e.is_unavailable() && !e.is_invalid_input());
        assert_eq!(
            e.to_string(),
            "outcome of the write of cache key \"doc\" on node 2 is unknown: \
             unavailable (connection reset)"
        );
    }
}
