//! gRPC calls straight to a backend (health probes, smoke checks): one
//! unary call over HTTP/2 and its answer, and the messages of the gRPC
//! health checking protocol (`grpc/health/v1/health.proto`). A health
//! probe passes only on `SERVING` with `grpc-status: 0`, as Kubernetes gRPC
//! probes, Envoy and Traefik judge.

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use prost::Message;
use sluice_config::UpstreamProtocol;
use sluice_routing::grpc::status_of;
use sluice_transport::UpstreamTls;

use crate::direct;

pub const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";
/// Answers are read up to this many bytes.
const MAX_ANSWER: usize = 1024 * 1024;

/// One unary call: the method's path and one encoded request message.
pub struct Call<'a> {
    pub method: &'a str,
    pub message: Vec<u8>,
    pub user_agent: &'static str,
}

/// A call's outcome: its `grpc-status` (and message) and response message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub code: u8,
    pub detail: Option<String>,
    pub message: Option<Bytes>,
}

/// Calls `call.method` on the backend at `addr` (HTTP/2: h2c, or h2 over
/// `tls`).
pub async fn unary(addr: &str, tls: Option<&UpstreamTls>, host: &str, call: &Call<'_>) -> Result<Answer, String> {
    let req = Request::post(direct::target(
        UpstreamProtocol::Http2,
        tls.is_some(),
        host,
        call.method,
    )?)
    .header(http::header::CONTENT_TYPE, "application/grpc")
    .header(http::header::TE, "trailers")
    .header(http::header::USER_AGENT, call.user_agent)
    .body(Full::new(frame(&call.message)))
    .map_err(|e| format!("bad call: {e}"))?;
    let res = direct::send(addr, tls, UpstreamProtocol::Http2, req).await?;
    if res.status() != StatusCode::OK {
        return Err(format!("status {}", res.status().as_u16()));
    }
    let (head, body) = res.into_parts();
    // Trailers-Only: the status is in the head.
    if let Some(code) = status_of(&head.headers) {
        return Ok(Answer {
            code,
            detail: text(&head.headers, "grpc-message"),
            message: None,
        });
    }
    let collected = Limited::new(body, MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| format!("answer: {e}"))?;
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let code = status_of(&trailers).ok_or("no grpc-status")?;
    let bytes = collected.to_bytes();
    Ok(Answer {
        code,
        detail: text(&trailers, "grpc-message"),
        message: if bytes.is_empty() { None } else { Some(unframe(&bytes)?) },
    })
}

impl Answer {
    /// A health answer: `Ok` only for SERVING with `grpc-status: 0`.
    pub fn serving(&self) -> Result<(), String> {
        if self.code != 0 {
            let why = self.detail.as_ref().map(|m| format!(": {m}")).unwrap_or_default();
            return Err(format!("grpc-status {}{why}", self.code));
        }
        let message = self.message.as_deref().unwrap_or_default();
        let response = HealthCheckResponse::decode(message).map_err(|e| format!("health response: {e}"))?;
        match ServingStatus::try_from(response.status) {
            Ok(ServingStatus::Serving) => Ok(()),
            Ok(other) => Err(other.as_str_name().to_owned()),
            Err(_) => Err(format!("unknown serving status {}", response.status)),
        }
    }
}

/// One uncompressed, length-prefixed message.
fn frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.put_u8(0);
    out.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(message);
    out.freeze()
}

/// The one message of a unary answer.
fn unframe(body: &[u8]) -> Result<Bytes, String> {
    let declared = body
        .get(1..5)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes);
    match (body.first(), declared, body.get(5..)) {
        (Some(0), Some(n), Some(m)) if usize::try_from(n).is_ok_and(|n| n == m.len()) => Ok(Bytes::copy_from_slice(m)),
        (Some(flag), _, _) if *flag != 0 => Err("a compressed answer".into()),
        _ => Err("a malformed answer".into()),
    }
}

fn text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// The health check request for `service`, encoded.
pub fn health_request(service: &str) -> Vec<u8> {
    HealthCheckRequest {
        service: service.to_owned(),
    }
    .encode_to_vec()
}

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    pub service: String,
}

/// `grpc.health.v1.HealthCheckResponse`.
#[derive(Clone, PartialEq, Message)]
pub struct HealthCheckResponse {
    #[prost(enumeration = "ServingStatus", tag = "1")]
    pub status: i32,
}

/// `grpc.health.v1.HealthCheckResponse.ServingStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ServingStatus {
    Unknown = 0,
    Serving = 1,
    NotServing = 2,
    ServiceUnknown = 3,
}

impl ServingStatus {
    fn as_str_name(self) -> &'static str {
        match self {
            Self::Unknown => "UNKNOWN",
            Self::Serving => "SERVING",
            Self::NotServing => "NOT_SERVING",
            Self::ServiceUnknown => "SERVICE_UNKNOWN",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(code: u8, status: Option<i32>) -> Answer {
        Answer {
            code,
            detail: (code != 0).then(|| "unknown service".to_owned()),
            message: status.map(|status| Bytes::from(HealthCheckResponse { status }.encode_to_vec())),
        }
    }

    #[test]
    fn only_serving_with_status_zero_passes() {
        assert_eq!(answer(0, Some(1)).serving(), Ok(()));
        assert_eq!(answer(0, Some(2)).serving(), Err("NOT_SERVING".into()));
        assert_eq!(answer(0, Some(3)).serving(), Err("SERVICE_UNKNOWN".into()));
        assert_eq!(answer(0, Some(9)).serving(), Err("unknown serving status 9".into()));
        assert_eq!(answer(5, None).serving(), Err("grpc-status 5: unknown service".into()));
        // An empty message is the default: UNKNOWN, not serving.
        assert_eq!(answer(0, None).serving(), Err("UNKNOWN".into()));
    }

    #[test]
    fn messages_are_framed_and_unframed() {
        let framed = frame(&health_request("shop.Cart"));
        assert_eq!(framed[0], 0);
        let decoded = HealthCheckRequest::decode(&framed[5..]).unwrap();
        assert_eq!(decoded.service, "shop.Cart");
        assert_eq!(&frame(&health_request(""))[..], &[0, 0, 0, 0, 0]);
        assert_eq!(unframe(&framed).unwrap(), Bytes::copy_from_slice(&framed[5..]));
        assert!(unframe(&framed[..4]).is_err());
        let mut compressed = framed.to_vec();
        compressed[0] = 1;
        assert!(unframe(&compressed).is_err());
    }
}
