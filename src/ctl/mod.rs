//! `sluice ctl`: the admin API from the command line. Every command is one
//! or two API calls; errors print the server's message and exit non-zero.

use std::fmt::Write as _;

use http::Method;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use sluice_api as api;

use crate::app;
use crate::error::AppError;

mod args;
mod body;
mod client;
mod print;
mod watch;

pub use args::{CtlArgs, CtlCommand, Output, RolloutCommand};
use body::{StartFlags, parse_weights, rollout_body};
use client::{Api, encode, token};

/// Runs one command; returns what to print.
pub fn run(args: CtlArgs) -> Result<String, AppError> {
    let api = Api {
        base: args.admin.clone(),
        token: token(&args)?,
        client: Client::builder(TokioExecutor::new()).build_http(),
    };
    app::runtime(Some(1))?.block_on(execute(&api, &args))
}

async fn execute(api: &Api, args: &CtlArgs) -> Result<String, AppError> {
    let json_out = args.output == Output::Json;
    let value = match &args.command {
        CtlCommand::Status => api.call(Method::GET, "/api/v1/status", None).await?,
        CtlCommand::Pools => api.call(Method::GET, "/api/v1/pools", None).await?,
        CtlCommand::Weights { weights, force } => {
            let body = to_body(&api::WeightsRequest {
                weights: parse_weights(weights)?,
                force: *force,
            })?;
            api.call(Method::PUT, "/api/v1/weights", Some(body)).await?
        }
        CtlCommand::Deploy {
            pool,
            version,
            backends,
            force,
        } => {
            let body = to_body(&api::PoolUpdate {
                version: Some(version.clone()),
                backends: Some(backends.clone()),
                matches: None,
                force: *force,
            })?;
            api.call(Method::PUT, &format!("/api/v1/pools/{pool}"), Some(body))
                .await?
        }
        CtlCommand::Rollback => api.call(Method::POST, "/api/v1/rollback", None).await?,
        CtlCommand::History => api.call(Method::GET, "/api/v1/history", None).await?,
        CtlCommand::Audit {
            since,
            actor,
            action,
            limit,
        } => {
            let mut query = format!("?limit={limit}");
            for (k, v) in [("since", since), ("actor", actor), ("action", action)] {
                if let Some(v) = v {
                    let _ = write!(query, "&{k}={}", encode(v));
                }
            }
            api.call(Method::GET, &format!("/api/v1/audit{query}"), None).await?
        }
        CtlCommand::Rollout(r) => {
            let base = "/api/v1/rollouts";
            match r {
                RolloutCommand::Start {
                    from,
                    to,
                    strategy,
                    steps,
                    smoke,
                    dry_run,
                    rollback,
                    spec,
                } => {
                    let body = rollout_body(StartFlags {
                        from,
                        to,
                        strategy,
                        steps: steps.as_deref(),
                        smoke,
                        dry_run: *dry_run,
                        rollback: rollback.as_deref(),
                        spec: spec.as_deref(),
                    })?;
                    api.call(Method::POST, base, Some(body)).await?
                }
                RolloutCommand::Status => api.call(Method::GET, &format!("{base}/current"), None).await?,
                RolloutCommand::List => api.call(Method::GET, base, None).await?,
                RolloutCommand::Pause => api.call(Method::POST, &format!("{base}/current/pause"), None).await?,
                RolloutCommand::Resume => api.call(Method::POST, &format!("{base}/current/resume"), None).await?,
                RolloutCommand::Promote { full } => {
                    api.call(Method::POST, &format!("{base}/current/promote?full={full}"), None)
                        .await?
                }
                RolloutCommand::Abort => api.call(Method::POST, &format!("{base}/current/abort"), None).await?,
            }
        }
        CtlCommand::Watch { count } => return watch::watch(api, *count, json_out).await,
        CtlCommand::Logs { follow, pool, status } => {
            let mut query = String::new();
            for (k, v) in [("pool", pool), ("status", status)] {
                if let Some(v) = v {
                    let _ = write!(query, "{}{k}={}", if query.is_empty() { "?" } else { "&" }, encode(v));
                }
            }
            if *follow {
                return watch::follow_logs(api, &format!("/api/v1/logs/stream{query}"), json_out).await;
            }
            api.call(Method::GET, &format!("/api/v1/logs{query}"), None).await?
        }
    };
    if json_out {
        return Ok(format!("{value:#}\n"));
    }
    Ok(match &args.command {
        CtlCommand::Status => {
            let s: api::Status = typed(value)?;
            format!(
                "{}{}",
                print::replica_line(&s),
                print::pools_table(s.generation, &s.pools)
            )
        }
        CtlCommand::Pools | CtlCommand::Weights { .. } | CtlCommand::Deploy { .. } => {
            let r: api::Routing = typed(value)?;
            print::pools_table(r.generation, &r.pools)
        }
        CtlCommand::Rollback => {
            let r: api::Routing = typed(value)?;
            format!("rolled back\n{}", print::pools_table(r.generation, &r.pools))
        }
        CtlCommand::History => print::history_table(&typed(value)?),
        CtlCommand::Audit { .. } => print::audit_table(&typed(value)?),
        CtlCommand::Rollout(RolloutCommand::List) => print::rollouts_table(&typed(value)?),
        CtlCommand::Rollout(_) => print::rollout_line(&typed(value)?),
        CtlCommand::Watch { .. } => String::new(),
        CtlCommand::Logs { .. } => {
            let lines: api::AccessLines = typed(value)?;
            lines.lines.iter().map(print::access_line).collect()
        }
    })
}

/// A request body as JSON.
fn to_body<T: serde::Serialize>(body: &T) -> Result<Value, AppError> {
    serde_json::to_value(body).map_err(|e| AppError::Other(format!("cannot encode the request: {e}")))
}

/// The answer as the API's type for it.
fn typed<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, AppError> {
    serde_json::from_value(value).map_err(|e| AppError::Other(format!("unexpected answer from the admin API: {e}")))
}
