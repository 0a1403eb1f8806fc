//! [`ResponseFuture`]: drives the chosen backend, retries elsewhere what can be retried, and
//! finishes the response.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::call::Call;
use super::{
    Attempt, DETACHED, Delivery, InnerError, Policy, Routed, Routing, TextBody,
    unavailable_response,
};
use crate::BackendId;
use crate::affinity::{ResponseHook, Unavailable};
use crate::backends::InFlight;
use crate::metrics::facade::{self, Event};

pin_project! {
    /// The response future of [`Sticky`](super::Sticky).
    pub struct ResponseFuture<S, Req>
    where
        S: Service<Req>,
    {
        // A flat struct rather than an enum of "routed" and "unavailable": the inner future is
        // then built in fewer steps, and each step copies all of it (measured: one memcpy of the
        // whole future less per request). No backend is `Call::Unavailable`.
        #[pin]
        call: Call<S, Req>,
        // The attempt in progress; `None` once its outcome is recorded.
        attempt: Option<Started>,
        // What a retry or passive health needs; `None` when neither can happen (see
        // `InnerError::GIVES_REQUESTS_BACK`), which saves a reference count per request.
        routing: Option<Arc<Routing<S>>>,
        // Backends that already failed this request (empty, unallocated, on the first try).
        excluded: Vec<BackendId>,
    }
}

/// What is recorded about the attempt in progress.
struct Started {
    in_flight: InFlight,
    routed: Routed,
    hook: Option<ResponseHook>,
    /// Set on the requests whose latency is measured.
    started: Option<Instant>,
    /// Only when [`span_wanted`], and boxed: a `Span` is 40 bytes that the future would
    /// otherwise carry and copy on every request.
    span: Option<Box<tracing::Span>>,
}

impl Started {
    #[inline]
    fn new<S>(attempt: Attempt<S>) -> (S, Self) {
        let Attempt {
            service,
            in_flight,
            routed,
            hook,
        } = attempt;
        let started = in_flight.is_timed().then(Instant::now);
        let span = span_wanted().then(|| {
            Box::new(tracing::debug_span!(
                "sticky",
                backend = %routed.backend,
                reason = %routed.reason,
                strategy = routed.strategy,
            ))
        });
        (
            service,
            Self {
                in_flight,
                routed,
                hook,
                started,
                span,
            },
        )
    }
}

/// Whether anything would record the per-request span. `debug_span!` does the same checks, but
/// only after building a disabled span, which (with tracing's `log` feature on, as axum's default
/// features turn it on) costs a few log-level checks at creation, every poll and drop: a
/// noticeable part of `Sticky`'s per-request cost when nobody listens. With no subscriber, tracing
/// forwards spans to the `log` crate, so a logger at debug level still gets them.
#[inline]
fn span_wanted() -> bool {
    tracing::level_enabled!(tracing::Level::DEBUG)
        || (!tracing::dispatcher::has_been_set() && log::max_level() >= log::LevelFilter::Debug)
}

impl<S: Service<Req>, Req> std::fmt::Debug for ResponseFuture<S, Req> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResponseFuture")
    }
}

impl<S, ReqBody, B> ResponseFuture<S, Request<ReqBody>>
where
    S: Service<Request<ReqBody>, Response = Response<B>> + Clone,
    S::Error: InnerError<Request<ReqBody>, B>,
{
    /// Routes `req` and starts it on the chosen backend ([`Sticky`](super::Sticky)'s `call`).
    ///
    /// All in one function, with the head split off and put back here and the request rebuilt
    /// only after the bookkeeping: each hand-over of the 224-byte head to a helper cost a copy
    /// (measured).
    #[inline]
    pub(crate) fn start(routing: &Arc<Routing<S>>, req: Request<ReqBody>) -> Self {
        let (mut parts, body) = req.into_parts();
        if let Some(replay) = &routing.policy.replay {
            if replay.methods.contains(&parts.method) {
                parts.extensions.insert(replay.budget);
            }
        }
        let attempt = match routing.pick(&mut parts, &[]) {
            Ok(attempt) => attempt,
            Err(why) => return Self::unavailable(why),
        };
        // Only a future that may retry or judge the response needs the routing.
        let keep = <S::Error as InnerError<Request<ReqBody>, B>>::GIVES_REQUESTS_BACK
            || routing.policy.passive.is_some();
        let (mut service, started) = Started::new(attempt);
        // Built as the tail expression, straight in the return place; `service` is dropped after.
        Self {
            call: Call::start(&mut service, Request::from_parts(parts, body)),
            attempt: Some(started),
            routing: keep.then(|| Arc::clone(routing)),
            excluded: Vec::new(),
        }
    }
}

impl<S: Service<Req>, Req> ResponseFuture<S, Req> {
    pub(crate) fn unavailable(why: Unavailable) -> Self {
        Self {
            call: Call::Unavailable { why },
            attempt: None,
            routing: None,
            excluded: Vec::new(),
        }
    }
}

impl<S, ReqBody, B> Future for ResponseFuture<S, Request<ReqBody>>
where
    S: Service<Request<ReqBody>, Response = Response<B>> + Clone,
    S::Error: InnerError<Request<ReqBody>, B>,
    B: TextBody,
{
    type Output = Result<Response<B>, <S::Error as InnerError<Request<ReqBody>, B>>::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            if let Some(why) = this.call.as_ref().get_ref().unavailable() {
                return Poll::Ready(Ok(unavailable_response(why)));
            }
            let (call, attempt, routing, excluded) = (
                this.call.as_mut(),
                &mut *this.attempt,
                &*this.routing,
                &mut *this.excluded,
            );
            let policy = routing.as_deref().map_or(&DETACHED, |r| &*r.policy);
            let result = {
                let _entered = attempt
                    .as_ref()
                    .and_then(|a| a.span.as_deref())
                    .map(|s| s.enter());
                ready!(call.poll(cx))
            };
            // Finish the in-flight count now, not when the future is dropped later.
            let Some(mut done) = attempt.take() else {
                // Polled again after completion: nothing left to record.
                return Poll::Ready(match result {
                    Ok(res) => Ok(res),
                    Err(error) => error.into_result(),
                });
            };
            let latency = done.started.map(|t| t.elapsed());
            let id = &done.routed.backend;
            match result {
                Ok(mut res) => {
                    done.in_flight.responded(latency);
                    let state_ref = done.in_flight.state();
                    facade::record(id, state_ref, Event::Response(latency));
                    let failed = policy
                        .passive
                        .as_ref()
                        .is_some_and(|p| (p.failure_status)(res.status()));
                    if failed {
                        fail(policy, &done);
                    } else {
                        succeed(policy, &done);
                    }
                    facade::record(id, state_ref, Event::End);
                    let Started { routed, hook, .. } = done;
                    // A plain insert: a clone of an empty allocated map (as requests get, see
                    // `crate::extensions`) measured no cheaper than growing from no table.
                    res.extensions_mut().insert(routed);
                    if let Some(hook) = hook {
                        let (mut head, body) = res.into_parts();
                        hook(&mut head);
                        res = Response::from_parts(head, body);
                    }
                    return Poll::Ready(Ok(res));
                }
                Err(mut error) => {
                    fail(policy, &done);
                    facade::record(id, done.in_flight.state(), Event::End);
                    let retry = match error.delivery() {
                        Some(Delivery::NotSent) => policy.retry_not_sent,
                        Some(Delivery::SentReplayable) => policy.replay.is_some(),
                        None => false,
                    } && excluded.len() < policy.max_retries as usize;
                    let routing = routing.as_ref().filter(|_| retry);
                    if let Some((routing, req)) =
                        routing.and_then(|r| Some((r, error.take_request()?)))
                    {
                        let failed = done.routed.backend.clone();
                        drop(done);
                        let (mut parts, body) = req.into_parts();
                        excluded.push(failed.clone());
                        let next = match routing.pick(&mut parts, excluded) {
                            Ok(next) => next,
                            Err(why) => {
                                tracing::warn!(backend = %failed, reason = %why, "failed over to nothing");
                                return Poll::Ready(Ok(unavailable_response(why)));
                            }
                        };
                        tracing::info!(
                            backend = %next.routed.backend,
                            from = %failed,
                            reason = "failover",
                            "retrying a failed request on the next candidate"
                        );
                        let (mut service, started) = Started::new(next);
                        let req = Request::from_parts(parts, body);
                        this.call.set(Call::start(&mut service, req));
                        *this.attempt = Some(started);
                        continue;
                    }
                    let routed = done.routed.clone();
                    drop(done);
                    return Poll::Ready(error.into_result().map(|mut res| {
                        res.extensions_mut().insert(routed);
                        res
                    }));
                }
            }
        }
    }
}

fn succeed(policy: &Policy, done: &Started) {
    if policy.passive.is_some() && done.in_flight.state().record_success() {
        tracing::info!(backend = %done.routed.backend, reason = "success", "backend readmitted");
    }
}

fn fail(policy: &Policy, done: &Started) {
    done.in_flight.failed();
    let state = done.in_flight.state();
    facade::record(&done.routed.backend, state, Event::Error);
    let Some(passive) = &policy.passive else {
        return;
    };
    if let Some(backoff) = state.record_failure(passive) {
        tracing::warn!(
            backend = %done.routed.backend,
            reason = "consecutive failures",
            backoff_ms = backoff.as_millis() as u64,
            "backend ejected"
        );
        facade::record(&done.routed.backend, state, Event::Ejected);
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures_util::FutureExt;
    use tower::{ServiceExt, service_fn};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata, Subscriber};

    use crate::affinity::RoundRobin;
    use crate::{Backends, StickyLayer};

    /// Counts the `sticky` spans created while it is the default subscriber.
    #[derive(Default)]
    struct SpanCounter(AtomicUsize);

    impl Subscriber for SpanCounter {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, span: &Attributes<'_>) -> Id {
            if span.metadata().name() == "sticky" {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, _: &Event<'_>) {}
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    fn one_request() {
        let backend = service_fn(|_req: http::Request<String>| async {
            Ok::<_, Infallible>(http::Response::new(String::new()))
        });
        let sticky = StickyLayer::new(RoundRobin::new()).sticky(Backends::new().with("a", backend));
        let res = sticky
            .oneshot(http::Request::new(String::new()))
            .now_or_never();
        assert!(matches!(res, Some(Ok(_))));
    }

    #[test]
    fn the_span_is_built_when_a_subscriber_wants_it() {
        let counter = std::sync::Arc::new(SpanCounter::default());
        tracing::subscriber::with_default(std::sync::Arc::clone(&counter), one_request);
        assert_eq!(counter.0.load(Ordering::Relaxed), 1);
    }
}
