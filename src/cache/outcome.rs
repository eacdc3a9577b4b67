//! What cache calls report: per-write outcomes, batch reports, CAS outcomes, and the counters.

use std::sync::atomic::{AtomicU64, Ordering};

/// What happened to one write (a set or a delete).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WriteOutcome {
    /// The key's node confirmed the write.
    Written,
    /// The key's node did not confirm it (down, timed out, its connection broke, or an error
    /// reply). The write is counted in [`CacheStats::write_drops`]. After a timeout or a broken
    /// connection it may still have landed; it is never sent a second time.
    Dropped,
}

impl WriteOutcome {
    /// Whether the node confirmed the write.
    pub fn is_written(self) -> bool {
        self == Self::Written
    }

    /// Whether the write was dropped.
    pub fn is_dropped(self) -> bool {
        self == Self::Dropped
    }
}

/// What [`Cache::set_many`](crate::Cache::set_many) did with each item, in input order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteReport {
    pub(crate) outcomes: Vec<WriteOutcome>,
}

impl WriteReport {
    /// Items whose node confirmed the write.
    pub fn written(&self) -> usize {
        self.outcomes.iter().filter(|o| o.is_written()).count()
    }

    /// Items dropped because their node was down or failed.
    pub fn dropped(&self) -> usize {
        self.outcomes.len() - self.written()
    }

    /// Whether every item was written.
    pub fn is_complete(&self) -> bool {
        self.outcomes.iter().all(|o| o.is_written())
    }

    /// One outcome per item, in input order.
    pub fn outcomes(&self) -> &[WriteOutcome] {
        &self.outcomes
    }
}

/// What [`Cache::compare_and_set`](crate::Cache::compare_and_set) did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CasOutcome {
    /// The value was written; it now has this version.
    Written {
        /// The new version, to pass as `expected` to the next compare-and-set.
        version: u64,
    },
    /// Nothing was written: the key's version was not the expected one.
    Conflict {
        /// The version found, or `None` when the key was absent.
        current: Option<u64>,
    },
    /// Nothing was written: the key's node was not reached (down, no connection) or answered
    /// an error; counted as a write drop. A call that was sent and got no reply is not a drop
    /// but [`Error::OutcomeUnknown`](crate::Error::OutcomeUnknown).
    Dropped,
}

impl CasOutcome {
    /// Whether the value was written.
    pub fn is_written(&self) -> bool {
        matches!(self, Self::Written { .. })
    }

    /// Whether another writer got there first.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict { .. })
    }

    /// The new version when written.
    pub fn version(&self) -> Option<u64> {
        match self {
            Self::Written { version } => Some(*version),
            _ => None,
        }
    }
}

/// A snapshot of a cache handle's counters, shared by its clones; see
/// [`Cache::stats`](crate::Cache::stats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Keys read and found (one per key of `get`, `get_many`, and per `get_or_compute` call
    /// that found the value at once).
    pub hits: u64,
    /// Keys read and not found, including those whose node was down or failed.
    pub misses: u64,
    /// Writes (sets, deletes, compare-and-sets) not confirmed by their node.
    pub write_drops: u64,
    /// Exchanges with a node that failed (down, timed out, error reply); one per node per
    /// call, however many keys it carried.
    pub node_errors: u64,
}

impl CacheStats {
    /// `hits / (hits + misses)`, or 0 before any read.
    pub fn hit_ratio(&self) -> f64 {
        let reads = self.hits + self.misses;
        if reads == 0 {
            0.0
        } else {
            self.hits as f64 / reads as f64
        }
    }
}

/// The live counters behind [`CacheStats`]. Relaxed: they are statistics, not synchronisation.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    write_drops: AtomicU64,
    node_errors: AtomicU64,
}

impl Counters {
    pub(crate) fn hits(&self, n: u64) {
        self.hits.fetch_add(n, Ordering::Relaxed);
        crate::metrics::cache_reads(n, 0);
    }

    pub(crate) fn misses(&self, n: u64) {
        self.misses.fetch_add(n, Ordering::Relaxed);
        crate::metrics::cache_reads(0, n);
    }

    pub(crate) fn write_drops(&self, n: u64) {
        self.write_drops.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn node_error(&self) {
        self.node_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            write_drops: self.write_drops.load(Ordering::Relaxed),
            node_errors: self.node_errors.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_counts_in_input_order() {
        let report = WriteReport {
            outcomes: vec![
                WriteOutcome::Written,
                WriteOutcome::Dropped,
                WriteOutcome::Written,
            ],
        };
        assert_eq!(report.written(), 2);
        assert_eq!(report.dropped(), 1);
        assert!(!report.is_complete());
        assert!(report.outcomes()[1].is_dropped());
        assert!(WriteReport::default().is_complete());
    }

    #[test]
    fn counters_snapshot_and_ratio() {
        let c = Counters::default();
        assert_eq!(c.snapshot().hit_ratio(), 0.0);
        c.hits(3);
        c.misses(1);
        c.write_drops(2);
        c.node_error();
        let s = c.snapshot();
        assert_eq!(
            (s.hits, s.misses, s.write_drops, s.node_errors),
            (3, 1, 2, 1)
        );
        assert_eq!(s.hit_ratio(), 0.75);
    }
}
