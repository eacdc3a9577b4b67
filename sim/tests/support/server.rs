//! A real `redis-server` on a free loopback port, killed (and reaped) on drop.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A redis-server child process with no persistence.
pub struct RealServer {
    child: Child,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
}

impl RealServer {
    /// Starts one and waits (at most 10 s) until it accepts connections. The binary is
    /// `$REDIS_SERVER` or `redis-server` from PATH.
    pub fn start() -> RealServer {
        let binary = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        // The OS picks a free port; another process could take it before redis-server binds
        // it, in which case the wait below fails loudly rather than talking to a stranger...
        // unless the stranger is a Redis, which the run_id check in the test would not catch;
        // acceptable on a test machine.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&binary)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
        let server = RealServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen on {port} within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }
}

impl Drop for RealServer {
    fn drop(&mut self) {
        // Only our own child, by its handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
