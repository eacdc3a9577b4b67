//! [`SpawnOnDrop`]: an async clean-up that runs in the background if the future that armed it is
//! dropped before it disarmed it (a cancelled acquire must roll its round back, a waiter that
//! gave up must leave its queue).

use std::future::Future;

/// Holds a clean-up; spawns it on the current tokio runtime when dropped armed.
///
/// Outside a runtime nothing runs (the keys then expire on their own). [`take`](Self::take)
/// hands the clean-up over to run it now instead.
#[must_use = "dropping it at once runs the clean-up"]
pub(crate) struct SpawnOnDrop<F, Fut>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    armed: Option<F>,
}

impl<F, Fut> SpawnOnDrop<F, Fut>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    /// Armed with `cleanup`.
    pub(crate) fn armed(cleanup: F) -> Self {
        Self {
            armed: Some(cleanup),
        }
    }

    /// The work ended well: no clean-up.
    pub(crate) fn disarm(&mut self) {
        self.armed = None;
    }

    /// The clean-up, to run now (and not again on drop).
    pub(crate) fn take(mut self) -> Option<F> {
        self.armed.take()
    }
}

impl<F, Fut> Drop for SpawnOnDrop<F, Fut>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    fn drop(&mut self) {
        if let Some(cleanup) = self.armed.take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            handle.spawn(cleanup());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn counting(runs: &Arc<AtomicUsize>) -> impl FnOnce() -> futures::future::Ready<()> + use<> {
        let runs = runs.clone();
        move || {
            runs.fetch_add(1, Ordering::SeqCst);
            futures::future::ready(())
        }
    }

    #[tokio::test]
    async fn dropped_armed_runs_once_disarmed_never() {
        let runs = Arc::new(AtomicUsize::new(0));
        drop(SpawnOnDrop::armed(counting(&runs)));
        tokio::task::yield_now().await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        let mut guard = SpawnOnDrop::armed(counting(&runs));
        guard.disarm();
        drop(guard);
        tokio::task::yield_now().await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn taken_runs_only_where_the_caller_runs_it() {
        let runs = Arc::new(AtomicUsize::new(0));
        let cleanup = SpawnOnDrop::armed(counting(&runs)).take().expect("armed");
        tokio::task::yield_now().await;
        assert_eq!(runs.load(Ordering::SeqCst), 0);
        cleanup().await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn outside_a_runtime_nothing_runs() {
        let runs = Arc::new(AtomicUsize::new(0));
        drop(SpawnOnDrop::armed(counting(&runs)));
        assert_eq!(runs.load(Ordering::SeqCst), 0);
    }
}
