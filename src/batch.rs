//! Batched rounds (group commit): script calls that are ready for the same master while an
//! earlier call to it is in flight go out together, as one call of the batch script carrying
//! all of them, each with its own result.
//!
//! - **No waiting to fill a batch.** A master with nothing in flight gets the call at once, as
//!   the plain `EVALSHA` it always was (a single task pays nothing). What arrives while a call
//!   or batch is in flight queues; when that answer is back, the queue leaves as the next batch
//!   (at most [`MAX_BATCH`] entries; a batch of one is again a plain `EVALSHA`).
//! - **Each entry keeps its own fate.** Its caller's timeout runs from when it was queued; an
//!   entry whose caller gave up (timed out, dropped) while it was queued is never sent, so an
//!   acquire is never sent after its deadline. A batch is one command: every entry in it was
//!   sent at the same moment, in queue order (a rollback queued behind its acquire runs after it
//!   on the master). The batch script runs each entry under `pcall`, so a script error fails
//!   that entry only; a reply to the whole batch (`NOSCRIPT`, `BUSY`, a broken connection, a
//!   timeout) is every entry's reply, and each caller handles it as it handles a single call's
//!   (an acquire votes no and is rolled back; nothing is re-sent as `EVAL`).
//! - **One connection per batch.** An entry is sent on the connection its caller loaded (a
//!   reconnect records a restart before a new connection is used, and a vote must go on the
//!   connection its checks were made for), so a batch holds entries of one connection only.

use std::collections::VecDeque;
use std::sync::{Arc, LazyLock, Mutex};

use redis::{Cmd, RedisResult, Value};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::link::Conn;
use crate::scripts::{self, LuaScript, ScriptCall};

/// Most entries in one batch: bounds the size of one command and of one script run (a long
/// script blocks the master for everyone).
pub(crate) const MAX_BATCH: usize = 64;

/// The batch script: every script of `scripts::all()` as a local function, and a loop that
/// runs the entries in order. Generated, so that it always carries the scripts as they are.
///
/// KEYS = every entry's keys, in order. ARGV[1] = number of entries, then per entry: the SHA1
/// of its script, its number of keys, its number of arguments, its arguments.
/// Returns one element per entry: `{reply}` (an empty array for a nil reply), or an error
/// reply when the entry's script raised an error.
pub(crate) static BATCH: LazyLock<LuaScript> =
    LazyLock::new(|| LuaScript::generated("batch", batch_source()));

/// `SCRIPT LOAD` of every script and of the batch script that carries them all (below),
/// as one pipeline: at connect, and after a `NOSCRIPT`.
pub(crate) fn load_all() -> redis::Pipeline {
    let mut load = redis::pipe();
    for script in scripts::all().into_iter().chain([&*BATCH]) {
        load.cmd("SCRIPT").arg("LOAD").arg(script.source);
    }
    load
}

fn batch_source() -> String {
    let mut source = String::from(
        "-- Runs several script calls in one (batch.rs); generated from scripts/*.lua.\n\
         local S = {}\n",
    );
    for script in scripts::all() {
        source.push_str(&format!(
            "S['{}'] = function(KEYS, ARGV)\n{}\nend\n",
            script.sha1, script.source
        ));
    }
    source.push_str(
        r#"local results, k, a = {}, 1, 2
for e = 1, tonumber(ARGV[1]) do
  local f, nk, na = S[ARGV[a]], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  a = a + 3
  local keys, args = {}, {}
  for i = 1, nk do keys[i] = KEYS[k + i - 1] end
  for i = 1, na do args[i] = ARGV[a + i - 1] end
  k, a = k + nk, a + na
  local ok, r = pcall(f, keys, args)
  if ok then
    results[e] = {r}
  elseif type(r) == 'table' and r.err then
    results[e] = {err = r.err}
  else
    results[e] = {err = 'ERR ' .. tostring(r)}
  end
end
return results
"#,
    );
    source
}

/// The group commit of one master's script calls.
pub(crate) struct Batcher {
    state: Mutex<State>,
    /// The master's per-call timeout: how long a batch is waited for at most.
    timeout: std::time::Duration,
    /// Off (`Builder::batching(false)`): every call goes out at once as its own `EVALSHA`.
    enabled: bool,
}

#[derive(Default)]
struct State {
    /// A call or batch is on the wire and its answer not back (or its caller gave up on it).
    in_flight: bool,
    queue: VecDeque<Entry>,
}

/// What happens to a queued call whose caller stops waiting for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// Never sent once its caller gave up or its deadline passed: acquires, which must not
    /// land after their round's rollback or the lock's release.
    InTime,
    /// Sent even so, like a command already written to the connection: releases, rollbacks,
    /// extends, counter raises, which are harmless late and must not be lost (a rollback whose
    /// caller timed out behind a paused master must still reach it).
    Always,
}

/// One queued script call.
struct Entry {
    conn: Arc<Conn>,
    script: &'static LuaScript,
    keys: usize,
    /// Keys, then arguments.
    parts: Vec<Vec<u8>>,
    deadline: Instant,
    delivery: Delivery,
    reply: oneshot::Sender<RedisResult<Value>>,
}

impl Batcher {
    pub(crate) fn new(timeout: std::time::Duration, enabled: bool) -> Self {
        Self {
            state: Mutex::default(),
            timeout,
            enabled,
        }
    }
    /// Sends `call` on `conn` at once if nothing is in flight, else with the next batch. The
    /// reply is the call's own (error replies as `Value::ServerError`, as from `Conn::send`).
    /// Once this future has been polled once, the call is on the wire or queued ahead of every
    /// later call to this master. With [`Delivery::InTime`], if it is dropped while queued,
    /// the call is never sent, nor is it once `deadline` has passed.
    pub(crate) async fn send(
        self: &Arc<Self>,
        conn: &Arc<Conn>,
        call: &ScriptCall,
        (deadline, delivery): (Instant, Delivery),
    ) -> RedisResult<Value> {
        if !self.enabled {
            // Written to the connection now, like every call before batching existed; the
            // connection keeps the order of calls to this master.
            return (**conn).clone().send(call.evalsha()).await;
        }
        let queued = {
            let mut state = self.state.lock().expect("batcher poisoned");
            if state.in_flight {
                let (reply, answer) = oneshot::channel();
                state
                    .queue
                    .push_back(Entry::new(conn, call, (deadline, delivery), reply));
                Some(answer)
            } else {
                state.in_flight = true;
                None
            }
        };
        match queued {
            // Boxed: the queued path's state would otherwise grow every call's future.
            Some(answer) => {
                Box::pin(async move {
                    answer
                        .await
                        .unwrap_or_else(|_| Err(gave_up("the batch was abandoned")))
                })
                .await
            }
            None => {
                let _hand_over = HandOver(self.clone());
                (**conn).clone().send(call.evalsha()).await
            }
        }
    }

    /// The call or batch in flight is answered (or given up on): send what queued meanwhile.
    fn hand_over(self: &Arc<Self>) {
        let mut state = self.state.lock().expect("batcher poisoned");
        if state.queue.is_empty() {
            state.in_flight = false;
            return;
        }
        drop(state);
        let batcher = self.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(async move { batcher.drive().await })),
            // No runtime (dropped during shutdown): nobody can await the answers anyway.
            Err(_) => self.fail_queued(),
        }
    }

    /// Sends batches until the queue is empty, one in flight at a time.
    async fn drive(self: Arc<Self>) {
        loop {
            let batch = {
                let mut state = self.state.lock().expect("batcher poisoned");
                let batch = take_batch(&mut state.queue, Instant::now());
                if batch.is_empty() {
                    state.in_flight = false;
                    return;
                }
                batch
            };
            send_batch(batch, self.timeout).await;
        }
    }

    fn fail_queued(&self) {
        let mut state = self.state.lock().expect("batcher poisoned");
        for entry in state.queue.drain(..) {
            let _ = entry
                .reply
                .send(Err(gave_up("no runtime to send the batch")));
        }
        state.in_flight = false;
    }
}

/// Passes the turn on when the call in flight is answered or its future dropped (its caller
/// timed out): from then on the queue may go.
struct HandOver(Arc<Batcher>);

impl Drop for HandOver {
    fn drop(&mut self) {
        self.0.hand_over();
    }
}

impl Entry {
    fn new(
        conn: &Arc<Conn>,
        call: &ScriptCall,
        (deadline, delivery): (Instant, Delivery),
        reply: oneshot::Sender<RedisResult<Value>>,
    ) -> Self {
        Self {
            conn: conn.clone(),
            script: call.script(),
            keys: call.key_count(),
            parts: call.keys_and_args(),
            deadline,
            delivery,
            reply,
        }
    }

    /// The entry as `EVAL` of its script's source (after `NOSCRIPT`).
    fn eval(&self) -> Cmd {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(self.script.source).arg(self.keys).arg(&self.parts);
        cmd
    }

    /// The entry as a call of its own script.
    fn single(&self) -> Cmd {
        let mut cmd = Cmd::with_capacity(3 + self.parts.len(), 0);
        cmd.arg("EVALSHA")
            .arg(&self.script.sha1)
            .arg(self.keys)
            .arg(&self.parts);
        cmd
    }
}

/// The next batch from the front of `queue`: up to [`MAX_BATCH`] entries for the connection of
/// the first one still wanted. [`Delivery::InTime`] entries whose caller gave up, or whose
/// deadline has passed, are dropped unsent (their caller has timed out, or is about to).
fn take_batch(queue: &mut VecDeque<Entry>, now: Instant) -> Vec<Entry> {
    let mut batch: Vec<Entry> = Vec::new();
    while let Some(entry) = queue.front() {
        if batch.len() == MAX_BATCH
            || batch
                .first()
                .is_some_and(|first| !Arc::ptr_eq(&first.conn, &entry.conn))
        {
            break;
        }
        let entry = queue.pop_front().expect("a front entry");
        let given_up = entry.reply.is_closed() || now >= entry.deadline;
        if given_up && entry.delivery == Delivery::InTime {
            continue;
        }
        batch.push(entry);
    }
    batch
}

/// Sends one batch and hands every entry its own reply. Bounded by the latest deadline in it
/// (by then every caller has timed out), and by the per-master timeout past now for entries
/// sent after their caller gave up.
async fn send_batch(batch: Vec<Entry>, timeout: std::time::Duration) {
    let latest = batch.iter().map(|e| e.deadline).max().expect("a batch");
    let deadline = latest.max(Instant::now() + timeout);
    let mut conn = (*batch[0].conn).clone();
    let cmd = match batch.as_slice() {
        [entry] => entry.single(),
        _ => batch_command(&batch),
    };
    let Ok(reply) = tokio::time::timeout_at(deadline, conn.send(&cmd)).await else {
        return;
    };
    let replies = match batch.len() {
        1 => vec![reply],
        n => split(reply, n),
    };
    let replies = eval_where_flushed(&conn, &batch, replies, deadline).await;
    for (entry, reply) in batch.into_iter().zip(replies) {
        let _ = entry.reply.send(reply);
    }
}

/// Every entry's reply from the reply to the whole batch.
fn split(reply: RedisResult<Value>, n: usize) -> Vec<RedisResult<Value>> {
    match reply {
        Ok(Value::Array(items)) if items.len() == n => items.into_iter().map(entry_reply).collect(),
        // NOSCRIPT, BUSY, LOADING, OOM...: the batch did not run; every entry gets the reply.
        Ok(error @ Value::ServerError(_)) => (0..n).map(|_| Ok(error.clone())).collect(),
        Ok(other) => (0..n).map(|_| Err(unexpected(&other))).collect(),
        Err(e) => (0..n).map(|_| Err(e.clone())).collect(),
    }
}

/// After `NOSCRIPT` (the master restarted or its script cache was flushed): the
/// [`Delivery::Always`] entries run at once as `EVAL` with their script's source, sent from
/// here so that a release or rollback whose caller stopped waiting is not lost, and they get
/// that answer instead; the batch script is loaded again behind them. [`Delivery::InTime`]
/// entries keep their `NOSCRIPT`: an acquire votes no and is never re-sent.
async fn eval_where_flushed(
    conn: &Conn,
    batch: &[Entry],
    mut replies: Vec<RedisResult<Value>>,
    deadline: Instant,
) -> Vec<RedisResult<Value>> {
    if !replies.iter().any(is_noscript) {
        return replies;
    }
    let flushed: Vec<usize> = (0..batch.len())
        .filter(|&i| batch[i].delivery == Delivery::Always && is_noscript(&replies[i]))
        .collect();
    let evals: Vec<Cmd> = flushed.iter().map(|&i| batch[i].eval()).collect();
    let mut load = redis::cmd("SCRIPT");
    load.arg("LOAD").arg(BATCH.source);
    // Polled in order: the EVALs leave in queue order, the reload after them.
    let sends = futures::future::join_all(evals.iter().map(|cmd| {
        let mut conn = conn.clone();
        async move { conn.send(cmd).await }
    }));
    let reload = {
        let mut conn = conn.clone();
        async move { conn.send(&load).await }
    };
    let answers = tokio::time::timeout_at(deadline, futures::future::join(sends, reload)).await;
    let mut answers = match answers {
        Ok((answers, _)) => answers.into_iter().map(Some).collect(),
        Err(_) => vec![None; flushed.len()],
    };
    for (slot, &i) in flushed.iter().enumerate() {
        replies[i] = answers[slot]
            .take()
            .unwrap_or_else(|| Err(gave_up("the EVAL after NOSCRIPT timed out")));
    }
    replies
}

fn is_noscript(reply: &RedisResult<Value>) -> bool {
    matches!(reply, Ok(Value::ServerError(e)) if e.code() == "NOSCRIPT")
}

/// `EVALSHA <batch> <all keys> <n> (<sha> <keys> <args> <args...>)*`.
fn batch_command(batch: &[Entry]) -> Cmd {
    let keys: usize = batch.iter().map(|e| e.keys).sum();
    let args = 1 + batch
        .iter()
        .map(|e| 3 + e.parts.len() - e.keys)
        .sum::<usize>();
    let bytes: usize = batch
        .iter()
        .map(|e| 48 + e.parts.iter().map(Vec::len).sum::<usize>())
        .sum();
    let mut cmd = Cmd::with_capacity(3 + keys + args, bytes);
    cmd.arg("EVALSHA").arg(&BATCH.sha1).arg(keys);
    for entry in batch {
        cmd.arg(&entry.parts[..entry.keys]);
    }
    cmd.arg(batch.len());
    for entry in batch {
        cmd.arg(&entry.script.sha1)
            .arg(entry.keys)
            .arg(entry.parts.len() - entry.keys)
            .arg(&entry.parts[entry.keys..]);
    }
    cmd
}

/// One entry's element of the batch reply, as its own call would have answered.
fn entry_reply(item: Value) -> RedisResult<Value> {
    match item {
        Value::Array(mut wrapped) if wrapped.len() <= 1 => Ok(wrapped.pop().unwrap_or(Value::Nil)),
        // An error the entry's script raised: its own error reply.
        error @ Value::ServerError(_) => Ok(error),
        other => Err(unexpected(&other)),
    }
}

fn unexpected(value: &Value) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        "unexpected batch reply",
        format!("{value:?}"),
    ))
}

fn gave_up(why: &'static str) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Client, "batch", why.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_batch_script_carries_every_script_by_its_sha() {
        for script in scripts::all() {
            assert!(
                BATCH
                    .source
                    .contains(&format!("S['{}'] = function(KEYS, ARGV)\n", script.sha1)),
                "{} missing",
                script.name
            );
            assert!(BATCH.source.contains(script.source), "{}", script.name);
        }
        assert_eq!(BATCH.sha1.len(), 40);
    }

    #[test]
    fn entry_replies_unwrap_to_what_a_single_call_answers() {
        let int = Value::Int(7);
        assert_eq!(entry_reply(Value::Array(vec![int.clone()])).unwrap(), int);
        // An empty wrapper is a nil reply (Lua drops nil from tables).
        assert_eq!(entry_reply(Value::Array(vec![])).unwrap(), Value::Nil);
        let error = redis::parse_redis_value(b"-WRONGTYPE wrong kind\r\n").unwrap();
        assert_eq!(entry_reply(error.clone()).unwrap(), error);
        assert!(
            entry_reply(Value::Int(1)).is_err(),
            "unwrapped: not a batch entry"
        );
        assert!(entry_reply(Value::Array(vec![int.clone(), int])).is_err());
    }
}
