//! A TCP proxy whose faults can be switched while connections are open.
//!
//! One accept thread per proxy, two pump threads per connection (one per direction). Every
//! pump wakes at least every [`TICK`] to look at the current faults and the stop flag, so a
//! fault applies to existing connections within a tick, and dropping the proxy ends every
//! thread within a bounded time.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::cluster::Cut;
use crate::error::{Error, Result};

/// How often a pump re-reads the faults and the stop flag.
const TICK: Duration = Duration::from_millis(10);
/// A client that stops reading for this long loses its connection; bounds drop time too.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The faults a [`FaultProxy`] applies. `Faults::default()` is a transparent pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Faults {
    /// Cut the master off, see [`Cut`].
    pub cut: Option<Cut>,
    /// Extra delay for every forwarded chunk, each way.
    pub latency: Duration,
    /// Forward client-to-server bytes, swallow server-to-client bytes.
    pub drop_replies: bool,
}

impl Faults {
    /// True when at least one fault is on.
    pub fn is_faulty(&self) -> bool {
        *self != Faults::default()
    }
}

/// Text form used by the CLI's control files: `cut=blackhole latency_ms=100 drop_replies=1`,
/// or `pass` for no fault.
impl fmt::Display for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.is_faulty() {
            return f.write_str("pass");
        }
        let mut parts = Vec::new();
        match self.cut {
            Some(Cut::BlackHole) => parts.push("cut=blackhole".to_string()),
            Some(Cut::Reset) => parts.push("cut=reset".to_string()),
            None => {}
        }
        if !self.latency.is_zero() {
            parts.push(format!("latency_ms={}", self.latency.as_millis()));
        }
        if self.drop_replies {
            parts.push("drop_replies=1".into());
        }
        f.write_str(&parts.join(" "))
    }
}

impl FromStr for Faults {
    type Err = Error;
    fn from_str(s: &str) -> Result<Faults> {
        let mut out = Faults::default();
        for word in s.split_whitespace() {
            let bad = || Error::Config(format!("bad fault {word:?}"));
            match word.split_once('=') {
                None if word == "pass" => {}
                Some(("cut", "blackhole")) => out.cut = Some(Cut::BlackHole),
                Some(("cut", "reset")) => out.cut = Some(Cut::Reset),
                Some(("latency_ms", v)) => {
                    out.latency = Duration::from_millis(v.parse().map_err(|_| bad())?)
                }
                Some(("drop_replies", v)) => out.drop_replies = v == "1" || v == "true",
                _ => return Err(bad()),
            }
        }
        Ok(out)
    }
}

#[derive(Debug)]
struct Shared {
    /// Where new connections go; changed by [`FaultProxy::redirect`].
    upstream: Mutex<SocketAddr>,
    /// Bumped by every redirect: connections opened before it are reset.
    redirect_epoch: AtomicU64,
    faults: Mutex<Faults>,
    /// Bumped by every heal; see `Conn::tainted_at`.
    heal_epoch: AtomicU64,
    stop: AtomicBool,
    conns: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn upstream(&self) -> SocketAddr {
        *self.upstream.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn faults(&self) -> Faults {
        *self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn lock_conns(&self) -> MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A fault-injecting TCP proxy on a loopback port in front of one master.
///
/// Dropping it stops accepting, closes every proxied connection and joins every thread
/// (bounded by about two seconds even with a stuck client).
#[derive(Debug)]
pub struct FaultProxy {
    port: u16,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Listens on `127.0.0.1:port` (0 lets the kernel choose) and forwards to `upstream`.
    ///
    /// # Errors
    /// [`Error::Io`] when the port cannot be bound.
    pub fn start(port: u16, upstream: SocketAddr) -> Result<FaultProxy> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .map_err(|e| Error::io(format!("binding proxy port {port}"), e))?;
        let port = listener
            .local_addr()
            .map_err(|e| Error::io("reading proxy port", e))?
            .port();
        // Non-blocking accept so the thread can notice the stop flag.
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io("configuring proxy listener", e))?;
        let shared = Arc::new(Shared {
            upstream: Mutex::new(upstream),
            redirect_epoch: AtomicU64::new(0),
            faults: Mutex::new(Faults::default()),
            heal_epoch: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            conns: Mutex::new(Vec::new()),
        });
        let s = Arc::clone(&shared);
        let accept = thread::Builder::new()
            .name(format!("tc-proxy-{port}"))
            .spawn(move || accept_loop(&listener, &s))
            .map_err(|e| Error::io("spawning proxy thread", e))?;
        Ok(FaultProxy {
            port,
            shared,
            accept: Some(accept),
        })
    }

    /// The loopback port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where the proxy forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream()
    }

    /// Address takeover: from now on this address reaches `upstream` instead (a promoted
    /// replica, a standby behind a VIP or DNS name). Open connections are reset, as they are
    /// when the server behind an address changes.
    pub fn redirect(&self, upstream: SocketAddr) {
        *self
            .shared
            .upstream
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = upstream;
        self.shared.redirect_epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// The faults in force.
    pub fn faults(&self) -> Faults {
        self.shared.faults()
    }

    /// Replaces every fault at once. Turning a fault off counts as a heal (see
    /// [`FaultProxy::heal`]).
    pub fn set_faults(&self, new: Faults) {
        let mut f = self.shared.faults.lock().unwrap_or_else(|e| e.into_inner());
        let healing =
            (f.cut.is_some() && new.cut.is_none()) || (f.drop_replies && !new.drop_replies);
        *f = new;
        if healing {
            self.shared.heal_epoch.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn update(&self, change: impl FnOnce(&mut Faults)) {
        let mut f = self.faults();
        change(&mut f);
        self.set_faults(f);
    }

    /// Cuts the master off (`Some`) or reconnects it (`None`).
    pub fn set_cut(&self, cut: Option<Cut>) {
        self.update(|f| f.cut = cut);
    }

    /// Delays every forwarded chunk by `one_way` in each direction.
    pub fn set_latency(&self, one_way: Duration) {
        self.update(|f| f.latency = one_way);
    }

    /// Swallows server-to-client bytes while on.
    pub fn set_drop_replies(&self, on: bool) {
        self.update(|f| f.drop_replies = on);
    }

    /// Removes every fault. Connections that lost bytes to a black hole or to dropped
    /// replies are reset now: their client's request/reply bookkeeping is off by the lost
    /// replies, and reusing them would hand it someone else's answer. Real TCP never loses
    /// bytes mid-stream either; it breaks the connection.
    pub fn heal(&self) {
        self.set_faults(Faults::default());
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        let conns = std::mem::take(&mut *self.shared.lock_conns());
        for h in conns {
            let _ = h.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                // Pumps rely on blocking reads with timeouts, whatever the listener's mode.
                let _ = client.set_nonblocking(false);
                if shared.faults().cut == Some(Cut::Reset) {
                    reset(&client);
                    continue;
                }
                let s = Arc::clone(shared);
                let spawned = thread::Builder::new()
                    .name("tc-proxy-conn".into())
                    .spawn(move || serve(client, &s));
                let mut conns = shared.lock_conns();
                // Keep the list short on long runs with many short connections.
                conns.retain(|h| !h.is_finished());
                if let Ok(h) = spawned {
                    conns.push(h);
                }
            }
            // 5 ms: new connections wait at most that; idle proxies stay cheap on small CI.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(5))
            }
            Err(_) => thread::sleep(TICK),
        }
    }
}

/// Per-connection state shared by its two pumps.
#[derive(Debug, Default)]
struct Conn {
    /// 0 while no byte was lost; else `heal_epoch + 1` at the time of the first loss, so
    /// any later heal resets the connection.
    tainted_at: AtomicU64,
    /// Either pump ending (EOF, error, reset) ends the other one at its next tick.
    done: AtomicBool,
    /// `Shared::redirect_epoch` when the connection was opened.
    redirect_epoch: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    ToServer,
    ToClient,
}

fn serve(client: TcpStream, shared: &Arc<Shared>) {
    let redirect_epoch = shared.redirect_epoch.load(Ordering::SeqCst);
    let upstream = match TcpStream::connect_timeout(&shared.upstream(), UPSTREAM_CONNECT_TIMEOUT) {
        Ok(s) => s,
        Err(_) => {
            // What a client of a dead master would see: the connection is refused/reset.
            reset(&client);
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let conn = Arc::new(Conn {
        redirect_epoch,
        ..Conn::default()
    });
    let (Ok(c2), Ok(u2)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let (s, k) = (Arc::clone(shared), Arc::clone(&conn));
    let back = thread::Builder::new()
        .name("tc-proxy-back".into())
        .spawn(move || pump(u2, c2, Dir::ToClient, &s, &k));
    pump(client, upstream, Dir::ToServer, shared, &conn);
    if let Ok(h) = back {
        let _ = h.join();
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, dir: Dir, shared: &Shared, conn: &Conn) {
    let _ = to.set_write_timeout(Some(WRITE_TIMEOUT));
    let mut buf = vec![0u8; 16 * 1024];
    let mut queue: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut eof = false;
    loop {
        if shared.stop.load(Ordering::SeqCst) || conn.done.load(Ordering::SeqCst) {
            break;
        }
        let faults = shared.faults();
        let tainted_at = conn.tainted_at.load(Ordering::SeqCst);
        let healed_since_loss =
            tainted_at != 0 && shared.heal_epoch.load(Ordering::SeqCst) >= tainted_at;
        let redirected = shared.redirect_epoch.load(Ordering::SeqCst) != conn.redirect_epoch;
        if faults.cut == Some(Cut::Reset) || healed_since_loss || redirected {
            reset(&from);
            reset(&to);
            break;
        }
        let now = Instant::now();
        let mut write_failed = false;
        while queue.front().is_some_and(|(due, _)| *due <= now) {
            let (_, chunk) = queue.pop_front().expect("front checked");
            if to.write_all(&chunk).is_err() {
                write_failed = true;
                break;
            }
        }
        if write_failed {
            break;
        }
        let wait = queue
            .front()
            .map(|(due, _)| due.saturating_duration_since(now))
            .unwrap_or(TICK)
            .clamp(Duration::from_millis(1), TICK);
        if eof {
            if queue.is_empty() {
                // Pass the half-close on, as TCP would; the other direction may go on.
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            thread::sleep(wait);
            continue;
        }
        let _ = from.set_read_timeout(Some(wait));
        match from.read(&mut buf) {
            Ok(0) => eof = true,
            Ok(n) => {
                let f = shared.faults();
                let swallow =
                    f.cut == Some(Cut::BlackHole) || (dir == Dir::ToClient && f.drop_replies);
                if swallow {
                    let epoch = shared.heal_epoch.load(Ordering::SeqCst) + 1;
                    let _ = conn.tainted_at.compare_exchange(
                        0,
                        epoch,
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    );
                } else {
                    queue.push_back((Instant::now() + f.latency, buf[..n].to_vec()));
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => break,
        }
    }
    conn.done.store(true, Ordering::SeqCst);
}

/// Makes the kernel answer with RST instead of FIN once the last handle on the socket
/// closes: clients then see "connection reset", not a polite EOF.
fn reset(s: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid fd and a correctly sized, initialised linger struct.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_round_trip_through_text() {
        for f in [
            Faults::default(),
            Faults {
                cut: Some(Cut::BlackHole),
                latency: Duration::from_millis(150),
                drop_replies: true,
            },
            Faults {
                cut: Some(Cut::Reset),
                ..Faults::default()
            },
        ] {
            assert_eq!(f.to_string().parse::<Faults>().unwrap(), f);
        }
        assert_eq!(Faults::default().to_string(), "pass");
        assert!("cut=sideways".parse::<Faults>().is_err());
    }

    #[test]
    fn proxy_forwards_to_an_echo_server_and_stops_on_drop() {
        let echo = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = echo.local_addr().unwrap();
        let server = thread::spawn(move || {
            let (mut s, _) = echo.accept().unwrap();
            let mut b = [0u8; 5];
            s.read_exact(&mut b).unwrap();
            s.write_all(&b).unwrap();
        });
        let p = FaultProxy::start(0, addr).unwrap();
        let mut c = TcpStream::connect(("127.0.0.1", p.port())).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        c.write_all(b"hello").unwrap();
        let mut b = [0u8; 5];
        c.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"hello");
        server.join().unwrap();
        let started = Instant::now();
        drop(p);
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
