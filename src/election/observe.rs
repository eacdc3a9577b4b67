//! [`Election::observe`]: a stream of leadership changes, read from the masters when a release
//! message arrives and at a bounded interval.

use futures::Stream;
use tokio::sync::mpsc;

use super::{Election, Leader};

impl Election {
    /// A stream of leadership changes: the first item is the leader now (as
    /// [`leader`](Self::leader) reads it), then one item each time a read shows a different
    /// leader or none (`None`: no leader, or a hand-over in progress; a read whose silent
    /// masters could decide it is skipped, see [`leader`](Self::leader)). Reads when a
    /// resignation is announced (with wake-ups on, [`Builder::wake_ups`](crate::Builder::wake_ups):
    /// one pub/sub connection per master per stream) and every
    /// [`observe_interval`](Self::observe_interval) (default
    /// [`DEFAULT_OBSERVE_INTERVAL`](crate::defaults::DEFAULT_OBSERVE_INTERVAL)), which also catches
    /// leaders that expired without resigning and lost messages. Each read is bounded by one
    /// per-master timeout, and a read that cannot reach a quorum is skipped (the leader is
    /// unknown then, not absent). Leaders that come and go between two reads are not seen.
    /// Advisory, like [`leader`](Self::leader). Endless: drop it to stop.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a zero
    /// [`observe_interval`](Self::observe_interval) (it would poll the masters in a tight
    /// loop), before anything is sent.
    pub fn observe(
        &self,
    ) -> crate::Result<impl Stream<Item = Option<Leader>> + Send + 'static + use<>> {
        self.check_observe_interval()?;
        let election = self.clone();
        let state = (election, None::<Option<Leader>>, None::<mpsc::Receiver<()>>);
        let stream = futures::stream::unfold(state, |(election, last, mut released)| async move {
            let mut first = last.is_none();
            loop {
                if first {
                    // Listen before the first read, so no change after it goes unannounced.
                    released = election.listen();
                } else {
                    let interval = tokio::time::sleep(election.observe_interval);
                    match released.as_mut() {
                        Some(rx) => tokio::select! {
                            _ = interval => {}
                            msg = rx.recv() => if msg.is_none() {
                                // No listener left (cannot happen while masters' URLs are
                                // valid): poll, never spin on a closed channel.
                                released = None;
                            },
                        },
                        None => interval.await,
                    }
                }
                first = false;
                let Ok(now) = election.leader().await else {
                    continue;
                };
                if last.as_ref() != Some(&now) {
                    return Some((now.clone(), (election, Some(now), released)));
                }
            }
        });
        Ok(stream)
    }
}

impl Election {
    /// Release messages of this election, when the client has wake-ups on.
    fn listen(&self) -> Option<mpsc::Receiver<()>> {
        let redlock = &self.redlock;
        let wakeups = redlock.wakeups()?;
        let channel = crate::notify::channel(&redlock.config().key_prefix, &self.resource());
        Some(super::announcements::listen(
            wakeups.endpoints(),
            channel,
            redlock.config().connect_timeout,
        ))
    }
}
