//! `RedisStore`: sessions as Redis hashes, one field per key, TTL always set, one round trip per
//! operation, reconnecting by itself after an outage.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{ErrorKind, RedisError, Script, ScriptInvocation, ServerErrorKind};

use super::SessionId;
use super::redis_scripts::{CREATE, DATA_PREFIX, LOAD, SAVE, TOUCH};
use super::store::{
    Changes, Expiry, Fields, LoadIfChanged, SessionRecord, SessionStore, StoreError, StoreFuture,
};

/// Sessions in Redis (single node or Cluster), shared by every backend that connects to it.
///
/// - Each session is a hash `<prefix><id>` with one field per session key, so concurrent requests
///   that change different keys both persist (only changed fields are written: `HSET` / `HDEL`).
///   Writes to the same key: last writer wins.
/// - Each operation is one Lua script: one round trip, atomic on the server. A request costs at
///   most one round trip to read and one to write.
/// - The key's TTL is always set: min(now + idle, creation + absolute), computed with the Redis
///   server's clock, so idle and absolute expiry are enforced by Redis itself.
/// - Outage: operations fail fast with [`StoreError::Unavailable`] (the session layer turns that
///   into a `503`), and the connection manager reconnects in the background: no restart needed.
///
/// ```no_run
/// use tower_sticky::session::RedisStore;
///
/// # async fn run() -> Result<(), tower_sticky::session::StoreError> {
/// let store = RedisStore::connect("redis://127.0.0.1:6379").await?.with_prefix("myapp:session:");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
    prefix: Arc<str>,
    scripts: Arc<Scripts>,
    round_trips: Arc<AtomicU64>,
}

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

struct Scripts {
    load: Script,
    create: Script,
    save: Script,
    touch: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field(
                "mode",
                &match self.conn {
                    Conn::Single(_) => "single",
                    Conn::Cluster(_) => "cluster",
                },
            )
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Connection settings used by [`RedisStore::connect`]: fail fast while Redis is down (a quick
/// `503` instead of a hung request), keep reconnecting in the background.
fn default_manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(200))
}

impl RedisStore {
    /// Connects to one Redis node (`redis://host:port/db`), with a connection manager that
    /// reconnects after outages. Fails if Redis cannot be reached now.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(map_err)?;
        let manager = ConnectionManager::new_with_config(client, default_manager_config())
            .await
            .map_err(map_err)?;
        Ok(Self::from_connection_manager(manager))
    }

    /// Uses a connection manager you configured yourself.
    pub fn from_connection_manager(manager: ConnectionManager) -> Self {
        Self::with_conn(Conn::Single(manager))
    }

    /// Connects to a Redis Cluster through any of its `nodes`. Each operation touches one key, so
    /// it is routed to the node that owns the session's slot.
    pub async fn connect_cluster<I, S>(nodes: I) -> Result<Self, StoreError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let nodes: Vec<String> = nodes.into_iter().map(|n| n.as_ref().to_owned()).collect();
        let client = redis::cluster::ClusterClientBuilder::new(nodes)
            .connection_timeout(Duration::from_secs(1))
            .response_timeout(Duration::from_secs(2))
            .retries(1)
            .build()
            .map_err(map_err)?;
        let conn = client.get_async_connection().await.map_err(map_err)?;
        Ok(Self::with_conn(Conn::Cluster(conn)))
    }

    fn with_conn(conn: Conn) -> Self {
        Self {
            conn,
            prefix: Arc::from("session:"),
            scripts: Arc::new(Scripts {
                load: Script::new(LOAD),
                create: Script::new(CREATE),
                save: Script::new(SAVE),
                touch: Script::new(TOUCH),
            }),
            round_trips: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Key prefix for session hashes (default `session:`).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Arc::from(prefix.into());
        self
    }

    /// Operations sent to Redis so far by this store and its clones (each is one round trip;
    /// the rare reload of a script after a Redis restart is not counted).
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    fn key(&self, id: &SessionId) -> String {
        format!("{}{}", self.prefix, id.as_str())
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let result = match self.conn.clone() {
            Conn::Single(mut c) => invocation.invoke_async(&mut c).await,
            Conn::Cluster(mut c) => invocation.invoke_async(&mut c).await,
        };
        result.map_err(map_err)
    }

    async fn load_if_changed_inner(
        &self,
        id: &SessionId,
        known: u64,
    ) -> Result<LoadIfChanged, StoreError> {
        let known = known.to_string();
        let mut inv = self.scripts.load.prepare_invoke();
        inv.key(self.key(id)).arg(known);
        let reply: Option<Vec<String>> = self.run(&inv).await?;
        let Some(items) = reply else {
            return Ok(LoadIfChanged::Missing);
        };
        if items.len() == 1 {
            return Ok(LoadIfChanged::Unchanged);
        }
        parse_hash(items).map(LoadIfChanged::Changed)
    }
}

/// Turns HGETALL's flat `field, value, ...` list into a record.
fn parse_hash(items: Vec<String>) -> Result<SessionRecord, StoreError> {
    let mut record = SessionRecord::default();
    let mut iter = items.into_iter();
    while let (Some(field), Some(value)) = (iter.next(), iter.next()) {
        if let Some(key) = field.strip_prefix(DATA_PREFIX) {
            record.fields.insert(key.to_owned(), value);
        } else if field == "m:v" {
            record.version = value
                .parse()
                .map_err(|_| StoreError::Backend(format!("bad session version {value:?}")))?;
        }
    }
    Ok(record)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn map_err(e: RedisError) -> StoreError {
    match e.kind() {
        ErrorKind::Parse
        | ErrorKind::UnexpectedReturnType
        | ErrorKind::Extension
        | ErrorKind::InvalidClientConfig
        | ErrorKind::Server(
            ServerErrorKind::ResponseError
            | ServerErrorKind::ExecAbort
            | ServerErrorKind::CrossSlot
            | ServerErrorKind::NoPerm,
        ) => StoreError::Backend(e.to_string()),
        _ => StoreError::Unavailable(Box::new(e)),
    }
}

impl SessionStore for RedisStore {
    fn load<'a>(&'a self, id: &'a SessionId) -> StoreFuture<'a, Option<SessionRecord>> {
        // A plain HGETALL (no script): the cheapest read for Redis. An expired key reads as empty.
        Box::pin(async move {
            self.round_trips.fetch_add(1, Ordering::Relaxed);
            let cmd = redis::cmd("HGETALL").arg(self.key(id)).clone();
            let result: Result<Vec<String>, RedisError> = match self.conn.clone() {
                Conn::Single(mut c) => cmd.query_async(&mut c).await,
                Conn::Cluster(mut c) => cmd.query_async(&mut c).await,
            };
            let items = result.map_err(map_err)?;
            if items.is_empty() {
                return Ok(None);
            }
            parse_hash(items).map(Some)
        })
    }

    fn load_if_changed<'a>(
        &'a self,
        id: &'a SessionId,
        known: u64,
    ) -> StoreFuture<'a, LoadIfChanged> {
        Box::pin(self.load_if_changed_inner(id, known))
    }

    fn create<'a>(
        &'a self,
        id: &'a SessionId,
        fields: &'a Fields,
        expiry: &'a Expiry,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let mut inv = self.scripts.create.prepare_invoke();
            inv.key(self.key(id))
                .arg(millis(expiry.idle))
                .arg(expiry.absolute.map_or(0, millis));
            for (k, v) in fields {
                inv.arg(format!("{DATA_PREFIX}{k}")).arg(v);
            }
            let created: i64 = self.run(&inv).await?;
            Ok(created == 1)
        })
    }

    fn save<'a>(
        &'a self,
        id: &'a SessionId,
        changes: &'a Changes,
        expiry: &'a Expiry,
    ) -> StoreFuture<'a, Option<u64>> {
        Box::pin(async move {
            let mut inv = self.scripts.save.prepare_invoke();
            inv.key(self.key(id))
                .arg(millis(expiry.idle))
                .arg(if changes.clear { "1" } else { "0" })
                .arg(changes.set.len());
            for (k, v) in &changes.set {
                inv.arg(format!("{DATA_PREFIX}{k}")).arg(v);
            }
            for k in &changes.remove {
                inv.arg(format!("{DATA_PREFIX}{k}"));
            }
            self.run(&inv).await
        })
    }

    fn touch<'a>(&'a self, id: &'a SessionId, expiry: &'a Expiry) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let mut inv = self.scripts.touch.prepare_invoke();
            inv.key(self.key(id)).arg(millis(expiry.idle));
            let touched: i64 = self.run(&inv).await?;
            Ok(touched == 1)
        })
    }

    fn delete<'a>(&'a self, id: &'a SessionId) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.round_trips.fetch_add(1, Ordering::Relaxed);
            let cmd = redis::cmd("DEL").arg(self.key(id)).clone();
            let result: Result<i64, RedisError> = match self.conn.clone() {
                Conn::Single(mut c) => cmd.query_async(&mut c).await,
                Conn::Cluster(mut c) => cmd.query_async(&mut c).await,
            };
            result.map(|_| ()).map_err(map_err)
        })
    }
}
