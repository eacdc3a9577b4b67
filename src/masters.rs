//! The master set and its quorum: the one way the rounds ask the masters.
//!
//! Every round (acquire, write-back, seal, extend, release, rollback, fair ticket, leaving a
//! queue, the semaphore's `available`) goes through [`Masters`]: a call to every master (or to
//! some), decided by a [`Ballot`] as early as the outcome is certain, with the calls still
//! running when it is decided finished in the background (their commands may already be on
//! the wire, and the order on each connection must stay what was sent). No other module
//! indexes the masters.

use std::future::Future;
use std::sync::Arc;

use futures::future::join_all;

use crate::error::{Error, Replies};
use crate::master::Master;
use crate::quorum::{Ballot, Round, fan_out_ballot_then, quorum, send_all, votes};

/// The masters of one client, in the order the builder got them, and their quorum.
pub(crate) struct Masters {
    list: Vec<Arc<Master>>,
    quorum: usize,
}

impl Masters {
    pub(crate) fn new(list: Vec<Arc<Master>>) -> Self {
        Self {
            quorum: quorum(list.len()),
            list,
        }
    }

    /// How many masters.
    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    /// Votes needed: a strict majority.
    pub(crate) fn quorum(&self) -> usize {
        self.quorum
    }

    /// The masters, by index.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<Master>> {
        self.list.iter()
    }

    /// Master `i`.
    pub(crate) fn get(&self, i: usize) -> &Arc<Master> {
        &self.list[i]
    }

    /// A copy of the list (the cache shares its Redlock's connections).
    pub(crate) fn to_vec(&self) -> Vec<Arc<Master>> {
        self.list.clone()
    }

    /// Sends `call` to every master concurrently and returns once `ballot` has decided.
    pub(crate) async fn ask<T, F, Fut>(&self, call: F, ballot: impl Ballot<T>) -> Round<T>
    where
        T: Send + 'static,
        F: Fn(&Arc<Master>) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        self.ask_then(call, ballot, || {}).await
    }

    /// [`ask`](Self::ask), calling `sent` once every call has been polled once (its command
    /// queued on its connection).
    pub(crate) async fn ask_then<T, F, Fut>(
        &self,
        call: F,
        ballot: impl Ballot<T>,
        sent: impl FnOnce(),
    ) -> Round<T>
    where
        T: Send + 'static,
        F: Fn(&Arc<Master>) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        fan_out_ballot_then(self.len(), |i| call(&self.list[i]), ballot, sent).await
    }

    /// [`ask`](Self::ask) with a yes/no vote per answer: won at `needed` yes votes.
    pub(crate) async fn vote<T, F, Fut>(
        &self,
        needed: usize,
        call: F,
        vote: impl Fn(&T) -> bool,
    ) -> Round<T>
    where
        T: Send + 'static,
        F: Fn(&Arc<Master>) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        self.ask(call, votes(self.len(), needed, vote)).await
    }

    /// [`vote`](Self::vote) among the masters `targets` only (answers indexed like `targets`).
    pub(crate) async fn vote_among<T, F, Fut>(
        &self,
        targets: &[usize],
        needed: usize,
        call: F,
        vote: impl Fn(&T) -> bool,
    ) -> Round<T>
    where
        T: Send + 'static,
        F: Fn(&Arc<Master>) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        let ballot = votes(targets.len(), needed, vote);
        fan_out_ballot_then(
            targets.len(),
            |j| call(&self.list[targets[j]]),
            ballot,
            || {},
        )
        .await
    }

    /// Sends `call` to the masters `targets` and returns once every call is on its way; the
    /// answers are not waited for (rollbacks).
    pub(crate) async fn send_to<T, F, Fut>(&self, targets: &[usize], call: F)
    where
        T: Send + 'static,
        F: Fn(&Arc<Master>) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        send_all(targets.len(), |j| call(&self.list[targets[j]])).await;
    }

    /// Sends `call` to every master and waits for every answer (each call is bounded by its
    /// own timeout): for reads that want every master's view.
    pub(crate) async fn ask_each<'a, T, F, Fut>(&'a self, call: F) -> Vec<T>
    where
        F: Fn(&'a Arc<Master>) -> Fut,
        Fut: Future<Output = T> + 'a,
    {
        join_all(self.list.iter().map(call)).await
    }

    /// The error of a round that failed because too many masters failed.
    pub(crate) fn unavailable(&self, replies: Replies) -> Error {
        Error::unavailable(self.len(), replies)
    }
}
