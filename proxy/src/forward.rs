//! The request path: check → load the table once → pick pool and backend →
//! rewrite headers → send on a pooled connection → stream the response back.

use std::error::Error as StdError;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use sluice_config::UpstreamProtocol;
use tracing::debug;

use crate::body::{ProxyBody, RequestBody, RequestBodyError};
use crate::error::ProxyError;
use crate::handle::RoutingHandle;
use crate::headers::{self, ForwardedFor};
use crate::select::{self, POOL_OVERRIDE_HEADER};
use crate::table::InFlight;
use crate::upstream::Upstreams;

/// Request-path settings that do not change per request.
#[derive(Debug, Clone, Copy)]
pub struct ForwardSettings {
    pub upstream_response_timeout: Duration,
    pub max_request_body_bytes: u64,
}

/// What the request path knows about the client connection.
#[derive(Debug, Clone)]
pub struct ClientConn {
    pub peer: SocketAddr,
    pub forwarded: ForwardedFor,
}

impl ClientConn {
    pub fn new(peer: SocketAddr, tls: bool) -> Self {
        Self {
            peer,
            forwarded: ForwardedFor::new(peer.ip(), tls),
        }
    }
}

/// The proxy service shared by every connection.
#[derive(Debug)]
pub struct Proxy {
    routing: Arc<RoutingHandle>,
    upstreams: Upstreams,
    settings: ForwardSettings,
}

impl Proxy {
    pub fn new(routing: Arc<RoutingHandle>, upstreams: Upstreams, settings: ForwardSettings) -> Self {
        Self {
            routing,
            upstreams,
            settings,
        }
    }

    pub fn routing(&self) -> &Arc<RoutingHandle> {
        &self.routing
    }

    /// Serves one request; failures become short plain-text responses.
    pub async fn handle(&self, req: Request<Incoming>, conn: &ClientConn) -> Response<ProxyBody> {
        match self.forward(req, conn).await {
            Ok(res) => res,
            Err(err) => {
                debug!(peer = %conn.peer, error = err.code(), "request failed");
                err.into_response()
            }
        }
    }

    async fn forward(&self, mut req: Request<Incoming>, conn: &ClientConn) -> Result<Response<ProxyBody>, ProxyError> {
        headers::check_request(&req, self.settings.max_request_body_bytes)?;

        // The table is loaded once, and released before any await.
        let (backend, protocol, set_cookie) = {
            let table = self.routing.load();
            let choice = select::choose_pool(&table, req.headers(), conn.peer.ip())?;
            let backend = select::choose_backend(choice.pool).ok_or(ProxyError::NoBackend)?;
            (Arc::clone(backend), choice.pool.protocol, choice.set_cookie)
        };
        let in_flight = InFlight::start(&backend);

        let upgrade = headers::upgrade_request(&req);
        let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));

        let (mut parts, body) = req.into_parts();
        // Route by backend, keep the path and query the client sent.
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or(PathAndQuery::from_static("/"));
        let mut uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(backend.authority().clone());
        uri = uri.path_and_query(path);
        parts.uri = uri.build().map_err(|_| ProxyError::BadTarget)?;

        // An HTTP/2 client names the host in :authority; HTTP/1 backends
        // need it as Host.
        if !parts.headers.contains_key(header::HOST)
            && let Some(host) = original_authority(&parts)
        {
            parts.headers.insert(header::HOST, host);
        }
        let host = parts.headers.get(header::HOST).cloned();
        headers::strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(POOL_OVERRIDE_HEADER);
        headers::add_forwarding(&mut parts.headers, &conn.forwarded, host.as_ref());
        if let Some(proto) = &upgrade {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, proto.clone());
        }
        parts.version = match protocol {
            UpstreamProtocol::Http1 => Version::HTTP_11,
            UpstreamProtocol::Http2 => Version::HTTP_2,
        };
        parts.extensions = http::Extensions::new();

        let upstream_req = Request::from_parts(parts, RequestBody::new(body, self.settings.max_request_body_bytes));
        let sent = self.upstreams.for_protocol(protocol).request(upstream_req);
        let mut res = match tokio::time::timeout(self.settings.upstream_response_timeout, sent).await {
            Err(_) => return Err(ProxyError::UpstreamTimeout),
            Ok(Err(e)) => return Err(classify(&e)),
            Ok(Ok(res)) => res,
        };

        if let Some(client_upgrade) = client_upgrade
            && res.status() == StatusCode::SWITCHING_PROTOCOLS
        {
            let upstream_upgrade = hyper::upgrade::on(&mut res);
            tokio::spawn(tunnel(client_upgrade, upstream_upgrade, in_flight));
            let (parts, _) = res.into_parts();
            return Ok(Response::from_parts(parts, ProxyBody::empty()));
        }

        let (mut parts, body) = res.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        if let Some(cookie) = set_cookie {
            parts.headers.append(header::SET_COOKIE, cookie);
        }
        Ok(Response::from_parts(parts, ProxyBody::upstream(body, Some(in_flight))))
    }
}

/// The authority an HTTP/2 client addressed, as a Host value.
fn original_authority(parts: &http::request::Parts) -> Option<HeaderValue> {
    let authority = parts.uri.authority()?;
    HeaderValue::from_str(authority.as_str()).ok()
}

/// Copies bytes both ways between an upgraded client and backend connection
/// until either side closes.
async fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade, _in_flight: InFlight) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            debug!(error = %e, "upgrade did not complete");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        debug!(error = %e, "upgraded connection ended with an error");
    }
}

/// Maps a client error to its cause by walking the error's sources.
fn classify(err: &hyper_util::client::legacy::Error) -> ProxyError {
    let mut source: Option<&(dyn StdError + 'static)> = err.source();
    let mut timed_out = false;
    let mut hyper_err: Option<&hyper::Error> = None;
    while let Some(e) = source {
        if let Some(body) = e.downcast_ref::<RequestBodyError>() {
            return match body {
                RequestBodyError::TooLarge => ProxyError::BodyTooLarge,
                RequestBodyError::Client(_) => ProxyError::ClientBodyFailed,
            };
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            timed_out |= io.kind() == io::ErrorKind::TimedOut;
        }
        if hyper_err.is_none() {
            hyper_err = e.downcast_ref::<hyper::Error>();
        }
        source = e.source();
    }
    if err.is_connect() {
        return if timed_out {
            ProxyError::ConnectTimeout
        } else {
            ProxyError::ConnectFailed
        };
    }
    match hyper_err {
        Some(h) if h.is_parse() || h.is_parse_status() || h.is_parse_too_large() => ProxyError::UpstreamMalformed,
        _ => ProxyError::UpstreamReset,
    }
}
