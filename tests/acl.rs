//! ACL users and Unix sockets: the minimal ACL rule of `docs/production.md` is enough for every
//! lock primitive, wake-ups and fencing; a user lacking a command or key the client needs fails
//! the build with a typed error naming the master and the permission; credentials come from the
//! URL or the builder; masters on Unix sockets form a quorum.

mod support;

use std::time::Duration;

use redquorum::{Error, Redlock};
use support::exercise::full_lock_cycle;
use testcluster::Cluster;

const USER: &str = "locker";
const PASSWORD: &str = "s3cret-pw";
/// What the default user's password becomes, so that nothing reaches the masters without
/// logging in: a client that ignored its credentials would fail.
const ADMIN_PASSWORD: &str = "admin-pw";

/// The rule the guide (`docs/production.md`) gives for a lock user (default key prefix), after `ACL SETUSER <user>`.
const LOCK_USER_RULE: &str = "reset on ~redquorum:* resetchannels &redquorum:released:* \
    -@all +ping +info +mget +script|load +evalsha +eval +publish +subscribe +unsubscribe \
    +get +set +del +exists +incr +pexpire +pttl +time +hget +hset +hdel +hexists +hgetall +hlen +hmget +hincrby +type \
    +zadd +zcard +zrange +zrangebyscore +zrem +zremrangebyscore +zrevrange +zscore";

/// Creates `user` with `rule` on master `i` (plus `extra`), then locks the default user behind
/// a password.
async fn set_user(cluster: &Cluster, i: usize, user: &str, extra: &str) {
    let mut admin = support::direct(cluster, i).await;
    let mut cmd = redis::cmd("ACL");
    cmd.arg("SETUSER").arg(user);
    for part in LOCK_USER_RULE
        .split_whitespace()
        .chain(extra.split_whitespace())
    {
        cmd.arg(part);
    }
    cmd.arg(format!(">{PASSWORD}"));
    let () = cmd.query_async(&mut admin).await.expect("ACL SETUSER");
    let () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("default")
        .arg("resetpass")
        .arg(format!(">{ADMIN_PASSWORD}"))
        .query_async(&mut admin)
        .await
        .expect("ACL SETUSER default");
}

fn builder(urls: Vec<String>) -> redquorum::Builder {
    Redlock::builder()
        .masters(urls)
        .master_timeout(support::TEST_MASTER_TIMEOUT)
        .connect_timeout(Duration::from_secs(2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_minimal_acl_rule_is_enough_for_every_primitive() -> anyhow::Result<()> {
    let cluster = Cluster::start(3)?;
    for i in 0..3 {
        set_user(&cluster, i, USER, "").await;
    }
    let b = builder(cluster.urls()).credentials(USER, PASSWORD);
    full_lock_cycle(b.clone(), "acl-cycle").await?;
    let client = b.build().await?;
    let ttl = Duration::from_secs(10);
    let permit = client.semaphore("acl-sem", 2).acquire(ttl).await?;
    assert_eq!(client.semaphore("acl-sem", 2).available().await?, 1);
    permit.release().await?;
    client
        .fair_lock("acl-fair")
        .acquire(ttl)
        .await?
        .release()
        .await?;
    let rw = client.rw_lock("acl-rw");
    let reader = rw.read(ttl).await?;
    reader.release().await?;
    rw.write(ttl).await?.release().await?;
    let reentrant = client.reentrant("owner-1");
    let outer = reentrant.acquire("acl-re", ttl).await?;
    reentrant.acquire("acl-re", ttl).await?.release().await?;
    outer.release().await?;
    client
        .acquire_many(["acl-m1", "acl-m2"], ttl)
        .await?
        .release()
        .await?;
    Ok(())
}

/// Builds over three masters where master 1's user has `extra` on top of the rule; expects
/// the build to fail naming master 1 and returns the message.
async fn denied_on_master_1(extra: &str) -> String {
    let cluster = Cluster::start(3).expect("masters");
    for i in 0..3 {
        set_user(&cluster, i, USER, if i == 1 { extra } else { "" }).await;
    }
    let mut urls = cluster.urls();
    urls[1] = urls[1].replace("redis://", &format!("redis://{USER}:{PASSWORD}@"));
    match builder(urls).credentials(USER, PASSWORD).build().await {
        Err(e @ Error::Denied { index: 1, .. }) => {
            assert!(e.is_invalid_input());
            let shown = e.to_string();
            assert!(!shown.contains(PASSWORD), "{shown}");
            assert!(shown.contains(&format!("{USER}:***@")), "{shown}");
            shown
        }
        Err(other) => panic!("expected master 1 denied, got: {other}"),
        Ok(_) => panic!("built with a user lacking {extra}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_user_without_evalsha_fails_the_build_naming_the_command() {
    let shown = denied_on_master_1("-evalsha").await;
    assert!(
        shown.contains("NoPerm") && shown.contains("'evalsha'"),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_user_without_eval_fails_the_build_naming_the_command() {
    // EVAL is only the fallback after NOSCRIPT: without the probe it would fail much later.
    let shown = denied_on_master_1("-eval").await;
    assert!(
        shown.contains("NoPerm") && shown.contains("'eval'"),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_user_without_the_lock_keys_fails_the_build() {
    let shown = denied_on_master_1("resetkeys ~other:*").await;
    assert!(
        shown.contains("NoPerm") && shown.contains("keys"),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn credentials_in_the_url_win_and_wrong_ones_are_denied() -> anyhow::Result<()> {
    let cluster = Cluster::start(3)?;
    for i in 0..3 {
        set_user(&cluster, i, USER, "").await;
    }
    let with_user = |u: &String, pw: &str| u.replace("redis://", &format!("redis://{USER}:{pw}@"));
    // Right in the URLs, wrong in the builder: the URLs win.
    let urls: Vec<String> = cluster
        .urls()
        .iter()
        .map(|u| with_user(u, PASSWORD))
        .collect();
    let client = builder(urls).credentials(USER, "wrong").build().await?;
    client
        .acquire("acl-url", Duration::from_secs(5))
        .await?
        .release()
        .await?;
    // A wrong password: denied at build, naming the master, the password hidden.
    let mut urls = cluster.urls();
    urls[2] = with_user(&urls[2], "wrong-pw");
    let b = builder(urls).credentials(USER, PASSWORD);
    assert!(!format!("{b:?}").contains(PASSWORD), "{b:?}");
    match b.build().await {
        Err(e @ Error::Denied { index: 2, .. }) => {
            let shown = e.to_string();
            assert!(shown.contains("authentication failed"), "{shown}");
            assert!(!shown.contains("wrong-pw"), "{shown}");
        }
        other => panic!("expected master 2 denied, got {:?}", other.map(|_| ())),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unix_socket_masters_form_a_quorum() -> anyhow::Result<()> {
    let cluster = Cluster::builder().masters(3).unix_socket(true).build()?;
    for i in 0..3 {
        set_user(&cluster, i, USER, "").await;
    }
    let urls: Vec<String> = (0..3).map(|i| cluster.unix_url(i).unwrap()).collect();
    assert!(
        urls.iter().all(|u| u.starts_with("redis+unix://")),
        "{urls:?}"
    );
    full_lock_cycle(builder(urls).credentials(USER, PASSWORD), "unix-cycle").await?;
    Ok(())
}

/// The cache over its own TLS nodes, logged in as a user with the lock rule plus the cache's
/// `MULTI`/`EXEC` (the guide's cache rule): every write is confirmed and read back. A missing
/// permission would show as dropped writes and misses, which the assertions catch.
#[cfg(feature = "tls")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cache_works_over_tls_nodes_with_the_cache_rule() -> anyhow::Result<()> {
    let cluster = Cluster::builder()
        .masters(2)
        .tls(testcluster::TlsMode::On)
        .build()?;
    for i in 0..2 {
        set_user(&cluster, i, USER, "+multi +exec").await;
    }
    let ca = cluster.pki().unwrap().ca_pem.clone();
    let cache = redquorum::Cache::builder()
        .nodes(cluster.tls_urls().unwrap())
        .node_timeout(support::TEST_MASTER_TIMEOUT)
        .credentials(USER, PASSWORD)
        .tls(redquorum::TlsOptions::new().ca_pem(ca))
        .build()
        .await?;
    let ttl = Duration::from_secs(30);
    for key in ["a", "b", "c", "d"] {
        assert!(
            cache.set(key, key.as_bytes(), ttl).await?.is_written(),
            "{key}"
        );
    }
    let got = cache.get_many(["a", "b", "c", "d"]).await?;
    assert!(got.iter().all(Option::is_some), "{got:?}");
    let computed = cache
        .get_or_compute("filled", ttl, || async {
            Ok::<_, std::io::Error>(b"v".to_vec())
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!(&computed[..], b"v");
    let cas = cache.compare_and_set("versioned", None, "1", ttl).await?;
    assert!(cas.is_written(), "{cas:?}");
    assert!(cache.get_versioned("versioned").await?.is_some());
    Ok(())
}

/// A cache over its own nodes runs a permission probe at build, as the lock client does: a
/// node whose user lacks a command the cache needs (here `MULTI`, which every write uses)
/// fails the build with a typed error naming the node and the command, instead of turning
/// every write into a silent drop.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cache_user_without_multi_fails_the_build() -> anyhow::Result<()> {
    let cluster = Cluster::start(3)?;
    for i in 0..3 {
        // The cache rule is the lock rule plus `+multi +exec`; node 1 lacks `multi`.
        set_user(
            &cluster,
            i,
            USER,
            if i == 1 { "+exec" } else { "+multi +exec" },
        )
        .await;
    }
    let built = redquorum::Cache::builder()
        .nodes(cluster.urls())
        .node_timeout(support::TEST_MASTER_TIMEOUT)
        .credentials(USER, PASSWORD)
        .build()
        .await;
    match built {
        Err(e @ Error::Denied { index: 1, .. }) => {
            assert!(e.is_invalid_input());
            let shown = e.to_string();
            assert!(shown.contains("'multi'"), "{shown}");
        }
        Err(other) => panic!("expected node 1 denied, got: {other}"),
        Ok(cache) => {
            let written = cache.set("probe-me", "v", Duration::from_secs(5)).await?;
            panic!("built with a user lacking MULTI (a set there: {written:?})");
        }
    }
    // The nodes whose user has the cache rule build, and their writes land.
    let cache = redquorum::Cache::builder()
        .nodes([cluster.url(0), cluster.url(2)])
        .node_timeout(support::TEST_MASTER_TIMEOUT)
        .credentials(USER, PASSWORD)
        .build()
        .await?;
    for key in ["a", "b", "c", "d"] {
        assert!(
            cache
                .set(key, "v", Duration::from_secs(5))
                .await?
                .is_written(),
            "{key}"
        );
    }
    Ok(())
}
