//! `sluice ctl watch`: the event stream, one line per routing change; and
//! `sluice ctl logs --follow`: access-log lines as they are written.

use http::Method;
use http_body_util::BodyExt;

use sluice_api as api;

use super::client::Api;
use crate::error::AppError;

/// Prints each event as it arrives (to stdout directly: a watch has no end).
pub(super) async fn watch(api: &Api, count: Option<usize>, json_out: bool) -> Result<String, AppError> {
    let req = api.request(Method::GET, "/api/v1/events", None)?;
    let res = api
        .client
        .request(req)
        .await
        .map_err(|e| AppError::Other(format!("cannot reach the admin API at {}: {e}", api.base)))?;
    if !res.status().is_success() {
        return Err(AppError::Other(format!("{} from /api/v1/events", res.status())));
    }
    let mut body = res.into_body();
    let mut buffer = String::new();
    let mut seen = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| AppError::Other(format!("event stream ended: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        buffer.push_str(&String::from_utf8_lossy(&data));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            let Some(payload) = event.lines().find_map(|l| l.strip_prefix("data:")) else {
                continue;
            };
            let payload = payload.trim();
            // Per-second statistics are for dashboards, not for watching changes.
            if payload.starts_with("{\"type\":\"stats\"") || event.starts_with("event: stats") {
                continue;
            }
            if json_out {
                println!("{payload}");
            } else if let Ok(e) = serde_json::from_str::<api::TableEvent>(payload) {
                let weights: Vec<String> = e.pools.iter().map(|p| format!("{}={}", p.name, p.weight)).collect();
                println!(
                    "[generation {}] {} {} {}",
                    e.generation,
                    e.kind,
                    e.actor.map(|a| format!("by {a}")).unwrap_or_default(),
                    weights.join(" ")
                );
            }
            seen += 1;
            if count.is_some_and(|c| seen >= c) {
                return Ok(String::new());
            }
        }
    }
    Ok(String::new())
}

/// Prints access-log lines from `path` (an event stream) as they come.
pub(super) async fn follow_logs(api: &Api, path: &str, json_out: bool) -> Result<String, AppError> {
    let req = api.request(Method::GET, path, None)?;
    let res = api
        .client
        .request(req)
        .await
        .map_err(|e| AppError::Other(format!("cannot reach the admin API at {}: {e}", api.base)))?;
    if !res.status().is_success() {
        let status = res.status();
        let body = res
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        return Err(AppError::Other(format!(
            "{status} from {path}: {}",
            String::from_utf8_lossy(&body).trim()
        )));
    }
    let mut body = res.into_body();
    let mut buffer = String::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| AppError::Other(format!("log stream ended: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        buffer.push_str(&String::from_utf8_lossy(&data));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            let Some(payload) = event.lines().find_map(|l| l.strip_prefix("data:")) else {
                continue;
            };
            let payload = payload.trim();
            if event.starts_with("event: lagged") {
                eprintln!("({payload} lines missed: this reader was too slow)");
            } else if json_out {
                println!("{payload}");
            } else if let Ok(line) = serde_json::from_str::<api::AccessLine>(payload) {
                print!("{}", super::print::access_line(&line));
            }
        }
    }
    Ok(String::new())
}
