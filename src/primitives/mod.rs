//! The coordination primitives beyond the basic lock, each in the same shape: an acquire script
//! per master plus a [`HeldBy`](crate::held::HeldBy) describing how the hold is extended,
//! released and rolled back, over the shared round, retry loop, guard and lease (see `held.rs`).

pub(crate) mod fair;
pub(crate) mod multi;
pub(crate) mod queue;
pub(crate) mod reentrant;
pub(crate) mod rwlock;
pub(crate) mod semaphore;
