//! Waiter markers (notify.rs) must never hurt a key that is not ours, and must keep working for
//! a holder that extends: a refused waiter sets the marker only where the key is absent or
//! already a marker, a release deletes it only when it is a marker, and an extend keeps it alive
//! as long as the lock it marks.

mod support;

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use testcluster::Cluster;
use tokio::time::Instant;

const TTL: Duration = Duration::from_secs(30);
/// So long that only a wake-up explains a quick hand-off.
const SLOW_RETRY: Duration = Duration::from_secs(8);

fn polling_every(cluster: &Cluster, delay: Duration) -> redquorum::Builder {
    support::builder(cluster)
        .retry_delay(delay)
        .retry_jitter(Duration::ZERO)
}

/// Writes `key = value` with a TTL on every master, as a peer's `SET key value NX PX` would.
async fn peer_sets(cluster: &Cluster, key: &str, value: &str, ttl: Duration) {
    for i in 0..cluster.len() {
        let set = support::peer_set(cluster, i, key, value, ttl).await;
        assert!(set, "peer's SET on master {i}");
    }
}

async fn pttl(c: &mut MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query_async(c).await.unwrap()
}

/// Our holder holds `resource`, a waiter of ours is refused for a while (it would mark the
/// resource), then the holder releases and the waiter takes the lock. The peer's key under the
/// marker's name must keep its value and expiry on every master throughout.
async fn peer_key_survives_a_wait(
    cluster: &Cluster,
    prefix: &str,
    resource: &str,
    peer_key: &str,
) -> anyhow::Result<()> {
    let ours = |c: &Cluster| support::builder(c).key_prefix(prefix);
    let holder = ours(cluster).build().await?;
    let waiter = ours(cluster)
        .retry_delay(Duration::from_millis(200))
        .build()
        .await?;
    let marker = format!("{prefix}lock-waiting:{resource}");
    assert_eq!(marker, peer_key, "the peer's key is the marker's name");
    let peer_value = "Zm9vYmFyYmF6cXV4cXV1eA=="; // a redsync-style random value
    let peer_ttl = Duration::from_secs(60);
    peer_sets(cluster, peer_key, peer_value, peer_ttl).await;

    let guard = holder.acquire(resource, TTL).await?;
    let name = resource.to_owned();
    let waiting = tokio::spawn(async move {
        waiter
            .acquire(
                &name,
                redquorum::LockOptions::new(TTL).wait(Duration::from_secs(10)),
            )
            .await
    });
    // The waiter is refused several times here (it would set the marker each time).
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(guard.release().await?, "release");
    let got = waiting.await??;
    got.release().await?;
    for i in 0..cluster.len() {
        let mut c = support::direct(cluster, i).await;
        let value: Option<String> = redis::cmd("GET").arg(peer_key).query_async(&mut c).await?;
        assert_eq!(
            value.as_deref(),
            Some(peer_value),
            "master {i}: the peer's lock under the marker's name was overwritten or deleted"
        );
        let left = pttl(&mut c, peer_key).await;
        assert!(
            left > 50_000 && left <= 60_000,
            "master {i}: the peer's lock expiry changed: PTTL {left} ms"
        );
    }
    Ok(())
}

/// A peer (redsync, aioredlock: a plain `SET name random-value NX PX`) locks a resource whose
/// name is our marker's for `jobs`. Failed before: the value became "1" (our waiter's marker),
/// then our release deleted it: the peer's lock was gone while the peer held it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_lock_named_like_a_marker_is_never_overwritten_nor_deleted() -> anyhow::Result<()> {
    let cluster = Cluster::start(3)?;
    peer_key_survives_a_wait(
        &cluster,
        "redquorum:",
        "jobs",
        "redquorum:lock-waiting:jobs",
    )
    .await
}

/// The same with pottery's key format, `redlock:{name}`: a pottery lock named
/// `lock-waiting:printer` is our marker for `printer` with the key prefix `redlock:`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pottery_lock_named_like_a_marker_is_never_overwritten_nor_deleted() -> anyhow::Result<()>
{
    let cluster = Cluster::start(3)?;
    peer_key_survives_a_wait(
        &cluster,
        "redlock:",
        "printer",
        "redlock:lock-waiting:printer",
    )
    .await
}

/// A key of another type under the marker's name (say a peer's hash) is left alone too, and
/// waiting and releasing still work (no WRONGTYPE on our side).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hash_under_the_marker_name_is_left_alone() -> anyhow::Result<()> {
    let cluster = Cluster::start(3)?;
    let holder = support::client(&cluster).await;
    let waiter = polling_every(&cluster, Duration::from_millis(200))
        .build()
        .await?;
    let marker = "redquorum:lock-waiting:hashed";
    for i in 0..cluster.len() {
        let mut c = support::direct(&cluster, i).await;
        let _: () = redis::cmd("HSET")
            .arg(marker)
            .arg("owner")
            .arg("peer")
            .query_async(&mut c)
            .await?;
    }
    let guard = holder.acquire("hashed", TTL).await?;
    let waiting = tokio::spawn(async move {
        waiter
            .acquire(
                "hashed",
                redquorum::LockOptions::new(TTL).wait(Duration::from_secs(10)),
            )
            .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(guard.release().await?);
    waiting.await??.release().await?;
    for i in 0..cluster.len() {
        let mut c = support::direct(&cluster, i).await;
        let owner: Option<String> = redis::cmd("HGET")
            .arg(marker)
            .arg("owner")
            .query_async(&mut c)
            .await?;
        assert_eq!(owner.as_deref(), Some("peer"), "master {i}");
    }
    Ok(())
}

/// A holder that extends past the marker's lifetime: the waiter (TTL 1 s, so its marker lives
/// about 1 s) must still be woken by the release 3 s later, not sleep out its 8 s retry delay.
/// Failed before (extend did not refresh the marker): the hand-off took the retry delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_extended_holder_keeps_its_waiter_marked() -> anyhow::Result<()> {
    let cluster = Cluster::start(3)?;
    let holder = support::client(&cluster).await;
    let waiter = polling_every(&cluster, SLOW_RETRY).build().await?;
    let short = Duration::from_secs(1);
    let mut guard = holder.acquire("kept", short).await?;
    let waiting = tokio::spawn(async move {
        let got = waiter
            .acquire(
                "kept",
                redquorum::LockOptions::new(short).wait(Duration::from_secs(20)),
            )
            .await;
        (got, Instant::now())
    });
    // Keep the lock for 3 s with 1 s extends, every 400 ms: the marker set when the waiter was
    // refused (max(1 s, the holder's PTTL)) would be long gone.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        guard.extend(short).await?;
    }
    let marker = "redquorum:lock-waiting:kept";
    let mut marked = 0;
    for i in 0..cluster.len() {
        let mut c = support::direct(&cluster, i).await;
        if pttl(&mut c, marker).await > 0 {
            marked += 1;
        }
    }
    let released_at = Instant::now();
    assert!(guard.release().await?);
    let (got, acquired_at) = waiting.await?;
    let got = got?;
    let handoff = acquired_at - released_at;
    assert!(
        handoff < Duration::from_secs(2),
        "the waiter took {handoff:?} after the release (markers alive at release: {marked} of 3): \
         it was not woken (retry delay {SLOW_RETRY:?})"
    );
    got.release().await?;
    Ok(())
}
