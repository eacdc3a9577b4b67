//! [`Election::observe`]: a stream of leadership changes, read from the masters at a bounded
//! interval.

use futures::Stream;

use super::{Election, Leader};

impl Election {
    /// A stream of leadership changes: the first item is the leader now (as
    /// [`leader`](Self::leader) reads it), then one item each time a read shows a different
    /// leader or none (`None`: no leader, or a hand-over in progress). Reads every
    /// [`observe_interval`](Self::observe_interval) (default
    /// [`DEFAULT_OBSERVE_INTERVAL`](super::DEFAULT_OBSERVE_INTERVAL)); each read is bounded
    /// by one per-master timeout, and a read that cannot reach a quorum is skipped (the leader
    /// is unknown then, not absent). Leaders that come and go between two reads are not seen.
    /// Advisory, like [`leader`](Self::leader). Endless: drop it to stop.
    pub fn observe(&self) -> impl Stream<Item = Option<Leader>> + Send + 'static {
        let election = self.clone();
        let state = (election, None::<Option<Leader>>);
        futures::stream::unfold(state, |(election, last)| async move {
            let mut first = last.is_none();
            loop {
                if !first {
                    tokio::time::sleep(election.observe_interval).await;
                }
                first = false;
                let Ok(now) = election.leader().await else {
                    continue;
                };
                if last.as_ref() != Some(&now) {
                    return Some((now.clone(), (election, Some(now))));
                }
            }
        })
    }
}
