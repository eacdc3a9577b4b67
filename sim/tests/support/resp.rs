//! A minimal blocking RESP2 client: enough to send commands and read replies as
//! `redquorum_sim::Value`, so both sides of the comparison speak the same type.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use redquorum_sim::Value;

use super::Exec;

/// One connection to a real server.
pub struct RespClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl RespClient {
    /// Connects; every read and write is bounded by 5 s so a hung server fails the test.
    pub fn connect(port: u16) -> RespClient {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to redis-server");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        RespClient {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    fn read_line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("read reply line");
        assert!(line.ends_with("\r\n"), "truncated reply line {line:?}");
        line.truncate(line.len() - 2);
        line
    }

    fn read_value(&mut self) -> Value {
        let line = self.read_line();
        let (kind, rest) = line.split_at(1);
        match kind {
            "+" => Value::Status(rest.to_owned()),
            "-" => Value::Error(rest.to_owned()),
            ":" => Value::Int(rest.parse().expect("integer reply")),
            "$" => {
                let len: i64 = rest.parse().expect("bulk length");
                if len < 0 {
                    return Value::Nil;
                }
                let mut buf = vec![0; len as usize + 2];
                self.reader.read_exact(&mut buf).expect("bulk body");
                buf.truncate(len as usize);
                Value::Bulk(buf)
            }
            "*" => {
                let len: i64 = rest.parse().expect("array length");
                if len < 0 {
                    // RESP2 has a nil array too; Redis uses it for nothing we call, and the
                    // model has no such value, so map it to Nil like a Lua script would see.
                    return Value::Nil;
                }
                Value::Array((0..len).map(|_| self.read_value()).collect())
            }
            other => panic!("unknown RESP type {other:?} in {line:?}"),
        }
    }
}

impl Exec for RespClient {
    fn exec(&mut self, args: &[Vec<u8>]) -> Value {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&out).expect("send command");
        self.read_value()
    }
}
