//! Bad input and odd topologies get typed errors, and lose nothing.

mod support;

use std::time::Duration;

use redquorum::invalid::ConfigReason;
use redquorum::{Error, Redlock};
use support::{client, values_everywhere};
use testcluster::Cluster;

#[tokio::test]
async fn no_masters_and_bad_urls_are_rejected() {
    let err = Redlock::builder().build().await.unwrap_err();
    assert!(matches!(err, Error::NoMasters), "{err}");
    let err = Redlock::builder()
        .masters(["redis://127.0.0.1:1", "not a url at all"])
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidUrl { index: 1, .. }), "{err}");
    let err = Redlock::builder()
        .masters([
            "redis://user:hunter2@127.0.0.1:1",
            "redis://user:hunter2@127.0.0.1:1",
        ])
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::DuplicateMaster {
                first: 0,
                second: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(!format!("{err} {err:?}").contains("hunter2"));
    let err = Redlock::builder()
        .masters(["redis://127.0.0.1:1"])
        .drift_factor(2.0)
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidConfig(ConfigReason::DriftFactor(f)) if f == 2.0),
        "{err}"
    );
}

/// The password of a Unix-socket URL (`?pass=`), which the client library reads, appears in no
/// error, `Debug` output or log line, whether the socket is missing, the URL is rejected, or the
/// client is built with that master down. Current-thread runtime: the log capture is per thread.
#[tokio::test]
async fn unix_socket_url_passwords_never_show() -> anyhow::Result<()> {
    const SECRET: &str = "hunter2-unix";
    let cluster = Cluster::start(2)?;
    let (logs, _capture) = support::capture_logs();
    let missing = format!(
        "redis+unix:///nonexistent-redquorum-{}/redis.sock?db=1&pass={SECRET}",
        std::process::id()
    );
    let shown = |what: String| {
        assert!(!what.contains(SECRET), "password shown: {what}");
        assert!(
            what.contains("nonexistent-redquorum"),
            "address not shown: {what}"
        );
    };
    // No quorum: the only master's socket does not exist.
    let err = Redlock::builder()
        .masters([&missing])
        .build()
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    assert!(!format!("{err} {err:?}").contains(SECRET), "{err:?}");
    // Rejected: the URL is echoed in the error.
    let invalid = missing.replace("db=1", "db=x");
    let err = Redlock::builder()
        .masters([&invalid])
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidUrl { .. }), "{err}");
    shown(format!("{err} {err:?}"));
    // Built with that master down: it is named in `Debug` and in the start-up warning.
    let mut urls = cluster.urls();
    urls.push(missing.clone());
    let redlock = support::builder(&cluster).masters(urls).build().await?;
    shown(format!("{redlock:?}"));
    // The cache connects its nodes on its own path.
    let err = redquorum::Cache::builder()
        .nodes([&missing])
        .build()
        .await
        .unwrap_err();
    assert!(!format!("{err} {err:?}").contains(SECRET), "{err:?}");
    let cache = redquorum::Cache::builder()
        .nodes([cluster.url(0), missing.clone()])
        .build()
        .await?;
    shown(format!("{cache:?}"));
    let logs = logs.lock().unwrap().clone();
    assert!(logs.contains("unreachable at start"), "{logs}");
    shown(logs);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_server_under_two_addresses_is_a_duplicate() -> anyhow::Result<()> {
    let cluster = Cluster::start(3)?;
    let mut urls = cluster.urls();
    // Same server, different spelling: only its run_id can tell.
    urls.push(urls[0].replace("127.0.0.1", "localhost"));
    let err = Redlock::builder().masters(urls).build().await.unwrap_err();
    assert!(
        matches!(err, Error::DuplicateMaster { first: 0, second: 3, ref why } if why.contains("run_id")),
        "{err}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_resources_and_ttls_are_rejected_before_any_write() -> anyhow::Result<()> {
    let cluster = Cluster::start(5)?;
    let redlock = client(&cluster).await;
    let ttl = Duration::from_secs(5);
    assert!(matches!(
        redlock.acquire("", ttl).await,
        Err(Error::EmptyResource)
    ));
    assert!(matches!(
        redlock.try_acquire("", ttl).await,
        Err(Error::EmptyResource)
    ));
    for bad in [
        Duration::ZERO,
        Duration::from_micros(500),
        Duration::from_secs(365 * 24 * 3600),
        // The tests' per-master timeout is 100 ms: 500 ms is not "well below" it.
        Duration::from_millis(500),
    ] {
        let err = redlock.acquire("r", bad).await.unwrap_err();
        assert!(matches!(err, Error::InvalidTtl { .. }), "{bad:?}: {err}");
        assert!(err.is_invalid_input());
    }
    let mut lock = redlock.acquire("r", ttl).await?;
    assert!(matches!(
        lock.extend(Duration::ZERO).await,
        Err(Error::InvalidTtl { .. })
    ));
    assert!(
        lock.is_valid(),
        "a rejected extend must not affect the lock"
    );
    assert!(lock.release().await?);
    assert_eq!(
        values_everywhere(&cluster, &support::lock_key("")).await,
        vec![None; 5]
    );
    Ok(())
}

/// `with_watchdog` takes the TTLs `acquire` takes: a bad one is rejected at once with
/// `InvalidTtl`, before the closure runs, instead of refused extends being retried until the
/// lock is reported lost; and the lock it consumed is given back, not left to expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_watchdog_rejects_bad_ttls_before_running() -> anyhow::Result<()> {
    let cluster = Cluster::start(3)?;
    let redlock = client(&cluster).await;
    let other = client(&cluster).await;
    let ttl = Duration::from_secs(5);
    for bad in [
        Duration::ZERO,
        redquorum::defaults::MAX_TTL + Duration::from_secs(1),
        // Below 10x the tests' 100 ms per-master timeout.
        Duration::from_millis(500),
    ] {
        let guard = redlock.acquire("watched", ttl).await?;
        let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let started = tokio::time::Instant::now();
        let result = guard
            .with_watchdog(bad, |_| {
                let ran = ran.clone();
                async move {
                    ran.store(true, std::sync::atomic::Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            })
            .await;
        assert!(
            matches!(result, Err(Error::InvalidTtl { ttl, .. }) if ttl == bad),
            "{bad:?}: {result:?}"
        );
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst), "{bad:?}");
        assert!(started.elapsed() < Duration::from_secs(2), "{bad:?}");
        // Released, not left to expire: another client gets the lock at once.
        let taken = other.try_acquire("watched", ttl).await?;
        assert!(taken.expect("lock released").release().await?, "{bad:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minority_down_at_start_does_not_stop_build() -> anyhow::Result<()> {
    let cluster = Cluster::start(5)?;
    // The fencing namespace is not new (a brand-new one needs every master once:
    // tests/fencing.rs): a first client sealed it while every master was up.
    drop(client(&cluster).await);
    cluster.kill(3)?;
    cluster.kill(4)?;
    let redlock = client(&cluster).await;
    let lock = redlock
        .acquire("partial-start", Duration::from_secs(5))
        .await?;
    assert!(lock.release().await?);
    // Without fencing there is nothing to seal: a new namespace works with a minority down.
    let unfenced = support::builder(&cluster)
        .key_prefix("unfenced:")
        .fencing(false)
        .build()
        .await?;
    let lock = unfenced
        .acquire("partial-start", Duration::from_secs(5))
        .await?;
    assert!(lock.release().await?);
    cluster.kill(2)?;
    let err = support::builder(&cluster).build().await.unwrap_err();
    match &err {
        Error::QuorumUnreachable {
            reachable: 2,
            masters: 5,
            quorum: 3,
            replies,
        } => {
            assert_eq!(replies.failures(), 3, "{err}");
        }
        other => panic!("expected QuorumUnreachable, got {other}"),
    }
    assert!(err.is_unavailable());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_answering_errors_is_outvoted_and_named() -> anyhow::Result<()> {
    let cluster = Cluster::start(5)?;
    let redlock = client(&cluster).await;
    // Make master 2 refuse every write with an OOM error reply.
    let mut c = support::direct(&cluster, 2).await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("noeviction")
        .query_async(&mut c)
        .await?;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(1)
        .query_async(&mut c)
        .await?;
    let lock = redlock.acquire("oom", Duration::from_secs(5)).await?;
    assert!(lock.release().await?);
    // With three masters answering errors, acquire fails fast and says why.
    for i in [3, 4] {
        let mut c = support::direct(&cluster, i).await;
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory")
            .arg(1)
            .query_async(&mut c)
            .await?;
    }
    let err = redlock
        .acquire("oom", Duration::from_secs(5))
        .await
        .unwrap_err();
    let replies = err.replies().expect("replies").as_slice().to_vec();
    assert!(matches!(err, Error::Unavailable { failed: 3, .. }), "{err}");
    for i in [2, 3, 4] {
        assert!(
            matches!(&replies[i], redquorum::MasterReply::ServerError(m) if m.contains("OOM")),
            "{err}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn even_number_of_masters_never_hangs_on_a_split() -> anyhow::Result<()> {
    let cluster = Cluster::start(4)?;
    let a = client(&cluster).await;
    let b = client(&cluster).await;
    assert_eq!(a.quorum(), 3);
    // Hold the key on masters 0 and 1 for someone else: a 2-2 split.
    let key = support::lock_key("split");
    for i in 0..2 {
        let mut c = support::direct(&cluster, i).await;
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg("x")
            .arg("PX")
            .arg(10_000)
            .query_async(&mut c)
            .await?;
    }
    let started = tokio::time::Instant::now();
    assert!(
        b.try_acquire("split", Duration::from_secs(5))
            .await?
            .is_none()
    );
    assert!(started.elapsed() < Duration::from_millis(500));
    drop(a);
    Ok(())
}

/// Builder credentials (`credentials(user, password)`) and TLS key material appear in no error,
/// `Debug` output or log line; the username may show (it is not a secret, and it helps find a
/// misconfigured user). Current-thread runtime: the log capture is per thread.
#[tokio::test]
async fn builder_credentials_never_show() -> anyhow::Result<()> {
    const SECRET: &str = "hunter2-builder";
    const KEY: &str = "PRIVATE-KEY-BYTES";
    let cluster = Cluster::start(2)?;
    let (logs, _capture) = support::capture_logs();
    let mut urls = cluster.urls();
    urls.push("redis://127.0.0.1:1".into());
    let builder = support::builder(&cluster)
        .masters(urls)
        .credentials("app-user", SECRET);
    #[cfg(feature = "tls")]
    let builder = builder.tls(redquorum::TlsOptions::new().client_identity_pem("CERT", KEY));
    let shown = format!("{builder:?}");
    assert!(shown.contains("app-user"), "{shown}");
    assert!(!shown.contains(SECRET) && !shown.contains(KEY), "{shown}");
    // The masters have no such user: denied at build, the password nowhere.
    let err = builder.clone().build().await.unwrap_err();
    assert!(matches!(err, Error::Denied { .. }), "{err}");
    let all = format!("{err} {err:?}");
    assert!(!all.contains(SECRET) && !all.contains(KEY), "{all}");
    let cache = redquorum::Cache::builder()
        .nodes(cluster.urls())
        .credentials("app-user", SECRET);
    assert!(!format!("{cache:?}").contains(SECRET));
    let err = cache.build().await.unwrap_err();
    assert!(!format!("{err} {err:?}").contains(SECRET), "{err:?}");
    let logs = logs.lock().unwrap().clone();
    assert!(!logs.contains(SECRET), "{logs}");
    Ok(())
}
