//! A copy of a request's head, kept so the hyper clients can send it again
//! on another backend when a try fails ([`Replay`]); see `forward::retry`.

use http::{HeaderMap, Method, Request, Uri, Version};
use sluice_config::UpstreamProtocol;
use sluice_routing::error::ProxyError;
use sluice_routing::retry::{Condition, RetryPolicy};
use sluice_routing::table::Backend;

use crate::request_body::{ClientBody, RequestBody};
use crate::rewrite::upstream_uri;

/// A request's head as it went to the first backend, for the hyper
/// clients to send again (only requests without a body are kept).
#[derive(Debug)]
pub(crate) struct Replay {
    pub(crate) method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

impl Replay {
    /// A copy of `parts` when a try of it could be retried under `policy`.
    pub(crate) fn of(parts: &http::request::Parts, policy: &RetryPolicy) -> Option<Replay> {
        let any = Condition::ALL.iter().any(|&c| policy.retries(c, &parts.method));
        any.then(|| Replay {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
        })
    }

    pub(crate) fn request(
        &self,
        protocol: UpstreamProtocol,
        backend: &Backend,
    ) -> Result<Request<RequestBody>, ProxyError> {
        let mut req = Request::new(RequestBody::new(ClientBody::Read(None), 0));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = upstream_uri(&self.uri, protocol, backend)?;
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        Ok(req)
    }
}
