//! The simulated network between the clients and the simulated masters: it implements
//! `redquorum::sim::Network`, so the library's own connection code runs over it.
//!
//! Every message takes a seeded random delay; a connection delivers in order (TCP); faults are
//! applied by [`Net`]'s methods (pause, crash and restart, partition, takeover, clock jump,
//! script flush) or drawn per message (lost request, lost reply, a connection killed right
//! after its command ran). A connection that lost a message is reset a little later, as TCP
//! gives up on a stream that lost bytes; a crashed master resets its connections at once, and
//! so does a killed connection, its command run and its reply never sent. Everything runs on one thread in virtual time
//! (tokio's paused clock), so a seed replays exactly.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::BoxFuture;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redis::{RedisError, RedisResult};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::master::SimMaster;
use crate::trace::Trace;
use crate::value::Value;

/// Per-message behaviour of the network, drawn from the seed.
#[derive(Clone, Debug)]
pub struct Links {
    /// One-way delay of a message, uniform in this range.
    pub delay: (Duration, Duration),
    /// Probability that one message (request or reply) is lost.
    pub loss: f64,
    /// How long after a loss the connection is reset.
    pub reset_after: (Duration, Duration),
    /// Probability that the server side closes a connection right after running one of its
    /// commands, before the reply leaves (`CLIENT KILL`, an output-buffer limit, a proxy or
    /// a NAT dropping the flow): the command has run, and the client sees the connection
    /// reset one message delay later, well inside its timeout, so it may reconnect and send
    /// again at once. Drawn from a stream of its own, so that the other draws of a run do
    /// not change with it.
    pub kill: f64,
    /// Slow messages (heavy-tailed, possibly past the per-master timeout), per master.
    pub slow: Vec<SlowLink>,
    /// Probability that one script run (`EVAL`, `EVALSHA`) keeps its master busy for a while,
    /// and for how long (uniform): the master runs nothing else meanwhile, and the reply
    /// leaves when the script is done (the script saw the clock of its start, as in Redis).
    pub slow_scripts: (f64, Duration, Duration),
}

/// How the messages to and from one master are slowed down.
#[derive(Clone, Copy, Debug, Default)]
pub struct SlowLink {
    /// Probability that a request is slow.
    pub request: f64,
    /// Probability that a reply is slow.
    pub reply: f64,
    /// Scale of the extra delay of a slow message: Pareto-distributed (shape 1.5, so a few are
    /// many times the scale), capped at 8 times the scale.
    pub scale: Duration,
}

impl Default for Links {
    fn default() -> Self {
        Self {
            delay: (Duration::from_micros(50), Duration::from_micros(800)),
            loss: 0.0,
            reset_after: (Duration::from_millis(50), Duration::from_millis(500)),
            kill: 0.0,
            slow: Vec::new(),
            slow_scripts: (0.0, Duration::ZERO, Duration::ZERO),
        }
    }
}

/// A plain `SET` (no `NX`, `XX` or `GET`) of a watched key that ran on a master, directly or
/// inside a transaction's `EXEC` (see [`Net::watch_sets`]).
#[derive(Clone, Debug)]
pub struct AppliedSet {
    /// The master it ran on.
    pub node: usize,
    /// The connection it came on.
    pub conn: u64,
    /// The key.
    pub key: String,
    /// The value it set.
    pub value: String,
    /// The key's value on that master just before (`None`: absent or not a string).
    pub before: Option<String>,
    /// When it ran.
    pub at: Instant,
}

/// How a master is cut off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// Messages vanish; connections stay open (a partition).
    BlackHole,
    /// Connections are reset and new ones refused (a dead host whose kernel answers).
    Refuse,
}

struct Node {
    master: fragile::Fragile<SimMaster>,
    /// Bumped by every crash, restart and takeover: connections to an older process are reset.
    incarnation: u64,
    up: bool,
    paused: bool,
    cut: Option<Cut>,
    /// Added to the virtual time to make this master's wall clock.
    clock_offset_ms: i64,
    /// How fast this master's clock runs against the clients' (1.0: the same rate).
    clock_rate: f64,
    /// A slow script keeps the master busy until then.
    busy_until: Option<Instant>,
    /// When it last lost its data (a restart without data, a takeover).
    lost_data_at: Option<Instant>,
    /// Open connections, to reset them.
    conns: Vec<Arc<ConnState>>,
}

struct State {
    nodes: Vec<Node>,
    rng: StdRng,
    /// Draws the kills only ([`Links::kill`]).
    kill_rng: StdRng,
    /// Keys whose plain `SET`s are recorded, and the record ([`Net::watch_sets`]).
    watched: Option<(Vec<u8>, Vec<AppliedSet>)>,
    links: Links,
    next_conn: u64,
    /// The virtual instant of wall-clock time `WALL_EPOCH_MS`.
    start: Instant,
    trace: Trace,
    /// Called with each request as it reaches its master, before it runs (see
    /// [`Net::set_trap`]).
    trap: Option<Trap>,
}

/// A fault timed to a request: called with the master's index and the request's arguments as
/// it reaches the master, before it runs (a cut made now swallows it).
pub type Trap = Arc<dyn Fn(usize, &[Vec<u8>]) + Send + Sync>;

/// Wall-clock milliseconds at the start of a run (any fixed value: masters compare their own).
const WALL_EPOCH_MS: u64 = 1_800_000_000_000;

/// The network, shared by every simulated connection. Cheap to clone.
#[derive(Clone)]
pub struct Net(Arc<Mutex<State>>);

impl Net {
    /// `n` masters, fresh and empty, run ids drawn from `seed`.
    pub fn new(n: usize, seed: u64, links: Links, trace: Trace) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let nodes = (0..n)
            .map(|_| Node {
                master: fragile::Fragile::new(started_long_ago(run_id(&mut rng))),
                incarnation: 0,
                up: true,
                paused: false,
                cut: None,
                clock_offset_ms: 0,
                clock_rate: 1.0,
                busy_until: None,
                lost_data_at: None,
                conns: Vec::new(),
            })
            .collect();
        Self(Arc::new(Mutex::new(State {
            nodes,
            rng,
            kill_rng: StdRng::seed_from_u64(seed ^ 0x6b11_1ed5),
            watched: None,
            links,
            next_conn: 0,
            start: Instant::now(),
            trace,
            trap: None,
        })))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of masters.
    pub fn len(&self) -> usize {
        self.state().nodes.len()
    }

    /// Whether there are no masters.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The master URLs to give the builder (they only name the masters).
    pub fn urls(&self) -> Vec<String> {
        (0..self.len())
            .map(|i| format!("redis://sim-{i}:6379"))
            .collect()
    }

    /// Runs `f` on master `i`'s model, its clock set to now (for checks behind the clients'
    /// backs).
    pub fn inspect<T>(&self, i: usize, f: impl FnOnce(&mut SimMaster) -> T) -> T {
        let mut state = self.state();
        let now = state.wall_ms(i);
        let master = state.nodes[i].master.get_mut();
        master.set_now_ms(now);
        f(master)
    }

    /// Stops master `i` (SIGSTOP): requests wait until [`resume`](Self::resume).
    pub fn pause(&self, i: usize) {
        let mut s = self.state();
        s.nodes[i].paused = true;
        s.log(format!("fault: pause {i}"));
    }

    /// Undoes [`pause`](Self::pause).
    pub fn resume(&self, i: usize) {
        let mut s = self.state();
        s.nodes[i].paused = false;
        s.log(format!("fault: resume {i}"));
    }

    /// Crashes master `i`: its connections are reset, new ones refused until a restart.
    pub fn crash(&self, i: usize) {
        let mut s = self.state();
        s.nodes[i].up = false;
        s.reset_all(i);
        s.log(format!("fault: crash {i}"));
    }

    /// Restarts master `i` as a new process (new `run_id`), with or without its data.
    pub fn restart(&self, i: usize, keep_data: bool) {
        self.new_process(i, keep_data, Duration::ZERO);
        self.log(format!("fault: restart {i} keep_data={keep_data}"));
    }

    /// Another server takes over master `i`'s address: a process that has run for `uptime`,
    /// with no data of ours.
    pub fn take_over(&self, i: usize, uptime: Duration) {
        self.new_process(i, false, uptime);
        self.log(format!("fault: take over {i} uptime={uptime:?}"));
    }

    /// A new server process behind master `i`'s address, started `uptime` ago: old connections
    /// are reset, the script cache is empty, the data kept or not.
    fn new_process(&self, i: usize, keep_data: bool, uptime: Duration) {
        let mut s = self.state();
        let id = run_id(&mut s.rng);
        let now = s.wall_ms(i);
        s.reset_all(i);
        let node = &mut s.nodes[i];
        node.up = true;
        node.paused = false;
        node.busy_until = None;
        if !keep_data {
            node.lost_data_at = Some(Instant::now());
        }
        // Started `uptime` ago: restart it with its clock set back that far.
        let master = node.master.get_mut();
        master.set_now_ms(now.saturating_sub(uptime.as_millis() as u64));
        master.restart(keep_data, id);
        master.set_now_ms(now);
    }

    /// Whether master `i` lost its data (restarted without it, or taken over) at or after
    /// `since`.
    pub fn lost_data_since(&self, i: usize, since: Instant) -> bool {
        self.state().nodes[i]
            .lost_data_at
            .is_some_and(|at| at >= since)
    }

    /// Until when master `i` holds `key` with the value `value`: the first virtual instant at
    /// which its own clock (at its own rate and offset, as they stand) has passed the key's
    /// expiry, so that the key is gone there (Redis: expired once `now > when`). `None` when it
    /// does not hold the key with that value now; a far-off instant for a key without TTL.
    pub fn holds_until(&self, i: usize, key: &str, value: &str) -> Option<Instant> {
        let s = self.state();
        let now_ms = s.wall_ms(i);
        let (data, expires_at) = s.nodes[i]
            .master
            .get()
            .string_entry(key.as_bytes(), now_ms)?;
        if data != value.as_bytes() {
            return None;
        }
        let Some(expires_at) = expires_at else {
            return Some(Instant::now() + Duration::from_secs(86_400));
        };
        // The first elapsed microsecond at which the clock reads past `expires_at` (the clock is
        // monotonic in elapsed time: it only moves by its rate, jumps being uncovered).
        let past = |us: u64| s.wall_at(i, us) > expires_at;
        let mut lo = s.start.elapsed().as_micros() as u64;
        if past(lo) {
            return None;
        }
        let mut step = 1_000u64;
        while !past(lo + step) {
            lo += step;
            step *= 2;
        }
        let mut hi = lo + step;
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if past(mid) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Some(s.start + Duration::from_micros(hi))
    }

    /// Cuts master `i` off (`Some`) or heals it (`None`). Healing resets the connections that
    /// lost messages meanwhile.
    pub fn cut(&self, i: usize, cut: Option<Cut>) {
        let mut s = self.state();
        if cut == Some(Cut::Refuse) {
            s.reset_all(i);
        }
        if cut.is_none() {
            for conn in &s.nodes[i].conns {
                if conn.tainted() {
                    conn.reset();
                }
            }
        }
        s.nodes[i].cut = cut;
        s.log(format!("fault: cut {i} {cut:?}"));
    }

    /// Jumps master `i`'s wall clock by `by_ms` (either way).
    pub fn jump_clock(&self, i: usize, by_ms: i64) {
        let mut s = self.state();
        s.nodes[i].clock_offset_ms += by_ms;
        s.log(format!("fault: clock {i} {by_ms:+} ms"));
    }

    /// Master `i`'s clock runs at `rate` times the clients' from now on (no jump: the rate
    /// changes, the time it shows does not).
    pub fn set_clock_rate(&self, i: usize, rate: f64) {
        let mut s = self.state();
        let before = s.wall_ms(i) as i64;
        s.nodes[i].clock_rate = rate;
        let after = s.wall_ms(i) as i64;
        s.nodes[i].clock_offset_ms += before - after;
        s.log(format!("fault: clock {i} runs at {rate:.4}"));
    }

    /// `SCRIPT FLUSH` on master `i`.
    pub fn flush_scripts(&self, i: usize) {
        self.exec_now(i, &[b"SCRIPT".to_vec(), b"FLUSH".to_vec()]);
        self.state().log(format!("fault: script flush {i}"));
    }

    /// Runs one command on master `i` at once, bypassing the network.
    pub fn exec_now(&self, i: usize, args: &[Vec<u8>]) -> Value {
        self.inspect(i, |m| m.execute(args))
    }

    /// Changes the per-message behaviour.
    pub fn set_links(&self, links: Links) {
        self.state().links = links;
    }

    /// Sets (or clears) the trap: a fault timed to a request (the sharded run's partition
    /// while a change stores its topology).
    pub fn set_trap(&self, trap: Option<Trap>) {
        self.state().trap = trap;
    }

    /// Whether master `i` is up, running and reachable.
    pub fn is_healthy(&self, i: usize) -> bool {
        let s = self.state();
        let n = &s.nodes[i];
        n.up && !n.paused && n.cut.is_none()
    }

    /// Whether master `i`'s process is running (not crashed).
    pub fn is_up(&self, i: usize) -> bool {
        self.state().nodes[i].up
    }

    /// Records from now on every plain `SET` of a key that starts with `prefix` as it runs on
    /// a master (for the checks that a write runs at most once).
    pub fn watch_sets(&self, prefix: &str) {
        self.state().watched = Some((prefix.as_bytes().to_vec(), Vec::new()));
    }

    /// The `SET`s recorded since [`watch_sets`](Self::watch_sets), in the order they ran.
    pub fn applied_sets(&self) -> Vec<AppliedSet> {
        self.state()
            .watched
            .as_ref()
            .map(|(_, applied)| applied.clone())
            .unwrap_or_default()
    }

    /// Adds a line to the trace.
    pub fn log(&self, line: impl Into<String>) {
        self.state().log(line.into());
    }
}

impl State {
    fn wall_ms(&self, i: usize) -> u64 {
        self.wall_at(i, self.start.elapsed().as_micros() as u64)
    }

    /// Master `i`'s wall clock when `elapsed_us` microseconds of virtual time have passed.
    fn wall_at(&self, i: usize, elapsed_us: u64) -> u64 {
        let node = &self.nodes[i];
        let micros = elapsed_us as f64 * node.clock_rate;
        let elapsed = (micros / 1000.0).floor() as i64;
        (WALL_EPOCH_MS as i64 + elapsed + node.clock_offset_ms).max(0) as u64
    }

    fn reset_all(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.incarnation += 1;
        for conn in node.conns.drain(..) {
            conn.reset();
        }
    }

    fn delay(&mut self) -> Duration {
        let (lo, hi) = self.links.delay;
        self.rng.random_range(lo..=hi)
    }

    /// The extra delay of one message to (`request`) or from master `i`: zero unless the
    /// link is slow that way and this message drew it.
    fn slow_extra(&mut self, i: usize, request: bool) -> Duration {
        let Some(link) = self.links.slow.get(i).copied() else {
            return Duration::ZERO;
        };
        let p = if request { link.request } else { link.reply };
        if p <= 0.0 || !self.rng.random_bool(p.min(1.0)) {
            return Duration::ZERO;
        }
        // Pareto with shape 1.5 and minimum `scale`, capped at 8 scales.
        let u: f64 = self.rng.random_range(1e-9..1.0);
        link.scale.mul_f64(u.powf(-1.0 / 1.5).min(8.0))
    }

    /// How long the script about to run keeps its master busy.
    fn script_time(&mut self, name: &str) -> Duration {
        let (p, lo, hi) = self.links.slow_scripts;
        let script = matches!(name, "EVAL" | "EVALSHA" | "EVAL_RO" | "EVALSHA_RO");
        if !script || p <= 0.0 || !self.rng.random_bool(p.min(1.0)) || hi < lo {
            return Duration::ZERO;
        }
        self.rng.random_range(lo..=hi)
    }

    fn lost(&mut self) -> bool {
        self.links.loss > 0.0 && self.rng.random_bool(self.links.loss)
    }

    /// Whether the connection of a command that just ran is killed before its reply leaves.
    fn killed(&mut self) -> bool {
        self.links.kill > 0.0 && self.kill_rng.random_bool(self.links.kill.min(1.0))
    }

    fn log(&mut self, line: String) {
        let at = self.start.elapsed();
        self.trace.push(at, line);
    }
}

/// A master that has been up for an hour when the run starts (past any quarantine).
fn started_long_ago(run_id: String) -> SimMaster {
    let mut master = SimMaster::new(run_id, WALL_EPOCH_MS - 3_600_000);
    master.set_now_ms(WALL_EPOCH_MS);
    master
}

fn run_id(rng: &mut StdRng) -> String {
    (0..40)
        .map(|_| char::from_digit(rng.random_range(0..16), 16).expect("hex digit"))
        .collect()
}

/// One connection's shared state.
struct ConnState {
    id: u64,
    node: usize,
    incarnation: u64,
    /// Cancelled when the connection is reset: pending and later requests fail.
    dead: CancellationToken,
    /// The connection lost a message: nothing after it gets through (a broken stream), and it
    /// will be reset.
    tainted: std::sync::atomic::AtomicBool,
    /// The server closed the connection after running a command ([`Links::kill`]): it runs
    /// nothing more of it, and the client sees the reset a message delay later.
    closed: std::sync::atomic::AtomicBool,
    /// Requests numbered as sent, and how many have been executed: a master executes a
    /// connection's requests in the order they were sent, also after a pause.
    sent: std::sync::atomic::AtomicU64,
    executed: std::sync::atomic::AtomicU64,
    /// When the last request arrives and the last reply is delivered: delivery is in order.
    order: Mutex<(Instant, Instant)>,
    /// Commands queued since `MULTI` (a transaction is per connection in Redis, so a reset
    /// connection forgets it). The cache's writes are `MULTI`/`EXEC` pipelines.
    multi: Mutex<Option<Vec<Vec<Vec<u8>>>>>,
}

impl ConnState {
    fn reset(&self) {
        self.dead.cancel();
    }

    fn tainted(&self) -> bool {
        self.tainted.load(std::sync::atomic::Ordering::Relaxed)
    }
}

fn reset_error() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "simulated connection reset",
    ))
}

fn refused_error() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::ConnectionRefused,
        "simulated connection refused",
    ))
}

impl redquorum::sim::Network for Net {
    fn connect(
        &self,
        index: usize,
    ) -> BoxFuture<'static, RedisResult<Arc<dyn redquorum::sim::Connection>>> {
        let net = self.clone();
        Box::pin(async move {
            let delay = net.state().delay();
            tokio::time::sleep(delay * 2).await;
            let reachable = {
                let mut s = net.state();
                let node = &s.nodes[index];
                let reachable = match (node.up, node.cut) {
                    (false, _) | (_, Some(Cut::Refuse)) => Some(false),
                    (true, Some(Cut::BlackHole)) => None,
                    (true, None) => Some(true),
                };
                if reachable == Some(false) {
                    s.log(format!("connect {index}: refused"));
                }
                reachable
            };
            match reachable {
                Some(true) => {}
                Some(false) => return Err(refused_error()),
                // The handshake never completes; the client's connect timeout ends it.
                None => futures::future::pending::<()>().await,
            }
            let mut s = net.state();
            s.next_conn += 1;
            let now = Instant::now();
            let conn = Arc::new(ConnState {
                id: s.next_conn,
                node: index,
                incarnation: s.nodes[index].incarnation,
                dead: CancellationToken::new(),
                tainted: Default::default(),
                closed: Default::default(),
                sent: Default::default(),
                executed: Default::default(),
                order: Mutex::new((now, now)),
                multi: Mutex::new(None),
            });
            s.nodes[index].conns.push(conn.clone());
            s.log(format!("connect {index}: conn {}", conn.id));
            drop(s);
            Ok(Arc::new(SimConn { net, conn }) as Arc<dyn redquorum::sim::Connection>)
        })
    }
}

struct SimConn {
    net: Net,
    conn: Arc<ConnState>,
}

impl redquorum::sim::Connection for SimConn {
    fn send(&self, packed: Vec<u8>) -> BoxFuture<'static, RedisResult<redis::Value>> {
        let (tx, rx) = oneshot::channel();
        let dead = self.conn.dead.clone();
        if dead.is_cancelled() {
            return Box::pin(async { Err(reset_error()) });
        }
        // Queued now, whatever happens to the returned future: a real connection has sent it.
        tokio::spawn(deliver(self.net.clone(), self.conn.clone(), packed, tx));
        Box::pin(async move {
            tokio::select! {
                biased;
                reply = rx => match reply {
                    Ok(reply) => reply,
                    // Lost: the connection is reset later, which ends the wait.
                    Err(_) => {
                        dead.cancelled().await;
                        Err(reset_error())
                    }
                },
                _ = dead.cancelled() => Err(reset_error()),
            }
        })
    }
}

/// Carries one request to its master and the reply back, in order on the connection.
async fn deliver(
    net: Net,
    conn: Arc<ConnState>,
    packed: Vec<u8>,
    tx: oneshot::Sender<RedisResult<redis::Value>>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let seq = conn.sent.fetch_add(1, Relaxed);
    let args = parse_command(&packed);
    let name = args
        .first()
        .map(|a| String::from_utf8_lossy(a).to_uppercase())
        .unwrap_or_default();
    let (arrival, lost_request) = {
        let mut s = net.state();
        let at = Instant::now() + s.delay() + s.slow_extra(conn.node, true);
        let mut order = conn.order.lock().unwrap_or_else(|e| e.into_inner());
        order.0 = order.0.max(at);
        (order.0, s.lost())
    };
    tokio::time::sleep_until(arrival).await;
    if conn.tainted() {
        return;
    }
    if lost_request {
        net.log(format!("conn {} -> {}: {name} lost", conn.id, conn.node));
        taint(&net, &conn);
        return;
    }
    let trap = net.state().trap.clone();
    if let Some(trap) = trap {
        trap(conn.node, &args);
    }
    // Wait out a pause (and this connection's earlier requests); a black hole swallows it.
    let (reply, busy) = loop {
        if conn.dead.is_cancelled() {
            return;
        }
        match execute(&net, &conn, seq, &args, &name) {
            Step::Done(reply, busy) => break (reply, busy),
            Step::Wait => tokio::time::sleep(Duration::from_millis(1)).await,
            Step::Drop => return,
        }
    };
    if net.state().killed() {
        // The server closes the connection after the command ran: no reply, nothing later on
        // it runs, and the client sees the reset when the closing segment arrives, one
        // message delay later.
        conn.closed.store(true, Relaxed);
        net.log(format!(
            "conn {} <- {}: killed after {name} ran",
            conn.id, conn.node
        ));
        let after = {
            let mut s = net.state();
            let (lo, hi) = s.links.delay;
            busy + s.kill_rng.random_range(lo..=hi)
        };
        tokio::time::sleep(after).await;
        conn.reset();
        return;
    }
    let (back, lost_reply) = {
        let mut s = net.state();
        let at = Instant::now() + busy + s.delay() + s.slow_extra(conn.node, false);
        let mut order = conn.order.lock().unwrap_or_else(|e| e.into_inner());
        order.1 = order.1.max(at);
        (order.1, s.lost())
    };
    tokio::time::sleep_until(back).await;
    if lost_reply {
        net.log(format!("conn {} <- {}: reply lost", conn.id, conn.node));
        taint(&net, &conn);
        return;
    }
    if conn.dead.is_cancelled() || conn.tainted() {
        return;
    }
    let _ = tx.send(to_redis(&reply));
}

/// What became of a request that reached its master.
enum Step {
    /// The reply, and how long the master took to run the command (it leaves after that).
    Done(Value, Duration),
    /// Paused, or an earlier request of the connection has not run yet.
    Wait,
    /// Swallowed (a black hole) or refused (the process changed).
    Drop,
}

fn execute(net: &Net, conn: &Arc<ConnState>, seq: u64, args: &[Vec<u8>], name: &str) -> Step {
    use std::sync::atomic::Ordering::Relaxed;
    let mut s = net.state();
    let node = &s.nodes[conn.node];
    if conn.closed.load(Relaxed) {
        // Killed by the server after an earlier command ([`Links::kill`]).
        return Step::Drop;
    }
    if node.incarnation != conn.incarnation || !node.up {
        drop(s);
        conn.reset();
        return Step::Drop;
    }
    if node.cut == Some(Cut::BlackHole) {
        drop(s);
        taint(net, conn);
        return Step::Drop;
    }
    let busy = node.busy_until.is_some_and(|until| Instant::now() < until);
    if node.paused || busy || conn.executed.load(Relaxed) != seq {
        return Step::Wait;
    }
    let took = s.script_time(name);
    if !took.is_zero() {
        s.nodes[conn.node].busy_until = Some(Instant::now() + took);
    }
    let now = s.wall_ms(conn.node);
    let sets = watched_sets(&s, conn, args, name);
    let master = s.nodes[conn.node].master.get_mut();
    master.set_now_ms(now);
    let before: Vec<Option<String>> = sets
        .iter()
        .map(|(key, _)| {
            master
                .string_entry(key, now)
                .map(|(value, _)| String::from_utf8_lossy(&value).into_owned())
        })
        .collect();
    let reply = transaction(master, conn, args).unwrap_or_else(|| master.execute(args));
    conn.executed.store(seq + 1, Relaxed);
    if let Some((_, applied)) = s.watched.as_mut() {
        for ((key, value), before) in sets.into_iter().zip(before) {
            applied.push(AppliedSet {
                node: conn.node,
                conn: conn.id,
                key: String::from_utf8_lossy(&key).into_owned(),
                value: String::from_utf8_lossy(&value).into_owned(),
                before,
                at: Instant::now(),
            });
        }
    }
    let slow = if took.is_zero() {
        String::new()
    } else {
        format!(" (busy {took:?})")
    };
    s.log(format!(
        "conn {} -> {}: {} => {}{slow}",
        conn.id,
        conn.node,
        describe(args),
        short(&reply)
    ));
    Step::Done(reply, took)
}

/// The plain `SET`s of watched keys (key, value) that the command `args` runs now: itself, or
/// the queue of a transaction it executes (`EXEC`); none for a command queued after `MULTI`.
fn watched_sets(
    s: &State,
    conn: &ConnState,
    args: &[Vec<u8>],
    name: &str,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let Some((prefix, _)) = s.watched.as_ref() else {
        return Vec::new();
    };
    let multi = conn.multi.lock().unwrap_or_else(|e| e.into_inner());
    let commands: Vec<&[Vec<u8>]> = match (name, multi.as_ref()) {
        ("EXEC", Some(queue)) => queue.iter().map(Vec::as_slice).collect(),
        (_, Some(_)) | ("MULTI", None) => Vec::new(),
        (_, None) => vec![args],
    };
    commands
        .into_iter()
        .filter_map(|cmd| match cmd {
            [verb, key, value, options @ ..]
                if verb.eq_ignore_ascii_case(b"SET")
                    && key.starts_with(prefix)
                    && !options.iter().any(|o| {
                        [b"NX".as_slice(), b"XX", b"GET"]
                            .iter()
                            .any(|flag| o.eq_ignore_ascii_case(flag))
                    }) =>
            {
                Some((key.clone(), value.clone()))
            }
            _ => None,
        })
        .collect()
}

/// `MULTI`, a command queued after it, or `EXEC`/`DISCARD`, as Redis answers them (`None`
/// for any other command outside a transaction). `EXEC` runs the queue under the state lock
/// the caller holds, so nothing else interleaves, as on a real server.
fn transaction(master: &mut SimMaster, conn: &ConnState, args: &[Vec<u8>]) -> Option<Value> {
    let name = String::from_utf8_lossy(args.first()?).to_uppercase();
    let mut multi = conn.multi.lock().unwrap_or_else(|e| e.into_inner());
    match (name.as_str(), multi.as_mut()) {
        ("MULTI", Some(_)) => Some(Value::err("MULTI calls can not be nested")),
        ("MULTI", None) => {
            *multi = Some(Vec::new());
            Some(Value::ok())
        }
        ("EXEC", None) => Some(Value::err("EXEC without MULTI")),
        ("DISCARD", None) => Some(Value::err("DISCARD without MULTI")),
        ("EXEC", Some(_)) => {
            let queued = multi.take().unwrap_or_default();
            Some(Value::Array(
                queued.iter().map(|cmd| master.execute(cmd)).collect(),
            ))
        }
        ("DISCARD", Some(_)) => {
            *multi = None;
            Some(Value::ok())
        }
        (_, Some(queue)) => {
            queue.push(args.to_vec());
            Some(Value::Status("QUEUED".to_owned()))
        }
        (_, None) => None,
    }
}

/// A lost message: the stream is broken; the connection is reset a little later.
fn taint(net: &Net, conn: &Arc<ConnState>) {
    if conn
        .tainted
        .swap(true, std::sync::atomic::Ordering::Relaxed)
    {
        return;
    }
    let after = {
        let mut s = net.state();
        let (lo, hi) = s.links.reset_after;
        s.rng.random_range(lo..=hi)
    };
    let (net, conn) = (net.clone(), conn.clone());
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        // A black hole keeps the connection open until healed (see `Net::cut`).
        let held = net.state().nodes[conn.node].cut == Some(Cut::BlackHole);
        if !held {
            net.log(format!("conn {}: reset after a lost message", conn.id));
            conn.reset();
        }
    });
}

/// The arguments of a packed RESP command.
fn parse_command(packed: &[u8]) -> Vec<Vec<u8>> {
    match redis::parse_redis_value(packed) {
        Ok(redis::Value::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                redis::Value::BulkString(b) => b,
                other => format!("{other:?}").into_bytes(),
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The model's reply as redis-rs would have parsed it from the wire.
fn to_redis(value: &Value) -> RedisResult<redis::Value> {
    let mut bytes = Vec::new();
    encode(value, &mut bytes);
    redis::parse_redis_value(&bytes)
}

fn encode(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Nil => out.extend_from_slice(b"$-1\r\n"),
        Value::Int(n) => out.extend_from_slice(format!(":{n}\r\n").as_bytes()),
        Value::Bulk(b) => {
            out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
            out.extend_from_slice(b);
            out.extend_from_slice(b"\r\n");
        }
        Value::Status(s) => out.extend_from_slice(format!("+{s}\r\n").as_bytes()),
        Value::Error(e) => out.extend_from_slice(format!("-{e}\r\n").as_bytes()),
        Value::Array(items) => {
            out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
            for item in items {
                encode(item, out);
            }
        }
    }
}

fn describe(args: &[Vec<u8>]) -> String {
    let mut parts: Vec<String> = args
        .iter()
        .take(8)
        .map(|a| {
            let s = String::from_utf8_lossy(a);
            if s.chars().count() > 40 {
                format!("{}..", s.chars().take(10).collect::<String>())
            } else {
                s.into_owned()
            }
        })
        .collect();
    if args.len() > 8 {
        parts.push("..".into());
    }
    parts.join(" ")
}

fn short(value: &Value) -> String {
    let s = match value {
        Value::Bulk(b) => format!("{:?}", String::from_utf8_lossy(b)),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(short).collect::<Vec<_>>().join(", ")
        ),
        other => format!("{other:?}"),
    };
    if s.chars().count() > 60 {
        format!("{}..", s.chars().take(56).collect::<String>())
    } else {
        s
    }
}
