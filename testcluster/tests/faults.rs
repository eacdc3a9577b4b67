//! Proxy faults and clock jumps on the process backend.

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use testcluster::resp::{self, Conn, Value};
use testcluster::{Cluster, Cut, DataOnRestart, Faults};

const T: Duration = Duration::from_secs(2);
const SHORT: Duration = Duration::from_millis(300);

fn proxied(n: usize) -> Cluster {
    Cluster::builder().masters(n).proxy(true).build().unwrap()
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

fn pong(c: &mut Conn) -> bool {
    matches!(c.cmd(&["PING"]), Ok(Value::Simple(s)) if s == "PONG")
}

#[test]
fn proxy_urls_differ_from_direct_urls_and_pass_traffic() {
    let c = proxied(2);
    for i in 0..2 {
        assert_ne!(c.url(i), c.direct_url(i));
        assert!(resp::ping(&c.url(i), T), "{}", c.log(i));
        assert_eq!(c.faults(i).unwrap(), Faults::default());
    }
    resp::cmd(&c.url(0), &["SET", "k", "through-proxy"], T).unwrap();
    assert_eq!(
        resp::cmd(&c.direct_url(0), &["GET", "k"], T).unwrap(),
        Value::Bulk(b"through-proxy".to_vec())
    );
}

#[test]
fn blackhole_times_out_on_open_and_new_connections_and_heal_restores() {
    let c = proxied(2);
    let mut open = Conn::connect(&c.url(0), T).unwrap();
    assert!(pong(&mut open));

    c.cut_off(0, Cut::BlackHole).unwrap();
    open.set_read_timeout(SHORT).unwrap();
    let e = open.cmd(&["PING"]).unwrap_err();
    assert!(
        is_timeout(&e),
        "a black hole gives timeouts, not errors: {e:?}"
    );
    // New connections are accepted (no RST) but never answered.
    let mut fresh = Conn::connect(&c.url(0), SHORT).unwrap();
    let e = fresh.cmd(&["PING"]).unwrap_err();
    assert!(is_timeout(&e), "{e:?}");
    // The server itself is fine and other masters are untouched.
    assert!(resp::ping(&c.direct_url(0), T));
    assert!(resp::ping(&c.url(1), T));

    c.heal(0).unwrap();
    assert!(resp::ping(&c.url(0), T), "new connections work after heal");
    // The open connection lost a request; heal resets it rather than leave it out of sync.
    open.set_read_timeout(T).unwrap();
    assert!(open.cmd(&["PING"]).is_err());
}

#[test]
fn blackhole_without_lost_bytes_keeps_the_connection() {
    let c = proxied(1);
    let mut open = Conn::connect(&c.url(0), T).unwrap();
    assert!(pong(&mut open));
    c.cut_off(0, Cut::BlackHole).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    c.heal(0).unwrap();
    assert!(
        pong(&mut open),
        "an idle connection survives a cut it never noticed"
    );
}

#[test]
fn reset_breaks_open_connections_and_refuses_new_ones_until_heal() {
    let c = proxied(1);
    let mut open = Conn::connect(&c.url(0), T).unwrap();
    assert!(pong(&mut open));
    c.cut_off(0, Cut::Reset).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    let e = open.cmd(&["PING"]).unwrap_err();
    assert!(!is_timeout(&e), "a reset is an error, not a timeout: {e:?}");
    assert!(started.elapsed() < T);
    let new = Conn::connect(&c.url(0), T).and_then(|mut n| n.cmd(&["PING"]));
    assert!(new.is_err(), "{new:?}");
    c.heal(0).unwrap();
    assert!(resp::ping(&c.url(0), T));
}

#[test]
fn latency_adds_at_least_the_delay_each_way() {
    let c = proxied(1);
    let mut conn = Conn::connect(&c.url(0), T).unwrap();
    assert!(pong(&mut conn));
    let d = Duration::from_millis(150);
    c.set_latency(0, d).unwrap();
    let started = Instant::now();
    assert!(pong(&mut conn), "latency applies to the open connection");
    let rtt = started.elapsed();
    assert!(rtt >= 2 * d, "round trip {rtt:?} < 2 x {d:?}");
    assert!(rtt < 2 * d + Duration::from_secs(1), "{rtt:?}");
    c.set_latency(0, Duration::ZERO).unwrap();
    let started = Instant::now();
    assert!(pong(&mut conn));
    assert!(started.elapsed() < d, "latency removed");
}

#[test]
fn drop_replies_lets_the_set_land_but_the_client_hears_nothing() {
    let c = proxied(1);
    let mut conn = Conn::connect(&c.url(0), T).unwrap();
    assert!(pong(&mut conn));
    c.drop_replies(0, true).unwrap();
    conn.set_read_timeout(SHORT).unwrap();
    let e = conn.cmd(&["SET", "lock", "me", "PX", "30000"]).unwrap_err();
    assert!(is_timeout(&e), "{e:?}");
    assert_eq!(
        resp::cmd(&c.direct_url(0), &["GET", "lock"], T).unwrap(),
        Value::Bulk(b"me".to_vec()),
        "the write landed"
    );
    c.drop_replies(0, false).unwrap();
    assert!(resp::ping(&c.url(0), T));
}

#[test]
fn proxy_survives_a_master_restart() {
    let c = proxied(1);
    resp::cmd(&c.url(0), &["SET", "k", "v"], T).unwrap();
    c.kill(0).unwrap();
    assert!(!resp::ping(&c.url(0), SHORT));
    c.restart(0, DataOnRestart::Keep).unwrap();
    assert_eq!(
        resp::cmd(&c.url(0), &["GET", "k"], T).unwrap(),
        Value::Bulk(b"v".to_vec())
    );
}

#[test]
fn jump_clock_expires_a_key_early() {
    let c = Cluster::builder()
        .masters(2)
        .faketime(true)
        .build()
        .unwrap();
    for i in 0..2 {
        resp::cmd(&c.url(i), &["SET", "lease", "x", "PX", "60000"], T).unwrap();
    }
    assert_eq!(c.clock_offset(0).unwrap(), 0);
    c.jump_clock(0, 120).unwrap();
    assert_eq!(c.clock_offset(0).unwrap(), 120);
    assert_eq!(
        resp::cmd(&c.url(0), &["GET", "lease"], T).unwrap(),
        Value::Nil,
        "{}",
        c.log(0)
    );
    // The other master's clock did not move.
    assert_eq!(
        resp::cmd(&c.url(1), &["GET", "lease"], T).unwrap(),
        Value::Bulk(b"x".to_vec())
    );
    // Its TIME moved too, by about the jump.
    let secs = |i: usize| match resp::cmd(&c.url(i), &["TIME"], T).unwrap() {
        Value::Array(v) => v[0].as_str().unwrap().parse::<i64>().unwrap(),
        other => panic!("{other:?}"),
    };
    let skew = secs(0) - secs(1);
    assert!((118..=122).contains(&skew), "skew {skew}");
    // Jumps add up, and survive a restart.
    c.jump_clock(0, -20).unwrap();
    assert_eq!(c.clock_offset(0).unwrap(), 100);
    c.restart(0, DataOnRestart::Keep).unwrap();
    let skew = secs(0) - secs(1);
    assert!((98..=102).contains(&skew), "skew after restart {skew}");
    c.set_clock_offset(0, 0).unwrap();
    assert!((secs(0) - secs(1)).abs() <= 2);
}

#[test]
fn pause_still_works_behind_the_proxy() {
    let c = proxied(1);
    c.pause(0).unwrap();
    assert!(!resp::ping(&c.url(0), SHORT));
    c.resume(0).unwrap();
    assert!(resp::ping(&c.url(0), T));
}

#[test]
fn dropping_a_proxied_cluster_with_open_connections_is_prompt() {
    let c = proxied(3);
    let mut conns: Vec<Conn> = (0..3)
        .map(|i| Conn::connect(&c.url(i), T).unwrap())
        .collect();
    for conn in &mut conns {
        assert!(pong(conn));
    }
    c.cut_off(1, Cut::BlackHole).unwrap();
    c.set_latency(2, Duration::from_secs(5)).unwrap();
    conns[2].send(&["PING"]).unwrap();
    let started = Instant::now();
    drop(c);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    for conn in &mut conns {
        conn.set_read_timeout(SHORT).unwrap();
        assert!(conn.cmd(&["PING"]).is_err());
    }
}
