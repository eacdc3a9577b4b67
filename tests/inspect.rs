//! Inspection against five real masters: the holder's owner id and TTL per master, and the
//! quorum view when masters disagree or fail.

mod support;

use std::time::Duration;

use redquorum::{MasterReply, MasterView, QuorumView};
use support::{builder, client, direct, lock_key};
use testcluster::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspection_names_the_holder_and_its_ttl() -> anyhow::Result<()> {
    let cluster = Cluster::start(5)?;
    let holder = builder(&cluster).owner_id("host-a/7").build().await?;
    let viewer = client(&cluster).await;

    let free = viewer.inspect("job").await?;
    assert_eq!(free.quorum, QuorumView::Free { masters: 5 });

    let lock = holder.acquire("job", Duration::from_secs(10)).await?;
    // The acquire returns at quorum; let the stragglers land so all five report.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let seen = viewer.inspect("job").await?;
    match &seen.quorum {
        QuorumView::Held {
            owner_id,
            masters,
            remaining,
        } => {
            assert_eq!(owner_id.as_deref(), Some("host-a/7"));
            assert_eq!(*masters, 5);
            let left = remaining.expect("a lock key has a TTL");
            assert!(
                left <= Duration::from_secs(10) && left > Duration::from_secs(8),
                "{left:?}"
            );
        }
        other => panic!("expected held, got {other:?}"),
    }
    for view in &seen.masters {
        assert!(matches!(view, MasterView::Held(h) if h.owner_id.as_deref() == Some("host-a/7")));
    }
    // The owner token is not exposed: not in Debug, not in Display.
    let token_part = support::values_everywhere(&cluster, &lock_key("job")).await[0]
        .clone()
        .unwrap();
    let token_part = &token_part[..32];
    assert!(!format!("{seen:?}").contains(token_part));
    assert!(!format!("{}", seen.quorum).contains(token_part));

    assert!(lock.release().await?);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        viewer.inspect("job").await?.quorum,
        QuorumView::Free { masters: 5 }
    );
    Ok(())
}

/// Adversarial: two holds split over the masters (a stale key of an earlier holder left on two
/// masters, planted directly) and a paused master. No quorum agrees: the view must be Unknown,
/// not "held" by whoever has the most masters, and the paused master must be Unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_and_failed_masters_give_unknown() -> anyhow::Result<()> {
    let cluster = Cluster::start(5)?;
    let viewer = client(&cluster).await;
    let key = lock_key("split");
    let stale = format!("{}:old-host/1", "a".repeat(32));
    let fresh = format!("{}:new-host/2", "b".repeat(32));
    for (i, value) in [(0, &stale), (1, &stale), (2, &fresh), (3, &fresh)] {
        let mut c = direct(&cluster, i).await;
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg(value)
            .arg("PX")
            .arg(10_000)
            .query_async(&mut c)
            .await?;
    }
    cluster.pause(4)?;
    let seen = viewer.inspect("split").await;
    cluster.resume(4)?;
    let seen = seen?;
    assert_eq!(seen.quorum, QuorumView::Unknown, "{seen:?}");
    assert_eq!(seen.masters[4], MasterView::Unknown(MasterReply::TimedOut));
    let (MasterView::Held(a), MasterView::Held(b)) = (&seen.masters[0], &seen.masters[2]) else {
        panic!("{seen:?}");
    };
    assert!(!a.same_hold(b));
    assert_eq!(a.owner_id.as_deref(), Some("old-host/1"));

    // The fresh hold on a third master makes a quorum: held by new-host.
    let mut c = direct(&cluster, 4).await;
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(&fresh)
        .arg("PX")
        .arg(10_000)
        .query_async(&mut c)
        .await?;
    let seen = viewer.inspect("split").await?;
    assert!(
        matches!(&seen.quorum, QuorumView::Held { owner_id: Some(id), masters: 3, .. } if id == "new-host/2"),
        "{seen:?}"
    );
    Ok(())
}

#[tokio::test]
async fn bad_owner_ids_are_typed_errors() {
    for id in ["", "a\nb"] {
        let err = redquorum::Redlock::builder()
            .masters(["redis://127.0.0.1:1"])
            .owner_id(id)
            .build()
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                redquorum::Error::InvalidConfig(redquorum::invalid::ConfigReason::OwnerId { .. })
            ),
            "{err}"
        );
    }
}
