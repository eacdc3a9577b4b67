//! [`CacheBuilder`]: where the cache's nodes come from, its defaults, and the validation of
//! everything a caller can pass in.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use redis::Value;

use crate::defaults::{
    DEFAULT_CACHE_KEY_PREFIX, DEFAULT_CONNECT_TIMEOUT, DEFAULT_FILL_LOCK_TTL, DEFAULT_FILL_WAIT,
    DEFAULT_HASH_WITH_PREFIX, DEFAULT_NODE_TIMEOUT,
};
use crate::error::{Error, MasterReply, Result, redact_url};
use crate::lock::Redlock;
use crate::master::{Master, connect_all};
use crate::ring::{HashRing, RingNode};
use crate::settings::Settings;

use super::{Cache, Inner};
use crate::invalid::ConfigReason;

/// Configures a [`Cache`]. Created by [`Cache::builder`] or [`Cache::from_redlock`].
///
/// The nodes come from exactly one of [`nodes`](Self::nodes) (the cache connects its own
/// masters) or [`redlock`](Self::redlock) (it shares a lock client's masters and
/// connections).
///
/// ```no_run
/// # async fn run() -> redquorum::Result<()> {
/// use std::time::Duration;
/// let cache = redquorum::Cache::builder()
///     .nodes(["redis://10.0.0.1:6379", "redis://10.0.0.2:6379", "redis://10.0.0.3:6379"])
///     .node_timeout(Duration::from_millis(20))
///     .key_prefix("myapp:")
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
#[must_use]
#[derive(Clone)]
pub struct CacheBuilder {
    nodes: Option<Vec<String>>,
    redlock: Option<Redlock>,
    node_timeout: Duration,
    connect_timeout: Duration,
    key_prefix: String,
    hash_with_prefix: bool,
    fill_lock_ttl: Duration,
    fill_wait: Duration,
    /// Credentials and TLS options of the cache's own nodes (endpoint.rs).
    access: crate::settings::Access,
    /// Nodes reached over a simulated network instead (`sim` feature).
    #[cfg(feature = "sim")]
    network: Option<Arc<dyn crate::sim::Network>>,
}

impl fmt::Debug for CacheBuilder {
    // URLs may carry passwords.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nodes = self
            .nodes
            .as_ref()
            .map(|urls| urls.iter().map(|u| redact_url(u)).collect::<Vec<_>>());
        f.debug_struct("CacheBuilder")
            .field("nodes", &nodes)
            .field("redlock", &self.redlock)
            .field("node_timeout", &self.node_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("key_prefix", &self.key_prefix)
            .field("hash_with_prefix", &self.hash_with_prefix)
            .field("fill_lock_ttl", &self.fill_lock_ttl)
            .field("fill_wait", &self.fill_wait)
            .field("access", &self.access)
            .finish()
    }
}

impl Default for CacheBuilder {
    fn default() -> Self {
        Self {
            nodes: None,
            redlock: None,
            node_timeout: DEFAULT_NODE_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            key_prefix: DEFAULT_CACHE_KEY_PREFIX.to_owned(),
            hash_with_prefix: DEFAULT_HASH_WITH_PREFIX,
            fill_lock_ttl: DEFAULT_FILL_LOCK_TTL,
            fill_wait: DEFAULT_FILL_WAIT,
            access: Default::default(),
            #[cfg(feature = "sim")]
            network: None,
        }
    }
}

/// Credentials and TLS on the cache's builder, as on the lock client's.
impl CacheBuilder {
    /// As [`Builder::credentials`](crate::Builder::credentials), for the cache's own nodes.
    pub fn credentials(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.access
            .set_credentials(Some(username.into()), password.into());
        self
    }

    /// As [`Builder::password`](crate::Builder::password), for the cache's own nodes.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.access.set_credentials(None, password.into());
        self
    }

    /// As [`Builder::tls`](crate::Builder::tls), for the cache's own nodes.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, options: crate::tls::TlsOptions) -> Self {
        self.access.tls = options;
        self
    }
}

impl CacheBuilder {
    /// The cache's own nodes (`redis://[user:password@]host:port[/db]` URLs). Their order is
    /// the ring's server order (it decides ketama ties, as libmemcached's list order does), and
    /// each node's ring name is its `host:port` as written in the URL, so a ketama client in
    /// another language given the same `host:port` list places every key on the same node.
    /// No default; mutually exclusive with [`redlock`](Self::redlock).
    pub fn nodes<I, S>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.nodes = Some(urls.into_iter().map(Into::into).collect());
        self
    }

    /// Use the masters of `redlock` as the cache's nodes, sharing its connections (no new
    /// connection is opened), and take its locks for [`Cache::get_or_compute`]. No default;
    /// mutually exclusive with [`nodes`](Self::nodes).
    ///
    /// Only safe on masters that never evict (`maxmemory-policy noeviction`): [`build`](Self::build)
    /// checks and warns, see [`Cache::from_redlock`].
    pub fn redlock(mut self, redlock: Redlock) -> Self {
        self.redlock = Some(redlock);
        self
    }

    /// Bound on each exchange with one node (one pipeline carrying all that call's keys for
    /// that node). Default [`DEFAULT_NODE_TIMEOUT`]. A node that does not answer in time turns
    /// its keys into misses and its writes into drops. With [`nodes`](Self::nodes) it also
    /// bounds each lock call; with [`redlock`](Self::redlock) the lock keeps its own.
    pub fn node_timeout(mut self, timeout: Duration) -> Self {
        self.node_timeout = timeout;
        self
    }

    /// Bound on opening a connection to one node, at build and on reconnect (with
    /// [`nodes`](Self::nodes) only). Default [`DEFAULT_CONNECT_TIMEOUT`].
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Prefix of every data key: a key `k` is stored as `<prefix>k`. Default
    /// [`DEFAULT_CACHE_KEY_PREFIX`]; `""` stores keys as given, to share them with clients
    /// that use no prefix.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Whether the ring hashes `<prefix><key>` instead of `<key>` (libmemcached's
    /// `MEMCACHED_BEHAVIOR_HASH_WITH_PREFIX_KEY`; twemproxy always hashes the full key).
    /// Default [`DEFAULT_HASH_WITH_PREFIX`].
    pub fn hash_with_prefix(mut self, on: bool) -> Self {
        self.hash_with_prefix = on;
        self
    }

    /// TTL of the fill lock of [`Cache::get_or_compute`]. It is extended while the computation
    /// runs; if the computing process dies, the others wait at most this long before one of
    /// them computes. Default [`DEFAULT_FILL_LOCK_TTL`]. Must be a valid lock TTL for the lock
    /// client (at least 10 per-master timeouts).
    pub fn fill_lock_ttl(mut self, ttl: Duration) -> Self {
        self.fill_lock_ttl = ttl;
        self
    }

    /// How long a [`Cache::get_or_compute`] caller waits for a value another caller is
    /// computing before it fails with [`Error::FillTimeout`]. Default [`DEFAULT_FILL_WAIT`].
    /// It bounds waiting only: a caller that computes takes as long as its computation.
    pub fn fill_wait(mut self, wait: Duration) -> Self {
        self.fill_wait = wait;
        self
    }

    /// Reaches the nodes given by [`nodes`](Self::nodes) over a simulated network (the
    /// deterministic simulator's; not a public API): the URLs only name them. The fill lock
    /// is built over the same connected nodes, so it goes through the network too.
    #[cfg(feature = "sim")]
    #[doc(hidden)]
    pub fn sim_network(mut self, network: Arc<dyn crate::sim::Network>) -> Self {
        self.network = Some(network);
        self
    }

    /// Validates the settings, connects (with [`nodes`](Self::nodes): to every node
    /// concurrently), and returns the cache.
    ///
    /// Nodes that are down at build do not fail it, as long as one answers: their keys are
    /// misses until a background reconnect succeeds.
    ///
    /// # Errors
    /// [`Error::NoMasters`] without nodes; [`Error::InvalidConfig`] for both `nodes` and
    /// `redlock`, a zero timeout or wait, or a fill lock TTL the lock client rejects;
    /// [`Error::InvalidUrl`]; [`Error::DuplicateMaster`] for two URLs naming the same server;
    /// [`Error::QuorumUnreachable`] when not a single node answers within the connect timeout.
    pub async fn build(self) -> Result<Cache> {
        self.validate()?;
        let redlock = match (self.nodes.as_deref(), &self.redlock) {
            (Some(_), Some(_)) => {
                return Err(Error::InvalidConfig(ConfigReason::NodesAndRedlock));
            }
            (None, None) => return Err(Error::NoMasters),
            (Some([]), None) => return Err(Error::NoMasters),
            (Some(urls), None) => self.connect_nodes(urls).await?,
            (None, Some(redlock)) => redlock.clone(),
        };
        redlock
            .config()
            .check_ttl(self.fill_lock_ttl)
            .map_err(|e| {
                Error::InvalidConfig(ConfigReason::FillLockTtl {
                    ttl: self.fill_lock_ttl,
                    reason: e.to_string(),
                })
            })?;
        let nodes = redlock.master_set().to_vec();
        #[cfg(feature = "sim")]
        let probe = self.network.is_none();
        #[cfg(not(feature = "sim"))]
        let probe = true;
        if probe {
            probe_permissions(&nodes, &self.key_prefix, self.connect_timeout).await?;
        }
        if self.redlock.is_some() {
            warn_if_evicting(&nodes).await;
        }
        let ring = HashRing::from_nodes(nodes.iter().map(|m| ring_node(&m.endpoint())));
        Ok(Cache {
            inner: Arc::new(Inner {
                redlock,
                nodes,
                ring,
                node_timeout: self.node_timeout,
                key_prefix: self.key_prefix,
                hash_with_prefix: self.hash_with_prefix,
                fill_lock_ttl: self.fill_lock_ttl,
                fill_wait: self.fill_wait,
                counters: Default::default(),
                flights: Default::default(),
            }),
        })
    }

    fn validate(&self) -> Result<()> {
        let bad = |setting| Err(Error::InvalidConfig(ConfigReason::NotPositive { setting }));
        if self.node_timeout.is_zero() {
            return bad("node timeout");
        }
        if self.connect_timeout.is_zero() {
            return bad("connect timeout");
        }
        if self.fill_wait.is_zero() {
            return bad("fill wait");
        }
        Ok(())
    }

    /// Connects the cache's own nodes and a lock client over them (sharing the connections).
    async fn connect_nodes(&self, urls: &[String]) -> Result<Redlock> {
        // The fill lock needs no fencing tokens: it only avoids duplicate computations.
        let config = Redlock::builder()
            .master_timeout(self.node_timeout)
            .connect_timeout(self.connect_timeout)
            .fencing(false)
            .config;
        let (masters, replies) = connect_all(
            urls,
            &Settings {
                timeout: self.node_timeout,
                connect_timeout: self.connect_timeout,
                quarantine: None,
                fence: None,
                access: self.access.clone(),
                // The fill lock's scripts, probed at every connect as the lock client's are
                // (the cache's own commands are probed once, at build: `probe_permissions`).
                probe_key: Some(config.lock_key(crate::settings::PROBE_RESOURCE)),
                batching: crate::defaults::DEFAULT_BATCHING,
                #[cfg(feature = "sim")]
                network: self.network.clone(),
            },
        )
        .await?;
        // A node that denies the credentials or a permission the cache needs would turn every
        // one of its keys into a miss and every write into a drop: fail now, as the lock
        // client does.
        if let Some(refused) = crate::master::refused_at_build(&masters, &replies) {
            return Err(refused);
        }
        if replies.granted() == 0 {
            return Err(Error::QuorumUnreachable {
                reachable: 0,
                masters: masters.len(),
                quorum: 1,
                replies,
            });
        }
        for (master, reply) in masters.iter().zip(replies.as_slice()) {
            if *reply != MasterReply::Granted {
                tracing::warn!(node = master.index, addr = %master.addr, why = %reply,
                    "cache node unreachable at start; its keys are misses until it reconnects");
            }
        }
        Ok(Redlock::from_masters(masters, config, None))
    }
}

/// Runs the cache's commands once on every node that is connected, on a random key under the
/// cache's prefix that no entry uses, so that nothing changes: `GET`, `MGET`, `SET .. XX` and
/// `DEL` of its version key inside `MULTI`/`EXEC`, and the versioned script's read by
/// `EVALSHA` and `EVAL`. A node whose user lacks one of them, or access to the cache's keys,
/// answers `NOPERM`: the build fails with [`Error::Denied`] naming the node and the
/// permission, instead of that node's writes being dropped and its keys missing forever. A
/// node that is down or slow is not checked (it is a miss until it answers, as at any time).
async fn probe_permissions(
    nodes: &[Arc<Master>],
    key_prefix: &str,
    timeout: Duration,
) -> Result<()> {
    let key = format!(
        "{key_prefix}{}:{}",
        crate::settings::PROBE_RESOURCE,
        crate::random::token()
    );
    let version = super::version_key(&key);
    let script = &*crate::scripts::CACHE_VERSIONED;
    let mut pipe = redis::pipe();
    pipe.cmd("GET").arg(&key);
    pipe.cmd("MGET").arg(&key);
    pipe.cmd("MULTI");
    pipe.cmd("SET").arg(&key).arg("").arg("PX").arg(1).arg("XX");
    pipe.cmd("DEL").arg(&version);
    pipe.cmd("EXEC");
    for (verb, body) in [("EVALSHA", script.sha1.as_str()), ("EVAL", script.source)] {
        pipe.cmd(verb)
            .arg(body)
            .arg(3)
            .arg(&key)
            .arg(&version)
            .arg(super::VERSION_COUNTER_KEY)
            .arg("get");
    }
    let replies = join_all(nodes.iter().map(|node| node.pipeline(&pipe, timeout))).await;
    for (node, reply) in nodes.iter().zip(replies) {
        let Ok(values) = reply else {
            // Down or slow: not checked. Denied at connect already failed `connect_nodes`.
            continue;
        };
        let denied = values.into_iter().find_map(|value| match value {
            Value::ServerError(e) => crate::endpoint::refusal(&redis::RedisError::from(e)),
            _ => None,
        });
        if let Some(MasterReply::Denied(reason)) = denied {
            return Err(Error::Denied {
                index: node.index,
                url: node.addr.clone(),
                reason,
            });
        }
    }
    Ok(())
}

/// Logs one warning when a master shared with a lock client may evict keys (its
/// `maxmemory-policy` is not `noeviction`) or could not be asked: cache pressure could then
/// evict a lock key or the fencing counter, and a lock be granted twice with nothing to detect
/// it.
async fn warn_if_evicting(masters: &[Arc<Master>]) {
    let mut ask = redis::cmd("CONFIG");
    ask.arg("GET").arg("maxmemory-policy");
    let replies = join_all(masters.iter().map(|m| m.query(&ask))).await;
    let (mut evicting, mut unchecked) = (Vec::new(), Vec::new());
    for (master, reply) in masters.iter().zip(replies) {
        match reply.ok().and_then(eviction_policy) {
            Some(policy) if policy == "noeviction" => {}
            Some(policy) => evicting.push(format!("{} ({policy})", master.addr)),
            None => unchecked.push(master.addr.clone()),
        }
    }
    if evicting.is_empty() && unchecked.is_empty() {
        return;
    }
    tracing::warn!(
        ?evicting,
        ?unchecked,
        "cache shares the lock masters, which may evict keys: under a volatile-* or allkeys-* \
         maxmemory-policy cache pressure can evict a lock key or the fencing counter and grant \
         a lock twice; use maxmemory-policy noeviction or separate cache nodes"
    );
}

/// The value of a `CONFIG GET maxmemory-policy` reply (a RESP2 array or a RESP3 map).
fn eviction_policy(reply: Value) -> Option<String> {
    let value = match reply {
        Value::Array(mut items) if items.len() == 2 => items.pop()?,
        Value::Map(mut pairs) if pairs.len() == 1 => pairs.pop()?.1,
        _ => return None,
    };
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

/// The ring node of a master from its `host:port` endpoint (as `redis` prints a TCP address).
/// A Unix socket path has no port: port 0, as libmemcached gives socket servers.
pub(super) fn ring_node(endpoint: &str) -> RingNode {
    match endpoint.rsplit_once(':') {
        Some((host, port)) => match port.parse::<u16>() {
            Ok(port) => RingNode::new(host, port),
            Err(_) => RingNode::new(endpoint, 0),
        },
        None => RingNode::new(endpoint, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_names_come_from_host_and_port() {
        assert_eq!(ring_node("10.0.0.1:6379").name(), "10.0.0.1:6379");
        assert_eq!(ring_node("cache-1:11211").name(), "cache-1");
        assert_eq!(ring_node("/tmp/redis.sock").name(), "/tmp/redis.sock:0");
        let client = redis::Client::open("redis://u:pw@cache-2:7000/3").unwrap();
        let endpoint = client.get_connection_info().addr().to_string();
        assert_eq!(ring_node(&endpoint), RingNode::new("cache-2", 7000));
        let client = redis::Client::open("redis://cache-3").unwrap();
        let endpoint = client.get_connection_info().addr().to_string();
        assert_eq!(ring_node(&endpoint), RingNode::new("cache-3", 6379));
    }

    #[tokio::test]
    async fn build_rejects_bad_input_before_connecting() {
        let err = CacheBuilder::default().build().await.unwrap_err();
        assert!(matches!(err, Error::NoMasters), "{err}");
        let empty: [&str; 0] = [];
        let err = CacheBuilder::default()
            .nodes(empty)
            .build()
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NoMasters), "{err}");
        let one = CacheBuilder::default().nodes(["redis://127.0.0.1:1"]);
        for b in [
            one.clone().node_timeout(Duration::ZERO),
            one.clone().connect_timeout(Duration::ZERO),
            one.clone().fill_wait(Duration::ZERO),
        ] {
            let err = b.build().await.unwrap_err();
            assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
            assert!(err.is_invalid_input());
        }
        let err = CacheBuilder::default()
            .nodes(["not a url"])
            .build()
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidUrl { index: 0, .. }), "{err}");
        let err = CacheBuilder::default()
            .nodes(["redis://127.0.0.1:1", "redis://127.0.0.1:1/2"])
            .build()
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::DuplicateMaster {
                    first: 0,
                    second: 1,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn eviction_policy_from_resp2_and_resp3() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let resp2 = Value::Array(vec![bulk("maxmemory-policy"), bulk("allkeys-lru")]);
        assert_eq!(eviction_policy(resp2).as_deref(), Some("allkeys-lru"));
        let resp3 = Value::Map(vec![(bulk("maxmemory-policy"), bulk("noeviction"))]);
        assert_eq!(eviction_policy(resp3).as_deref(), Some("noeviction"));
        assert_eq!(eviction_policy(Value::Array(vec![])), None);
    }

    #[test]
    fn debug_redacts_passwords() {
        let b = CacheBuilder::default().nodes(["redis://u:secret@h:1"]);
        let s = format!("{b:?}");
        assert!(!s.contains("secret"), "{s}");
        assert!(s.contains("u:***@h:1"), "{s}");
    }
}
