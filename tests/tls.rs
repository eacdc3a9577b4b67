//! `rediss://` masters: a quorum over TLS does everything a plain one does; a certificate
//! from the wrong CA, for the wrong name, or a missing client certificate fails the build with
//! a typed error naming the master; TLS and plain masters mix; "insecure" is opt-in only.
#![cfg(feature = "tls")]

mod support;

use std::time::Duration;

use redquorum::{Error, Redlock, TlsOptions};
use support::exercise::full_lock_cycle;
use testcluster::{Backend, Cluster, TestPki, TlsMode};

fn tls_cluster(n: usize, mode: TlsMode) -> Cluster {
    Cluster::builder()
        .masters(n)
        .tls(mode)
        .build()
        .expect("starting TLS masters")
}

fn trusting(cluster: &Cluster) -> TlsOptions {
    TlsOptions::new().ca_pem(cluster.pki().expect("a TLS cluster").ca_pem.clone())
}

fn builder(urls: Vec<String>) -> redquorum::Builder {
    Redlock::builder()
        .masters(urls)
        .master_timeout(support::TEST_MASTER_TIMEOUT)
        .connect_timeout(Duration::from_secs(2))
}

/// Expects a build to fail with a TLS error for `index`, and returns its message.
async fn tls_failure(builder: redquorum::Builder, index: usize) -> String {
    match builder.build().await {
        Err(e @ Error::Tls { index: i, .. }) if i == index => {
            assert!(e.is_invalid_input(), "{e}");
            e.to_string()
        }
        Err(other) => panic!("expected a TLS error for master {index}, got: {other}"),
        Ok(_) => panic!("built a client over a TLS connection that should not verify"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_quorum_of_tls_masters_locks_fences_and_wakes_waiters() -> anyhow::Result<()> {
    let cluster = tls_cluster(3, TlsMode::On);
    let urls = cluster.tls_urls().unwrap();
    let b = builder(urls).tls(trusting(&cluster));
    full_lock_cycle(b.clone(), "tls-cycle").await?;
    // The keys are really on the masters behind those TLS ports.
    let client = b.build().await?;
    let guard = client.acquire("tls-seen", Duration::from_secs(10)).await?;
    let values = support::values_everywhere(&cluster, &support::lock_key("tls-seen")).await;
    assert!(values.iter().all(Option::is_some), "{values:?}");
    guard.release().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_certificate_from_another_ca_fails_the_build_naming_the_master() -> anyhow::Result<()> {
    let cluster = tls_cluster(3, TlsMode::On);
    let mut urls = cluster.tls_urls().unwrap();
    // Only master 1 is reached with a password: it must not show in the error.
    urls[1] = urls[1].replace("rediss://", "rediss://app:hunter2@");
    let stranger = TestPki::generate(&["127.0.0.1".into()])?;
    let b = builder(urls.clone()).tls(TlsOptions::new().ca_pem(stranger.ca_pem));
    let shown = tls_failure(b, 0).await;
    assert!(shown.contains(&urls[0]), "{shown}");
    // The stranger CA has the same name as the real one: only the signature tells them apart.
    assert!(shown.contains("invalid peer certificate"), "{shown}");

    // The system's roots do not know the test CA either; the password stays hidden.
    let only_one = vec![urls[1].clone()];
    let shown = tls_failure(builder(only_one), 0).await;
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("app:***@127.0.0.1"), "{shown}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_certificate_for_another_name_fails_the_build() -> anyhow::Result<()> {
    // Signed by the CA the client trusts, but for a name that is not the URL's host.
    let cluster = Cluster::builder()
        .masters(3)
        .tls(TlsMode::On)
        .tls_server_names(vec!["redis.example.invalid".into()])
        .build()?;
    let urls = cluster.tls_urls().unwrap();
    let shown = tls_failure(builder(urls.clone()).tls(trusting(&cluster)), 0).await;
    assert!(shown.contains("not valid for name"), "{shown}");

    // Accepting any certificate is an explicit opt-in, per master (URL) or for all (builder).
    let insecure: Vec<String> = urls.iter().map(|u| format!("{u}#insecure")).collect();
    full_lock_cycle(builder(insecure), "tls-insecure-url").await?;
    let anything = TlsOptions::new().dangerously_accept_invalid_certificates();
    builder(urls).tls(anything).build().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_and_plain_masters_mix_in_one_quorum() -> anyhow::Result<()> {
    let cluster = tls_cluster(3, TlsMode::On);
    let tls = cluster.tls_urls().unwrap();
    let urls = vec![tls[0].clone(), cluster.url(1), tls[2].clone()];
    let b = builder(urls).tls(trusting(&cluster));
    full_lock_cycle(b.clone(), "tls-mixed").await?;
    // With one TLS master down, the plain one is needed for the quorum: it must count.
    cluster.kill(2)?;
    let client = b.build().await?;
    let guard = client
        .acquire("tls-mixed-2", Duration::from_secs(10))
        .await?;
    let values = support::values_everywhere(&cluster, &support::lock_key("tls-mixed-2")).await;
    assert!(values[0].is_some() && values[1].is_some(), "{values:?}");
    guard.release().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mutual_tls_needs_the_client_certificate() -> anyhow::Result<()> {
    let cluster = tls_cluster(3, TlsMode::MutualAuth);
    let pki = cluster.pki().unwrap().clone();
    let urls = cluster.tls_urls().unwrap();
    // Without a client certificate, the server refuses the handshake.
    let shown = tls_failure(builder(urls.clone()).tls(trusting(&cluster)), 0).await;
    assert!(shown.contains(&urls[0]), "{shown}");
    // With one signed by the CA the servers trust, everything works.
    let with_cert = trusting(&cluster).client_identity_pem(pki.client_cert_pem, pki.client_key_pem);
    full_lock_cycle(builder(urls.clone()).tls(with_cert), "mtls").await?;
    // A certificate from another CA is refused like none at all.
    let stranger = TestPki::generate(&["127.0.0.1".into()])?;
    let wrong =
        trusting(&cluster).client_identity_pem(stranger.client_cert_pem, stranger.client_key_pem);
    tls_failure(builder(urls).tls(wrong), 0).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_pem_is_a_config_error() {
    let e = builder(vec!["rediss://127.0.0.1:1".into()])
        .tls(TlsOptions::new().ca_pem("not a certificate"))
        .build()
        .await
        .expect_err("a CA that does not parse");
    assert!(
        matches!(
            e,
            Error::InvalidConfig(redquorum::invalid::ConfigReason::Tls(_))
        ),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn docker_masters_serve_tls_too() -> anyhow::Result<()> {
    if !testcluster::docker_available(Duration::from_secs(3)) {
        eprintln!("skipped: no docker engine");
        return Ok(());
    }
    let cluster = Cluster::builder()
        .masters(3)
        .backend(Backend::Docker)
        .tls(TlsMode::On)
        .build()?;
    let urls = cluster.tls_urls().unwrap();
    full_lock_cycle(builder(urls).tls(trusting(&cluster)), "docker-tls").await?;
    Ok(())
}
