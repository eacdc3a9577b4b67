//! The docker backend. Every test skips, saying why, when no docker engine answers.

use std::time::{Duration, Instant};

use testcluster::resp::{self, Conn, Value};
use testcluster::{Backend, Cluster, Cut, DataOnRestart, Status};

const T: Duration = Duration::from_secs(3);
const SHORT: Duration = Duration::from_millis(400);

fn docker_or_skip(test: &str) -> bool {
    if testcluster::docker_available(Duration::from_secs(3)) {
        return true;
    }
    eprintln!("SKIPPED {test}: no docker engine answers `docker info`");
    false
}

fn docker(n: usize) -> testcluster::ClusterBuilder {
    Cluster::builder().masters(n).backend(Backend::Docker)
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

#[test]
fn docker_masters_answer_and_survive_kill_restart_keep() {
    if !docker_or_skip("docker_masters_answer_and_survive_kill_restart_keep") {
        return;
    }
    let c = docker(3).build().unwrap();
    assert_eq!(c.backend(), Backend::Docker);
    for i in 0..3 {
        assert!(resp::ping(&c.url(i), T), "{}", c.log(i));
        assert_eq!(c.status(i), Status::Running);
        assert!(c.container(i).is_some());
        assert!(
            c.log(i).contains("Ready to accept connections"),
            "{}",
            c.log(i)
        );
    }
    let url = c.url(1);
    resp::cmd(&url, &["SET", "k", "v"], T).unwrap();
    c.kill(1).unwrap();
    assert_eq!(c.status(1), Status::Down);
    assert!(!resp::ping(&url, SHORT));
    c.restart(1, DataOnRestart::Keep).unwrap();
    assert_eq!(c.url(1), url, "same URL after restart");
    assert_eq!(
        resp::cmd(&url, &["GET", "k"], T).unwrap(),
        Value::Bulk(b"v".to_vec()),
        "{}",
        c.log(1)
    );
    c.restart(1, DataOnRestart::Lose).unwrap();
    assert_eq!(resp::cmd(&url, &["GET", "k"], T).unwrap(), Value::Nil);
}

#[test]
fn docker_pause_and_resume() {
    if !docker_or_skip("docker_pause_and_resume") {
        return;
    }
    let c = docker(1).build().unwrap();
    let mut conn = Conn::connect(&c.url(0), T).unwrap();
    c.pause(0).unwrap();
    assert_eq!(c.status(0), Status::Paused);
    conn.set_read_timeout(SHORT).unwrap();
    let e = conn.cmd(&["PING"]).unwrap_err();
    assert!(is_timeout(&e), "{e:?}");
    c.resume(0).unwrap();
    conn.set_read_timeout(T).unwrap();
    assert_eq!(conn.read_reply().unwrap(), Value::Simple("PONG".into()));
    // Killing a paused container works too (the engine needs an unpause first).
    c.pause(0).unwrap();
    c.kill(0).unwrap();
    assert_eq!(c.status(0), Status::Down);
}

#[test]
fn docker_network_disconnect_cuts_and_reconnect_heals() {
    if !docker_or_skip("docker_network_disconnect_cuts_and_reconnect_heals") {
        return;
    }
    let c = docker(2).build().unwrap();
    let url = c.url(0);
    c.cut_off(0, Cut::BlackHole).unwrap();
    c.cut_off(0, Cut::BlackHole).unwrap(); // idempotent
    let started = Instant::now();
    assert!(!resp::ping(&url, SHORT));
    assert!(started.elapsed() < T);
    assert!(resp::ping(&c.url(1), T), "the other master is untouched");
    assert!(c.cut_off(0, Cut::Reset).unwrap_err().is_unsupported());
    assert!(c.set_latency(0, SHORT).unwrap_err().is_unsupported());
    c.heal(0).unwrap();
    assert!(resp::ping(&url, T), "{}", c.log(0));
    assert_eq!(c.url(0), url, "reconnected on the same address");
}

#[test]
fn docker_proxy_faults_and_clock_jump() {
    if !docker_or_skip("docker_proxy_faults_and_clock_jump") {
        return;
    }
    let c = docker(2).proxy(true).faketime(true).build().unwrap();
    assert_ne!(c.url(0), c.direct_url(0));
    c.drop_replies(0, true).unwrap();
    assert!(resp::cmd(&c.url(0), &["SET", "k", "v"], SHORT).is_err());
    assert_eq!(
        resp::cmd(&c.direct_url(0), &["GET", "k"], T).unwrap(),
        Value::Bulk(b"v".to_vec())
    );
    c.heal(0).unwrap();

    c.set_latency(1, Duration::from_millis(100)).unwrap();
    let started = Instant::now();
    assert!(resp::ping(&c.url(1), T));
    assert!(started.elapsed() >= Duration::from_millis(200));
    c.heal(1).unwrap();

    c.cut_off(1, Cut::Reset).unwrap();
    assert!(resp::cmd(&c.url(1), &["PING"], T).is_err());
    c.heal(1).unwrap();

    resp::cmd(&c.url(0), &["SET", "lease", "x", "PX", "60000"], T).unwrap();
    c.jump_clock(0, 120).unwrap();
    assert_eq!(
        resp::cmd(&c.url(0), &["GET", "lease"], T).unwrap(),
        Value::Nil,
        "{}",
        c.log(0)
    );
}

#[test]
fn dropping_a_docker_cluster_removes_containers_and_network() {
    if !docker_or_skip("dropping_a_docker_cluster_removes_containers_and_network") {
        return;
    }
    let c = docker(2).build().unwrap();
    let names: Vec<String> = (0..2).map(|i| c.container(i).unwrap()).collect();
    let state = c.state().to_string();
    let network = state
        .lines()
        .find_map(|l| l.strip_prefix("network="))
        .unwrap()
        .to_string();
    drop(c);
    for n in names.iter().chain([&network]) {
        let out = std::process::Command::new("docker")
            .args(["inspect", n])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{n} still exists");
    }
}

#[test]
fn compose_file_runs_five_masters_with_the_local_image() {
    if !docker_or_skip("compose_file_runs_five_masters_with_the_local_image") {
        return;
    }
    let has_compose = std::process::Command::new("docker-compose")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_compose {
        eprintln!("SKIPPED compose_file_runs_five_masters_with_the_local_image: no docker-compose");
        return;
    }
    // Building a cluster once makes sure the local image exists.
    drop(docker(1).build().unwrap());
    let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
    let base = (2000u16..3200)
        .find(|b| (1..=5).all(|k| free(b * 10 + k)))
        .expect("a free block of five ports");
    let project = format!("tccompose{}", std::process::id());
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/docker-compose.yml");
    let compose = |args: &[&str]| {
        std::process::Command::new("docker-compose")
            .args(["-f", file, "-p", &project])
            .args(args)
            .env("REDIS_IMAGE", testcluster::DOCKER_IMAGE)
            .env("REDIS_PORT_BASE", base.to_string())
            .output()
            .unwrap()
    };
    let up = compose(&["up", "-d"]);
    let result = std::panic::catch_unwind(|| {
        assert!(
            up.status.success(),
            "{}",
            String::from_utf8_lossy(&up.stderr)
        );
        for k in 1..=5 {
            let url = format!("redis://127.0.0.1:{}", base * 10 + k);
            let deadline = Instant::now() + Duration::from_secs(10);
            while !resp::ping(&url, SHORT) {
                assert!(Instant::now() < deadline, "{url} never answered");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    });
    let down = compose(&["down", "-v"]);
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

#[test]
fn auto_picks_docker_when_an_engine_answers() {
    if !docker_or_skip("auto_picks_docker_when_an_engine_answers") {
        return;
    }
    let c = Cluster::builder()
        .masters(1)
        .backend(Backend::Auto)
        .build()
        .unwrap();
    assert_eq!(c.backend(), Backend::Docker);
    assert!(resp::ping(&c.url(0), T));
}
