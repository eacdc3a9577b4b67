//! Transfers between accounts, each locking both accounts at once with one multi-resource lock.
//!
//! How to run: `cargo run --example multi_lock` starts five local `redis-server` masters itself
//! (stopped when the example ends). To use masters of your own instead:
//! `REDQUORUM_MASTERS=redis://h1:6379,redis://h2:6379,redis://h3:6379 cargo run --example multi_lock`.
//!
//! What it shows: six workers (each its own client, as if in six processes) move money between
//! four accounts. Each transfer locks `{from, to}` in one round, naming them in whatever order it
//! likes: the lock sorts the names and a master grants the whole set or nothing, so two
//! transfers `a -> b` and `b -> a` cannot deadlock. The balances live in a plain map with a
//! deliberate gap between read and write, so any overlap of two holders would lose money; the
//! total is checked at the end. Then the cost of one lock round for 1, 2 and 8 resources.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redquorum::Redlock;

const ACCOUNTS: [&str; 4] = ["alice", "bob", "carol", "dave"];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (urls, _cluster) = common::masters()?;
    println!("masters: {}", urls.join(" "));
    let balances: Arc<Mutex<HashMap<&str, i64>>> =
        Arc::new(Mutex::new(ACCOUNTS.iter().map(|a| (*a, 100)).collect()));

    let mut workers = Vec::new();
    for id in 0..6usize {
        let redlock = Redlock::builder().masters(urls.clone()).build().await?;
        let balances = balances.clone();
        workers.push(tokio::spawn(async move {
            for n in 0..8usize {
                let from = ACCOUNTS[(id + n) % 4];
                let to = ACCOUNTS[(id + 3 * n + 1) % 4];
                if from == to {
                    continue;
                }
                let lock = redlock
                    .acquire_many([from, to], Duration::from_secs(5))
                    .await?;
                let (a, b) = {
                    let map = balances.lock().unwrap();
                    (map[from], map[to])
                };
                // Read, think, write: only safe if nobody else holds either account.
                tokio::time::sleep(Duration::from_millis(2)).await;
                {
                    let mut map = balances.lock().unwrap();
                    map.insert(from, a - 10);
                    map.insert(to, b + 10);
                }
                println!(
                    "worker {id}: {from:>5} -> {to:<5} under lock on [{}], fencing token {}",
                    lock.resource(),
                    lock.fencing_token().unwrap_or(0)
                );
                lock.release().await?;
            }
            anyhow::Ok(())
        }));
    }
    for w in workers {
        w.await??;
    }
    let total: i64 = balances.lock().unwrap().values().sum();
    println!("total after the transfers: {total} (was 400)");
    assert_eq!(total, 400, "money was lost: two holders overlapped");

    let redlock = Redlock::builder().masters(urls).build().await?;
    let ttl = Duration::from_secs(5);
    for n in [1usize, 2, 8] {
        let names: Vec<String> = (0..n).map(|i| format!("res{i}")).collect();
        common::timed(
            &format!("acquire_many({n}) + release, 2 round trips"),
            200,
            |_| {
                let (redlock, names) = (redlock.clone(), names.clone());
                async move {
                    redlock.acquire_many(&names, ttl).await?.release().await?;
                    Ok(())
                }
            },
        )
        .await?;
    }
    Ok(())
}
