//! The real `redquorum check` against real masters: it names every master, and its exit code
//! reports an evicting policy set behind its back with `CONFIG SET`, and a master it could not
//! check.

mod support;

use support::redquorum;
use testcluster::Cluster;

fn set_policy(cluster: &Cluster, i: usize, policy: &str) -> anyhow::Result<()> {
    let mut c = redis::Client::open(cluster.direct_url(i))?.get_connection()?;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg(policy)
        .query(&mut c)?;
    Ok(())
}

/// Runs `check`: its exit code and stdout.
fn check(cluster: &Cluster) -> anyhow::Result<(Option<i32>, String, String)> {
    let out = redquorum(cluster, "check").output()?;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// The report's line for master `i` (it starts with the index).
fn line_of(report: &str, i: usize) -> &str {
    report
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&i.to_string()))
        .unwrap_or_else(|| panic!("no line for master {i}: {report}"))
}

#[test]
fn check_names_every_master_and_fails_on_eviction_or_an_unchecked_master() -> anyhow::Result<()> {
    let cluster = Cluster::start(3)?;
    let urls = cluster.urls();

    // As started (noeviction, AOF on): every master named, all fine.
    let (code, out, err) = check(&cluster)?;
    assert_eq!(code, Some(0), "{out}{err}");
    for (i, url) in urls.iter().enumerate() {
        let line = line_of(&out, i);
        assert!(line.contains(url.as_str()), "{line}");
        assert!(
            line.contains("noeviction") && line.ends_with("ok"),
            "{line}"
        );
    }

    // An evicting policy set behind the client's back: exit 1, and that master's line says so.
    set_policy(&cluster, 1, "allkeys-lru")?;
    let (code, out, err) = check(&cluster)?;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(line_of(&out, 1).contains("allkeys-lru may evict"), "{out}");
    assert!(line_of(&out, 0).ends_with("ok"), "{out}");
    // volatile-* too: lock keys have a TTL.
    set_policy(&cluster, 1, "volatile-ttl")?;
    assert_eq!(check(&cluster)?.0, Some(1));

    // Eviction takes precedence over a master that cannot be checked.
    cluster.pause(2)?;
    let (code, out, err) = check(&cluster)?;
    assert_eq!(code, Some(1), "{out}{err}");

    // Fixed, but one master paused: it cannot be checked, exit 2.
    set_policy(&cluster, 1, "noeviction")?;
    let (code, out, err) = check(&cluster)?;
    cluster.resume(2)?;
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(line_of(&out, 2).contains("not checked"), "{out}");
    assert!(line_of(&out, 1).ends_with("ok"), "{out}");

    // All well again.
    assert_eq!(check(&cluster)?.0, Some(0));
    Ok(())
}
