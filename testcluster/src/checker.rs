//! A mutual-exclusion checker and a fenced store model, for lock tests under faults.
//!
//! Clients record every holding (who, what, from when, valid until when, released when, with
//! which fencing token) on one monotonic clock ([`std::time::Instant`]); afterwards
//! [`Checker::overlaps`] lists every pair of holders of the same resource whose windows
//! intersect. A [`FencedStore`] stands for the protected resource: it rejects a write whose
//! token is lower than one it has seen, and the checker tells which accepted writes came from
//! a holder whose window had already ended (stale writes that fencing failed to stop).

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One lock holding as a client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holding {
    /// Who held it (any id the test likes).
    pub client: usize,
    /// The resource.
    pub resource: String,
    /// When the acquire returned.
    pub acquired_at: Instant,
    /// When the client's validity ran out (acquired_at + remaining validity).
    pub valid_until: Instant,
    /// When the client released it, if it did.
    pub released_at: Option<Instant>,
    /// The fencing token, if the lock had one.
    pub fencing_token: Option<u64>,
}

impl Holding {
    /// A holding not released (yet): `client` held `resource` from `acquired_at` until
    /// `valid_until`, with `fencing_token`.
    pub fn new(
        client: usize,
        resource: impl Into<String>,
        acquired_at: Instant,
        valid_until: Instant,
        fencing_token: Option<u64>,
    ) -> Self {
        Holding {
            client,
            resource: resource.into(),
            acquired_at,
            valid_until,
            released_at: None,
            fencing_token,
        }
    }

    /// The same holding, released at `at`.
    pub fn released(self, at: Instant) -> Self {
        Holding {
            released_at: Some(at),
            ..self
        }
    }

    /// The end of the window in which this client could rightly act: its validity, or its
    /// release if earlier.
    pub fn window_end(&self) -> Instant {
        match self.released_at {
            Some(r) if r < self.valid_until => r,
            _ => self.valid_until,
        }
    }

    fn overlaps(&self, other: &Holding) -> bool {
        self.resource == other.resource
            && self.acquired_at < other.window_end()
            && other.acquired_at < self.window_end()
    }
}

/// Two holders of one resource at the same time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Overlap {
    /// The earlier holding.
    pub first: Holding,
    /// The later holding.
    pub second: Holding,
}

impl Overlap {
    /// How long both windows were open together.
    pub fn duration(&self) -> Duration {
        let start = self.first.acquired_at.max(self.second.acquired_at);
        let end = self.first.window_end().min(self.second.window_end());
        end.saturating_duration_since(start)
    }
}

impl fmt::Display for Overlap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "clients {} (token {:?}) and {} (token {:?}) both held {:?} for {:?}",
            self.first.client,
            self.first.fencing_token,
            self.second.client,
            self.second.fencing_token,
            self.first.resource,
            self.duration()
        )
    }
}

/// A write a client tried on the fenced store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    /// The writer.
    pub client: usize,
    /// The resource written.
    pub resource: String,
    /// The token sent with it.
    pub token: u64,
    /// When it was attempted.
    pub at: Instant,
    /// Whether the store accepted it.
    pub accepted: bool,
}

/// Collects holdings and writes from any number of tasks and threads.
#[derive(Debug, Default)]
pub struct Checker {
    holdings: Mutex<Vec<Holding>>,
    writes: Mutex<Vec<Write>>,
}

impl Checker {
    /// An empty checker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one holding.
    pub fn record(&self, holding: Holding) {
        self.holdings
            .lock()
            .expect("checker poisoned")
            .push(holding);
    }

    /// Records one write attempt (see [`FencedStore::write`]).
    pub fn record_write(&self, write: Write) {
        self.writes.lock().expect("checker poisoned").push(write);
    }

    /// Every holding recorded so far.
    pub fn holdings(&self) -> Vec<Holding> {
        self.holdings.lock().expect("checker poisoned").clone()
    }

    /// Every pair of holdings of one resource whose windows intersect, earliest first.
    pub fn overlaps(&self) -> Vec<Overlap> {
        let mut hs = self.holdings();
        hs.sort_by_key(|h| h.acquired_at);
        let mut out = Vec::new();
        for (j, b) in hs.iter().enumerate() {
            for a in &hs[..j] {
                if a.overlaps(b) {
                    out.push(Overlap {
                        first: a.clone(),
                        second: b.clone(),
                    });
                }
            }
        }
        out
    }

    /// Accepted writes made by a client outside every window it held for that resource with
    /// that token: the writes fencing should have stopped.
    pub fn stale_writes_accepted(&self) -> Vec<Write> {
        let hs = self.holdings();
        let writes = self.writes.lock().expect("checker poisoned").clone();
        writes
            .into_iter()
            .filter(|w| w.accepted)
            .filter(|w| {
                !hs.iter().any(|h| {
                    h.client == w.client
                        && h.resource == w.resource
                        && h.fencing_token == Some(w.token)
                        && h.acquired_at <= w.at
                        && w.at < h.window_end()
                })
            })
            .collect()
    }

    /// Write attempts the store rejected.
    pub fn writes_rejected(&self) -> usize {
        let writes = self.writes.lock().expect("checker poisoned");
        writes.iter().filter(|w| !w.accepted).count()
    }
}

/// The protected resource of a fencing protocol: per resource, it remembers the highest token
/// seen and rejects writes carrying a lower one.
#[derive(Debug, Default)]
pub struct FencedStore {
    highest: Mutex<HashMap<String, u64>>,
}

impl FencedStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Tries a write with `token`; accepted unless a higher token was seen for `resource`.
    /// Records the attempt in `checker`.
    pub fn write(&self, checker: &Checker, client: usize, resource: &str, token: u64) -> bool {
        let at = Instant::now();
        let accepted = {
            let mut highest = self.highest.lock().expect("store poisoned");
            let seen = highest.entry(resource.to_owned()).or_insert(0);
            if token >= *seen {
                *seen = token;
                true
            } else {
                false
            }
        };
        checker.record_write(Write {
            client,
            resource: resource.to_owned(),
            token,
            at,
            accepted,
        });
        accepted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holding(client: usize, start_ms: u64, end_ms: u64, token: u64, base: Instant) -> Holding {
        Holding::new(
            client,
            "r",
            base + Duration::from_millis(start_ms),
            base + Duration::from_millis(end_ms),
            Some(token),
        )
    }

    #[test]
    fn reports_overlaps_and_not_touching_windows() {
        let base = Instant::now();
        let c = Checker::new();
        c.record(holding(1, 0, 100, 1, base));
        c.record(holding(2, 100, 200, 2, base)); // touches, does not overlap
        c.record(holding(3, 150, 300, 3, base)); // overlaps 2
        let o = c.overlaps();
        assert_eq!(o.len(), 1);
        assert_eq!((o[0].first.client, o[0].second.client), (2, 3));
        assert_eq!(o[0].duration(), Duration::from_millis(50));
    }

    #[test]
    fn release_ends_the_window() {
        let base = Instant::now();
        let c = Checker::new();
        let mut a = holding(1, 0, 1000, 1, base);
        a.released_at = Some(base + Duration::from_millis(10));
        c.record(a);
        c.record(holding(2, 20, 500, 2, base));
        assert!(c.overlaps().is_empty());
    }

    #[test]
    fn fenced_store_rejects_lower_tokens_and_checker_flags_stale_accepts() {
        let c = Checker::new();
        let store = FencedStore::new();
        let now = Instant::now();
        c.record(Holding::new(
            1,
            "r",
            now,
            now + Duration::from_secs(60),
            Some(5),
        ));
        assert!(store.write(&c, 1, "r", 5));
        assert!(store.write(&c, 2, "r", 7)); // client 2 never recorded a holding: stale
        assert!(!store.write(&c, 1, "r", 5)); // lower than 7: rejected
        assert_eq!(c.writes_rejected(), 1);
        let stale = c.stale_writes_accepted();
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].client, 2);
    }
}
