//! Membership from a `tower::discover::Discover` stream (`Change::Insert` / `Change::Remove`).

use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures_util::{Stream, TryStream, TryStreamExt};
use tower::discover::Change;

use super::{Backends, Shared};
use crate::{BackendId, BoxError};

type BoxDiscover<S> = Pin<Box<dyn Stream<Item = Result<Change<BackendId, S>, BoxError>> + Send>>;

/// Where a `Backends` keeps its discovery stream until a `Sticky` polls it.
pub(crate) struct Slot<S> {
    stream: Mutex<Option<BoxDiscover<S>>>,
    /// Lets `poll_ready` skip the mutex entirely when there is no stream (the common case).
    active: AtomicBool,
}

impl<S> Default for Slot<S> {
    fn default() -> Self {
        Self {
            stream: Mutex::new(None),
            active: AtomicBool::new(false),
        }
    }
}

impl<S: Clone + Send + 'static> Backends<S> {
    /// A set whose membership comes from a [`tower::discover::Discover`] stream, as
    /// `tower::balance` takes it: `Change::Insert(id, service)` adds or replaces a backend (weight
    /// 1), `Change::Remove(id)` removes it.
    ///
    /// The stream is polled from [`Sticky::poll_ready`](crate::Sticky), so changes take effect
    /// before the next request is routed. A stream error is logged and ends discovery; the set
    /// keeps its last membership.
    ///
    /// ```
    /// use tower::discover::Change;
    /// use tower_sticky::Backends;
    /// # type Svc = tower::util::BoxCloneSyncService<http::Request<String>, http::Response<String>, std::convert::Infallible>;
    /// let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<Change<String, Svc>, std::convert::Infallible>>();
    /// let backends = Backends::from_discover(tokio_stream_like(rx));
    /// # fn tokio_stream_like<T>(mut rx: tokio::sync::mpsc::UnboundedReceiver<T>) -> impl futures_util::Stream<Item = T> {
    /// #     futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
    /// # }
    /// # let _ = (tx, backends);
    /// ```
    pub fn from_discover<D, K>(discover: D) -> Self
    where
        D: TryStream<Ok = Change<K, S>> + Send + 'static,
        D::Error: Into<BoxError>,
        K: Into<BackendId>,
    {
        Self::new().with_discover(discover)
    }

    /// Adds a discovery stream to this set (replacing an earlier one); see
    /// [`from_discover`](Self::from_discover).
    pub fn with_discover<D, K>(self, discover: D) -> Self
    where
        D: TryStream<Ok = Change<K, S>> + Send + 'static,
        D::Error: Into<BoxError>,
        K: Into<BackendId>,
    {
        let stream = discover
            .map_ok(|change| match change {
                Change::Insert(k, s) => Change::Insert(k.into(), s),
                Change::Remove(k) => Change::Remove(k.into()),
            })
            .map_err(Into::into)
            .into_stream();
        let slot = &self.shared.discover;
        *crate::sync::lock(&slot.stream) = Some(Box::pin(stream));
        slot.active.store(true, Ordering::Release);
        self
    }
}

impl<S: Clone> Shared<S> {
    /// Applies every change the discovery stream has ready, as one snapshot rebuild. Never
    /// blocks: if another clone is polling right now, this one skips.
    // Inlined: `Sticky::poll_ready` calls it for every request, and without a discovery stream
    // (most setups) it is one load; the polling itself stays out of line.
    #[inline]
    pub(crate) fn poll_discover(&self, cx: &mut Context<'_>) {
        if self.discover.active.load(Ordering::Acquire) {
            self.poll_discover_stream(cx);
        }
    }

    fn poll_discover_stream(&self, cx: &mut Context<'_>) {
        let slot = &self.discover;
        let Ok(mut guard) = slot.stream.try_lock() else {
            return;
        };
        let Some(stream) = guard.as_mut() else {
            return;
        };
        let mut changes = Vec::new();
        let finished = loop {
            match stream.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(change))) => changes.push(change),
                Poll::Ready(Some(Err(error))) => {
                    tracing::warn!(%error, "backend discovery failed; keeping the current backends");
                    break true;
                }
                Poll::Ready(None) => break true,
                Poll::Pending => break false,
            }
        };
        if finished {
            *guard = None;
            slot.active.store(false, Ordering::Release);
        }
        drop(guard);
        if changes.is_empty() {
            return;
        }
        let mut writer = crate::sync::lock(&self.writer);
        for change in changes {
            match change {
                Change::Insert(id, service) => {
                    let weight = writer.entries.get(&id).map_or(1, |e| e.weight);
                    // weight >= 1, so this is never refused.
                    let _ = writer.insert(id, service, weight);
                }
                Change::Remove(id) => {
                    writer.entries.remove(&id);
                }
            }
        }
        let snapshot = writer.snapshot();
        self.current.store(std::sync::Arc::new(snapshot));
    }
}
