//! Smoke checks: one HTTP request straight to a backend, bypassing the
//! weights, judged on status, body and latency.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full, Limited};
use sluice_config::UpstreamProtocol;
use sluice_transport::UpstreamTls;
use tokio::time::Instant;

use crate::rollout::{GrpcSmoke, SmokeCheck};
use crate::{direct, grpc};

/// Bodies larger than this are not read for `body_contains`.
const MAX_BODY: usize = 1024 * 1024;

/// Runs `check` against `addr`, in the pool's protocol; the latency in
/// ms, or what went wrong.
pub async fn run(
    addr: &str,
    tls: Option<&UpstreamTls>,
    protocol: UpstreamProtocol,
    check: &SmokeCheck,
) -> Result<u128, String> {
    let started = Instant::now();
    let limit = check.max_latency.max(Duration::from_millis(1));
    let within = || format!("no answer within {} ms", limit.as_millis());
    if let Some(grpc) = &check.grpc {
        tokio::time::timeout(limit, run_grpc(addr, tls, grpc))
            .await
            .map_err(|_| within())??;
        return Ok(started.elapsed().as_millis());
    }
    let exchange = async {
        let mut req = Request::builder()
            .method(check.method.clone())
            .uri(direct::target(protocol, tls.is_some(), addr, &check.path)?)
            .header(http::header::USER_AGENT, "sluice-smoke-check");
        if protocol == UpstreamProtocol::Http1 {
            req = req.header(http::header::HOST, addr);
        }
        for (name, value) in &check.headers {
            req = req.header(name.as_str(), value.as_str());
        }
        let body = Full::new(Bytes::from(check.body.clone().unwrap_or_default()));
        let req = req.body(body).map_err(|e| format!("bad check: {e}"))?;
        let res = direct::send(addr, tls, protocol, req)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = res.status().as_u16();
        let body = Limited::new(res.into_body(), MAX_BODY)
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        Ok::<_, String>((status, body))
    };
    let (status, body) = tokio::time::timeout(limit, exchange).await.map_err(|_| within())??;
    if status != check.expect_status {
        return Err(format!("expected status {}, got {status}", check.expect_status));
    }
    if let Some(needle) = &check.body_contains
        && !body.contains(needle.as_str())
    {
        return Err(format!("expected the body to contain {needle:?}"));
    }
    if let Some((pointer, expected)) = &check.json_pointer {
        let json: serde_json::Value =
            serde_json::from_str(&body).map_err(|_| format!("expected JSON at {pointer}, the body is not JSON"))?;
        match json.pointer(pointer) {
            Some(found) if found == expected => {}
            Some(found) => return Err(format!("expected {pointer} = {expected}, got {found}")),
            None => return Err(format!("expected {pointer} = {expected}, the answer has no {pointer}")),
        }
    }
    Ok(started.elapsed().as_millis())
}

/// A gRPC check: SERVING, or the expected status code.
async fn run_grpc(addr: &str, tls: Option<&UpstreamTls>, check: &GrpcSmoke) -> Result<(), String> {
    match check {
        GrpcSmoke::Health { service } => {
            let call = grpc::Call {
                method: grpc::HEALTH_CHECK,
                message: grpc::health_request(service),
                user_agent: "sluice-smoke-check",
            };
            grpc::unary(addr, tls, addr, &call).await?.serving()
        }
        GrpcSmoke::Call {
            method,
            message,
            expect_code,
        } => {
            let call = grpc::Call {
                method,
                message: message.clone(),
                user_agent: "sluice-smoke-check",
            };
            let answer = grpc::unary(addr, tls, addr, &call).await?;
            if answer.code == *expect_code {
                Ok(())
            } else {
                let name = |c: u8| {
                    sluice_routing::grpc::CODE_NAMES
                        .get(usize::from(c))
                        .copied()
                        .unwrap_or("?")
                };
                let detail = answer.detail.map(|d| format!(" ({d})")).unwrap_or_default();
                Err(format!(
                    "expected {}, got {}{detail}",
                    name(*expect_code),
                    name(answer.code)
                ))
            }
        }
    }
}
