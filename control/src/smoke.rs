//! Smoke checks: one HTTP request straight to a backend, bypassing the
//! weights, judged on status, body and latency.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use sluice_proxy::upstream_tls::{UpstreamTls, dial_http1};
use tokio::time::Instant;

use crate::rollout::SmokeCheck;

/// Bodies larger than this are not read for `body_contains`.
const MAX_BODY: usize = 1024 * 1024;

/// Runs `check` against `addr`; the latency in ms, or what went wrong.
pub async fn run(addr: &str, tls: Option<&UpstreamTls>, check: &SmokeCheck) -> Result<u128, String> {
    let started = Instant::now();
    let limit = check.max_latency.max(Duration::from_millis(1));
    let exchange = async {
        let stream = dial_http1(addr, tls)
            .await
            .map_err(|e| format!("connect failed: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake failed: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::builder()
            .method(check.method.clone())
            .uri(check.path.as_str())
            .header(http::header::HOST, addr)
            .header(http::header::USER_AGENT, "sluice-smoke-check");
        for (name, value) in &check.headers {
            req = req.header(name.as_str(), value.as_str());
        }
        let body = Full::new(Bytes::from(check.body.clone().unwrap_or_default()));
        let req = req.body(body).map_err(|e| format!("bad check: {e}"))?;
        let res = sender
            .send_request(req)
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
    let (status, body) = tokio::time::timeout(limit, exchange)
        .await
        .map_err(|_| format!("no answer within {} ms", limit.as_millis()))??;
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
