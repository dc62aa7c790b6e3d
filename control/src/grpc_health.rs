//! The gRPC health checking protocol (`grpc.health.v1.Health/Check`) as a
//! probe: the request and response messages of `grpc/health/v1/health.proto`
//! and their gRPC framing. A probe passes only on `SERVING` with
//! `grpc-status: 0`, as Kubernetes gRPC probes, Envoy and Traefik judge.

use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderMap;
use prost::Message;

pub const PATH: &str = "/grpc.health.v1.Health/Check";

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

/// The request body: one uncompressed, length-prefixed message.
pub fn request_body(service: &str) -> Bytes {
    let message = HealthCheckRequest {
        service: service.to_owned(),
    };
    let len = message.encoded_len();
    let mut out = BytesMut::with_capacity(5 + len);
    out.put_u8(0);
    out.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    // Encoding into a buffer with room for the message cannot fail.
    let _ = message.encode(&mut out);
    out.freeze()
}

/// Judges an answer: its `grpc-status` (from the trailers, or the head of
/// a Trailers-Only answer) and body; `Ok` only for SERVING.
pub fn judge(status: Option<&str>, message: Option<&str>, body: &[u8]) -> Result<(), String> {
    match status {
        Some("0") => {}
        Some(code) => {
            let why = message.map(|m| format!(": {m}")).unwrap_or_default();
            return Err(format!("grpc-status {code}{why}"));
        }
        None => return Err("no grpc-status".into()),
    }
    let framed = body.get(5..).filter(|_| body.first() == Some(&0));
    let declared = body
        .get(1..5)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes);
    let message = match (framed, declared) {
        (Some(m), Some(n)) if usize::try_from(n).is_ok_and(|n| n == m.len()) => m,
        _ => return Err("malformed health response".into()),
    };
    let response = HealthCheckResponse::decode(message).map_err(|e| format!("health response: {e}"))?;
    match ServingStatus::try_from(response.status) {
        Ok(ServingStatus::Serving) => Ok(()),
        Ok(other) => Err(other.as_str_name().to_owned()),
        Err(_) => Err(format!("unknown serving status {}", response.status)),
    }
}

/// A header's text, if it has any.
pub fn text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
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

    fn framed(status: i32) -> Vec<u8> {
        let m = HealthCheckResponse { status }.encode_to_vec();
        let mut out = vec![0];
        out.extend_from_slice(&(m.len() as u32).to_be_bytes());
        out.extend_from_slice(&m);
        out
    }

    #[test]
    fn only_serving_with_status_zero_passes() {
        assert_eq!(judge(Some("0"), None, &framed(1)), Ok(()));
        assert_eq!(judge(Some("0"), None, &framed(2)), Err("NOT_SERVING".into()));
        assert_eq!(judge(Some("0"), None, &framed(3)), Err("SERVICE_UNKNOWN".into()));
        assert_eq!(
            judge(Some("0"), None, &framed(9)),
            Err("unknown serving status 9".into())
        );
        assert_eq!(
            judge(Some("5"), Some("unknown service"), &[]),
            Err("grpc-status 5: unknown service".into())
        );
        assert_eq!(judge(None, None, &framed(1)), Err("no grpc-status".into()));
        assert!(judge(Some("0"), None, &framed(1)[..4]).is_err());
        let mut compressed = framed(1);
        compressed[0] = 1;
        assert!(judge(Some("0"), None, &compressed).is_err());
    }

    #[test]
    fn the_request_names_the_service() {
        let body = request_body("shop.Cart");
        assert_eq!(body[0], 0);
        let decoded = HealthCheckRequest::decode(&body[5..]).unwrap();
        assert_eq!(decoded.service, "shop.Cart");
        assert_eq!(&request_body("")[..], &[0, 0, 0, 0, 0]);
    }
}
