//! How one master is reached: its URL with the builder's credentials applied, over TCP, a Unix
//! socket or TLS ([`Endpoint`]); and the refusals that are configuration errors rather than
//! outages (a certificate that does not verify, an ACL user without a needed permission).

use std::time::Duration;

use redis::aio::{MultiplexedConnection, PubSub};
use redis::{AsyncConnectionConfig, ConnectionInfo, IntoConnectionInfo, RedisError, RedisResult};

use crate::error::{Error, MasterReply, redact_url};
use crate::settings::Access;

/// One master's way in. Cheap to clone.
// Plain masters are the common case: boxing their client would cost every connect a pointer
// chase to save a few bytes per master.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub(crate) enum Endpoint {
    /// TCP or a Unix socket, opened by redis-rs.
    Plain(redis::Client),
    /// TLS over TCP, opened here (see tls.rs for why not by redis-rs).
    #[cfg(feature = "tls")]
    Tls(std::sync::Arc<crate::tls::TlsEndpoint>),
}

impl Access {
    /// The endpoint of master `index` at `url`.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] for a URL that does not parse (or asks for TLS without the `tls`
    /// feature), [`Error::InvalidConfig`] for TLS options that do not parse.
    pub(crate) fn endpoint(&self, index: usize, url: &str) -> Result<Endpoint, Error> {
        let invalid = |source: RedisError| Error::InvalidUrl {
            index,
            url: redact_url(url),
            source,
        };
        let (info, tls) = parse(url).map_err(invalid)?;
        let info = self.with_credentials(info);
        match tls {
            None => redis::Client::open(info)
                .map(Endpoint::Plain)
                .map_err(invalid),
            #[cfg(feature = "tls")]
            Some(insecure) => {
                let (host, port) = match info.addr() {
                    redis::ConnectionAddr::Tcp(host, port) => (host.clone(), *port),
                    _ => unreachable!("a rediss:// URL parses to a TCP address"),
                };
                let redis = info.redis_settings().clone();
                let endpoint =
                    crate::tls::TlsEndpoint::new(host, port, insecure, redis, &self.tls)?;
                Ok(Endpoint::Tls(std::sync::Arc::new(endpoint)))
            }
            #[cfg(not(feature = "tls"))]
            Some(_) => Err(invalid(RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "rediss:// needs the `tls` feature of redquorum",
            )))),
        }
    }

    /// The builder's credentials, unless the URL carries a username or password of its own.
    fn with_credentials(&self, info: ConnectionInfo) -> ConnectionInfo {
        let Some(creds) = &self.credentials else {
            return info;
        };
        let settings = info.redis_settings();
        if settings.username().is_some() || settings.password().is_some() {
            return info;
        }
        let mut settings = settings.clone().set_password(&creds.password);
        if let Some(user) = &creds.username {
            settings = settings.set_username(user);
        }
        info.set_redis_settings(settings)
    }
}

/// Parses a master URL. For `rediss://` (and `valkeys://`) URLs the address and settings are
/// parsed as the plain URL's, and the second value says whether `#insecure` was asked for: the
/// TLS itself is ours, whatever TLS features redis-rs was built with.
fn parse(url: &str) -> RedisResult<(ConnectionInfo, Option<bool>)> {
    let bad = |what: &'static str| RedisError::from((redis::ErrorKind::InvalidClientConfig, what));
    let Some(mut parsed) = redis::parse_redis_url(url) else {
        return Ok((url.into_connection_info()?, None));
    };
    let plain = match parsed.scheme() {
        "rediss" => "redis",
        "valkeys" => "valkey",
        _ => return Ok((url.into_connection_info()?, None)),
    };
    let insecure = match parsed.fragment() {
        None => false,
        Some("insecure") => true,
        Some(_) => return Err(bad("only #insecure is supported as URL fragment")),
    };
    parsed.set_fragment(None);
    parsed
        .set_scheme(plain)
        .map_err(|()| bad("invalid TLS URL"))?;
    Ok((parsed.as_str().into_connection_info()?, Some(insecure)))
}

impl Endpoint {
    /// `host:port` (or the socket path), for duplicate detection.
    pub(crate) fn addr(&self) -> String {
        match self {
            Self::Plain(client) => client.get_connection_info().addr().to_string(),
            #[cfg(feature = "tls")]
            Self::Tls(tls) => tls.addr(),
        }
    }

    /// Opens a multiplexed connection, bounded by `timeout`.
    pub(crate) async fn multiplexed(
        &self,
        timeout: Duration,
    ) -> Result<MultiplexedConnection, MasterReply> {
        // No response timeout inside redis-rs: every call on this connection is already
        // bounded by our own per-master timeout (and the whole connect by the connect
        // timeout), and a second timer per command costs a timer-wheel insert and removal plus
        // a larger future on the hot path (measured by loadbench).
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(None);
        match self {
            Self::Plain(client) => client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(|e| reply_for(&e)),
            #[cfg(feature = "tls")]
            Self::Tls(tls) => {
                let stream = tls.stream(timeout).await?;
                let setup = MultiplexedConnection::new_with_config(&tls.redis, stream, config);
                let (conn, driver) = tokio::time::timeout(timeout, setup)
                    .await
                    .map_err(|_| MasterReply::TimedOut)?
                    .map_err(|e| reply_for(&e))?;
                tokio::spawn(driver);
                Ok(conn)
            }
        }
    }

    /// Opens a pub/sub connection (release wake-ups), bounded by `timeout`.
    pub(crate) async fn pubsub(&self, timeout: Duration) -> Option<PubSub> {
        let open = async {
            match self {
                Self::Plain(client) => client.get_async_pubsub().await.ok(),
                #[cfg(feature = "tls")]
                Self::Tls(tls) => {
                    let stream = tls.stream(timeout).await.ok()?;
                    PubSub::new(&tls.redis, stream).await.ok()
                }
            }
        };
        tokio::time::timeout(timeout, open).await.ok().flatten()
    }
}

/// A client error as a master's reply: the same classification as every other call (a
/// `LOADING` server at connect is busy, not down), the configuration refusals included.
fn reply_for(e: &RedisError) -> MasterReply {
    classify(e).0
}

/// Maps a client error to a reply, and says whether the connection is unusable.
pub(crate) fn classify(e: &RedisError) -> (MasterReply, bool) {
    if let Some(refused) = refusal(e) {
        // A TLS failure leaves the stream unusable; a denied command does not.
        let broken = matches!(refused, MasterReply::Tls(_));
        (refused, broken)
    } else if e.is_timeout() {
        (MasterReply::TimedOut, false)
    } else if e.is_io_error()
        || e.is_connection_dropped()
        || e.is_unrecoverable_error()
        || e.is_connection_refusal()
    {
        (MasterReply::Unavailable(e.to_string()), true)
    } else if matches!(e.code(), Some("LOADING" | "BUSY")) {
        // Loading its data or running a long script: it will answer again by itself.
        (MasterReply::Busy(e.to_string()), false)
    } else {
        (MasterReply::ServerError(e.to_string()), false)
    }
}

/// The refusals that no retry can cure: a TLS failure ([`MasterReply::Tls`]), or the master
/// denying this client's credentials or a command or key it needs ([`MasterReply::Denied`]).
pub(crate) fn refusal(e: &RedisError) -> Option<MasterReply> {
    if matches!(e.code(), Some("NOPERM" | "WRONGPASS" | "NOAUTH"))
        || e.kind() == redis::ErrorKind::AuthenticationFailed
    {
        return Some(MasterReply::Denied(e.to_string()));
    }
    tls_refusal(e)
}

/// A TLS failure under a client error (redis-rs keeps an I/O error as `Arc<dyn Error>`, which
/// is what its `source` is).
#[cfg(feature = "tls")]
fn tls_refusal(e: &RedisError) -> Option<MasterReply> {
    type Shared = std::sync::Arc<dyn std::error::Error + Send + Sync>;
    let source = std::error::Error::source(e)?;
    let io = match source.downcast_ref::<Shared>() {
        Some(shared) => shared.downcast_ref::<std::io::Error>(),
        None => source.downcast_ref::<std::io::Error>(),
    };
    io.and_then(crate::tls::tls_failure)
}

#[cfg(not(feature = "tls"))]
fn tls_refusal(_: &RedisError) -> Option<MasterReply> {
    None
}

/// The probe a connection runs before the master counts as connected: the release script by
/// `EVALSHA` and by `EVAL` on a key no lock uses, with an owner token nobody holds, so it
/// changes nothing. An ACL user that lacks either command, or access to the lock keys, is
/// found here (a `NOPERM` reply) instead of failing every round later.
pub(crate) fn permission_probe(key: &str) -> redis::Pipeline {
    let call = crate::scripts::ScriptCall::new(
        &crate::scripts::RELEASE,
        vec![key.to_owned()],
        vec![crate::random::token()],
    );
    let mut pipe = redis::pipe();
    pipe.add_command(call.evalsha().clone())
        .add_command(call.eval());
    pipe
}
