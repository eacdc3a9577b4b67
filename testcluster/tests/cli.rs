//! The `testcluster` binary: up in the background, operate from later invocations, down.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use testcluster::resp::{self, Value};

const T: Duration = Duration::from_secs(2);

struct StateDir(PathBuf);

impl StateDir {
    fn new(name: &str) -> StateDir {
        let d = std::env::temp_dir().join(format!("testcluster-cli-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        StateDir(d)
    }
    fn state(&self) -> PathBuf {
        self.0.join("state")
    }
    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_testcluster"))
            .args(args)
            .env("TESTCLUSTER_STATE", self.state())
            .output()
            .unwrap()
    }
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "testcluster {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        // Never leave servers behind if an assertion failed half-way.
        if self.state().exists() {
            let _ = self.run(&["down"]);
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn pids(status: &str) -> Vec<u32> {
    status
        .lines()
        .filter_map(|l| {
            l.split('\t')
                .find_map(|f| f.strip_prefix("pid=")?.parse().ok())
        })
        .collect()
}

#[test]
fn up_status_faults_and_down() {
    let d = StateDir::new("lifecycle");
    let urls: Vec<String> = d
        .ok(&["up", "--masters", "3"])
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(urls.len(), 3, "{urls:?}");
    // The CLI process has exited: the servers must still be there.
    for u in &urls {
        assert!(resp::ping(u, T), "{u}");
    }
    let again = d.run(&["up"]);
    assert!(
        !again.status.success(),
        "a second up must refuse to clobber the state"
    );

    let status = d.ok(&["status"]);
    assert_eq!(status.lines().count(), 3, "{status}");
    assert!(status.lines().all(|l| l.ends_with("running")), "{status}");
    assert!(status.contains(&urls[1]));

    d.ok(&["pause", "1"]);
    assert!(
        d.ok(&["status"])
            .lines()
            .nth(1)
            .unwrap()
            .ends_with("paused")
    );
    assert!(!resp::ping(&urls[1], Duration::from_millis(300)));
    d.ok(&["resume", "1"]);
    assert!(resp::ping(&urls[1], T));

    assert_eq!(
        resp::cmd(&urls[2], &["SET", "k", "v"], T).unwrap(),
        Value::Simple("OK".into())
    );
    d.ok(&["kill", "2"]);
    assert!(d.ok(&["status"]).lines().nth(2).unwrap().ends_with("down"));
    d.ok(&["restart", "2"]);
    assert_eq!(
        resp::cmd(&urls[2], &["GET", "k"], T).unwrap(),
        Value::Bulk(b"v".to_vec())
    );
    d.ok(&["restart", "2", "--lose-data"]);
    assert_eq!(resp::cmd(&urls[2], &["GET", "k"], T).unwrap(), Value::Nil);

    let clock = d.run(&["clock", "0", "+30s"]);
    assert!(!clock.status.success());
    assert!(
        String::from_utf8_lossy(&clock.stderr).contains("faketime"),
        "clock without --faketime must say why"
    );
    assert!(!d.run(&["pause", "9"]).status.success());

    let before = pids(&d.ok(&["status"]));
    assert_eq!(before.len(), 3);
    d.ok(&["down"]);
    assert!(!d.state().exists());
    for pid in before {
        assert!(
            !Path::new(&format!("/proc/{pid}/cmdline")).exists() || {
                let c = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                !String::from_utf8_lossy(&c).contains("redis-server")
            }
        );
    }
    for u in &urls {
        assert!(
            !resp::ping(u, Duration::from_millis(200)),
            "{u} survived down"
        );
    }
    assert!(
        !d.run(&["status"]).status.success(),
        "status after down must fail"
    );
}

#[test]
fn up_with_proxy_and_faketime_serves_faults_from_a_helper() {
    let d = StateDir::new("proxy");
    let urls: Vec<String> = d
        .ok(&["up", "--masters", "2", "--proxy", "--faketime"])
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(urls.len(), 2);
    // `up` has exited; the helper keeps the proxies alive.
    for u in &urls {
        assert!(resp::ping(u, T), "{u}");
    }
    let status = d.ok(&["status"]);
    assert!(status.contains("proxy:pass"), "{status}");

    d.ok(&["cut", "0"]);
    assert!(!resp::ping(&urls[0], Duration::from_millis(300)));
    assert!(resp::ping(&urls[1], T));
    assert!(d.ok(&["status"]).contains("proxy:cut=blackhole"));
    d.ok(&["heal", "0"]);
    assert!(resp::ping(&urls[0], T));

    d.ok(&["latency", "1", "150ms"]);
    let started = std::time::Instant::now();
    assert!(resp::ping(&urls[1], T));
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    d.ok(&["latency", "1", "0"]);

    d.ok(&["drop-replies", "0", "on"]);
    assert!(resp::cmd(&urls[0], &["SET", "k", "v"], Duration::from_millis(300)).is_err());
    d.ok(&["drop-replies", "0", "off"]);
    assert_eq!(
        resp::cmd(&urls[0], &["GET", "k"], T).unwrap(),
        Value::Bulk(b"v".to_vec())
    );

    assert_eq!(
        resp::cmd(&urls[1], &["SET", "lease", "x", "PX", "60000"], T).unwrap(),
        Value::Simple("OK".into())
    );
    assert_eq!(d.ok(&["clock", "1", "+120s"]).trim(), "+120s");
    assert_eq!(
        resp::cmd(&urls[1], &["GET", "lease"], T).unwrap(),
        Value::Nil
    );

    d.ok(&["down"]);
    for u in &urls {
        assert!(
            !resp::ping(u, Duration::from_millis(200)),
            "{u} survived down"
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(&d.0).unwrap().collect();
    assert!(leftovers.is_empty(), "down left files: {leftovers:?}");
    assert!(
        d.0.exists(),
        "down must not remove a directory it did not create"
    );
}

#[test]
fn proxy_commands_without_proxy_fail_clearly() {
    let d = StateDir::new("noproxy");
    d.ok(&["up", "--masters", "1"]);
    let out = d.run(&["cut", "0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--proxy"), "{err}");
    assert!(!d.run(&["latency", "0", "10ms"]).status.success());
    d.ok(&["down"]);
}

#[test]
fn docker_backend_from_the_cli() {
    if !testcluster::docker_available(Duration::from_secs(3)) {
        eprintln!("SKIPPED docker_backend_from_the_cli: no docker engine answers `docker info`");
        return;
    }
    let d = StateDir::new("docker");
    let urls: Vec<String> = d
        .ok(&["up", "--masters", "2", "--backend", "docker"])
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(urls.len(), 2);
    for u in &urls {
        assert!(resp::ping(u, T), "{u}");
    }
    let status = d.ok(&["status"]);
    assert!(status.contains("container="), "{status}");
    // Without --proxy, docker cuts a master off by disconnecting it from its network.
    d.ok(&["cut", "0"]);
    assert!(!resp::ping(&urls[0], Duration::from_millis(300)));
    d.ok(&["heal", "0"]);
    assert!(resp::ping(&urls[0], T));
    d.ok(&["pause", "1"]);
    assert!(d.ok(&["status"]).lines().nth(1).unwrap().contains("paused"));
    d.ok(&["kill", "1"]);
    d.ok(&["restart", "1"]);
    assert!(resp::ping(&urls[1], T));
    let names: Vec<String> = d
        .ok(&["status"])
        .lines()
        .filter_map(|l| {
            l.split('\t')
                .find_map(|f| f.strip_prefix("container="))
                .map(String::from)
        })
        .collect();
    d.ok(&["down"]);
    for n in names {
        let out = Command::new("docker")
            .args(["inspect", &n])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{n} survived down");
    }
}
