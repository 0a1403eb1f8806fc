//! The connections of one [`HttpBackend`](super::HttpBackend): a last-in first-out stack of idle
//! HTTP/1.1 connections, or one shared HTTP/2 connection.
//!
//! A backend has exactly one address, so the pool needs no host key, no hashing and no waiter
//! queue: checkout pops the most recently used connection (the warmest; the others age out),
//! and a connection comes back when the response body it carried has been read to the end. Only
//! idle connections are in the stack: one still busy with an exchange belongs to that exchange.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use super::body::ClientBody;
use super::h1::Conn;
use crate::sync::lock;

/// Where and how to connect.
#[derive(Debug)]
pub(crate) struct PoolConfig {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) connect_timeout: Option<Duration>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) max_idle: usize,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// The pool of one backend.
pub(crate) struct Pool {
    config: PoolConfig,
    /// Idle HTTP/1.1 connections, the most recently returned at the back.
    idle: Mutex<VecDeque<Idle>>,
    /// The HTTP/2 connection every request shares.
    shared: Mutex<Option<http2::SendRequest<ClientBody>>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("config", &self.config)
            .field("idle", &lock(&self.idle).len())
            .finish()
    }
}

/// Making a connection failed; nothing was sent.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
    #[error("connect failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("HTTP handshake failed: {0}")]
    Handshake(#[source] hyper::Error),
}

impl Pool {
    pub(crate) fn new(config: PoolConfig) -> Self {
        Self {
            config,
            idle: Mutex::new(VecDeque::new()),
            shared: Mutex::new(None),
        }
    }

    /// The shared HTTP/2 connection, or a new one if it is gone.
    pub(crate) async fn checkout_h2(&self) -> Result<http2::SendRequest<ClientBody>, ConnectError> {
        let shared = lock(&self.shared)
            .as_ref()
            .filter(|s| !s.is_closed())
            .cloned();
        match shared {
            Some(sender) => Ok(sender),
            None => self.connect_h2().await,
        }
    }

    /// An idle HTTP/1.1 connection that can take a request now, if there is one; those the
    /// backend closed meanwhile are dropped.
    pub(crate) fn idle_h1(&self) -> Option<Conn> {
        loop {
            let idle = self.pop_idle()?;
            if idle.conn.is_usable() {
                return Some(idle.conn);
            }
        }
    }

    /// A new HTTP/1.1 connection. Boxed: connecting is the rare path, and its state (resolver,
    /// connect timer) would otherwise make every request's future larger, and larger futures
    /// cost a copy on every move.
    pub(crate) fn connect_h1(
        &self,
    ) -> Pin<Box<dyn Future<Output = Result<Conn, ConnectError>> + Send + '_>> {
        Box::pin(async move { Ok(Conn::new(self.tcp().await?)) })
    }

    /// A new shared HTTP/2 connection, replacing the old one (boxed, as for HTTP/1.1).
    pub(crate) fn connect_h2(
        &self,
    ) -> Pin<
        Box<dyn Future<Output = Result<http2::SendRequest<ClientBody>, ConnectError>> + Send + '_>,
    > {
        Box::pin(async move {
            let io = TokioIo::new(self.tcp().await?);
            let (sender, connection) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(ConnectError::Handshake)?;
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "backend connection ended with an error");
                }
            });
            *lock(&self.shared) = Some(sender.clone());
            Ok(sender)
        })
    }

    /// The most recently returned idle connection that has not been idle too long.
    fn pop_idle(&self) -> Option<Idle> {
        let mut idle = lock(&self.idle);
        let newest = idle.pop_back()?;
        if let Some(limit) = self.config.idle_timeout {
            if newest.since.elapsed() > limit {
                // The newest is too old, so all are: the server may be closing them right now.
                idle.clear();
                return None;
            }
        }
        Some(newest)
    }

    async fn tcp(&self) -> Result<TcpStream, ConnectError> {
        let connect = TcpStream::connect((self.config.host.as_str(), self.config.port));
        let stream = match self.config.connect_timeout {
            Some(limit) => tokio::time::timeout(limit, connect)
                .await
                .map_err(|_| ConnectError::Timeout(limit))??,
            None => connect.await?,
        };
        // Requests and responses are written whole; waiting to coalesce them only adds latency.
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// Takes back a connection whose exchange is over, dropping the ones idle too long.
    pub(crate) fn put(&self, conn: Conn) {
        if self.config.max_idle == 0 {
            return;
        }
        let now = Instant::now();
        let mut idle = lock(&self.idle);
        if let Some(limit) = self.config.idle_timeout {
            // The oldest are at the front.
            while idle
                .front()
                .is_some_and(|oldest| now.duration_since(oldest.since) > limit)
            {
                idle.pop_front();
            }
        }
        if idle.len() >= self.config.max_idle {
            idle.pop_front();
        }
        idle.push_back(Idle { conn, since: now });
    }
}
