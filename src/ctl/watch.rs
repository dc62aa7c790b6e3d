//! `sluice ctl watch`: the event stream, one line per routing change; and
//! `sluice ctl logs --follow`: access-log lines as they are written.

use http::Method;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use sluice_api as api;

use super::client::Api;
use crate::error::AppError;

/// Opens the event stream at `path`; a refusal is an error with the
/// server's message.
async fn open(api: &Api, path: &str) -> Result<Incoming, AppError> {
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
    Ok(res.into_body())
}

/// Calls `each(event, data)` for every event with data until it returns
/// false or the stream ends.
async fn each_event(mut body: Incoming, mut each: impl FnMut(&str, &str) -> bool) -> Result<(), AppError> {
    let mut buffer = String::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| AppError::Other(format!("event stream ended: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        buffer.push_str(&String::from_utf8_lossy(&data));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            let Some(payload) = event.lines().find_map(|l| l.strip_prefix("data:")) else {
                continue;
            };
            if !each(&event, payload.trim()) {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Prints each event as it arrives (to stdout directly: a watch has no end).
pub(super) async fn watch(api: &Api, count: Option<usize>, json_out: bool) -> Result<String, AppError> {
    let body = open(api, "/api/v1/events").await?;
    let mut seen = 0;
    each_event(body, |event, payload| {
        // Per-second statistics are for dashboards, not for watching changes.
        if payload.starts_with("{\"type\":\"stats\"") || event.starts_with("event: stats") {
            return true;
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
        count.is_none_or(|c| seen < c)
    })
    .await?;
    Ok(String::new())
}

/// Prints access-log lines from `path` (an event stream) as they come.
pub(super) async fn follow_logs(api: &Api, path: &str, json_out: bool) -> Result<String, AppError> {
    let body = open(api, path).await?;
    each_event(body, |event, payload| {
        if event.starts_with("event: lagged") {
            eprintln!("({payload} lines missed: this reader was too slow)");
        } else if json_out {
            println!("{payload}");
        } else if let Ok(line) = serde_json::from_str::<api::AccessLine>(payload) {
            print!("{}", super::print::access_line(&line));
        }
        true
    })
    .await?;
    Ok(String::new())
}
