//! Vote counting, validity arithmetic, and the concurrent fan-out to all masters.
//!
//! The pure parts ([`Tally`], [`ChoiceTally`], [`drift`], [`valid_until`]) and the fan-out loop
//! are unit-tested here; `masters.rs` is the one user of the loop.

use std::future::Future;
use std::time::Duration;

use std::pin::Pin;
use std::task::Poll;

use futures::future::{MaybeDone, maybe_done, poll_fn};
use tokio::time::Instant;

/// Votes needed out of `n`: a strict majority, so two quorums always share a master.
pub(crate) fn quorum(n: usize) -> usize {
    n / 2 + 1
}

/// The state of a round after a vote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Neither outcome is certain yet.
    Pending,
    /// At least a quorum voted yes.
    Won,
    /// So many voted no (or failed) that a quorum can no longer be reached.
    Lost,
}

/// Counts yes and no votes and decides as early as the outcome is certain.
///
/// Works for any N, even N included: with N = 4 (quorum 3), two no votes already make a quorum
/// impossible, so an even split never leaves the round waiting.
#[derive(Clone, Debug)]
pub(crate) struct Tally {
    n: usize,
    quorum: usize,
    yes: usize,
    no: usize,
}

impl Tally {
    #[cfg(test)]
    pub(crate) fn new(n: usize) -> Self {
        Self::needing(n, quorum(n))
    }

    /// A tally that needs `needed` yes votes out of `n` (for rounds that start with some votes
    /// already known, like the fencing write-back).
    pub(crate) fn needing(n: usize, needed: usize) -> Self {
        Self {
            n,
            quorum: needed,
            yes: 0,
            no: 0,
        }
    }

    pub(crate) fn record(&mut self, yes: bool) -> Decision {
        if yes {
            self.yes += 1;
        } else {
            self.no += 1;
        }
        self.decision()
    }

    pub(crate) fn decision(&self) -> Decision {
        if self.yes >= self.quorum {
            Decision::Won
        } else if self.no > self.n.saturating_sub(self.quorum) || self.quorum > self.n {
            Decision::Lost
        } else {
            Decision::Pending
        }
    }
}

/// The fixed part of the drift allowance (from the Redlock spec). Defined here so that this
/// module depends on nothing above it; re-exported with the other settings' constants.
pub const DRIFT_FIXED: Duration = Duration::from_millis(2);

/// The clock-drift allowance the Redlock spec subtracts from the validity.
pub(crate) fn drift(ttl: Duration, factor: f64) -> Duration {
    ttl.mul_f64(factor) + DRIFT_FIXED
}

/// The TTL a master is sent: whole milliseconds (what `PX` takes), never more than asked.
pub(crate) fn sent_ttl(ttl: Duration) -> Duration {
    Duration::from_millis(ttl.as_millis() as u64)
}

/// When a lock taken by a round that started at `t0` stops being valid: `t0 + ttl - drift`, or
/// `None` when that is not after `now` (the lock must not be used). Counted from `t0`, taken
/// before the first command was sent, so the validity never outlives a master's key.
///
/// Checked: a TTL below the drift, or a round that took longer than the TTL, yields `None`,
/// never a wrapped-around huge validity (a bug of a peer library).
pub(crate) fn valid_until(
    t0: Instant,
    ttl: Duration,
    drift: Duration,
    now: Instant,
) -> Option<Instant> {
    let until = t0 + ttl.checked_sub(drift)?;
    (until > now).then_some(until)
}

/// The answers of one round: one slot per master, `None` where the round was decided before
/// that master answered.
pub(crate) struct Round<T> {
    pub(crate) answers: Vec<Option<T>>,
    pub(crate) decision: Decision,
}

/// Decides a round answer by answer (see [`fan_out_ballot_then`]).
pub(crate) trait Ballot<T> {
    /// The decision before any (further) answer.
    fn decision(&self) -> Decision;
    /// Counts one answer and says where the round stands.
    fn record(&mut self, answer: &T) -> Decision;
    /// Whether the round ends as soon as every call has been sent, whatever the answers.
    fn done_once_sent(&self) -> bool {
        false
    }
}

/// A round that only needs its calls on their way: see [`send_all`].
struct SendOnly;

impl<T> Ballot<T> for SendOnly {
    fn decision(&self) -> Decision {
        Decision::Pending
    }

    fn record(&mut self, _: &T) -> Decision {
        Decision::Pending
    }

    fn done_once_sent(&self) -> bool {
        true
    }
}

/// Sends one call to every one of `n` targets and returns once each call has been polled once
/// (its command queued on its connection, so ordered before anything this client sends there
/// next); the calls finish on a background task. For rollbacks: the retry policy need not wait
/// for their answers, and an acquire that gave up returns without waiting for them.
pub(crate) async fn send_all<T, F, Fut>(n: usize, call: F)
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    fan_out_ballot_then(n, call, SendOnly, || {}).await;
}

/// A yes/no vote per answer counted by a [`Tally`].
pub(crate) struct Votes<V> {
    tally: Tally,
    vote: V,
}

/// Decides on `needed` yes votes out of `n`, `vote` saying which answers are yes.
pub(crate) fn votes<T, V: Fn(&T) -> bool>(n: usize, needed: usize, vote: V) -> Votes<V> {
    Votes {
        tally: Tally::needing(n, needed),
        vote,
    }
}

impl<T, V: Fn(&T) -> bool> Ballot<T> for Votes<V> {
    fn decision(&self) -> Decision {
        self.tally.decision()
    }

    fn record(&mut self, answer: &T) -> Decision {
        self.tally.record((self.vote)(answer))
    }
}

/// Counts yes votes per *choice* (e.g. which semaphore slot a master granted) and decides as
/// early as the outcome is certain: won when one choice has a quorum, lost when no choice can
/// still reach one (each master votes for at most one choice). With a single choice it decides
/// exactly like [`Tally`].
#[derive(Clone, Debug)]
pub(crate) struct ChoiceTally {
    n: usize,
    quorum: usize,
    answered: usize,
    /// (choice, yes votes), in order of first vote; rounds have few distinct choices.
    counts: Vec<(u32, usize)>,
}

impl ChoiceTally {
    pub(crate) fn new(n: usize, quorum: usize) -> Self {
        Self {
            n,
            quorum,
            answered: 0,
            counts: Vec::new(),
        }
    }

    /// Records one answer: `Some(choice)` for a yes vote for `choice`, `None` for a no (or a
    /// failure).
    pub(crate) fn record(&mut self, vote: Option<u32>) -> Decision {
        self.answered += 1;
        if let Some(choice) = vote {
            match self.counts.iter_mut().find(|(c, _)| *c == choice) {
                Some((_, yes)) => *yes += 1,
                None => self.counts.push((choice, 1)),
            }
        }
        self.decision()
    }

    /// The choice that has a quorum, if any.
    pub(crate) fn winner(&self) -> Option<u32> {
        self.counts
            .iter()
            .find(|(_, yes)| *yes >= self.quorum)
            .map(|(c, _)| *c)
    }

    pub(crate) fn decision(&self) -> Decision {
        let best = self.counts.iter().map(|(_, yes)| *yes).max().unwrap_or(0);
        let unanswered = self.n.saturating_sub(self.answered);
        if best >= self.quorum {
            Decision::Won
        } else if best + unanswered < self.quorum {
            Decision::Lost
        } else {
            Decision::Pending
        }
    }
}

/// A yes/no round of `n` calls won at `needed` yes votes (for the unit tests below).
#[cfg(test)]
pub(crate) async fn fan_out<T, F, Fut>(
    n: usize,
    needed: usize,
    call: F,
    vote: impl Fn(&T) -> bool,
) -> Round<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    fan_out_ballot_then(n, call, votes(n, needed, vote), || {}).await
}

/// The one fan-out loop behind every round (see `masters.rs`): sends one call to every master
/// concurrently and returns as soon as `tally` has decided. `call(i)` builds master `i`'s
/// future; `sent` runs once every call has been polled once. Calls that are still running when
/// the round is decided are not dropped (a release, for example, must still reach every
/// master): they are driven to completion on a background task, and their answers ignored.
///
/// The N calls live in one pinned allocation and are all polled on every wake-up, instead of
/// one task allocation and waker each in a `FuturesUnordered`: N is small (the masters), a
/// call's future is large (about 1.4 KB, so every move is a real copy), and this runs twice per
/// lock + unlock (measured by loadbench, W1/W2).
pub(crate) async fn fan_out_ballot_then<T, F, Fut>(
    n: usize,
    call: F,
    mut tally: impl Ballot<T>,
    sent: impl FnOnce(),
) -> Round<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let mut sent = Some(sent);
    let mut answers: Vec<Option<T>> = (0..n).map(|_| None).collect();
    let mut decision = tally.decision();
    if decision != Decision::Pending {
        if let Some(sent) = sent.take() {
            sent();
        }
        return Round { answers, decision };
    }
    let mut calls: Pin<Box<[MaybeDone<Fut>]>> =
        Box::into_pin((0..n).map(|i| maybe_done(call(i))).collect());
    poll_fn(|cx| {
        // Every pass polls every call, also after the decision: the first pass must put every
        // master's command on its way before the round can end. Otherwise a fast answer (a
        // broken connection fails at once) could decide the round while another master's
        // command was not yet sent, and that command would go out after this round's rollback
        // or the lock's release, leaving a key behind.
        for (i, mut c) in pinned(calls.as_mut()).enumerate() {
            if answers[i].is_some() || c.as_mut().poll(cx).is_pending() {
                continue;
            }
            let answer = c.take_output().expect("a finished call has its output");
            if decision == Decision::Pending {
                decision = tally.record(&answer);
            }
            answers[i] = Some(answer);
        }
        if let Some(sent) = sent.take() {
            sent();
        }
        // Every call answered means decided (yes + no = n), so this is never a hang.
        if decision == Decision::Pending && !tally.done_once_sent() {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    let stragglers = calls.iter().any(|c| matches!(c, MaybeDone::Future(_)));
    if stragglers {
        // Each straggler may already have written to its master; let it finish so that the
        // command order on that master's connection (e.g. a SET followed by our rollback DEL)
        // is what we sent. Its answer no longer matters.
        tokio::spawn(poll_fn(move |cx| {
            let mut running = false;
            for c in pinned(calls.as_mut()) {
                if matches!(*c, MaybeDone::Future(_)) {
                    running |= c.poll(cx).is_pending();
                }
            }
            if running {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        }));
    }
    Round { answers, decision }
}

/// The elements of a pinned slice, each pinned.
fn pinned<T>(slice: Pin<&mut [T]>) -> impl Iterator<Item = Pin<&mut T>> {
    // SAFETY: pinning is structural for the elements of a slice: they are never moved out of
    // the boxed slice, which is never moved or reallocated while pinned. This is how
    // `futures::future::join_all` polls its futures.
    unsafe { slice.get_unchecked_mut() }
        .iter_mut()
        .map(|t| unsafe { Pin::new_unchecked(t) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_is_a_strict_majority() {
        assert_eq!(quorum(1), 1);
        assert_eq!(quorum(2), 2);
        assert_eq!(quorum(3), 2);
        assert_eq!(quorum(4), 3);
        assert_eq!(quorum(5), 3);
    }

    #[test]
    fn decides_success_early() {
        let mut t = Tally::new(5);
        assert_eq!(t.record(true), Decision::Pending);
        assert_eq!(t.record(true), Decision::Pending);
        assert_eq!(t.record(true), Decision::Won);
    }

    #[test]
    fn decides_failure_as_soon_as_quorum_is_impossible() {
        let mut t = Tally::new(5);
        assert_eq!(t.record(false), Decision::Pending);
        assert_eq!(t.record(false), Decision::Pending);
        assert_eq!(t.record(false), Decision::Lost);
    }

    #[test]
    fn even_n_split_does_not_hang() {
        // N = 4, quorum 3: after 2 yes and 2 no, the round must be lost, not pending.
        let mut t = Tally::new(4);
        t.record(true);
        t.record(true);
        assert_eq!(t.record(false), Decision::Pending);
        assert_eq!(t.record(false), Decision::Lost);
        // N = 2: one no already loses.
        let mut t = Tally::new(2);
        assert_eq!(t.record(true), Decision::Pending);
        assert_eq!(t.record(false), Decision::Lost);
    }

    #[test]
    fn single_master() {
        let mut t = Tally::new(1);
        assert_eq!(t.record(true), Decision::Won);
        let mut t = Tally::new(1);
        assert_eq!(t.record(false), Decision::Lost);
    }

    #[test]
    fn choice_tally_with_one_choice_decides_like_tally() {
        for n in 1..=7 {
            for pattern in 0u32..(1 << n) {
                let mut a = Tally::new(n);
                let mut b = ChoiceTally::new(n, quorum(n));
                for i in 0..n {
                    let yes = pattern & (1 << i) != 0;
                    let (da, db) = (a.record(yes), b.record(yes.then_some(0)));
                    assert_eq!(da, db, "n {n} pattern {pattern:b} step {i}");
                    if da != Decision::Pending {
                        break;
                    }
                }
            }
        }
    }

    #[test]
    fn choice_tally_needs_a_quorum_for_one_choice() {
        // Five masters: 0 and 1 grant slot 0, 2 grants slot 1: slot 0 can still win.
        let mut t = ChoiceTally::new(5, 3);
        assert_eq!(t.record(Some(0)), Decision::Pending);
        assert_eq!(t.record(Some(0)), Decision::Pending);
        assert_eq!(t.record(Some(1)), Decision::Pending);
        assert_eq!(t.winner(), None);
        assert_eq!(t.record(Some(0)), Decision::Won);
        assert_eq!(t.winner(), Some(0));
        // A 2 / 2 split can still be won by the last answer; 2 / 2 / 1 is lost.
        let mut t = ChoiceTally::new(5, 3);
        t.record(Some(0));
        t.record(Some(1));
        t.record(Some(0));
        assert_eq!(t.record(Some(1)), Decision::Pending);
        assert_eq!(t.record(Some(2)), Decision::Lost);
        // Three different choices and a no among four answers: no choice can reach 3.
        let mut t = ChoiceTally::new(5, 3);
        t.record(Some(0));
        t.record(Some(1));
        assert_eq!(t.record(None), Decision::Pending);
        assert_eq!(t.record(Some(2)), Decision::Lost);
    }

    #[test]
    fn drift_follows_the_spec() {
        assert_eq!(
            drift(Duration::from_secs(10), 0.01),
            Duration::from_millis(102)
        );
        assert_eq!(drift(Duration::from_secs(1), 0.0), Duration::from_millis(2));
    }

    #[test]
    fn validity_counts_from_t0_minus_drift() {
        let ttl = Duration::from_secs(10);
        let d = drift(ttl, 0.01);
        let t0 = Instant::now();
        let now = t0 + Duration::from_millis(8);
        assert_eq!(
            valid_until(t0, ttl, d, now),
            Some(t0 + Duration::from_millis(10_000 - 102))
        );
    }

    #[test]
    fn validity_never_underflows() {
        let ttl = Duration::from_millis(100);
        let d = drift(ttl, 0.01);
        let t0 = Instant::now();
        assert_eq!(
            valid_until(t0, ttl, d, t0 + Duration::from_millis(200)),
            None
        );
        assert_eq!(
            valid_until(t0, ttl, d, t0 + Duration::from_millis(97)),
            None
        );
        assert_eq!(valid_until(t0, ttl, d, t0 + (ttl - d)), None);
        assert_eq!(valid_until(t0, Duration::from_millis(1), d, t0), None);
    }

    #[test]
    fn the_ttl_sent_is_whole_milliseconds() {
        assert_eq!(
            sent_ttl(Duration::from_micros(1_500_900)),
            Duration::from_millis(1500)
        );
        assert_eq!(sent_ttl(Duration::from_millis(7)), Duration::from_millis(7));
    }

    #[tokio::test]
    async fn every_call_is_dispatched_before_the_round_is_decided() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        // Masters 0-2 fail at once (like broken connections); 3 and 4 would answer later.
        // Their commands must have been started anyway, or they would be sent after the
        // round's rollback.
        let started = Arc::new(AtomicUsize::new(0));
        let round = fan_out(
            5,
            3,
            |i| {
                let started = started.clone();
                async move {
                    if i < 3 {
                        return false;
                    }
                    started.fetch_add(1, Ordering::SeqCst);
                    std::future::pending::<()>().await;
                    true
                }
            },
            |yes| *yes,
        )
        .await;
        assert_eq!(round.decision, Decision::Lost);
        assert_eq!(started.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn fan_out_returns_at_quorum_without_waiting_for_stragglers() {
        tokio::time::pause();
        let start = tokio::time::Instant::now();
        let round = fan_out(
            5,
            3,
            |i| async move {
                // Masters 3 and 4 are "paused": they answer only after an hour.
                let wait = if i >= 3 { 3600 } else { 0 };
                tokio::time::sleep(Duration::from_secs(wait)).await;
                true
            },
            |yes| *yes,
        )
        .await;
        assert_eq!(round.decision, Decision::Won);
        assert!(start.elapsed() < Duration::from_secs(1));
        assert_eq!(round.answers.iter().filter(|a| a.is_some()).count(), 3);
    }

    #[tokio::test]
    async fn stragglers_still_run_to_completion() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        tokio::time::pause();
        let finished = Arc::new(AtomicUsize::new(0));
        let round = fan_out(
            5,
            3,
            |i| {
                let finished = finished.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(10 * i as u64)).await;
                    finished.fetch_add(1, Ordering::SeqCst);
                    true
                }
            },
            |yes| *yes,
        )
        .await;
        assert_eq!(round.decision, Decision::Won);
        assert_eq!(finished.load(Ordering::SeqCst), 3);
        // The two stragglers (a release, say) must still reach their masters.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(finished.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn decides_loss_early_and_on_every_answer() {
        let round = fan_out(4, 3, |i| async move { i < 2 }, |yes| *yes).await;
        assert_eq!(round.decision, Decision::Lost);
    }
}
