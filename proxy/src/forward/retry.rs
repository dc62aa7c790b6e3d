//! Retries (`[retry]`): a failed try goes again on another backend of the
//! same pool when the failure and the method make it safe and the pool's
//! budget allows (see [`sluice_routing::retry`]). Reached only after a try
//! failed, from a pool that retries: the request path pays nothing else.
//!
//! What can go again: on sluice's own HTTP/1.1 exchange, the encoded
//! request still in the connection's scratch (head and a body read whole);
//! on the hyper clients, a copy of the head kept for requests without a
//! body ([`crate::replay::Replay`]). A streamed body is never sent twice.

use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderValue;
use http::{Method, Response};
use sluice_routing::error::ProxyError;
use sluice_routing::retry::{Condition, RetryPolicy};
use sluice_routing::select;
use sluice_routing::table::{Backend, BackendId, clock_ms};
use tokio::time::Instant;

use super::Proxy;
use super::tries::{
    Failed, Forwarded, HyperAnswer, RETRIES_HEADER, RawAnswer, Reply, Retry, Target, Tried, try_timeout,
};
use crate::access::Entry;
use crate::body::ProxyBody;
use crate::client::Scratch;
use crate::http1::HeadersAs;
use crate::rewrite::respond;

/// The tries of one request so far.
struct Tries {
    policy: RetryPolicy,
    /// The first `made` are the backends tried.
    tried: [BackendId; 5],
    made: u8,
}

impl Tries {
    fn new(policy: RetryPolicy, first: &Backend) -> Self {
        Self {
            policy,
            tried: [first.id(); 5],
            made: 1,
        }
    }
}

impl Proxy {
    /// [`Proxy::retry`] boxed, out of line: built inside `handle`'s await,
    /// the unboxed future would take room in every request's future.
    #[inline(never)]
    pub(super) fn retrying<'a>(
        &'a self,
        reply: Reply,
        scratch: &'a mut Scratch,
    ) -> std::pin::Pin<Box<impl Future<Output = Reply> + 'a>> {
        Box::pin(async move {
            match reply {
                Err(Failed::Retry(again)) => self.retry(again, scratch).await.map_err(Failed::Error),
                other => other,
            }
        })
    }

    /// Tries a failed request again while its outcome, its method, its
    /// pool's backends and budget allow, and answers with the last try.
    pub(super) async fn retry(&self, again: Box<Retry>, scratch: &mut Scratch) -> Forwarded {
        match *again {
            Retry::Raw {
                first,
                mut tried,
                pool,
                method,
                headers_as,
                set_cookie,
                started,
                overall,
            } => {
                let outcome = self
                    .retry_raw(
                        first,
                        &mut tried,
                        scratch,
                        (&pool, &method, headers_as, (started, overall)),
                    )
                    .await;
                let (res, lines) = outcome?;
                if let Some(entry) = &mut scratch.log {
                    entry.upstream = Some(started.elapsed());
                }
                self.count_exchange(&pool, &tried.backend, res.status().is_server_error());
                let (parts, body) = res.into_parts();
                Ok((respond(parts, set_cookie, ProxyBody::raw(body, tried.in_flight)), lines))
            }
            Retry::Hyper {
                first,
                mut tried,
                pool,
                protocol,
                tls,
                set_cookie,
                started,
                overall,
            } => {
                let target = (protocol, tls.as_deref());
                let outcome = self
                    .retry_hyper(first, &mut tried, scratch, (&pool, target, (started, overall)))
                    .await;
                let (res, lease) = outcome?;
                if let Some(entry) = &mut scratch.log {
                    entry.upstream = Some(started.elapsed());
                }
                // gRPC calls are never retried: the status is the outcome.
                self.count_exchange(&pool, &tried.backend, res.status().is_server_error());
                let (parts, body) = res.into_parts();
                let body = ProxyBody::upstream(body, lease, tried.in_flight, None);
                Ok((respond(parts, set_cookie, body), None))
            }
        }
    }

    /// The backend the next try goes to, when the last one's `condition`
    /// is retried for `method`, another backend of `pool` can take it and
    /// the pool's budget has a retry left; the failed try is counted as
    /// what it was against its backend.
    fn next_try(
        &self,
        tries: &mut Tries,
        condition: Option<Condition>,
        method: &Method,
        pool: &Arc<str>,
        answered: Option<&Arc<Backend>>,
    ) -> Option<Arc<Backend>> {
        let condition = condition?;
        if tries.made >= tries.policy.attempts || !tries.policy.retries(condition, method) {
            return None;
        }
        // Errors were counted against the backend as they happened; a
        // 502/503 the client will not see is counted here.
        if let Some(backend) = answered {
            self.count_exchange(pool, backend, true);
        }
        let table = self.routing.load();
        let p = table.pool(pool)?;
        let tried = tries.tried.get(..usize::from(tries.made)).unwrap_or_default();
        let next = select::choose_other_backend(p, tried)?;
        let limits = table.policy().forward;
        let full = (limits.max_in_flight_per_backend > 0
            && next.in_flight() >= u64::from(limits.max_in_flight_per_backend))
            || (limits.max_pending_per_backend > 0 && next.pending() >= limits.max_pending_per_backend);
        if full || !p.stats.retries.try_retry(&tries.policy, condition, clock_ms()) {
            return None;
        }
        if let Some(slot) = tries.tried.get_mut(usize::from(tries.made)) {
            *slot = next.id();
        }
        tries.made += 1;
        Some(Arc::clone(next))
    }

    /// Sends a request on sluice's own HTTP/1.1 exchange again, from the
    /// encoded request still in `scratch.head`, while its outcome allows.
    async fn retry_raw(
        &self,
        mut outcome: Result<RawAnswer, ProxyError>,
        tried: &mut Tried,
        scratch: &mut Scratch,
        (pool, method, headers_as, (started, overall)): (&Arc<str>, &Method, HeadersAs, (Instant, Duration)),
    ) -> Result<RawAnswer, ProxyError> {
        let Some(&policy) = scratch.retry() else { return outcome };
        let mut tries = Tries::new(policy, &tried.backend);
        loop {
            let (condition, answered) = match &outcome {
                Ok((res, _)) => (Condition::of_status(res.status().as_u16()), Some(&tried.backend)),
                Err(err) => (Condition::of_error(*err), None),
            };
            let Some(next) = self.next_try(&mut tries, condition, method, pool, answered) else {
                break;
            };
            // The failed try's connection goes first.
            drop(outcome);
            tried.move_to(next);
            note(&mut scratch.log, &tried.backend, tries.made);
            let id_name = self.request_ids.as_ref().map(|ids| ids.name.as_str().as_bytes());
            let backend = &tried.backend;
            let sent = std::pin::pin!(
                self.upstreams
                    .send_raw(backend, &scratch.head, method, headers_as, id_name)
            );
            let timeout = (started, try_timeout(&policy, started, overall));
            outcome = self
                .response_head(sent, &mut scratch.deadline, timeout, backend, pool)
                .await;
        }
        mark(&mut outcome, tries.made);
        outcome
    }

    /// Sends a request without a body on the hyper clients again, from its
    /// [`Replay`], while its outcome allows.
    async fn retry_hyper(
        &self,
        mut outcome: Result<HyperAnswer, ProxyError>,
        tried: &mut Tried,
        scratch: &mut Scratch,
        (pool, (protocol, tls), (started, overall)): (&Arc<str>, Target<'_>, (Instant, Duration)),
    ) -> Result<HyperAnswer, ProxyError> {
        let Some(state) = scratch.policy.as_mut() else {
            return outcome;
        };
        let (Some(policy), Some(replay)) = (state.retry, state.replay.take()) else {
            return outcome;
        };
        let mut tries = Tries::new(policy, &tried.backend);
        loop {
            let (condition, answered) = match &outcome {
                Ok((res, _)) => (Condition::of_status(res.status().as_u16()), Some(&tried.backend)),
                Err(err) => (Condition::of_error(*err), None),
            };
            let Some(next) = self.next_try(&mut tries, condition, &replay.method, pool, answered) else {
                break;
            };
            drop(outcome);
            tried.move_to(next);
            note(&mut scratch.log, &tried.backend, tries.made);
            let backend = &tried.backend;
            let req = match replay.request(protocol, backend) {
                Ok(req) => req,
                Err(err) => {
                    outcome = Err(err);
                    break;
                }
            };
            let sent = std::pin::pin!(self.upstreams.send(backend, (protocol, self.engine()), tls, req));
            let timeout = (started, try_timeout(&policy, started, overall));
            outcome = self
                .response_head(sent, &mut scratch.deadline, timeout, backend, pool)
                .await;
        }
        mark(&mut outcome, tries.made);
        outcome
    }
}

/// The access log's entry names the backend of the last try and counts
/// the retries.
fn note(log: &mut Option<Box<Entry>>, backend: &Arc<Backend>, made: u8) {
    if let Some(entry) = log {
        entry.backend = Some(Arc::clone(backend));
        entry.retries = made.saturating_sub(1);
    }
}

/// Tells the client how many retries its answer took (none: no header).
fn mark<T, U>(outcome: &mut Result<(Response<T>, U), ProxyError>, made: u8) {
    if made > 1
        && let Ok((res, _)) = outcome
    {
        res.headers_mut()
            .insert(RETRIES_HEADER, HeaderValue::from(u16::from(made.saturating_sub(1))));
    }
}
