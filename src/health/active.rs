//! [`ActiveHealth`]: periodic probes of every backend, in a background task.

use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{BoxFuture, join_all};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode};
use http_body_util::Empty;
use tower::ServiceExt;
use tower_service::Service;

use crate::BackendId;
use crate::backends::Shared;

type SendProbe<S> =
    dyn Fn(S, Request<Empty<Bytes>>) -> BoxFuture<'static, Option<StatusCode>> + Send + Sync;
type CheckFn = dyn Fn(BackendId) -> BoxFuture<'static, bool> + Send + Sync;

enum Probe<S> {
    Http {
        path: PathAndQuery,
        expect: StatusCode,
        send: Arc<SendProbe<S>>,
    },
    Check(Arc<CheckFn>),
}

impl<S> Clone for Probe<S> {
    fn clone(&self) -> Self {
        match self {
            Probe::Http { path, expect, send } => Probe::Http {
                path: path.clone(),
                expect: *expect,
                send: Arc::clone(send),
            },
            Probe::Check(f) => Probe::Check(Arc::clone(f)),
        }
    }
}

/// Active health checking: every `interval`, each backend is probed; `fall` consecutive failed
/// probes mark it down, `rise` consecutive good ones mark it up again (and end any passive
/// back-off at once, so a restarted backend is readmitted without waiting).
///
/// A probe is either an HTTP `GET` of a path sent *through the backend's own service* (so it
/// works for an [`HttpBackend`](crate::http_backend::HttpBackend) and for an in-process router
/// alike) expecting a status, or a user closure. Probes run concurrently, each bounded by
/// `timeout` (a probe that times out failed).
///
/// The probes run in a background task started by [`Backends::with_active_health`]. The task
/// holds only a weak reference to the set: it ends at its next tick after the last
/// [`Backends`](crate::Backends) / [`Sticky`](crate::Sticky) / handle clone is dropped.
///
/// ```
/// use std::time::Duration;
/// use tower_sticky::{Backends, health::ActiveHealth};
/// # type Svc = axum::Router;
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let backends: Backends<Svc> = Backends::new()
///     .with("a", axum::Router::new())
///     .with_active_health(
///         ActiveHealth::http_get("/healthz")?
///             .expect_status(http::StatusCode::NO_CONTENT)
///             .interval(Duration::from_secs(2))
///             .timeout(Duration::from_millis(500))
///             .rise(2)
///             .fall(3),
///     )?;
/// // Or any check you like, e.g. a TCP connect or a look at a service registry.
/// let checked: Backends<Svc> = Backends::new()
///     .with_active_health(ActiveHealth::check(|id| async move { id.as_str() != "retired" }))?;
/// # let _ = (backends, checked); Ok(()) }
/// ```
///
/// [`Backends::with_active_health`]: crate::Backends::with_active_health
pub struct ActiveHealth<S> {
    probe: Probe<S>,
    interval: Duration,
    timeout: Duration,
    rise: u32,
    fall: u32,
}

impl<S> std::fmt::Debug for ActiveHealth<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("ActiveHealth");
        match &self.probe {
            Probe::Http { path, expect, .. } => d.field("get", path).field("expect", expect),
            Probe::Check(_) => d.field("check", &".."),
        };
        d.field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .field("rise", &self.rise)
            .field("fall", &self.fall)
            .finish()
    }
}

/// A probe path that is not a valid URI path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid health probe path {path:?}: expected e.g. /healthz")]
pub struct InvalidProbePath {
    /// The text given.
    pub path: String,
}

impl<S> ActiveHealth<S> {
    fn with_probe(probe: Probe<S>) -> Self {
        Self {
            probe,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            rise: 2,
            fall: 3,
        }
    }

    /// Probes with `GET path` through each backend's service, expecting `200 OK` (see
    /// [`expect_status`](Self::expect_status)).
    pub fn http_get<RB>(path: &str) -> Result<Self, InvalidProbePath>
    where
        S: Service<Request<Empty<Bytes>>, Response = Response<RB>> + Send + 'static,
        S::Future: Send + 'static,
        RB: Send + 'static,
    {
        let path = PathAndQuery::try_from(path)
            .ok()
            .filter(|p| p.as_str().starts_with('/'))
            .ok_or_else(|| InvalidProbePath { path: path.into() })?;
        let send: Arc<SendProbe<S>> = Arc::new(|svc: S, req| {
            Box::pin(async move { svc.oneshot(req).await.ok().map(|res| res.status()) })
        });
        Ok(Self::with_probe(Probe::Http {
            path,
            expect: StatusCode::OK,
            send,
        }))
    }

    /// Probes with a closure: `true` means healthy. It gets the backend's id.
    pub fn check<F, Fut>(check: F) -> Self
    where
        F: Fn(BackendId) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        Self::with_probe(Probe::Check(Arc::new(move |id| Box::pin(check(id)))))
    }

    /// The status an HTTP probe must get (default `200 OK`).
    pub fn expect_status(mut self, status: StatusCode) -> Self {
        if let Probe::Http { expect, .. } = &mut self.probe {
            *expect = status;
        }
        self
    }

    /// Time between probe rounds (default 5 s; at least 1 ms).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(1));
        self
    }

    /// How long one probe may take before it counts as failed (default 2 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Consecutive good probes that mark a down backend up (default 2, at least 1).
    pub fn rise(mut self, n: u32) -> Self {
        self.rise = n.max(1);
        self
    }

    /// Consecutive failed probes that mark a backend down (default 3, at least 1).
    pub fn fall(mut self, n: u32) -> Self {
        self.fall = n.max(1);
        self
    }

    fn run_one(&self, id: BackendId, service: S) -> BoxFuture<'static, bool> {
        match &self.probe {
            Probe::Http { path, expect, send } => {
                let mut req = Request::new(Empty::new());
                *req.uri_mut() = http::Uri::from(path.clone());
                let expect = *expect;
                let sent = send(service, req);
                Box::pin(async move { sent.await == Some(expect) })
            }
            Probe::Check(check) => check(id),
        }
    }
}

/// Active health could not be started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HealthError {
    /// The probe task needs a Tokio runtime; this was called outside one.
    #[error("active health checks need a Tokio runtime: call this from inside one")]
    NoRuntime,
}

/// Runs probe rounds until the set is gone.
pub(crate) fn spawn<S>(shared: Weak<Shared<S>>, health: ActiveHealth<S>) -> Result<(), HealthError>
where
    S: Clone + Send + Sync + 'static,
{
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| HealthError::NoRuntime)?;
    runtime.spawn(async move {
        let mut ticker = tokio::time::interval(health.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            // Hold the set only long enough to copy the snapshot out: the probes must not keep
            // it alive.
            let Some(snapshot) = shared.upgrade().map(|s| s.load_full()) else {
                tracing::debug!("backend set dropped; active health checks stop");
                return;
            };
            let rounds =
                snapshot
                    .set
                    .members()
                    .iter()
                    .zip(&snapshot.services)
                    .map(|(member, service)| {
                        let probe = health.run_one(member.id().clone(), service.clone());
                        let timeout = health.timeout;
                        async move { tokio::time::timeout(timeout, probe).await.unwrap_or(false) }
                    });
            let results = join_all(rounds).await;
            for (member, ok) in snapshot.set.members().iter().zip(results) {
                match member.state().record_probe(ok, health.rise, health.fall) {
                    Some(true) => {
                        tracing::info!(backend = %member.id(), reason = "probe", "backend up");
                        crate::metrics::facade::health_changed(member);
                    }
                    Some(false) => {
                        tracing::warn!(backend = %member.id(), reason = "probe", "backend down");
                        crate::metrics::facade::health_changed(member);
                    }
                    None => {}
                }
            }
        }
    });
    Ok(())
}
