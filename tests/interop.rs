//! The interop key layout against five real masters: locks written the way redsync,
//! node-redlock, aioredlock, RedLock.net and pottery write them (`SET key <random> NX PX`,
//! released by compare-and-delete, extended by compare-and-PEXPIRE) and ours exclude each
//! other both ways, and neither side's release, extend or rollback touches the other's lock.

mod support;

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redquorum::invalid::{ArgumentReason, ConfigReason};
use redquorum::{Error, Redlock};
use support::{counters_everywhere, direct, peer_set, values_everywhere};
use testcluster::Cluster;

const TTL: Duration = Duration::from_secs(10);

/// The peers' release and extend scripts (they all compare the value first).
const PEER_RELEASE: &str = r#"if redis.call("get",KEYS[1]) == ARGV[1] then
  return redis.call("del",KEYS[1])
else
  return 0
end"#;
const PEER_EXTEND: &str = r#"if redis.call("get",KEYS[1]) == ARGV[1] then
  return redis.call("pexpire",KEYS[1],ARGV[2])
else
  return 0
end"#;

/// A peer client's lock as it lays it out: one plain string key, a random value.
struct PeerLock {
    key: String,
    value: String,
}

impl PeerLock {
    fn new(key: &str) -> Self {
        let value = format!("peer-{:032x}", rand::random::<u128>());
        Self {
            key: key.to_owned(),
            value,
        }
    }

    /// `SET key value NX PX ttl` on each of `masters`; how many granted.
    async fn acquire_on(&self, cluster: &Cluster, masters: &[usize], ttl: Duration) -> usize {
        let mut granted = 0;
        for &i in masters {
            granted += usize::from(peer_set(cluster, i, &self.key, &self.value, ttl).await);
        }
        granted
    }

    async fn script_on_all(&self, cluster: &Cluster, script: &str, extra: Option<u64>) -> usize {
        let mut done = 0;
        for i in 0..cluster.len() {
            let mut c = direct(cluster, i).await;
            let script = redis::Script::new(script);
            let mut invocation = script.key(&self.key);
            invocation.arg(&self.value);
            if let Some(arg) = extra {
                invocation.arg(arg);
            }
            let n: i64 = invocation.invoke_async(&mut c).await.unwrap();
            done += usize::from(n == 1);
        }
        done
    }

    async fn release(&self, cluster: &Cluster) -> usize {
        self.script_on_all(cluster, PEER_RELEASE, None).await
    }

    async fn extend(&self, cluster: &Cluster, ttl: Duration) -> usize {
        self.script_on_all(cluster, PEER_EXTEND, Some(ttl.as_millis() as u64))
            .await
    }
}

async fn interop_client(cluster: &Cluster, template: &str) -> Redlock {
    support::builder(cluster)
        .interop_keys(template)
        .acquire_wait(Duration::from_millis(400))
        .build()
        .await
        .unwrap_or_else(|e| panic!("build failed: {e}\n{}", cluster.logs()))
}

async fn pttl(c: &mut MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query_async(c).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_lock_excludes_ours_until_the_peer_releases_it() -> anyhow::Result<()> {
    let cluster = Cluster::start(5)?;
    let redlock = interop_client(&cluster, "{resource}").await;
    let peer = PeerLock::new("orders");
    assert_eq!(peer.acquire_on(&cluster, &[0, 1, 2, 3, 4], TTL).await, 5);

    assert!(redlock.try_acquire("orders", TTL).await?.is_none());
    let err = redlock.acquire("orders", TTL).await.unwrap_err();
    assert!(err.is_contended(), "{err}");
    // Our failed rounds rolled back nothing of the peer's.
    assert_eq!(
        values_everywhere(&cluster, "orders").await,
        vec![Some(peer.value.clone()); 5]
    );

    assert_eq!(peer.release(&cluster).await, 5);
    let ours = redlock.acquire("orders", TTL).await?;
    let held = values_everywhere(&cluster, "orders").await;
    assert!(held.iter().flatten().count() >= 3, "{held:?}");
    assert!(held.iter().flatten().all(|v| *v != peer.value));
    ours.release().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn our_lock_excludes_a_peer_and_its_release_and_extend_cannot_touch_it() -> anyhow::Result<()>
{
    let cluster = Cluster::start(5)?;
    let redlock = interop_client(&cluster, "{resource}").await;
    let mut ours = redlock.acquire("orders", TTL).await?;
    // Wait for the masters past the quorum, so every master holds our key.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = values_everywhere(&cluster, "orders").await;
    let holders = before.iter().flatten().count();
    assert!(holders >= 3, "{before:?}");

    let peer = PeerLock::new("orders");
    let granted = peer.acquire_on(&cluster, &[0, 1, 2, 3, 4], TTL).await;
    assert!(granted < 3, "the peer won a quorum: {granted}");
    // The peer's release and extend compare values, so they leave our lock alone.
    assert_eq!(
        peer.extend(&cluster, Duration::from_secs(60)).await,
        granted
    );
    assert_eq!(peer.release(&cluster).await, granted);
    assert_eq!(values_everywhere(&cluster, "orders").await, before);
    ours.extend(TTL).await?;
    assert!(ours.release().await?);
    Ok(())
}

/// The peer holds a minority (masters 0 and 1), we win the other three: our extend and release
/// act on ours only, and the peer's keys keep their value and their expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn split_holds_each_side_acts_only_on_its_own_keys() -> anyhow::Result<()> {
    let cluster = Cluster::start(5)?;
    let redlock = interop_client(&cluster, "{resource}").await;
    let peer = PeerLock::new("ledger");
    let peer_ttl = Duration::from_secs(30);
    assert_eq!(peer.acquire_on(&cluster, &[0, 1], peer_ttl).await, 2);

    let mut ours = redlock.acquire("ledger", TTL).await?;
    ours.extend(Duration::from_secs(20)).await?;
    let mut c0 = direct(&cluster, 0).await;
    assert!(
        pttl(&mut c0, "ledger").await > 20_000,
        "our extend must not touch the peer's key's expiry"
    );
    assert!(ours.release().await?);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let left = values_everywhere(&cluster, "ledger").await;
    let peer_value = Some(peer.value.clone());
    assert_eq!(left, vec![peer_value.clone(), peer_value, None, None, None]);

    // A round that loses (the peer holds three) rolls back only what it set.
    assert_eq!(peer.acquire_on(&cluster, &[2], peer_ttl).await, 1);
    assert!(redlock.try_acquire("ledger", TTL).await?.is_none());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let left = values_everywhere(&cluster, "ledger").await;
    assert_eq!(left.iter().flatten().count(), 3, "{left:?}");
    assert!(left.iter().flatten().all(|v| *v == peer.value));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pottery_template_and_a_custom_fencing_key() -> anyhow::Result<()> {
    let cluster = Cluster::start(5)?;
    let redlock = support::builder(&cluster)
        .interop_keys("redlock:{resource}")
        .fence_key("shop:fence")
        .acquire_wait(Duration::from_millis(400))
        .build()
        .await?;
    let peer = PeerLock::new("redlock:printer");
    assert_eq!(peer.acquire_on(&cluster, &[0, 1, 2], TTL).await, 3);
    assert!(redlock.try_acquire("printer", TTL).await?.is_none());
    assert_eq!(peer.release(&cluster).await, 3);

    let lock = redlock.acquire("printer", TTL).await?;
    let first = lock.fencing_token().expect("fencing is on");
    let held = values_everywhere(&cluster, "redlock:printer").await;
    assert!(held.iter().flatten().count() >= 3, "{held:?}");
    lock.release().await?;
    let counters = counters_everywhere(&cluster, "shop:fence").await;
    assert!(counters.iter().flatten().count() >= 3, "{counters:?}");
    assert_eq!(
        values_everywhere(&cluster, "redquorum:fence").await,
        vec![None; 5]
    );
    let second = redlock.acquire("printer", TTL).await?;
    assert!(second.fencing_token().unwrap() > first);
    second.release().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn multi_resource_locks_exclude_peers_and_other_primitives_refuse() -> anyhow::Result<()> {
    let cluster = Cluster::start(5)?;
    let redlock = interop_client(&cluster, "{resource}").await;
    let peer = PeerLock::new("acct:2");
    assert_eq!(peer.acquire_on(&cluster, &[0, 1, 2, 3, 4], TTL).await, 5);
    let err = redlock
        .acquire_many(["acct:1", "acct:2"], TTL)
        .await
        .unwrap_err();
    assert!(err.is_contended(), "{err}");
    assert_eq!(values_everywhere(&cluster, "acct:1").await, vec![None; 5]);
    assert_eq!(peer.release(&cluster).await, 5);
    let both = redlock.acquire_many(["acct:1", "acct:2"], TTL).await?;
    assert_eq!(peer.acquire_on(&cluster, &[0, 1, 2, 3, 4], TTL).await, 0);
    both.release().await?;

    let refused = [
        redlock.reentrant("me").acquire("r", TTL).await.unwrap_err(),
        redlock.fair_lock("f").acquire(TTL).await.unwrap_err(),
        redlock.rw_lock("w").read(TTL).await.unwrap_err(),
        redlock.rw_lock("w").write(TTL).await.unwrap_err(),
        redlock.semaphore("s", 2).acquire(TTL).await.unwrap_err(),
    ];
    for err in refused {
        assert!(matches!(err, Error::InteropUnsupported { .. }), "{err}");
        assert!(err.is_invalid_input());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resources_that_name_the_fencing_keys_are_refused() -> anyhow::Result<()> {
    let cluster = Cluster::start(3)?;
    let redlock = interop_client(&cluster, "{resource}").await;
    // The fencing keys, and any key under the library's prefix: a waiter marker (which every
    // release of `jobs` deletes), an election, the topology.
    for name in [
        "redquorum:fence",
        "redquorum:fence:seal",
        "redquorum:lock-waiting:jobs",
        "redquorum:election:leader",
        "redquorum:topology:state",
    ] {
        let err = redlock.acquire(name, TTL).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidArgument(
                    ArgumentReason::NamesFenceKey { .. } | ArgumentReason::UnderKeyPrefix { .. }
                )
            ),
            "{err}"
        );
        let options = redquorum::LockOptions::new(TTL);
        let err = redlock.try_acquire(name, &options).await.unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        let err = redlock.acquire_many(["a", name], TTL).await.unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    }
    let counter = counters_everywhere(&cluster, "redquorum:fence").await;
    assert!(
        counter.iter().all(|v| v.as_deref() != Some("")),
        "{counter:?}"
    );

    for template in ["locks", "{resource}:{resource}", ""] {
        let err = support::builder(&cluster)
            .interop_keys(template)
            .build()
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidConfig(
                    ConfigReason::InteropTemplate { .. } | ConfigReason::InteropSharesPrefix
                )
            ),
            "{template}: {err}"
        );
    }
    let err = support::builder(&cluster)
        .fence_key("")
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidConfig(ConfigReason::EmptyFenceKey)),
        "{err}"
    );
    Ok(())
}
