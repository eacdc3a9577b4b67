//! The reply (and argument) values exchanged with a simulated master, shaped like RESP2.

/// One RESP2 reply. Commands take their arguments as raw byte strings and answer with one of
/// these, so a network simulator can pass them through unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// The nil bulk string (`$-1`): a missing key, a SET NX that did not set.
    Nil,
    /// An integer reply (`:n`).
    Int(i64),
    /// A bulk string (`$n`), binary safe.
    Bulk(Vec<u8>),
    /// A status reply (`+OK`).
    Status(String),
    /// An error reply (`-ERR ...`), the full text including its code.
    Error(String),
    /// A multi-bulk reply (`*n`).
    Array(Vec<Value>),
}

impl Value {
    /// `+OK`, the reply of most writes.
    pub fn ok() -> Value {
        Value::Status("OK".to_owned())
    }

    /// A bulk string from anything byte-like.
    pub fn bulk(bytes: impl Into<Vec<u8>>) -> Value {
        Value::Bulk(bytes.into())
    }

    /// An error reply with the generic `ERR` code prefixed, as Redis' `addReplyError` does.
    pub fn err(message: impl AsRef<str>) -> Value {
        Value::Error(format!("ERR {}", message.as_ref()))
    }

    /// Whether this is an error reply.
    pub fn is_error(&self) -> bool {
        matches!(self, Value::Error(_))
    }
}

/// The error text Redis uses for a command run against a key of another type.
pub const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";
/// The error text Redis uses when an argument must be a 64-bit integer and is not.
pub const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
/// The error text Redis uses when a score or bound must be a float and is not.
pub const NOT_FLOAT: &str = "ERR value is not a valid float";
/// The error text Redis uses for an unknown option or a malformed option list.
pub const SYNTAX: &str = "ERR syntax error";
