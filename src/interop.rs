//! The interop key layout: lock keys laid out as the other Redlock clients lay them out, so that
//! a lock held by redsync, node-redlock, aioredlock, RedLock.net or pottery excludes ours and
//! ours excludes theirs.
//!
//! Every one of them stores a lock as one plain string key, `SET key <random value> NX PX ttl`,
//! and releases and extends it with a script that compares the value first. Our basic lock and
//! multi-resource lock already store exactly that (`scripts/acquire.lua`,
//! `scripts/multi_acquire.lua`: the value is the owner token, nothing else is written under the
//! key); only the key's name differs (`<prefix>lock:<resource>`). This layout changes the name
//! and nothing else, so each side's compare-and-act scripts leave the other side's lock alone.
//!
//! The fencing counter stays a key of its own ([`Builder::fence_key`], default `<prefix>fence`) that no
//! peer reads or writes. The other primitives keep state the peers do not know (hashes, sorted
//! sets, queues) under keys of their own, so they could never exclude a peer's lock: they
//! refuse to run under this layout ([`Error::InteropUnsupported`]).
//!
//! [`Builder::fence_key`]: crate::Builder::fence_key

use crate::error::{Error, Result};
use crate::invalid::ConfigReason;

/// The placeholder a key template must contain exactly once.
pub const RESOURCE_PLACEHOLDER: &str = "{resource}";

/// How lock keys are named under the interop layout. Built by [`Builder::interop_keys`].
///
/// [`Builder::interop_keys`]: crate::Builder::interop_keys
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyLayout {
    /// Text before and after the placeholder.
    before: String,
    after: String,
    /// The template as given, for error messages.
    template: String,
}

impl KeyLayout {
    /// Parses a template such as `{resource}` or `redlock:{resource}`. Validated at build.
    pub(crate) fn new(template: &str) -> Self {
        let (before, after) = template
            .split_once(RESOURCE_PLACEHOLDER)
            .unwrap_or((template, ""));
        Self {
            before: before.to_owned(),
            after: after.to_owned(),
            template: template.to_owned(),
        }
    }

    /// The lock key of `resource`: the template with the placeholder replaced.
    pub(crate) fn lock_key(&self, resource: &str) -> String {
        format!("{}{resource}{}", self.before, self.after)
    }

    /// The template has the placeholder exactly once.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.template.matches(RESOURCE_PLACEHOLDER).count() != 1 {
            return Err(Error::InvalidConfig(ConfigReason::InteropTemplate {
                template: self.template.clone(),
            }));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_replace_the_placeholder() {
        assert_eq!(KeyLayout::new("{resource}").lock_key("a:b"), "a:b");
        let pottery = KeyLayout::new("redlock:{resource}");
        assert_eq!(pottery.lock_key("printer"), "redlock:printer");
        let around = KeyLayout::new("x{resource}y");
        assert_eq!(around.lock_key("{resource}"), "x{resource}y");
    }

    #[test]
    fn templates_need_exactly_one_placeholder() {
        assert!(KeyLayout::new("{resource}").validate().is_ok());
        assert!(KeyLayout::new("locks").validate().is_err());
        assert!(KeyLayout::new("{resource}{resource}").validate().is_err());
    }
}
