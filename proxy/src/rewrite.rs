//! What the request path changes on the way through: the request target
//! and Host sent upstream, and the response's hop-by-hop headers and
//! stickiness cookie on the way back.

use http::header::{self, HeaderValue};
use http::uri::{PathAndQuery, Scheme};
use http::{Response, Uri};
use sluice_config::UpstreamProtocol;

use crate::body::ProxyBody;
use crate::headers::{self};
use sluice_routing::error::ProxyError;
use sluice_routing::table::Backend;

/// The backend's response on its way to the client: without hop-by-hop
/// headers, with the stickiness cookie when one was chosen.
pub(crate) fn respond(
    mut parts: http::response::Parts,
    set_cookie: Option<HeaderValue>,
    body: ProxyBody,
) -> Response<ProxyBody> {
    headers::strip_hop_by_hop(&mut parts.headers);
    if let Some(cookie) = set_cookie {
        parts.headers.append(header::SET_COOKIE, cookie);
    }
    Response::from_parts(parts, body)
}

/// The authority an HTTP/2 (or absolute-form) request addressed, as a Host
/// value (`check_request` refused one with userinfo).
pub(crate) fn original_authority(uri: &Uri) -> Option<HeaderValue> {
    HeaderValue::from_str(uri.authority()?.as_str()).ok()
}

pub(crate) fn authority_value(backend: &Backend) -> HeaderValue {
    // host:port text is always a valid header value.
    HeaderValue::from_str(backend.authority().as_str()).unwrap_or(HeaderValue::from_static("localhost"))
}

/// The request target sent upstream: origin-form (`/path?query`) for
/// HTTP/1.1, whatever form the client used; absolute with the backend's
/// authority for HTTP/2, which needs `:scheme` and `:authority`.
pub(crate) fn upstream_uri(client_uri: &Uri, protocol: UpstreamProtocol, backend: &Backend) -> Result<Uri, ProxyError> {
    let path = client_uri
        .path_and_query()
        .cloned()
        .unwrap_or(PathAndQuery::from_static("/"));
    match protocol {
        // Origin-form already (the usual case): reuse it as is.
        UpstreamProtocol::Http1 if client_uri.scheme().is_none() && client_uri.authority().is_none() => {
            Ok(client_uri.clone())
        }
        UpstreamProtocol::Http1 => Ok(Uri::from(path)),
        UpstreamProtocol::Http2 => Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(backend.authority().clone())
            .path_and_query(path)
            .build()
            .map_err(|_| ProxyError::BadTarget),
    }
}
