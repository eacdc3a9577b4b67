//! [`Redlock::inspect`]: who holds a basic lock, for how long, on each master and over the
//! quorum. Advisory: a snapshot taken over several masters at slightly different moments,
//! possibly stale by the time it is read; never a reason to skip acquiring a lock.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use redis::Value;

use crate::config::check_resource;
use crate::error::{MasterReply, Result};
use crate::lock::Redlock;
use crate::scripts::{INSPECT, ScriptCall};

/// What [`Redlock::inspect`] saw: each master's view, by index, and the quorum's.
///
/// **Advisory.** The masters are read concurrently but not at one instant, the lock may change
/// hands right after, and a master's view is only as good as its data (see the crate docs on
/// masters that lose data). Use it to look, not to decide whether to write.
#[derive(Clone, Debug)]
pub struct Inspection {
    /// The resource inspected.
    pub resource: String,
    /// What each master reported, in the builder's order (index = master index).
    pub masters: Vec<MasterView>,
    /// The quorum's view, by the rule of [`QuorumView`].
    pub quorum: QuorumView,
}

/// One master's view of a basic lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MasterView {
    /// No key: nobody holds the lock on this master.
    Free,
    /// A holder's key is there.
    Held(Holder),
    /// No usable answer (timed out, down, quarantined after a restart, an error reply).
    Unknown(MasterReply),
}

/// A holder as one master sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// The holder's owner id ([`Builder::owner_id`](crate::Builder::owner_id)); `None` for a
    /// lock taken by a client too old to record one, or by another Redlock client under the
    /// interop layout. A lock taken with a lock-delay shows as held (with the delay in its
    /// remaining time) until the delay has passed: it refuses acquirers until then.
    pub owner_id: Option<String>,
    /// The key's remaining time to live on that master (its `PTTL`); `None` if the key has no
    /// expiry (not written by this library).
    pub remaining: Option<Duration>,
    /// Tells one hold from another without exposing the owner token (which would let anyone
    /// who reads it release the lock): a hash of the stored value.
    hold: u64,
}

impl Holder {
    /// Whether `other` is the same hold (same owner token), as seen on another master.
    pub fn same_hold(&self, other: &Holder) -> bool {
        self.hold == other.hold
    }
}

/// The quorum's view: `Held` when a quorum of masters report the same hold, `Free` when a
/// quorum report no holder, `Unknown` otherwise (masters disagree, or too few answered).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QuorumView {
    /// A quorum of masters report the same hold.
    Held {
        /// Its owner id, if recorded.
        owner_id: Option<String>,
        /// How many masters report this hold.
        masters: usize,
        /// The smallest remaining TTL among those masters.
        remaining: Option<Duration>,
    },
    /// A quorum of masters report no holder.
    Free {
        /// How many masters report no holder.
        masters: usize,
    },
    /// Neither: a round to take the lock might win or lose.
    Unknown,
}

impl Redlock {
    /// Reads who holds the basic lock on `resource` from every master (each read bounded by
    /// the per-master timeout), and the quorum's view of it. **Advisory**: see [`Inspection`].
    ///
    /// Only the basic lock ([`acquire`](Self::acquire), [`try_acquire`](Self::try_acquire),
    /// [`acquire_many`](Self::acquire_many), which shares its keys) is inspected; the other
    /// primitives keep their state under keys of their own.
    ///
    /// # Errors
    /// [`Error::EmptyResource`](crate::Error::EmptyResource). Masters that fail are reported as
    /// [`MasterView::Unknown`], not as an error.
    pub async fn inspect(&self, resource: &str) -> Result<Inspection> {
        check_resource(resource)?;
        let call = ScriptCall::new(&INSPECT, vec![self.config().lock_key(resource)], vec![]);
        let masters = self
            .master_set()
            .ask_each(|master| {
                let call = &call;
                // A master that restarted recently may have forgotten holds: its "free" means
                // nothing yet.
                let quarantined = self.is_quarantined(master);
                async move {
                    if quarantined {
                        return MasterView::Unknown(MasterReply::Quarantined);
                    }
                    match master.run(call).await {
                        Ok(reply) => view_of(reply),
                        Err(why) => MasterView::Unknown(why),
                    }
                }
            })
            .await;
        let quorum = quorum_view(&masters, self.quorum());
        Ok(Inspection {
            resource: resource.to_owned(),
            masters,
            quorum,
        })
    }
}

/// Decodes the inspect script's `{value or nil, pttl}`.
fn view_of(reply: Value) -> MasterView {
    let unexpected = |r: &Value| MasterView::Unknown(MasterReply::ServerError(format!("{r:?}")));
    let Value::Array(parts) = &reply else {
        return unexpected(&reply);
    };
    match parts.as_slice() {
        [Value::Nil, _] | [] => MasterView::Free,
        [Value::BulkString(value), Value::Int(pttl)] => {
            let value = String::from_utf8_lossy(value);
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            value.hash(&mut hasher);
            MasterView::Held(Holder {
                owner_id: crate::owner_id::parse(&value).map(str::to_owned),
                remaining: u64::try_from(*pttl).ok().map(Duration::from_millis),
                hold: hasher.finish(),
            })
        }
        _ => unexpected(&reply),
    }
}

/// The quorum rule: the same hold on a quorum, or no holder on a quorum, else unknown.
fn quorum_view(masters: &[MasterView], quorum: usize) -> QuorumView {
    let free = masters.iter().filter(|m| **m == MasterView::Free).count();
    if free >= quorum {
        return QuorumView::Free { masters: free };
    }
    let holders: Vec<&Holder> = masters
        .iter()
        .filter_map(|m| match m {
            MasterView::Held(h) => Some(h),
            _ => None,
        })
        .collect();
    for candidate in &holders {
        let same: Vec<&&Holder> = holders.iter().filter(|h| h.same_hold(candidate)).collect();
        if same.len() >= quorum {
            return QuorumView::Held {
                owner_id: candidate.owner_id.clone(),
                masters: same.len(),
                remaining: same.iter().filter_map(|h| h.remaining).min(),
            };
        }
    }
    QuorumView::Unknown
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "held by {}",
            self.owner_id.as_deref().unwrap_or("(no owner id)")
        )?;
        match self.remaining {
            Some(left) => write!(f, ", {} ms left", left.as_millis()),
            None => write!(f, ", no expiry"),
        }
    }
}

impl fmt::Display for MasterView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MasterView::Free => write!(f, "free"),
            MasterView::Held(holder) => holder.fmt(f),
            MasterView::Unknown(why) => write!(f, "unknown ({why})"),
        }
    }
}

impl fmt::Display for QuorumView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuorumView::Held {
                owner_id,
                masters,
                remaining,
            } => {
                let owner = owner_id.as_deref().unwrap_or("(no owner id)");
                write!(f, "held by {owner} on {masters} masters")?;
                if let Some(left) = remaining {
                    write!(f, ", at least {} ms left", left.as_millis())?;
                }
                Ok(())
            }
            QuorumView::Free { masters } => write!(f, "free on {masters} masters"),
            QuorumView::Unknown => write!(f, "unknown (no quorum agrees)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(value: &str, pttl: i64) -> MasterView {
        view_of(Value::Array(vec![
            Value::BulkString(value.as_bytes().to_vec()),
            Value::Int(pttl),
        ]))
    }

    #[test]
    fn the_quorum_rule() {
        let token = "0123456789abcdef0123456789abcdef";
        let a = held(&format!("{token}:host/1"), 900);
        let other = held(&format!("{}:host/1", "f".repeat(32)), 900);
        let free = MasterView::Free;
        let down = MasterView::Unknown(MasterReply::TimedOut);
        // Same owner id but a different token is a different hold: not a quorum.
        let split = [
            a.clone(),
            a.clone(),
            other.clone(),
            free.clone(),
            down.clone(),
        ];
        assert_eq!(quorum_view(&split, 3), QuorumView::Unknown);
        let three = [
            a.clone(),
            a.clone(),
            held(&format!("{token}:host/1"), 500),
            free.clone(),
            down.clone(),
        ];
        assert_eq!(
            quorum_view(&three, 3),
            QuorumView::Held {
                owner_id: Some("host/1".into()),
                masters: 3,
                remaining: Some(Duration::from_millis(500)),
            }
        );
        let frees = [free.clone(), free.clone(), free.clone(), a, down];
        assert_eq!(quorum_view(&frees, 3), QuorumView::Free { masters: 3 });
    }

    #[test]
    fn replies_decode() {
        assert_eq!(
            view_of(Value::Array(vec![Value::Nil, Value::Int(-2)])),
            MasterView::Free
        );
        let MasterView::Held(h) = held("0123456789abcdef0123456789abcdef", -1) else {
            panic!("held expected");
        };
        assert_eq!((h.owner_id, h.remaining), (None, None));
        assert!(matches!(view_of(Value::Int(3)), MasterView::Unknown(_)));
    }
}
