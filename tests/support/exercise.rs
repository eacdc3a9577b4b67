//! One lock's whole life, for tests that only change how the masters are reached (TLS, ACL
//! users, Unix sockets): everything the client sends must get through.

use std::time::Duration;

use redquorum::Builder;
use tokio::time::Instant;

/// A retry delay so long that only a release wake-up explains a quick hand-off.
pub const SLOW_RETRY: Duration = Duration::from_secs(3);
const TTL: Duration = Duration::from_secs(10);

/// Builds two clients from `builder` (the second one waits with [`SLOW_RETRY`]) and runs a lock
/// through acquire with a fencing token, contention, extend, release, a waiter woken by that
/// release through pub/sub, and a strictly larger token for the waiter.
pub async fn full_lock_cycle(builder: Builder, resource: &str) -> anyhow::Result<()> {
    let holder = builder.clone().build().await?;
    let waiter = builder
        .retry_delay(SLOW_RETRY)
        .retry_jitter(Duration::ZERO)
        .build()
        .await?;
    let mut guard = holder.acquire(resource, TTL).await?;
    let first = guard.fencing_token().expect("fencing is on by default");
    assert!(
        holder.try_acquire(resource, TTL).await?.is_none(),
        "a held lock was granted twice"
    );
    guard.extend(TTL).await?;
    let name = resource.to_owned();
    let waiting = tokio::spawn(async move {
        let got = waiter.acquire(&name, TTL).await;
        (got, Instant::now())
    });
    // Let the waiter fail its first round and settle into its long retry delay.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let released_at = Instant::now();
    assert!(guard.release().await?, "release must succeed");
    let (got, acquired_at) = waiting.await?;
    let got = got?;
    let handoff = acquired_at - released_at;
    assert!(
        handoff < Duration::from_secs(2),
        "the waiter took {handoff:?} after the release: no wake-up reached it"
    );
    let second = got.fencing_token().expect("fencing is on by default");
    assert!(
        second > first,
        "fencing token went from {first} to {second}"
    );
    assert!(got.release().await?);
    Ok(())
}
