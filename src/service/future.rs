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
use super::{Attempt, Delivery, InnerError, Policy, Routed, TextBody, unavailable_response};
use crate::affinity::{ResponseHook, Unavailable};
use crate::backends::InFlight;
use crate::metrics::facade::{self, Event};
use crate::{BackendId, Backends};

pin_project! {
    /// The response future of [`Sticky`](super::Sticky).
    pub struct ResponseFuture<S, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S, Req>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req>
    where
        S: Service<Req>,
    {
        Routed {
            #[pin]
            call: Call<S, Req>,
            attempt: Option<Started>,
            backends: Backends<S>,
            policy: Arc<Policy>,
            // Backends that already failed this request (empty, unallocated, on the first try).
            excluded: Vec<BackendId>,
        },
        Unavailable {
            why: Unavailable,
        },
    }
}

/// What is recorded about the attempt in progress.
struct Started {
    in_flight: InFlight,
    routed: Routed,
    hook: Option<ResponseHook>,
    /// Set on the requests whose latency is measured.
    started: Option<Instant>,
    span: tracing::Span,
}

impl Started {
    fn new<S>(attempt: &mut Option<Attempt<S>>) -> Option<(S, Self)> {
        let Attempt {
            service,
            in_flight,
            routed,
            hook,
        } = attempt.take()?;
        let started = in_flight.is_timed().then(Instant::now);
        let span = tracing::debug_span!(
            "sticky",
            backend = %routed.backend,
            reason = %routed.reason,
            strategy = routed.strategy,
        );
        Some((
            service,
            Self {
                in_flight,
                routed,
                hook,
                started,
                span,
            },
        ))
    }
}

impl<S: Service<Req>, Req> std::fmt::Debug for ResponseFuture<S, Req> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResponseFuture")
    }
}

impl<S: Service<Req>, Req> ResponseFuture<S, Req> {
    pub(crate) fn routed(
        attempt: Attempt<S>,
        req: Req,
        backends: Backends<S>,
        policy: Arc<Policy>,
    ) -> Self {
        let mut slot = Some(attempt);
        match Started::new(&mut slot) {
            Some((service, started)) => Self {
                state: State::Routed {
                    call: Call::start(service, req),
                    attempt: Some(started),
                    backends,
                    policy,
                    excluded: Vec::new(),
                },
            },
            None => Self::unavailable(Unavailable::NoHealthyBackend),
        }
    }

    pub(crate) fn unavailable(why: Unavailable) -> Self {
        Self {
            state: State::Unavailable { why },
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
        let mut state = self.project().state;
        loop {
            let (call, attempt, backends, policy, excluded) = match state.as_mut().project() {
                StateProj::Unavailable { why } => {
                    return Poll::Ready(Ok(unavailable_response(*why)));
                }
                StateProj::Routed {
                    call,
                    attempt,
                    backends,
                    policy,
                    excluded,
                } => (call, attempt, backends, policy, excluded),
            };
            let result = {
                let _entered = attempt.as_ref().map(|a| a.span.enter());
                ready!(call.poll(cx))
            };
            // Finish the in-flight count now, not when the future is dropped later.
            let Some(done) = attempt.take() else {
                // Polled again after completion: nothing left to record.
                return Poll::Ready(match result {
                    Ok(res) => Ok(res),
                    Err(error) => error.into_result(),
                });
            };
            let latency = done.started.map(|t| t.elapsed());
            let id = &done.routed.backend;
            let state_ref = done.in_flight.state();
            match result {
                Ok(mut res) => {
                    done.in_flight.responded(latency);
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
                    facade::record(id, state_ref, Event::End);
                    let retry = match error.delivery() {
                        Some(Delivery::NotSent) => policy.retry_not_sent,
                        Some(Delivery::SentReplayable) => policy.replay.is_some(),
                        None => false,
                    } && excluded.len() < policy.max_retries as usize;
                    if let Some(req) = retry.then(|| error.take_request()).flatten() {
                        let failed = done.routed.backend.clone();
                        drop(done);
                        let (mut parts, body) = req.into_parts();
                        excluded.push(failed.clone());
                        let next = match policy.pick(backends, &mut parts, excluded) {
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
                        let mut slot = Some(next);
                        let Some((service, started)) = Started::new(&mut slot) else {
                            return Poll::Ready(Ok(unavailable_response(
                                Unavailable::NoHealthyBackend,
                            )));
                        };
                        let backends = backends.clone();
                        let policy = Arc::clone(policy);
                        let excluded = std::mem::take(excluded);
                        state.set(State::Routed {
                            call: Call::start(service, Request::from_parts(parts, body)),
                            attempt: Some(started),
                            backends,
                            policy,
                            excluded,
                        });
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
