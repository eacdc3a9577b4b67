//! The masters self-check against real masters set up the way operators get them wrong: an
//! evicting `maxmemory-policy`, no append-only file, and a lock user whose ACL forbids
//! `CONFIG`. The settings are changed with `CONFIG SET` on the running masters (the same
//! server state a config file gives) so that testcluster's start-up stays as it is.

mod support;

use std::time::Duration;

use redquorum::{Error, MastersReport};
use support::direct;
use testcluster::Cluster;

async fn config_set(cluster: &Cluster, i: usize, name: &str, value: &str) {
    let mut c = direct(cluster, i).await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg(name)
        .arg(value)
        .query_async(&mut c)
        .await
        .unwrap_or_else(|e| panic!("CONFIG SET {name} {value} on master {i}: {e}"));
}

async fn info_field(cluster: &Cluster, i: usize, section: &str, name: &str) -> String {
    let mut c = direct(cluster, i).await;
    let info: String = redis::cmd("INFO")
        .arg(section)
        .query_async(&mut c)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in INFO {section}"))
        .trim()
        .to_owned()
}

/// A build that refuses evicting masters fails, naming master 0.
async fn assert_refuses_master_0(builder: redquorum::Builder) {
    let err = builder
        .refuse_evicting_masters(true)
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::EvictingMaster { index: 0, .. }),
        "{err}"
    );
}

fn settings(report: &MastersReport, i: usize) -> &redquorum::MasterSettings {
    report.masters[i]
        .settings
        .as_ref()
        .unwrap_or_else(|e| panic!("master {i} not read: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn well_configured_masters_report_exactly_what_they_run() -> anyhow::Result<()> {
    let cluster = Cluster::start(3)?;
    let redlock = support::client(&cluster).await;
    let report = redlock.masters_report().await;
    assert_eq!(report.masters.len(), 3);
    for i in 0..3 {
        let s = settings(&report, i);
        assert_eq!(
            s.run_id.as_deref(),
            Some(info_field(&cluster, i, "server", "run_id").await.as_str())
        );
        assert_eq!(
            s.version.as_deref(),
            Some(
                info_field(&cluster, i, "server", "redis_version")
                    .await
                    .as_str()
            )
        );
        assert_eq!(s.maxmemory_policy.as_deref(), Some("noeviction"));
        assert_eq!(s.evicts(), Some(false));
        assert_eq!(s.aof_enabled, Some(true));
        assert_eq!(s.appendfsync.as_deref(), Some("always"));
        assert!(s.config_readable);
        assert!(report.masters[i].problems(false).is_empty());
    }
    let table = report.to_string();
    assert_eq!(table.lines().count(), 4, "{table}");
    for url in cluster.urls() {
        let addr = url.trim_start_matches("redis://");
        assert!(table.contains(addr), "{addr} missing from\n{table}");
    }
    assert!(table.lines().skip(1).all(|l| l.ends_with(" ok")), "{table}");
    Ok(())
}

/// Build warns about the evicting master and, with the quarantine off, about the one without
/// an append-only file; with the quarantine on, only about the evicting one.
#[tokio::test]
async fn build_warns_about_eviction_and_missing_persistence() -> anyhow::Result<()> {
    let cluster = Cluster::start(3)?;
    config_set(&cluster, 1, "maxmemory-policy", "volatile-lru").await;
    config_set(&cluster, 2, "appendonly", "no").await;

    let (redlock, text) = support::logged(support::client(&cluster)).await;
    let evicting: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("volatile-lru"))
        .collect();
    assert_eq!(evicting.len(), 1, "{text}");
    assert!(evicting[0].contains("master=1"), "{text}");
    let no_aof: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("no append-only file"))
        .collect();
    assert_eq!(no_aof.len(), 1, "{text}");
    assert!(no_aof[0].contains("master=2"), "{text}");

    let report = redlock.masters_report().await;
    assert_eq!(settings(&report, 1).evicts(), Some(true));
    assert_eq!(settings(&report, 2).persists(), Some(false));
    assert_eq!(report.first_evicting().map(|m| m.index), Some(1));
    let table = report.to_string();
    assert!(table.lines().nth(1).unwrap().ends_with(" ok"), "{table}");
    assert!(
        table.lines().nth(2).unwrap().contains("volatile-lru"),
        "{table}"
    );

    let quarantined = support::builder(&cluster).restart_quarantine(Duration::from_secs(1));
    let (quarantined, text) = support::logged(quarantined.build()).await;
    let quarantined = quarantined?;
    assert!(!text.contains("no append-only file"), "{text}");
    assert!(text.contains("volatile-lru"), "{text}");
    assert!(
        quarantined.masters_report().await.masters[2]
            .problems(true)
            .is_empty()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusing_evicting_masters_names_the_master() -> anyhow::Result<()> {
    let cluster = Cluster::start(3)?;
    let refusing = || support::builder(&cluster).refuse_evicting_masters(true);
    refusing().build().await?;
    config_set(&cluster, 2, "maxmemory-policy", "allkeys-lru").await;
    match refusing().build().await {
        Err(Error::EvictingMaster {
            index,
            addr,
            policy,
        }) => {
            assert_eq!(index, 2);
            assert_eq!(addr, cluster.url(2));
            assert_eq!(policy, "allkeys-lru");
        }
        other => panic!("expected EvictingMaster, got {other:?}"),
    }
    // Off (the default), the same masters build.
    support::client(&cluster).await;
    Ok(())
}

/// A lock user whose ACL forbids `CONFIG` (as managed Redis often does): the policy and the
/// append-only flag still come from `INFO`, `appendfsync` is unknown, and an evicting master
/// is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_config_permission_info_is_the_fallback() -> anyhow::Result<()> {
    let cluster = Cluster::start(3)?;
    for i in 0..3 {
        let mut c = direct(&cluster, i).await;
        let _: () = redis::cmd("ACL")
            .arg(
                &[
                    "SETUSER", "locker", "on", ">pw", "~*", "&*", "+@all", "-config",
                ][..],
            )
            .query_async(&mut c)
            .await?;
    }
    config_set(&cluster, 0, "maxmemory-policy", "allkeys-random").await;
    let urls: Vec<String> = cluster
        .urls()
        .iter()
        .map(|u| u.replace("redis://", "redis://locker:pw@"))
        .collect();
    let builder = || support::builder_for(urls.clone());
    let redlock = builder().build().await?;
    let report = redlock.masters_report().await;
    for i in 0..3 {
        let s = settings(&report, i);
        assert!(!s.config_readable);
        assert_eq!(s.appendfsync, None);
        assert_eq!(s.aof_enabled, Some(true));
        assert!(s.run_id.is_some() && s.version.is_some());
    }
    assert_eq!(
        settings(&report, 0).maxmemory_policy.as_deref(),
        Some("allkeys-random")
    );
    assert_eq!(
        settings(&report, 1).maxmemory_policy.as_deref(),
        Some("noeviction")
    );
    assert!(!report.to_string().contains(":pw@"), "{report}");
    assert_refuses_master_0(builder()).await;
    Ok(())
}

/// A master that is down at build is reported as not checked (a warning), and does not stop a
/// build that refuses evicting masters: its policy is unknown, not evicting.
#[tokio::test]
async fn a_master_down_at_build_is_reported_not_checked() -> anyhow::Result<()> {
    let cluster = Cluster::start(3)?;
    cluster.kill(2)?;
    let refusing = support::builder(&cluster).refuse_evicting_masters(true);
    let (redlock, text) = support::logged(refusing.build()).await;
    let redlock = redlock?;
    let report = redlock.masters_report().await;
    assert!(report.masters[2].settings.is_err(), "{report}");
    assert!(report.masters[0].settings.is_ok(), "{report}");
    assert!(
        text.lines()
            .any(|l| l.contains("master=2") && l.contains("not checked")),
        "{text}"
    );
    assert!(
        report
            .to_string()
            .lines()
            .nth(3)
            .unwrap()
            .contains("not checked"),
        "{report}"
    );
    Ok(())
}

/// A `redis-server` of our own, started with the settings as arguments (what testcluster does
/// not pass through), killed when dropped.
struct OwnServer {
    child: std::process::Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl OwnServer {
    fn start(args: &[&str]) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = std::env::temp_dir().join(format!("selfcheck-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(&dir)
            .args(args)
            .stdout(std::process::Stdio::null())
            .spawn()?;
        let server = Self { child, port, dir };
        for _ in 0..250 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(40));
        }
        anyhow::bail!("redis-server on port {port} did not come up")
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `CONFIG` renamed (as managed Redis does) on a master started with an evicting policy and
/// without AOF: the report still finds both through `INFO`, and the refusal still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renamed_config_falls_back_to_info() -> anyhow::Result<()> {
    let server = OwnServer::start(&[
        "--rename-command",
        "CONFIG",
        "cfg-hidden",
        "--appendonly",
        "no",
        "--maxmemory-policy",
        "allkeys-lfu",
    ])?;
    let builder = || support::builder_for([server.url()]);
    let report = builder().build().await?.masters_report().await;
    let s = settings(&report, 0);
    assert!(!s.config_readable, "{report}");
    assert_eq!(s.maxmemory_policy.as_deref(), Some("allkeys-lfu"));
    assert_eq!(s.aof_enabled, Some(false));
    assert_eq!(s.appendfsync, None);
    assert_refuses_master_0(builder()).await;
    Ok(())
}
