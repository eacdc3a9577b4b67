//! Per-process single-flight: concurrent `get_or_compute` callers for one key share the first
//! caller's fill instead of each starting their own.
//!
//! The first caller for a key becomes the *leader* and gets a [`Flight`]; later callers become
//! *followers* and get a receiver. The leader publishes the value with [`Flight::complete`].
//! However the leader ends (value, error, panic, its future dropped), dropping the `Flight`
//! removes the entry, so the map never keeps finished flights. Followers then see either the
//! value or a closed channel; on a closed channel they try again, one of them as the new
//! leader with its own computation, so a failed or cancelled leader never leaves them hanging.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::watch;

/// The value published by a leader; `None` until then.
type Slot = watch::Receiver<Option<Bytes>>;

/// The in-flight fills of one cache handle, by full cache key.
#[derive(Debug, Default)]
pub(crate) struct Flights {
    // A std mutex: it is never held across an await, only for a lookup or an insert.
    map: Mutex<HashMap<String, (u64, Slot)>>,
    next_id: AtomicU64,
}

/// What [`Flights::join`] made of a caller.
pub(crate) enum Join<'a> {
    /// No fill was in flight: this caller fills, and must complete or drop the flight.
    Leader(Flight<'a>),
    /// Another caller in this process is filling; wait on this.
    Follower(Slot),
}

/// A leader's hold on a key's flight. Dropping it without [`complete`](Flight::complete)
/// tells the followers to try again.
pub(crate) struct Flight<'a> {
    flights: &'a Flights,
    key: String,
    id: u64,
    tx: watch::Sender<Option<Bytes>>,
}

impl Flights {
    pub(crate) fn join(&self, key: &str) -> Join<'_> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, rx)) = map.get(key) {
            return Join::Follower(rx.clone());
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(None);
        map.insert(key.to_owned(), (id, rx));
        Join::Leader(Flight {
            flights: self,
            key: key.to_owned(),
            id,
            tx,
        })
    }

    /// Keys with a fill in flight (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.lock().unwrap().len()
    }
}

impl Flight<'_> {
    /// Hands `value` to every follower, then ends the flight.
    pub(crate) fn complete(self, value: Bytes) {
        self.tx.send_replace(Some(value));
    }
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        // Remove the entry before the sender goes (right after this body): a follower woken
        // by the closed channel must not find and join this dead flight again.
        let mut map = self.flights.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
            map.remove(&self.key);
        }
    }
}

/// How a follower's wait ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Waited {
    /// The leader published the value.
    Value(Bytes),
    /// The leader ended without a value (error, panic, cancelled): try again.
    Abandoned,
    /// The deadline passed first.
    TimedOut,
}

/// Waits for the leader's value until `deadline`.
pub(crate) async fn wait(mut rx: Slot, deadline: tokio::time::Instant) -> Waited {
    match tokio::time::timeout_at(deadline, rx.wait_for(Option::is_some)).await {
        Ok(Ok(value)) => Waited::Value(value.clone().expect("waited for Some")),
        Ok(Err(_closed)) => Waited::Abandoned,
        Err(_elapsed) => Waited::TimedOut,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    #[tokio::test]
    async fn followers_get_the_leaders_value_and_the_entry_is_removed() {
        let flights = Flights::default();
        let Join::Leader(flight) = flights.join("k") else {
            panic!("first caller must lead")
        };
        let Join::Follower(a) = flights.join("k") else {
            panic!("second caller must follow")
        };
        let Join::Follower(b) = flights.join("k") else {
            panic!("third caller must follow")
        };
        assert_eq!(flights.len(), 1);
        flight.complete(Bytes::from_static(b"v"));
        assert_eq!(flights.len(), 0);
        assert_eq!(
            wait(a, far()).await,
            Waited::Value(Bytes::from_static(b"v"))
        );
        assert_eq!(
            wait(b, far()).await,
            Waited::Value(Bytes::from_static(b"v"))
        );
        // The next caller starts a fresh flight.
        assert!(matches!(flights.join("k"), Join::Leader(_)));
    }

    #[tokio::test]
    async fn a_dropped_leader_releases_followers_to_retry() {
        let flights = Flights::default();
        let Join::Leader(flight) = flights.join("k") else {
            panic!("first caller must lead")
        };
        let Join::Follower(rx) = flights.join("k") else {
            panic!("second caller must follow")
        };
        drop(flight);
        assert_eq!(wait(rx, far()).await, Waited::Abandoned);
        assert_eq!(flights.len(), 0);
        assert!(matches!(flights.join("k"), Join::Leader(_)));
    }

    #[tokio::test]
    async fn keys_fly_independently() {
        let flights = Flights::default();
        let _a = flights.join("a");
        assert!(matches!(flights.join("b"), Join::Leader(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_follower_gives_up_at_its_deadline() {
        let flights = Flights::default();
        let _leader = flights.join("k");
        let Join::Follower(rx) = flights.join("k") else {
            panic!("second caller must follow")
        };
        let deadline = Instant::now() + Duration::from_millis(100);
        assert_eq!(wait(rx, deadline).await, Waited::TimedOut);
        assert!(Instant::now() >= deadline);
    }
}
