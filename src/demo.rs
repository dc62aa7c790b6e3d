//! `sluice demo`: two in-process demo backends (blue `v1`, green `v2`) behind
//! the proxy at 100/0, so a newcomer can see routing work in one command.
//!
//! Each demo backend answers JSON naming its pool and version, serves
//! `/health/ready`, and has knobs for an error rate and added latency
//! (`POST /_demo/knobs?error_rate=0.2&latency_ms=300` on the backend).

use std::convert::Infallible;
use std::net::SocketAddr;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rand::Rng;
use sluice_config::Config;
use tokio::net::TcpListener;
use tracing::debug;

use crate::app;
use crate::error::AppError;

/// Live-adjustable behaviour of a demo backend.
#[derive(Debug, Default)]
pub struct Knobs {
    /// Share of requests answered with 500, in parts per million.
    error_ppm: AtomicU32,
    latency_ms: AtomicU64,
    /// Requests received (counted on arrival), for demos and tests.
    received: AtomicU64,
    /// Connections accepted, to show that keep-alive connections are reused.
    connections: AtomicU64,
}

impl Knobs {
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    pub fn set_error_rate(&self, rate: f64) {
        self.error_ppm
            .store((rate.clamp(0.0, 1.0) * 1_000_000.0) as u32, Ordering::Relaxed);
    }

    pub fn set_latency(&self, latency: Duration) {
        self.latency_ms.store(
            u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
}

/// A running demo backend.
#[derive(Debug, Clone)]
pub struct DemoBackend {
    pub addr: SocketAddr,
    pub knobs: Arc<Knobs>,
    task: Arc<tokio::task::AbortHandle>,
}

impl DemoBackend {
    /// Stops the backend as if it died: the port closes and every open
    /// connection is dropped.
    pub fn stop(&self) {
        self.task.abort();
    }
}

/// Starts a demo backend for `pool`/`version` on `bind` (port 0 for any).
pub async fn spawn_backend(pool: &str, version: &str, bind: SocketAddr) -> std::io::Result<DemoBackend> {
    let listener = TcpListener::bind(bind).await?;
    let addr = listener.local_addr()?;
    let knobs = Arc::new(Knobs::default());
    let identity: Arc<(String, String, String)> = Arc::new((pool.to_owned(), version.to_owned(), addr.to_string()));
    let served_knobs = Arc::clone(&knobs);
    let task = tokio::spawn(async move {
        // Connections live in this set, so stopping the backend closes them too.
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            while connections.try_join_next().is_some() {}
            let _ = stream.set_nodelay(true);
            served_knobs.connections.fetch_add(1, Ordering::Relaxed);
            let knobs = Arc::clone(&served_knobs);
            let identity = Arc::clone(&identity);
            connections.spawn(async move {
                let service = service_fn(move |req| {
                    let knobs = Arc::clone(&knobs);
                    let identity = Arc::clone(&identity);
                    async move { Ok::<_, Infallible>(answer(req, &knobs, &identity).await) }
                });
                if let Err(e) = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    debug!(error = %e, "demo backend connection ended");
                }
            });
        }
    });
    Ok(DemoBackend {
        addr,
        knobs,
        task: Arc::new(task.abort_handle()),
    })
}

async fn answer(req: Request<Incoming>, knobs: &Knobs, identity: &(String, String, String)) -> Response<Full<Bytes>> {
    let (pool, version, backend) = identity;
    let path = req.uri().path().to_owned();
    if path == "/health/ready" || path == "/health/live" {
        return text(StatusCode::OK, "ok\n");
    }
    // Health probes are not traffic: only other requests are counted.
    knobs.received.fetch_add(1, Ordering::Relaxed);
    if path == "/_demo/knobs" {
        for (key, value) in req
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .filter_map(|kv| kv.split_once('='))
        {
            match (key, value.parse::<f64>()) {
                ("error_rate", Ok(v)) => knobs.set_error_rate(v),
                ("latency_ms", Ok(v)) => knobs.set_latency(Duration::from_millis(v.max(0.0) as u64)),
                _ => return text(StatusCode::BAD_REQUEST, "knobs: error_rate=0..1, latency_ms=N\n"),
            }
        }
    }
    let method = req.method().to_string();
    // What the backend saw of the request id sluice sends (x-request-id).
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // Drain the request body so keep-alive connections stay usable.
    let received = req.into_body().collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
    let latency = knobs.latency_ms.load(Ordering::Relaxed);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let fail = rand::rng().random_range(0..1_000_000) < knobs.error_ppm.load(Ordering::Relaxed);
    let status = if fail {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    let body = serde_json::json!({
        "pool": pool, "version": version, "backend": backend,
        "method": method, "path": path, "received_bytes": received, "ok": !fail,
        "request_id": request_id,
    });
    let mut res = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    res
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *res.status_mut() = status;
    res
}

/// Where the demo proxy listens and how its admin API is reached.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    /// The operator token; generated when not given.
    pub token: Option<String>,
}

/// The demo's config: blue at 100, green at 0, override header allowed, one
/// operator token read from `token_file`.
pub fn demo_config(
    options: &DemoOptions,
    blue: SocketAddr,
    green: SocketAddr,
    store: &std::path::Path,
    token_file: &std::path::Path,
) -> String {
    let (listen, admin) = (options.listen, options.admin);
    let (store, token_file) = (store.display(), token_file.display());
    format!(
        r#"# Written by `sluice demo`. Edit the weights and send SIGHUP to apply.
[proxy]
listen = "{listen}"
allow_pool_override = true

[admin]
listen = "{admin}"

# One JSON line per request on standard output.
[access_log]
enabled = true

[[admin.tokens]]
name = "demo"
role = "operator"
secret = "file:{token_file}"

[store]
url = "sqlite://{store}"

[pools.blue]
version = "v1"
weight = 100
backends = ["{blue}"]

[pools.green]
version = "v2"
weight = 0
backends = ["{green}"]
"#
    )
}

/// Writes `token` readable by this user only.
fn write_secret(path: &std::path::Path, token: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(token.as_bytes())
}

/// `sluice demo [--listen ADDR] [--admin ADDR] [--token VALUE]`.
pub fn run(options: DemoOptions) -> Result<(), AppError> {
    app::runtime(None)?.block_on(async move {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let io = |e: std::io::Error| AppError::Other(format!("cannot start a demo backend: {e}"));
        let blue = spawn_backend("blue", "v1", any).await.map_err(io)?;
        let green = spawn_backend("green", "v2", any).await.map_err(io)?;
        let dir = std::env::temp_dir();
        let pid = std::process::id();
        let token = options
            .token
            .clone()
            .unwrap_or_else(|| format!("{:032x}", rand::rng().random::<u128>()));
        let token_file = dir.join(format!("sluice-demo-{pid}.token"));
        write_secret(&token_file, &token)
            .map_err(|e| AppError::Other(format!("cannot write {}: {e}", token_file.display())))?;
        let store = dir.join(format!("sluice-demo-{pid}.db"));
        let text = demo_config(&options, blue.addr, green.addr, &store, &token_file);
        let config = Config::from_toml(&text)?;
        let path = dir.join(format!("sluice-demo-{pid}.toml"));
        std::fs::write(&path, &text).map_err(|e| AppError::Other(format!("cannot write {}: {e}", path.display())))?;
        print_banner(&options, &token, &blue, &green, &path, &store);
        // The demo backends listen on new ports every run: start from the
        // config, never from an earlier demo's stored state.
        let run = app::RunOptions {
            config_path: Some(path),
            reset_state: true,
            ..app::RunOptions::default()
        };
        app::serve_config(config, run).await
    })
}

fn print_banner(
    options: &DemoOptions,
    token: &str,
    blue: &DemoBackend,
    green: &DemoBackend,
    config: &std::path::Path,
    store: &std::path::Path,
) {
    let (listen, admin) = (options.listen, options.admin);
    println!(
        r#"
sluice demo is running.

  proxy          http://{listen}/            (blue v1 at 100%, green v2 at 0%)
  dashboard      http://{admin}/                (paste the token below)
  admin API      http://{admin}/api/v1/status   (token below)
  metrics        http://{admin}/metrics
  blue backend   http://{blue}/
  green backend  http://{green}/
  config         {config}
  store          {store} (SQLite: routing state, deployment history, audit trail)

  token          {token}

Try:
  curl -s http://{listen}/hello
  curl -s -H 'x-sluice-pool: green' http://{listen}/hello     # reach green directly
  export SLUICE_ADMIN=http://{admin} SLUICE_TOKEN={token}
  sluice ctl status                                       # (cargo run --release -- ctl status)
  sluice ctl weights blue=90 green=10
  for i in $(seq 20); do curl -s http://{listen}/ | grep -o '"pool":"[a-z]*"'; done | sort | uniq -c
  sluice ctl rollback
  sluice ctl audit
  sluice ctl watch                                        # live routing changes
  # make green fail 50% of the time, or slow:
  curl -s -X POST 'http://{green}/_demo/knobs?error_rate=0.5&latency_ms=200'

Ctrl-C drains in-flight requests and stops.
"#,
        blue = blue.addr,
        green = green.addr,
        config = config.display(),
        store = store.display(),
    );
}

/// `sluice demo-backend --name blue --version v1 --listen ADDR`: one demo
/// backend on its own, until SIGTERM or SIGINT (for compose files).
pub fn run_backend(name: &str, version: &str, listen: SocketAddr) -> Result<(), AppError> {
    app::runtime(Some(1))?.block_on(async move {
        let backend = spawn_backend(name, version, listen)
            .await
            .map_err(|e| AppError::Other(format!("cannot listen on {listen}: {e}")))?;
        println!("demo backend {name} {version} on http://{}/", backend.addr);
        app::shutdown_signal().await;
        Ok(())
    })
}

/// `sluice health [--url URL]`: exit 0 when URL answers 200 within 3 s
/// (a container HEALTHCHECK without curl in the image).
pub fn check_health(url: &str) -> Result<(), AppError> {
    app::runtime(Some(1))?.block_on(async move {
        let uri: http::Uri = url
            .parse()
            .map_err(|_| AppError::Other(format!("{url:?} is not a URL")))?;
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http::<http_body_util::Empty<bytes::Bytes>>();
        let asked = client.get(uri);
        match tokio::time::timeout(std::time::Duration::from_secs(3), asked).await {
            Ok(Ok(res)) if res.status() == http::StatusCode::OK => Ok(()),
            Ok(Ok(res)) => Err(AppError::Other(format!("{url} answered {}", res.status()))),
            Ok(Err(e)) => Err(AppError::Other(format!("{url}: {e}"))),
            Err(_) => Err(AppError::Other(format!("{url}: no answer within 3 s"))),
        }
    })
}
