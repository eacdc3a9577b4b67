//! The process backend against real redis-servers.

use std::time::{Duration, Instant};

use testcluster::resp::{self, Value};
use testcluster::{Cluster, DataOnRestart, Error, Status};

const T: Duration = Duration::from_secs(2);

fn set(url: &str, k: &str, v: &str) {
    assert_eq!(
        resp::cmd(url, &["SET", k, v], T).unwrap(),
        Value::Simple("OK".into())
    );
}

fn get(url: &str, k: &str) -> Value {
    resp::cmd(url, &["GET", k], T).unwrap()
}

#[test]
fn three_masters_answer_ping_on_distinct_urls() {
    let c = Cluster::start(3).unwrap();
    assert_eq!(c.len(), 3);
    let urls = c.urls();
    assert_eq!(urls.len(), 3);
    let mut sorted = urls.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 3, "{urls:?}");
    for (i, u) in urls.iter().enumerate() {
        assert!(u.starts_with("redis://127.0.0.1:"), "{u}");
        assert_eq!(*u, c.url(i));
        assert_eq!(*u, c.direct_url(i), "no proxy: url is the direct url");
        assert!(resp::ping(u, T), "{}", c.log(i));
        assert_eq!(c.status(i), Status::Running);
    }
    // The masters are independent: a key on one is not on another.
    set(&urls[0], "k", "v");
    assert_eq!(get(&urls[1], "k"), Value::Nil);
    assert!(c.logs().contains("=== master 2"));
    assert!(
        c.log(0).contains("Ready to accept connections"),
        "{}",
        c.log(0)
    );
}

#[test]
fn pause_blocks_replies_and_resume_restores_them() {
    let c = Cluster::start(3).unwrap();
    let url = c.url(1);
    // A connection opened before the pause must also stall, not just new ones.
    let mut before = resp::Conn::connect(&url, T).unwrap();
    assert_eq!(before.cmd(&["PING"]).unwrap(), Value::Simple("PONG".into()));

    c.pause(1).unwrap();
    assert_eq!(c.status(1), Status::Paused);
    assert!(c.is_running(1), "a paused master still exists");
    before.set_read_timeout(Duration::from_millis(300)).unwrap();
    let started = Instant::now();
    let err = before.cmd(&["PING"]).unwrap_err();
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{err:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(250));
    // The kernel still accepts connections for a stopped process; the PING gets no answer.
    assert!(!resp::ping(&url, Duration::from_millis(300)));
    // The others are unaffected.
    assert!(resp::ping(&c.url(0), T));

    c.resume(1).unwrap();
    assert_eq!(c.status(1), Status::Running);
    // The PING queued while paused is answered first.
    before.set_read_timeout(T).unwrap();
    assert_eq!(before.read_reply().unwrap(), Value::Simple("PONG".into()));
    assert!(resp::ping(&url, T), "{}", c.log(1));
}

#[test]
fn kill_then_restart_keep_preserves_acknowledged_writes() {
    let c = Cluster::start(3).unwrap();
    let url = c.url(2);
    set(&url, "survivor", "yes");
    let pid = c.pid(2).unwrap();

    c.kill(2).unwrap();
    assert!(!c.is_running(2));
    assert_eq!(c.status(2), Status::Down);
    assert_eq!(c.pid(2), None);
    assert!(resp::cmd(&url, &["PING"], Duration::from_millis(300)).is_err());
    assert!(matches!(c.pause(2), Err(Error::NotRunning { index: 2 })));
    c.kill(2).unwrap(); // killing a dead master is fine

    c.restart(2, DataOnRestart::Keep).unwrap();
    assert_eq!(c.url(2), url, "restart keeps the URL");
    assert_ne!(c.pid(2), Some(pid));
    assert_eq!(
        get(&url, "survivor"),
        Value::Bulk(b"yes".to_vec()),
        "{}",
        c.log(2)
    );
}

#[test]
fn restart_lose_comes_back_empty() {
    let c = Cluster::start(3).unwrap();
    let url = c.url(0);
    set(&url, "doomed", "1");
    // Restart without a kill first: restart kills a running master itself.
    c.restart(0, DataOnRestart::Lose).unwrap();
    assert_eq!(c.url(0), url);
    assert_eq!(get(&url, "doomed"), Value::Nil, "{}", c.log(0));
    assert_eq!(resp::cmd(&url, &["DBSIZE"], T).unwrap(), Value::Int(0));
}

#[test]
fn restart_of_a_paused_master_works() {
    let c = Cluster::start(1).unwrap();
    set(&c.url(0), "k", "v");
    c.pause(0).unwrap();
    c.restart(0, DataOnRestart::Keep).unwrap();
    assert_eq!(c.status(0), Status::Running);
    assert_eq!(get(&c.url(0), "k"), Value::Bulk(b"v".to_vec()));
}

#[test]
fn drop_kills_and_reaps_every_server_and_removes_dirs() {
    let c = Cluster::start(3).unwrap();
    c.pause(1).unwrap(); // a stopped server must die too
    let pids: Vec<u32> = (0..3).map(|i| c.pid(i).unwrap()).collect();
    let urls = c.urls();
    let state = c.state().to_string();
    let dirs: Vec<String> = state
        .lines()
        .filter_map(|l| {
            l.split('\t')
                .find_map(|f| f.strip_prefix("dir="))
                .map(String::from)
        })
        .collect();
    assert_eq!(dirs.len(), 3);
    drop(c);
    for pid in pids {
        // Reaped, not a zombie: the /proc entry is gone entirely.
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} still exists"
        );
    }
    for u in urls {
        assert!(
            !resp::ping(&u, Duration::from_millis(200)),
            "{u} still answers"
        );
    }
    for d in dirs {
        assert!(!std::path::Path::new(&d).exists(), "{d} not removed");
    }
}

#[test]
fn faults_without_their_prerequisite_say_unsupported() {
    let c = Cluster::start(1).unwrap();
    assert!(c.jump_clock(0, 30).unwrap_err().is_unsupported());
    assert!(matches!(
        c.pause(7),
        Err(Error::NoSuchMaster { index: 7, len: 1 })
    ));
}

#[test]
fn missing_redis_server_is_a_spawn_error() {
    let err = Cluster::builder()
        .masters(1)
        .redis_server("/nonexistent/redis-server")
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::Spawn { .. }), "{err}");
}

#[test]
fn bad_server_option_is_not_ready_with_the_log() {
    // A redis-server that exits at once: the error must carry what it printed.
    let err = Cluster::builder()
        .masters(1)
        .redis_server("/bin/false")
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::NotReady { .. }), "{err}");
}

#[test]
fn many_clusters_in_parallel_threads_do_not_collide() {
    let handles: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(|| {
                let c = Cluster::start(2).unwrap();
                for i in 0..2 {
                    set(&c.url(i), "owner", &c.url(i));
                }
                c.restart(0, DataOnRestart::Keep).unwrap();
                for i in 0..2 {
                    assert_eq!(get(&c.url(i), "owner").as_str().unwrap(), c.url(i));
                }
                c.urls()
            })
        })
        .collect();
    let mut all: Vec<String> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort();
    let n = all.len();
    all.dedup();
    assert_eq!(all.len(), n);
}
