//! `Builder::batching(false)` against a real master: however many tasks of one client race,
//! every script call leaves as its own `EVALSHA` of one of `scripts/*.lua`, never as the
//! generated batch script. Watched with `MONITOR` on master 0, so that what is checked is what
//! the master was sent; a control run with batching on must show the batch script in the same
//! watch (else the check could not fail).

mod support;

use std::collections::HashSet;
use std::time::Duration;

use redquorum::Redlock;
use support::builder;
use testcluster::Cluster;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const TTL: Duration = Duration::from_secs(30);
/// Enough concurrent tasks that, with batching on, calls queue behind one in flight.
const TASKS: usize = 32;
const ROUNDS: usize = 15;

/// SHA1 of every script of the library's table (`scripts/*.lua`, pieces expanded): what an
/// unbatched client may call by `EVALSHA`.
fn file_script_hashes() -> HashSet<String> {
    redquorum::script_sources()
        .into_iter()
        .map(|(_, source)| redis::Script::new(source).get_hash().to_owned())
        .collect()
}

/// Starts `MONITOR` on master 0; the receiver gets the SHA1 of every top-level `EVALSHA`
/// (script-internal calls are tagged `[.. lua]` and skipped) until the stream is dropped.
async fn watch_evalsha(cluster: &Cluster) -> mpsc::UnboundedReceiver<String> {
    let url = cluster.direct_url(0);
    let addr = url.trim_start_matches("redis://").trim_end_matches('/');
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"MONITOR\r\n").await.unwrap();
    let mut lines = BufReader::new(stream).lines();
    let ok = lines.next_line().await.unwrap().unwrap();
    assert_eq!(ok, "+OK", "MONITOR refused");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(sha) = evalsha_of(&line)
                && tx.send(sha).is_err()
            {
                return;
            }
        }
    });
    rx
}

/// `+<time> [0 127.0.0.1:port] "EVALSHA" "<sha>" ...` -> the SHA1.
fn evalsha_of(line: &str) -> Option<String> {
    let (_, rest) = line.split_once("] ")?;
    let mut quoted = rest.split('"').skip(1).step_by(2);
    let verb = quoted.next()?;
    verb.eq_ignore_ascii_case("evalsha")
        .then(|| quoted.next().map(str::to_owned))
        .flatten()
}

/// The SHA1s sent to master 0 while `redlock` churns, and how many pairs succeeded.
async fn sent_while_churning(
    cluster: &Cluster,
    redlock: &Redlock,
    prefix: &str,
) -> (Vec<String>, usize) {
    let mut rx = watch_evalsha(cluster).await;
    let done = support::churn(redlock, prefix, TASKS, ROUNDS, TTL).await;
    // MONITOR lines trail the replies: wait until the stream is quiet for 300 ms (bounded).
    let mut shas = Vec::new();
    for _ in 0..10_000 {
        match tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
            Ok(Some(sha)) => shas.push(sha),
            _ => break,
        }
    }
    (shas, done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_batching_off_every_call_is_its_own_evalsha() -> anyhow::Result<()> {
    let cluster = Cluster::start(3)?;
    let known = file_script_hashes();

    // Control: batching on, the same load; the batch script (not a file) must show up.
    let batched = builder(&cluster).batching(true).build().await?;
    let (shas, done) = sent_while_churning(&cluster, &batched, "on").await;
    let batches = shas.iter().filter(|s| !known.contains(*s)).count();
    println!(
        "batching on: {done} pairs, {} EVALSHA, {batches} batch calls",
        shas.len()
    );
    assert!(
        batches > 0,
        "the control run sent no batch: the check below could not fail"
    );
    drop(batched);

    let unbatched = builder(&cluster).batching(false).build().await?;
    let (shas, done) = sent_while_churning(&cluster, &unbatched, "off").await;
    println!("batching off: {done} pairs, {} EVALSHA", shas.len());
    assert!(
        done * 2 >= TASKS * ROUNDS,
        "only {done} of {} pairs",
        TASKS * ROUNDS
    );
    let foreign: Vec<&String> = shas.iter().filter(|s| !known.contains(*s)).collect();
    assert!(
        foreign.is_empty(),
        "batching off sent {} calls of a script that is not in scripts/: {:?}",
        foreign.len(),
        &foreign[..foreign.len().min(3)]
    );
    // One EVALSHA per acquire and per release at least (refused tries add rollbacks).
    assert!(
        shas.len() >= 2 * done,
        "{} EVALSHA for {done} pairs: calls were merged",
        shas.len()
    );
    Ok(())
}
