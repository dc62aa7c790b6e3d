//! Shadow traffic: a copy of a live request, marked `x-sluice-shadow: 1`,
//! sent to a mirror pool by a task of its own; its answer is read and
//! thrown away and only counted, in the mirror pool's window (so a rollout
//! can judge the new version on real traffic before any user reaches it)
//! and in `sluice_shadow_requests_total`. The live request never waits for
//! it and never fails because of it: copies are bounded in number
//! ([`MAX_IN_FLIGHT`], more are dropped and counted) and in time (the
//! rule's timeout).

use std::sync::Arc;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{HeaderMap, HeaderName, Method, Request, Uri, Version};
use http_body_util::BodyExt;
use sluice_routing::RoutingPolicy;
use sluice_routing::handle::RoutingHandle;
use sluice_routing::mirror::{self, MirrorRule, ShadowResult};
use sluice_routing::select;
use sluice_routing::table::InFlight;
use sluice_routing::window::Outcome;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::request_body::{ClientBody, RequestBody};
use crate::rewrite::upstream_uri;
use crate::upstream::Upstreams;

/// Marks a copy, so the mirror pool's backends (and their logs) can tell.
pub const SHADOW_HEADER: HeaderName = HeaderName::from_static("x-sluice-shadow");

/// Copies in flight at once, over every mirror pool; more are dropped.
pub const MAX_IN_FLIGHT: usize = 256;

/// Bounds the copies in flight; one per proxy, which lends its routing
/// table and backend connections to each copy.
#[derive(Debug, Clone)]
pub struct Shadows {
    permits: Arc<Semaphore>,
}

/// A request as it went (or goes) to its own backend, to be copied.
#[derive(Debug)]
pub(crate) struct Copy {
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// The mirror rule a request to `pool` is copied under this time, when
/// any is configured (out of line: most tables have none).
#[inline(never)]
pub(crate) fn pick(policy: &RoutingPolicy, pool: &str, method: &Method, body_len: Option<u64>) -> Option<MirrorRule> {
    mirror::pick(
        policy.mirrors.iter().chain(&policy.rollout_mirror),
        pool,
        method,
        body_len,
    )
    .cloned()
}

impl Default for Shadows {
    fn default() -> Self {
        Self::new()
    }
}

impl Shadows {
    pub fn new() -> Self {
        Self {
            permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }

    /// Sends `copy` to `rule`'s pool from a task of its own; never waits.
    pub(crate) fn send(&self, (routing, upstreams): (&RoutingHandle, &Upstreams), rule: &MirrorRule, copy: Copy) {
        let table = routing.load();
        let Some(pool) = table.pool(&rule.to) else { return };
        let stats = Arc::clone(&pool.stats);
        let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
            stats.shadow.count(ShadowResult::Dropped);
            return;
        };
        let Some(backend) = select::choose_backend(pool).cloned() else {
            stats.shadow.count(ShadowResult::Failed);
            return;
        };
        let (protocol, tls) = ((pool.protocol, table.policy().forward.engine), pool.tls.clone());
        drop(table);
        let (upstreams, timeout) = (upstreams.clone(), rule.timeout);
        tokio::spawn(async move {
            let _permit = permit;
            let _in_flight = InFlight::start(&backend);
            let started = Instant::now();
            let exchange = async {
                let mut req = Request::new(RequestBody::new(ClientBody::Read(Some(copy.body)), u64::MAX));
                *req.method_mut() = copy.method;
                *req.uri_mut() = upstream_uri(&copy.uri, protocol.0, &backend).ok()?;
                *req.version_mut() = match protocol.0 {
                    sluice_config::UpstreamProtocol::Http1 => Version::HTTP_11,
                    sluice_config::UpstreamProtocol::Http2 => Version::HTTP_2,
                };
                *req.headers_mut() = copy.headers;
                req.headers_mut().insert(SHADOW_HEADER, HeaderValue::from_static("1"));
                let (res, mut lease) = upstreams.send(&backend, protocol, tls.as_deref(), req).await.ok()?;
                let status = res.status().as_u16();
                // Read to the end and thrown away; a body cut short still
                // leaves the status, the backend's answer.
                let mut body = res.into_body();
                let mut whole = true;
                while let Some(frame) = body.frame().await {
                    if frame.is_err() {
                        whole = false;
                        break;
                    }
                }
                if whole {
                    lease.release();
                }
                Some(status)
            };
            match tokio::time::timeout(timeout, exchange).await {
                Ok(Some(status)) => {
                    stats.shadow.count(ShadowResult::Answered);
                    stats.count(started, status, Outcome::of_status(status), None);
                }
                _ => {
                    stats.shadow.count(ShadowResult::Failed);
                    stats.count(started, 502, Outcome::UpstreamFailure, None);
                }
            }
        });
    }
}
