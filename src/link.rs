//! The seam between the protocol and the wire: one connection to one master ([`Conn`]) and the
//! way to open one ([`Connector`]).
//!
//! In production both are redis-rs (a multiplexed connection, a client); with the `sim`
//! feature they can also be a simulated network's (see `sim.rs`), so that the deterministic
//! simulator runs every line above this one unchanged: `master.rs` (timeouts, reconnects,
//! identity, seals, `NOSCRIPT`), the rounds, fencing, guards, watchdogs and primitives. Without
//! the feature each enum has one variant and the matches compile away.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{Cmd, FromRedisValue, Pipeline, RedisResult, Value};

use crate::error::MasterReply;

/// An open connection to one master. Cheap to clone: clones share the connection.
#[derive(Clone)]
pub(crate) enum Conn {
    Redis(MultiplexedConnection),
    #[cfg(feature = "sim")]
    Sim(std::sync::Arc<dyn crate::sim::Connection>),
}

impl Conn {
    /// Sends one command and returns its reply (error replies as `Value::ServerError`). The
    /// command is on its way once this future has been polled once.
    pub(crate) async fn send(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        match self {
            Self::Redis(c) => c.send_packed_command(cmd).await,
            #[cfg(feature = "sim")]
            Self::Sim(c) => c.send(cmd.get_packed_command()).await,
        }
    }

    /// Sends a pipeline's commands back to back and returns the replies of `count` of them
    /// from `offset` on (redis-rs' `send_packed_commands`).
    pub(crate) async fn send_many(
        &mut self,
        pipe: &Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        match self {
            Self::Redis(c) => c.send_packed_commands(pipe, offset, count).await,
            #[cfg(feature = "sim")]
            Self::Sim(c) => {
                // A transaction is framed by MULTI and EXEC as redis-rs packs it, so that the
                // offsets callers pass (EXEC's reply at `len + 1`) mean the same here.
                let (multi, exec) = (redis::cmd("MULTI"), redis::cmd("EXEC"));
                let framed = pipe.is_transaction();
                let cmds = framed
                    .then_some(&multi)
                    .into_iter()
                    .chain(pipe.cmd_iter())
                    .chain(framed.then_some(&exec));
                let sent: Vec<_> = cmds.map(|cmd| c.send(cmd.get_packed_command())).collect();
                let mut replies = Vec::with_capacity(count);
                for (i, reply) in sent.into_iter().enumerate() {
                    let value = reply.await?;
                    if (offset..offset + count).contains(&i) {
                        replies.push(value);
                    }
                }
                Ok(replies)
            }
        }
    }

    /// [`send`](Self::send), with error replies as errors and the reply converted.
    pub(crate) async fn query<T: FromRedisValue>(&mut self, cmd: &Cmd) -> RedisResult<T> {
        let value = self.send(cmd).await?.extract_error()?;
        Ok(redis::from_redis_value(value)?)
    }

    /// Sends a plain (non-transaction) pipeline; the first error reply fails the whole call.
    pub(crate) async fn query_many<T: FromRedisValue>(
        &mut self,
        pipe: &Pipeline,
    ) -> RedisResult<Vec<T>> {
        let values = self.send_many(pipe, 0, pipe.len()).await?;
        values
            .into_iter()
            .map(|v| Ok(redis::from_redis_value(v.extract_error()?)?))
            .collect()
    }
}

/// How a master's connections are opened.
// The small variant exists only in the simulator; boxing the client would cost production a
// pointer chase for nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Connector {
    Redis(crate::endpoint::Endpoint),
    #[cfg(feature = "sim")]
    Sim {
        index: usize,
        network: std::sync::Arc<dyn crate::sim::Network>,
    },
}

impl Connector {
    /// Opens a connection, bounded by `timeout`.
    pub(crate) async fn connect(&self, timeout: Duration) -> Result<Conn, MasterReply> {
        match self {
            Self::Redis(endpoint) => Ok(Conn::Redis(endpoint.multiplexed(timeout).await?)),
            #[cfg(feature = "sim")]
            Self::Sim { index, network } => network
                .connect(*index)
                .await
                .map(Conn::Sim)
                .map_err(|e| crate::endpoint::classify(&e).0),
        }
    }

    /// Whether this is a real server (the simulator's masters need no permission probe).
    pub(crate) fn is_real(&self) -> bool {
        matches!(self, Self::Redis(_))
    }

    /// `host:port` (or the simulated master's name), for duplicate detection.
    pub(crate) fn endpoint(&self) -> String {
        match self {
            Self::Redis(endpoint) => endpoint.addr(),
            #[cfg(feature = "sim")]
            Self::Sim { index, .. } => format!("sim:{index}"),
        }
    }
}
