//! Real-master tests of resuming an interrupted change, reaching a state the public API gets
//! into only through a partition at the worst moment: an administrator routing by a joint
//! topology that a newer change has already replaced.

use std::time::Duration;

use testcluster::Cluster;

use super::*;
use crate::ring::{HashRing, RingNode};

fn group() -> Cluster {
    Cluster::builder()
        .masters(3)
        .build()
        .expect("starting a group's masters")
}

fn builder(cluster: &Cluster) -> Builder {
    Redlock::builder()
        .masters(cluster.urls())
        .master_timeout(Duration::from_millis(100))
}

async fn sharded(groups: &[(&str, &Cluster)]) -> ShardedRedlock {
    let mut b = ShardedRedlock::builder().max_ttl(Duration::from_secs(1));
    for (name, cluster) in groups {
        b = b.group(*name, 1, builder(cluster));
    }
    b.build().await.expect("building the sharded client")
}

/// Found by an adversarial probe: an administrator resuming the joint topology `{a,b} →
/// {a,b,c}` at epoch 2, after another change `{a,b} → {a,b,d}` had stored epochs 2 and 3,
/// stored the old joint again under epoch 5 on a, b and c only. Group d never heard of it, so
/// a client on epoch 3 and one on epoch 5 both held a resource that d owns under epoch 3.
/// Now the resume sees the newer epoch, writes nothing and loads the newest topology.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_a_superseded_joint_writes_nothing_and_reloads() {
    let (a, b, c, d) = (group(), group(), group(), group());
    let stale_admin = sharded(&[("a", &a), ("b", &b)]).await;
    let other_admin = sharded(&[("a", &a), ("b", &b)]).await;
    other_admin
        .change_groups([
            ("a", 1, builder(&a)),
            ("b", 1, builder(&b)),
            ("d", 1, builder(&d)),
        ])
        .await
        .expect("the other administrator's change");
    assert_eq!(other_admin.epoch(), 3);
    let ring: HashRing = [("a", 1), ("b", 1), ("d", 1)]
        .iter()
        .map(|(n, w)| RingNode::new(*n, 11211).with_weight(*w))
        .collect();
    let r = (0..5000)
        .map(|i| format!("r{i}"))
        .find(|r| ring.node_for(r).expect("a group").host() == "d")
        .expect("a resource owned by d");

    // The stale administrator routes by an interrupted change's joint spec at epoch 2 (as
    // one whose reads missed every newer spec would) and resumes it under the change lock.
    let groups = [
        ("a", 1, builder(&a)),
        ("b", 1, builder(&b)),
        ("c", 1, builder(&c)),
    ]
    .map(|(n, w, bld)| (n.to_owned(), w, bld));
    stale_admin.remember_builders(&groups);
    let specs: Vec<GroupSpec> = groups
        .iter()
        .map(|(n, w, bld)| crate::sharded::builder::spec_of(n, *w, bld))
        .collect();
    let current = stale_admin.view().topology.clone();
    let joint = Topology::new(2, current.max_ttl, specs, Some(current.groups)).unwrap();
    stale_admin.adopt(joint).await.unwrap();
    let ttl = current.max_ttl * 2 + CHANGE_LOCK_SLACK;
    let mut lock = ChangeLock::take(&stale_admin.view(), ttl)
        .await
        .unwrap()
        .expect("the change lock is free");
    let resumed = stale_admin.resume_change(&mut lock).await;
    lock.release().await;
    resumed.expect("a superseded resume reloads and returns");
    assert_eq!(stale_admin.epoch(), 3, "the newest topology is loaded");

    // Nothing above epoch 3 was stored: a client of a, b and c routes by epoch 3 too, and
    // the resource d owns has one holder.
    let late = sharded(&[("a", &a), ("b", &b), ("c", &c)]).await;
    assert_eq!(late.epoch(), 3);
    let holder = other_admin
        .try_acquire(&r, Duration::from_secs(1))
        .await
        .unwrap()
        .expect("free");
    let second = late.try_acquire(&r, Duration::from_secs(1)).await.unwrap();
    assert!(
        second.is_none(),
        "two holders of {r}: {holder:?} and {second:?}"
    );
}

/// A resume stores a spec on every group any joint spec of its epoch names, so its view can
/// connect a group the spec does not name. The next change's lock then checked the view's
/// groups instead of the topology's: never all covered, it released and retook the lock
/// forever (no wait, no deadline on that path). Now it checks the topology's groups (the
/// resume covers the rest) and the retake is bounded by the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_with_a_group_its_topology_does_not_name_does_not_stall_the_change_lock() {
    let (a, b, c) = (group(), group(), group());
    let admin = sharded(&[("a", &a), ("b", &b)]).await;
    let extra = sharded(&[("c", &c)]).await;
    let view = admin.view();
    let mut groups = view.groups.clone();
    groups.insert("c".into(), extra.view().group("c").clone());
    admin.set_view(View::new(view.topology.clone(), groups));
    let specs = view.topology.groups.clone();
    let locked = tokio::time::timeout(Duration::from_secs(20), admin.lock_change(&specs)).await;
    let lock = locked
        .expect("the change lock is taken or refused within its wait")
        .expect("the change lock is free");
    lock.release().await;
}

/// The change lock is a fixed TTL, not a lease: a change that outlives it (an administrator
/// paused between its joint and its final spec) must store nothing more. The client refuses
/// to send after the lock's validity; and a write that gets past that check (here: a lock
/// whose validity is pretended to run for an hour while its keys expire after 200 ms, as a
/// write delayed in the network would) is refused by every master, whether the key expired
/// or another administrator holds it now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_outlives_its_change_lock_stores_nothing() {
    let (a, b) = (group(), group());
    let admin = sharded(&[("a", &a), ("b", &b)]).await;
    let other = sharded(&[("a", &a), ("b", &b)]).await;
    let view = admin.view();
    let next = Topology::new(
        2,
        view.topology.max_ttl,
        view.topology.groups.clone(),
        Some(view.topology.groups.clone()),
    )
    .unwrap();
    let short = Duration::from_millis(200);
    let lock = ChangeLock::take(&view, short)
        .await
        .unwrap()
        .expect("the change lock is free");
    tokio::time::sleep(short + Duration::from_millis(100)).await;
    let late = store_everywhere(&view, &next, &lock).await;
    assert!(
        matches!(&late, Err(Error::StaleTopology { .. })),
        "a write after the lock's validity: {late:?}"
    );
    // Past the client's check: the masters refuse (the key expired).
    let mut pretended = ChangeLock::take(&view, short)
        .await
        .unwrap()
        .expect("the change lock is free");
    pretended.valid_until = Instant::now() + Duration::from_secs(3600);
    tokio::time::sleep(short + Duration::from_millis(100)).await;
    let expired = store_everywhere(&view, &next, &pretended).await;
    assert!(
        expired.as_ref().is_err_and(store::is_stale),
        "a write under an expired change lock: {expired:?}"
    );
    // Another administrator holds it now: still refused.
    let theirs = ChangeLock::take(&other.view(), Duration::from_secs(5))
        .await
        .unwrap()
        .expect("the expired lock is free again");
    let taken = store_everywhere(&view, &next, &pretended).await;
    assert!(
        taken.as_ref().is_err_and(store::is_stale),
        "a write under a change lock another administrator holds: {taken:?}"
    );
    theirs.release().await;
    std::mem::forget(pretended);
    assert_eq!(admin.reload().await.unwrap(), 1, "nothing was stored");
}
