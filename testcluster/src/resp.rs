//! A tiny blocking RESP2 client over `std::net::TcpStream`.
//!
//! The harness needs to know when a master answers `PING` without pulling in an async
//! client, and tests of the harness itself need to send raw commands and observe raw
//! timeouts (a black-holed master, a reply that never comes). It is not a general client:
//! no pipelining helpers, no pooling, no TLS, no AUTH.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `+OK`, `+PONG`.
    Simple(String),
    /// `-ERR ...`: an error reply, not a transport failure.
    Error(String),
    /// `:42`.
    Int(i64),
    /// `$n` bulk string.
    Bulk(Vec<u8>),
    /// `$-1` or `*-1`.
    Nil,
    /// `*n` array.
    Array(Vec<Value>),
}

impl Value {
    /// The bulk or simple string as UTF-8 (lossy), `None` for anything else.
    pub fn as_str(&self) -> Option<String> {
        match self {
            Value::Simple(s) => Some(s.clone()),
            Value::Bulk(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }
}

/// Turns `redis://host:port[/db]` or `host:port` into a socket address.
pub fn parse_addr(url: &str) -> io::Result<SocketAddr> {
    let rest = url.strip_prefix("redis://").unwrap_or(url);
    let hostport = rest.split('/').next().unwrap_or(rest);
    hostport
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("no address for {url}")))
}

/// A blocking connection with the same timeout for connect, read and write.
#[derive(Debug)]
pub struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    /// Connects to `url` (`redis://127.0.0.1:PORT` or `127.0.0.1:PORT`).
    ///
    /// # Errors
    /// Any connect failure, including a timeout (`ErrorKind::TimedOut`).
    pub fn connect(url: &str, timeout: Duration) -> io::Result<Conn> {
        let addr = parse_addr(url)?;
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            reader: BufReader::new(stream),
        })
    }

    /// Changes the read timeout, e.g. to wait longer for a slow master.
    ///
    /// # Errors
    /// As `TcpStream::set_read_timeout`.
    pub fn set_read_timeout(&self, timeout: Duration) -> io::Result<()> {
        self.reader.get_ref().set_read_timeout(Some(timeout))
    }

    /// Sends a command without waiting for its reply.
    ///
    /// # Errors
    /// Write failures and write timeouts.
    pub fn send<A: AsRef<[u8]>>(&mut self, args: &[A]) -> io::Result<()> {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            let a = a.as_ref();
            buf.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            buf.extend_from_slice(a);
            buf.extend_from_slice(b"\r\n");
        }
        self.reader.get_mut().write_all(&buf)
    }

    /// Reads one reply.
    ///
    /// # Errors
    /// `WouldBlock`/`TimedOut` when no reply arrives within the read timeout,
    /// `UnexpectedEof` when the server closed the connection, `InvalidData` on garbage.
    pub fn read_reply(&mut self) -> io::Result<Value> {
        read_value(&mut self.reader, 0)
    }

    /// Sends a command and reads its reply.
    ///
    /// # Errors
    /// As [`Conn::send`] and [`Conn::read_reply`].
    pub fn cmd<A: AsRef<[u8]>>(&mut self, args: &[A]) -> io::Result<Value> {
        self.send(args)?;
        self.read_reply()
    }
}

/// Connects, sends one command, reads its reply.
///
/// # Errors
/// As [`Conn::connect`] and [`Conn::cmd`].
pub fn cmd<A: AsRef<[u8]>>(url: &str, args: &[A], timeout: Duration) -> io::Result<Value> {
    Conn::connect(url, timeout)?.cmd(args)
}

/// True when the server at `url` answers `PING` with `PONG` within `timeout`.
///
/// A server still loading its AOF answers `-LOADING`, which counts as not ready.
pub fn ping(url: &str, timeout: Duration) -> bool {
    matches!(cmd(url, &["PING"], timeout), Ok(Value::Simple(s)) if s == "PONG")
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn read_line(r: &mut impl BufRead) -> io::Result<String> {
    let mut line = Vec::new();
    let n = r.read_until(b'\n', &mut line)?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    if !line.ends_with(b"\r\n") {
        return Err(bad("reply line without CRLF"));
    }
    line.truncate(line.len() - 2);
    String::from_utf8(line).map_err(|_| bad("reply line is not UTF-8"))
}

fn read_value(r: &mut impl BufRead, depth: usize) -> io::Result<Value> {
    if depth > 16 {
        return Err(bad("reply nested too deeply"));
    }
    let line = read_line(r)?;
    let (kind, rest) = line
        .split_at_checked(1)
        .ok_or_else(|| bad("empty reply line"))?;
    let num = || {
        rest.parse::<i64>()
            .map_err(|_| bad(format!("bad length {rest:?}")))
    };
    match kind {
        "+" => Ok(Value::Simple(rest.to_owned())),
        "-" => Ok(Value::Error(rest.to_owned())),
        ":" => Ok(Value::Int(num()?)),
        "$" => {
            let n = num()?;
            if n < 0 {
                return Ok(Value::Nil);
            }
            let mut buf = vec![0; n as usize + 2];
            r.read_exact(&mut buf)?;
            buf.truncate(n as usize);
            Ok(Value::Bulk(buf))
        }
        "*" => {
            let n = num()?;
            if n < 0 {
                return Ok(Value::Nil);
            }
            (0..n)
                .map(|_| read_value(r, depth + 1))
                .collect::<io::Result<_>>()
                .map(Value::Array)
        }
        other => Err(bad(format!("unknown reply type {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> io::Result<Value> {
        read_value(&mut BufReader::new(bytes), 0)
    }

    #[test]
    fn parses_each_reply_kind() {
        assert_eq!(parse(b"+PONG\r\n").unwrap(), Value::Simple("PONG".into()));
        assert_eq!(parse(b"-ERR x\r\n").unwrap(), Value::Error("ERR x".into()));
        assert_eq!(parse(b":-3\r\n").unwrap(), Value::Int(-3));
        assert_eq!(
            parse(b"$3\r\nabc\r\n").unwrap(),
            Value::Bulk(b"abc".to_vec())
        );
        assert_eq!(parse(b"$-1\r\n").unwrap(), Value::Nil);
        assert_eq!(
            parse(b"*2\r\n:1\r\n$0\r\n\r\n").unwrap(),
            Value::Array(vec![Value::Int(1), Value::Bulk(vec![])])
        );
        assert!(parse(b"").is_err());
        assert!(parse(b"?x\r\n").is_err());
    }

    #[test]
    fn parses_urls() {
        assert_eq!(parse_addr("redis://127.0.0.1:7000").unwrap().port(), 7000);
        assert_eq!(parse_addr("redis://127.0.0.1:7000/0").unwrap().port(), 7000);
        assert_eq!(parse_addr("127.0.0.1:7001").unwrap().port(), 7001);
    }
}
