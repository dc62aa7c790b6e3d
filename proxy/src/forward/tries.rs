//! What a retry carries (see `retry`): the failed first try handed from
//! `forward` ([`Failed::Retry`]), where the request stands ([`Tried`]), and
//! the small checks the request path makes before any retry.

use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderValue;
use http::{HeaderName, Method, Response};
use sluice_config::UpstreamProtocol;
use sluice_routing::error::ProxyError;
use sluice_routing::retry::RetryPolicy;
use sluice_routing::table::{Backend, InFlight};
use sluice_transport::UpstreamTls;
use tokio::time::Instant;

use crate::body::ProxyBody;
use crate::client::Scratch;
use crate::http1::{HeaderLines, HeadersAs, RawBody};
use crate::replay::Replay;
use crate::upstream::{Lease, UpstreamBody};

/// Why `forward` has no answer: an error, or a failed first try that a
/// retry may follow (see `retry`). The answer itself travels as `Ok`
/// untouched: what almost every request returns is not rewrapped.
#[derive(Debug)]
pub(crate) enum Failed {
    Error(ProxyError),
    Retry(Box<Retry>),
}

impl Failed {
    /// The error (a retry that was never made is none, but is told as a
    /// reset).
    pub(crate) fn into_error(self) -> ProxyError {
        match self {
            Failed::Error(e) => e,
            Failed::Retry(_) => ProxyError::UpstreamReset,
        }
    }
}

impl From<ProxyError> for Failed {
    #[inline]
    fn from(e: ProxyError) -> Self {
        Failed::Error(e)
    }
}

/// What `forward` hands back.
pub(crate) type Reply = Result<(Response<ProxyBody>, Option<HeaderLines>), Failed>;

/// An answer or why there is none.
pub(crate) type Forwarded = Result<(Response<ProxyBody>, Option<HeaderLines>), ProxyError>;

/// Sent back when a request was tried more than once: how many retries.
pub const RETRIES_HEADER: HeaderName = HeaderName::from_static("x-sluice-retries");

pub(crate) type RawAnswer = (Response<RawBody>, Option<HeaderLines>);
pub(crate) type HyperAnswer = (Response<UpstreamBody>, Lease);
/// Where the hyper clients send: the pool's protocol and TLS.
pub(crate) type Target<'a> = (UpstreamProtocol, Option<&'a UpstreamTls>);

/// Keeps a copy of the head in `scratch` when the request can be sent
/// again (`again`) and a failed try of it could be retried; else none.
/// Out of line: the copy would otherwise take room in the request's future.
#[inline(never)]
pub(crate) fn keep_replay(scratch: &mut Scratch, parts: &http::request::Parts, again: bool) {
    if let Some(policy) = &mut scratch.policy {
        policy.replay = match &policy.retry {
            Some(retry) if again => Replay::of(parts, retry),
            _ => None,
        };
    }
}

/// How long a try may wait for its response head: within `overall` of the
/// request's start and, with `per_try_timeout`, within that of its own.
pub(crate) fn try_timeout(policy: &RetryPolicy, started: Instant, overall: Duration) -> Duration {
    match policy.per_try_timeout {
        None => overall,
        Some(per_try) => overall.min(started.elapsed() + per_try),
    }
}

/// [`try_timeout`] for a request's first try: `overall` unless its pool
/// retries (checked inline; the rest out of line).
#[inline(always)]
pub(crate) fn first_try_timeout(scratch: &Scratch, started: Instant, overall: Duration) -> Duration {
    match &scratch.policy {
        None => overall,
        Some(_) => first_try_timeout_slow(scratch, started, overall),
    }
}

#[inline(never)]
fn first_try_timeout_slow(scratch: &Scratch, started: Instant, overall: Duration) -> Duration {
    scratch.retry().map_or(overall, |p| try_timeout(p, started, overall))
}

/// Whether a try's outcome is one a retry could follow: an error, or a
/// 502/503 answer.
#[inline]
pub(crate) fn worth_a_look<T>(outcome: &Result<(Response<T>, impl Sized), ProxyError>) -> bool {
    outcome
        .as_ref()
        .map_or(true, |(res, _)| matches!(res.status().as_u16(), 502 | 503))
}

/// The backend a request's last try went to and the in-flight count held
/// there.
#[derive(Debug)]
pub(crate) struct Tried {
    pub(crate) backend: Arc<Backend>,
    pub(crate) in_flight: InFlight,
}

impl Tried {
    pub(crate) fn once(backend: Arc<Backend>, in_flight: InFlight) -> Self {
        Self { backend, in_flight }
    }

    /// The next try goes to `next`: the last one's in-flight count ends.
    pub(crate) fn move_to(&mut self, next: Arc<Backend>) {
        self.in_flight = InFlight::start(&next);
        self.backend = next;
    }
}

/// A first try that failed in a pool that retries, handed from `forward`
/// to the retry with what the answer needs.
#[derive(Debug)]
pub(crate) enum Retry {
    /// On sluice's own HTTP/1.1 exchange: the request is still encoded in
    /// the connection's scratch.
    Raw {
        first: Result<RawAnswer, ProxyError>,
        tried: Tried,
        pool: Arc<str>,
        method: Method,
        headers_as: HeadersAs,
        set_cookie: Option<HeaderValue>,
        started: Instant,
        overall: Duration,
    },
    /// On the hyper clients: the request is in the scratch's [`Replay`].
    Hyper {
        first: Result<HyperAnswer, ProxyError>,
        tried: Tried,
        pool: Arc<str>,
        protocol: UpstreamProtocol,
        tls: Option<Arc<UpstreamTls>>,
        set_cookie: Option<HeaderValue>,
        started: Instant,
        overall: Duration,
    },
}

/// The request's retries, mirror copy and route, from its pool and the
/// table's policy, into `scratch` (out of line: called only where one is
/// configured, or was for the connection's last request).
#[inline(never)]
pub(crate) fn note_policy<B: http_body::Body>(
    scratch: &mut Scratch,
    policy: &sluice_routing::RoutingPolicy,
    pool: &sluice_routing::Pool,
    req: &http::Request<B>,
) {
    let copy = if policy.mirrors.is_empty() && policy.rollout_mirror.is_none() {
        None
    } else {
        let len = req.body().size_hint().exact();
        crate::shadow::pick(policy, &pool.name, req.method(), len)
    };
    let route = if policy.routes.is_empty() {
        None
    } else {
        sluice_routing::routes::route_of(&policy.routes, req.uri().path()).map(|i| (Arc::clone(&pool.routes), i))
    };
    scratch.set_policy(pool.retry, copy, route);
    if pool.retry.is_some() {
        pool.stats.retries.count_request(sluice_routing::table::clock_ms());
    }
}

/// A failed first try on the own exchange, boxed for [`Failed::Retry`]
/// (out of line: the request path builds it only after a failure).
#[inline(never)]
#[allow(clippy::type_complexity)]
pub(crate) fn retry_raw(
    first: Result<RawAnswer, ProxyError>,
    tried: Tried,
    (pool, method, headers_as, set_cookie, (started, overall)): (
        Arc<str>,
        Method,
        HeadersAs,
        Option<HeaderValue>,
        (Instant, Duration),
    ),
) -> Failed {
    Failed::Retry(Box::new(Retry::Raw {
        first,
        tried,
        pool,
        method,
        headers_as,
        set_cookie,
        started,
        overall,
    }))
}

/// [`retry_raw`] for a try on the hyper clients.
#[inline(never)]
#[allow(clippy::type_complexity)]
pub(crate) fn retry_hyper(
    first: Result<HyperAnswer, ProxyError>,
    tried: Tried,
    (pool, protocol, tls, set_cookie, (started, overall)): (
        Arc<str>,
        UpstreamProtocol,
        Option<Arc<UpstreamTls>>,
        Option<HeaderValue>,
        (Instant, Duration),
    ),
) -> Failed {
    Failed::Retry(Box::new(Retry::Hyper {
        first,
        tried,
        pool,
        protocol,
        tls,
        set_cookie,
        started,
        overall,
    }))
}
