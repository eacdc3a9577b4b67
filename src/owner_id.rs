//! Owner ids: a human-readable name of a lock's holder, stored in the basic lock's value next
//! to the owner token so that inspection (`inspect.rs`) can say who holds a lock.
//!
//! The value layout is `<token>:<owner id>`: the 32-hex-digit random owner token first, then a
//! colon, then the id. Every script compares the whole value, so nothing on the masters changes;
//! a value without the suffix (written by an older client) reads as "owner unknown".

use crate::defaults::MAX_OWNER_ID_LEN;
use crate::error::{Error, Result};
use crate::invalid::ConfigReason;

/// Length of the random owner token (`random::token`, 32 hex digits).
const TOKEN_LEN: usize = 32;

/// The default owner id, `hostname/pid`: tells processes and machines apart without any
/// configuration. What [`Builder::owner_id`](crate::Builder::owner_id) defaults to; exported
/// so that tools built on the library (the `redquorum` CLI) name holders the same way.
pub fn default_owner_id() -> String {
    // Linux exposes the hostname here; elsewhere fall back to the environment.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".to_owned());
    format!("{host}/{}", std::process::id())
}

/// Rejects ids that would make the stored value hard to read or needlessly large.
pub(crate) fn check(id: &str) -> Result<()> {
    let bad = |problem| {
        Err(Error::InvalidConfig(ConfigReason::OwnerId {
            id: id.to_owned(),
            problem,
        }))
    };
    if id.is_empty() {
        return bad("must not be empty");
    }
    if id.len() > MAX_OWNER_ID_LEN {
        return bad("must be at most MAX_OWNER_ID_LEN (256) bytes");
    }
    if id.chars().any(char::is_control) {
        return bad("must not contain control characters");
    }
    Ok(())
}

/// The value a basic lock stores: the random token, then the owner id.
pub(crate) fn compose(token: &str, owner_id: &str) -> String {
    format!("{token}:{owner_id}")
}

/// The owner id in a stored lock value, if the value has one.
pub(crate) fn parse(value: &str) -> Option<&str> {
    let (token, owner) = value.split_at_checked(TOKEN_LEN)?;
    let owner = owner.strip_prefix(':')?;
    token
        .bytes()
        .all(|b| b.is_ascii_hexdigit())
        .then_some(owner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owner_id_survives_the_round_trip_and_old_values_have_none() {
        let token = crate::random::token();
        assert_eq!(parse(&compose(&token, "host-1/42")), Some("host-1/42"));
        // Colons inside the id are kept: only the first one after the token separates.
        assert_eq!(parse(&compose(&token, "a:b")), Some("a:b"));
        assert_eq!(parse(&token), None);
        assert_eq!(parse("short:x"), None);
        assert_eq!(parse("é"), None);
    }

    #[test]
    fn ids_are_checked() {
        assert!(check(&default_owner_id()).is_ok());
        assert!(check("").is_err());
        assert!(check("a\nb").is_err());
        assert!(check(&"x".repeat(MAX_OWNER_ID_LEN + 1)).is_err());
        assert!(check(&"x".repeat(MAX_OWNER_ID_LEN)).is_ok());
    }
}
