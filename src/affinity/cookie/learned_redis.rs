//! [`RedisLearnedTable`]: the learned table shared through Redis, so balancer replicas and
//! restarts keep what was learned.
//!
//! Nothing on the request path waits for Redis: writes, deletes and read-through fetches go over
//! a bounded channel to one background task, which talks to Redis through a
//! [`ConnectionManager`] (reconnects by itself). When Redis is slow or down the channel fills and
//! operations are dropped with a rate-limited `tracing::warn!`; routing goes on with the local
//! table. Entries are stored as `{prefix}{hash of the cookie value} -> backend id` with the
//! table's TTL, never the cookie value itself.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{mpsc, oneshot};

use super::learned_table::LearnedTable;
use crate::BackendId;

/// Operations waiting for the background task; more are dropped (and counted in the warning).
const QUEUE: usize = 4096;
/// Keys read per `SCAN` / `MGET` round when preloading.
const BATCH: usize = 256;
/// A key fetched (found or not) is not fetched again for this long.
const REFETCH_AFTER: Duration = Duration::from_secs(1);
/// At most one warning per this interval; the others are counted.
const WARN_EVERY: Duration = Duration::from_secs(5);

/// Errors of [`RedisLearnedTable::connect`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisShareError {
    /// The URL was not a Redis URL, or the first connection failed.
    #[error("cannot connect to redis for the learned table: {0}")]
    Connect(#[from] redis::RedisError),
    /// `connect` was called outside a Tokio runtime.
    #[error("the redis learned table needs a tokio runtime")]
    NoRuntime,
}

enum Op {
    Write {
        key: u128,
        backend: BackendId,
        ttl: Duration,
    },
    Delete {
        key: u128,
    },
    Fetch {
        key: u128,
        table: Arc<LearnedTable>,
    },
    Preload {
        table: Arc<LearnedTable>,
        limit: usize,
    },
    Flush(oneshot::Sender<()>),
}

/// A handle to the Redis-shared learned table. Clone it freely; pass it to
/// [`CookieAffinityBuilder::redis`](super::CookieAffinityBuilder::redis).
///
/// ```no_run
/// use tower_sticky::StickyLayer;
/// use tower_sticky::affinity::cookie::{CookieAffinity, RedisLearnedTable};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let shared = RedisLearnedTable::connect("redis://127.0.0.1:6379", "myapp:sticky:").await?;
/// let layer = StickyLayer::builder()
///     .cookie(CookieAffinity::learn("session_id").redis(shared).build()?)
///     .build();
/// # let _ = layer;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisLearnedTable {
    tx: mpsc::Sender<Op>,
    dropped: Arc<AtomicU64>,
    prefix: Arc<str>,
}

impl fmt::Debug for RedisLearnedTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLearnedTable")
            .field("prefix", &self.prefix)
            .field("dropped", &self.dropped.load(Ordering::Relaxed))
            .finish()
    }
}

impl RedisLearnedTable {
    /// Connects (the URL may carry a password: it is never logged) and starts the background
    /// task on the current Tokio runtime. Keys are `{prefix}{32 hex digits}`.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, RedisShareError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let connection = ConnectionManager::new_with_config(client, config).await?;
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| RedisShareError::NoRuntime)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let prefix: Arc<str> = prefix.into();
        let worker = Worker {
            connection,
            prefix: Arc::clone(&prefix),
            dropped: Arc::clone(&dropped),
            fetched: HashMap::new(),
            last_warning: None,
            failures_since_warning: 0,
        };
        runtime.spawn(worker.run(rx));
        Ok(Self {
            tx,
            dropped,
            prefix,
        })
    }

    /// Waits until every operation queued before this call has been tried (written, fetched, or
    /// failed and logged). For tests and graceful shutdown; routing never needs it.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Op::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Operations dropped because the queue was full (Redis slow or down).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub(crate) fn write(&self, key: u128, backend: BackendId, ttl: Duration) {
        self.enqueue(Op::Write { key, backend, ttl });
    }

    pub(crate) fn delete(&self, key: u128) {
        self.enqueue(Op::Delete { key });
    }

    pub(crate) fn fetch(&self, key: u128, table: Arc<LearnedTable>) {
        self.enqueue(Op::Fetch { key, table });
    }

    pub(crate) fn preload(&self, table: Arc<LearnedTable>) {
        let limit = table.capacity();
        self.enqueue(Op::Preload { table, limit });
    }

    fn enqueue(&self, op: Op) {
        if self.tx.try_send(op).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

struct Worker {
    connection: ConnectionManager,
    prefix: Arc<str>,
    dropped: Arc<AtomicU64>,
    /// When each key was last fetched, so a burst of requests for one unknown key costs one GET.
    fetched: HashMap<u128, Instant>,
    last_warning: Option<Instant>,
    failures_since_warning: u64,
}

impl Worker {
    async fn run(mut self, mut rx: mpsc::Receiver<Op>) {
        while let Some(op) = rx.recv().await {
            let result = match op {
                Op::Write { key, backend, ttl } => {
                    let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
                    redis::cmd("SET")
                        .arg(self.redis_key(key))
                        .arg(backend.as_str())
                        .arg("PX")
                        .arg(ms)
                        .query_async::<()>(&mut self.connection)
                        .await
                }
                Op::Delete { key } => {
                    redis::cmd("DEL")
                        .arg(self.redis_key(key))
                        .query_async::<()>(&mut self.connection)
                        .await
                }
                Op::Fetch { key, table } => self.fetch(key, &table).await,
                Op::Preload { table, limit } => self.preload(&table, limit).await,
                Op::Flush(done) => {
                    let _ = done.send(());
                    Ok(())
                }
            };
            if let Err(error) = result {
                self.warn(&error);
            }
        }
    }

    fn redis_key(&self, key: u128) -> String {
        format!("{}{key:032x}", self.prefix)
    }

    async fn fetch(&mut self, key: u128, table: &LearnedTable) -> redis::RedisResult<()> {
        let now = Instant::now();
        if self
            .fetched
            .get(&key)
            .is_some_and(|at| now.duration_since(*at) < REFETCH_AFTER)
        {
            return Ok(());
        }
        if self.fetched.len() >= QUEUE {
            self.fetched
                .retain(|_, at| now.duration_since(*at) < REFETCH_AFTER);
        }
        self.fetched.insert(key, now);
        let found: Option<String> = redis::cmd("GET")
            .arg(self.redis_key(key))
            .query_async(&mut self.connection)
            .await?;
        if let Some(backend) = found {
            table.insert(key, BackendId::from(backend), Instant::now());
        }
        Ok(())
    }

    /// Loads up to `limit` entries (a restarted balancer starts with what was learned).
    async fn preload(&mut self, table: &LearnedTable, limit: usize) -> redis::RedisResult<()> {
        let pattern = format!("{}*", self.prefix);
        let mut cursor: u64 = 0;
        let mut loaded = 0usize;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(BATCH)
                .query_async(&mut self.connection)
                .await?;
            let keys: Vec<String> = keys.into_iter().take(limit - loaded).collect();
            if !keys.is_empty() {
                let values: Vec<Option<String>> = redis::cmd("MGET")
                    .arg(&keys)
                    .query_async(&mut self.connection)
                    .await?;
                let now = Instant::now();
                for (key, value) in keys.iter().zip(values) {
                    let parsed = key
                        .strip_prefix(&*self.prefix)
                        .and_then(|hex| u128::from_str_radix(hex, 16).ok());
                    if let (Some(hash), Some(backend)) = (parsed, value) {
                        table.insert(hash, BackendId::from(backend), now);
                        loaded += 1;
                    }
                }
            }
            cursor = next;
            if cursor == 0 || loaded >= limit {
                return Ok(());
            }
        }
    }

    /// One warning per [`WARN_EVERY`], with the number of failures and drops since the last.
    fn warn(&mut self, error: &redis::RedisError) {
        self.failures_since_warning += 1;
        let now = Instant::now();
        if self
            .last_warning
            .is_some_and(|at| now.duration_since(at) < WARN_EVERY)
        {
            return;
        }
        tracing::warn!(
            %error,
            failures = self.failures_since_warning,
            dropped = self.dropped.load(Ordering::Relaxed),
            "redis learned table unavailable; routing with the local table"
        );
        self.last_warning = Some(now);
        self.failures_since_warning = 0;
    }
}
