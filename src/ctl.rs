//! `sluice ctl`: the admin API from the command line. Every command is one
//! or two API calls; errors print the server's message and exit non-zero.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use crate::app;
use crate::error::AppError;

#[derive(Debug, Clone, clap::Args)]
pub struct CtlArgs {
    /// Admin API base URL.
    #[arg(long, env = "SLUICE_ADMIN", default_value = "http://127.0.0.1:9901", global = true)]
    pub admin: String,
    /// File holding the bearer token (else SLUICE_TOKEN).
    #[arg(long, global = true)]
    pub token_file: Option<PathBuf>,
    /// Output: a table for people, or the API's JSON for scripts.
    #[arg(long, value_enum, default_value = "table", global = true)]
    pub output: Output,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum CtlCommand {
    /// Pools, versions, weights, backends and traffic.
    Status,
    /// The pools as the API returns them.
    Pools,
    /// Set every pool's weight: `weights blue=90 green=10`.
    Weights {
        #[arg(required = true)]
        weights: Vec<String>,
        /// Accept weight on a pool without backends.
        #[arg(long)]
        force: bool,
    },
    /// Put a new version and its backends into a pool.
    Deploy {
        pool: String,
        #[arg(long)]
        version: String,
        #[arg(long = "backend", required = true)]
        backends: Vec<String>,
        /// Replace even though the pool carries traffic.
        #[arg(long)]
        force: bool,
    },
    /// Restore the weights in force before the last weight change.
    Rollback,
    /// Deployment history (which version ran where, when).
    History,
    /// The audit trail, newest first.
    Audit {
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        actor: Option<String>,
        #[arg(long)]
        action: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Start, follow and steer rollouts.
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// Follow routing changes live.
    Watch {
        /// Stop after this many events (default: until interrupted).
        #[arg(long)]
        count: Option<usize>,
    },
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum RolloutCommand {
    /// Start a rollout from one pool to another.
    Start {
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        /// canary or blue-green.
        #[arg(long, default_value = "canary")]
        strategy: String,
        /// Steps as WEIGHT:HOLD or `pause`, e.g. `5:5m,25:5m,pause,100`.
        #[arg(long)]
        steps: Option<String>,
        /// Smoke checks as NAME=PATH, sent to every new backend.
        #[arg(long = "smoke")]
        smoke: Vec<String>,
        /// Check and run the hooks with SLUICE_DRY_RUN=1; change no weight.
        #[arg(long)]
        dry_run: bool,
        /// instant or gradual (back down through the steps).
        #[arg(long)]
        rollback: Option<String>,
        /// A JSON rollout body (hooks, analysis, …) the other flags add to.
        #[arg(long)]
        spec: Option<PathBuf>,
    },
    /// The current rollout.
    Status,
    /// Rollouts, newest first.
    List,
    Pause,
    Resume,
    /// Pass the gate or end the current hold (`--full`: straight to 100%).
    Promote {
        #[arg(long)]
        full: bool,
    },
    /// Stop and put the weights back at once.
    Abort,
}

/// The flags of `ctl rollout start`, on top of an optional `--spec` body.
struct StartFlags<'a> {
    from: &'a str,
    to: &'a str,
    strategy: &'a str,
    steps: Option<&'a str>,
    smoke: &'a [String],
    dry_run: bool,
    rollback: Option<&'a str>,
    spec: Option<&'a Path>,
}

fn rollout_body(f: StartFlags<'_>) -> Result<Value, AppError> {
    let StartFlags {
        from,
        to,
        strategy,
        steps,
        smoke,
        dry_run,
        rollback,
        spec,
    } = f;
    let mut body = match spec {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| AppError::Other(format!("--spec {}: {e}", path.display())))?;
            let value: Value = serde_json::from_str(&text)
                .map_err(|e| AppError::Other(format!("--spec {}: not JSON: {e}", path.display())))?;
            if !value.is_object() {
                return Err(AppError::Other(format!(
                    "--spec {}: must be a JSON object",
                    path.display()
                )));
            }
            value
        }
        None => json!({}),
    };
    body["from"] = json!(from);
    body["to"] = json!(to);
    if spec.is_none() || strategy != "canary" {
        body["strategy"] = json!(strategy);
    }
    if dry_run {
        body["dry_run"] = json!(true);
    }
    if let Some(mode) = rollback {
        body["rollback"] = json!(mode);
    }
    if let Some(steps) = steps {
        let parsed: Result<Vec<Value>, AppError> = steps
            .split(',')
            .map(|s| {
                let s = s.trim();
                if s == "pause" {
                    return Ok(json!({"pause": true}));
                }
                let (weight, hold) = s.split_once(':').unwrap_or((s, "0s"));
                let weight: u32 = weight
                    .parse()
                    .map_err(|_| AppError::Other(format!("step {s:?}: write WEIGHT:HOLD (e.g. 25:5m) or pause")))?;
                Ok(json!({"weight": weight, "hold": hold}))
            })
            .collect();
        body["steps"] = Value::Array(parsed?);
    }
    let checks: Result<Vec<Value>, AppError> = smoke
        .iter()
        .map(|s| {
            let (name, path) = s
                .split_once('=')
                .ok_or_else(|| AppError::Other(format!("smoke {s:?}: write NAME=PATH")))?;
            Ok(json!({"name": name, "path": path}))
        })
        .collect();
    let checks = checks?;
    if !checks.is_empty() {
        body["smoke"] = Value::Array(checks);
    }
    Ok(body)
}

struct Api {
    base: String,
    token: Option<String>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Api {
    fn request(&self, method: Method, path: &str, body: Option<Value>) -> Result<Request<Full<Bytes>>, AppError> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base.trim_end_matches('/')));
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        req.header("content-type", "application/json")
            .body(Full::new(body))
            .map_err(|e| AppError::Other(format!("bad admin URL {:?}: {e}", self.base)))
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, AppError> {
        let req = self.request(method, path, body)?;
        let res = self
            .client
            .request(req)
            .await
            .map_err(|e| AppError::Other(format!("cannot reach the admin API at {}: {e}", self.base)))?;
        let status = res.status();
        let bytes = res
            .into_body()
            .collect()
            .await
            .map_err(|e| AppError::Other(format!("admin API answer cut off: {e}")))?
            .to_bytes();
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            Ok(value)
        } else {
            let message = value["error"]["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            Err(AppError::Other(format!("{} {message}", status.as_u16())))
        }
    }
}

fn token(args: &CtlArgs) -> Result<Option<String>, AppError> {
    if let Some(path) = &args.token_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| AppError::Other(format!("cannot read token file {}: {e}", path.display())))?;
        return clean_token(&text, &format!("the token file {}", path.display()));
    }
    match std::env::var("SLUICE_TOKEN") {
        Ok(text) => clean_token(&text, "SLUICE_TOKEN"),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(AppError::Other(
            "the token in SLUICE_TOKEN is not text: a bearer token is visible ASCII".to_owned(),
        )),
    }
}

/// The token as sent: surrounding whitespace (the newline `echo` writes) is
/// not part of it; anything else that cannot go in an Authorization header
/// is refused here, naming where the token came from, never its value.
fn clean_token(text: &str, source: &str) -> Result<Option<String>, AppError> {
    let token = text.trim();
    if token.is_empty() {
        return Ok(None);
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(AppError::Other(format!(
            "the token in {source} holds a control character, a space or a non-ASCII byte: \
             a bearer token is visible ASCII"
        )));
    }
    Ok(Some(token.to_owned()))
}

/// Runs one command; returns what to print.
pub fn run(args: CtlArgs) -> Result<String, AppError> {
    let api = Api {
        base: args.admin.clone(),
        token: token(&args)?,
        client: Client::builder(TokioExecutor::new()).build_http(),
    };
    app::runtime(Some(1))?.block_on(execute(&api, &args))
}

fn parse_weights(pairs: &[String]) -> Result<Value, AppError> {
    let mut weights = serde_json::Map::new();
    for pair in pairs {
        let (pool, weight) = pair
            .split_once('=')
            .ok_or_else(|| AppError::Other(format!("{pair:?}: write weights as POOL=PERCENT, e.g. blue=90")))?;
        let weight: u32 = weight
            .parse()
            .map_err(|_| AppError::Other(format!("{pair:?}: the weight must be a whole number from 0 to 100")))?;
        weights.insert(pool.to_owned(), json!(weight));
    }
    Ok(Value::Object(weights))
}

async fn execute(api: &Api, args: &CtlArgs) -> Result<String, AppError> {
    let json_out = args.output == Output::Json;
    let value = match &args.command {
        CtlCommand::Status => api.call(Method::GET, "/api/v1/status", None).await?,
        CtlCommand::Pools => api.call(Method::GET, "/api/v1/pools", None).await?,
        CtlCommand::Weights { weights, force } => {
            let body = json!({"weights": parse_weights(weights)?, "force": force});
            api.call(Method::PUT, "/api/v1/weights", Some(body)).await?
        }
        CtlCommand::Deploy {
            pool,
            version,
            backends,
            force,
        } => {
            let body = json!({"version": version, "backends": backends, "force": force});
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
        CtlCommand::Watch { count } => return watch(api, *count, json_out).await,
    };
    if json_out {
        return Ok(format!("{value:#}\n"));
    }
    Ok(match &args.command {
        CtlCommand::Status => format!("{}{}", replica_line(&value), pools_table(&value)),
        CtlCommand::Pools | CtlCommand::Weights { .. } | CtlCommand::Deploy { .. } => pools_table(&value),
        CtlCommand::Rollback => format!("rolled back\n{}", pools_table(&value)),
        CtlCommand::History => history_table(&value),
        CtlCommand::Audit { .. } => audit_table(&value),
        CtlCommand::Rollout(RolloutCommand::List) => rollouts_table(&value),
        CtlCommand::Rollout(_) => rollout_line(&value),
        CtlCommand::Watch { .. } => String::new(),
    })
}

/// Which replica answered and which one leads the rollout controller.
fn replica_line(v: &Value) -> String {
    let this = v["replica"].as_str().unwrap_or("?");
    match (v["leader"].as_bool(), v["leader_replica"].as_str()) {
        (Some(true), _) => format!("replica {this} (leader)\n"),
        (_, Some(leader)) => format!("replica {this}; leader: {leader}\n"),
        _ => format!("replica {this}; no leader (is the store reachable?)\n"),
    }
}

/// Percent-encodes a query value (times carry `:` and `+`).
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn pools_table(v: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "generation {}", v["generation"]);
    let _ = writeln!(
        out,
        "{:<12} {:<12} {:>6} {:>8} {:>8} {:>8} {:>9}",
        "POOL", "VERSION", "WEIGHT", "HEALTHY", "REQ/S", "ERROR %", "P95 MS"
    );
    for p in v["pools"].as_array().into_iter().flatten() {
        let backends = p["backends"].as_array().map_or(&[][..], Vec::as_slice);
        let healthy = backends
            .iter()
            .filter(|b| b["healthy"] == true && b["ejected"] != true)
            .count();
        // Live-window numbers when the answer has them (status, pools).
        let w = &p["window"];
        let rate = w["rate"].as_f64().map_or("-".to_owned(), |r| format!("{r:.1}"));
        let errors = w["error_ratio"]
            .as_f64()
            .map_or("-".to_owned(), |e| format!("{:.2}", e * 100.0));
        let p95 = w["p95_ms"].as_f64().map_or("-".to_owned(), |ms| format!("{ms:.1}"));
        let _ = writeln!(
            out,
            "{:<12} {:<12} {:>5}% {:>8} {:>8} {:>8} {:>9}",
            p["name"].as_str().unwrap_or("?"),
            p["version"].as_str().unwrap_or("?"),
            p["weight"].as_u64().unwrap_or(0),
            format!("{healthy}/{}", backends.len()),
            rate,
            errors,
            p95
        );
    }
    out
}

fn history_table(v: &Value) -> String {
    let mut out = format!("{:<26} {:<12} {:<12} {:<12} RESULT\n", "STARTED", "POOL", "FROM", "TO");
    for d in v["deployments"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{:<26} {:<12} {:<12} {:<12} {}",
            d["started_at"].as_str().unwrap_or("?"),
            d["pool"].as_str().unwrap_or("?"),
            d["from_version"].as_str().unwrap_or("-"),
            d["to_version"].as_str().unwrap_or("?"),
            d["result"].as_str().unwrap_or("?"),
        );
    }
    out
}

fn rollout_line(v: &Value) -> String {
    let step = v["step"]
        .as_u64()
        .map(|s| format!(" step {s}/{}", v["steps"]))
        .unwrap_or_default();
    let mut out = format!(
        "rollout {} {} → {} ({}): {}{step}\n  {}\n",
        v["id"],
        v["from"].as_str().unwrap_or("?"),
        v["to"].as_str().unwrap_or("?"),
        v["strategy"].as_str().unwrap_or("?"),
        v["state"].as_str().unwrap_or("?"),
        v["reason"].as_str().unwrap_or(""),
    );
    if v["dry_run"] == true {
        out.push_str("plan (dry run):\n");
        for line in v["plan"].as_array().into_iter().flatten() {
            let _ = writeln!(out, "  - {}", line.as_str().unwrap_or("?"));
        }
    }
    for hook in v["hooks"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  hook {} {}: {} in {} ms",
            hook["point"].as_str().unwrap_or("?"),
            hook["name"].as_str().unwrap_or("?"),
            hook["error"].as_str().unwrap_or("ok"),
            hook["duration_ms"],
        );
    }
    out
}

fn rollouts_table(v: &Value) -> String {
    let mut out = format!("{:<5} {:<26} {:<12} {}\n", "ID", "STARTED", "STATE", "REASON");
    for r in v["rollouts"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{:<5} {:<26} {:<12} {}",
            r["id"],
            r["started_at"].as_str().unwrap_or("?"),
            r["state"].as_str().unwrap_or("?"),
            r["reason"].as_str().unwrap_or(""),
        );
    }
    out
}

fn audit_table(v: &Value) -> String {
    let mut out = format!(
        "{:<26} {:<14} {:<16} {:<28} RESULT\n",
        "AT", "ACTOR", "ACTION", "TARGET"
    );
    for e in v["entries"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{:<26} {:<14} {:<16} {:<28} {}",
            e["at"].as_str().unwrap_or("?"),
            e["actor"].as_str().unwrap_or("?"),
            e["action"].as_str().unwrap_or("?"),
            e["target"].as_str().unwrap_or("?"),
            e["result"].as_str().unwrap_or("?"),
        );
    }
    out
}

/// Prints each event as it arrives (to stdout directly: a watch has no end).
async fn watch(api: &Api, count: Option<usize>, json_out: bool) -> Result<String, AppError> {
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
            } else if let Ok(v) = serde_json::from_str::<Value>(payload) {
                let weights: Vec<String> = v["pools"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| format!("{}={}", p["name"].as_str().unwrap_or("?"), p["weight"]))
                    .collect();
                println!(
                    "[generation {}] {} {} {}",
                    v["generation"],
                    v["type"].as_str().unwrap_or("?"),
                    v["actor"].as_str().map(|a| format!("by {a}")).unwrap_or_default(),
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
