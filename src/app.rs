//! `sluice run`: build everything from the config, serve until SIGTERM or
//! SIGINT, re-read the config on SIGHUP.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sluice_config::{Config, ConfigError};
use sluice_proxy::{ListenerOptions, RoutingHandle, TableError};
use tokio::net::TcpListener;
use tracing::{error, info};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("routing table: {0}")]
    Table(#[from] TableError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("{0}")]
    Other(String),
}

/// A multi-threaded runtime with `workers` threads (default: one per core).
pub fn runtime(workers: Option<usize>) -> Result<tokio::runtime::Runtime, AppError> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        builder.worker_threads(n);
    }
    builder.enable_all().build().map_err(AppError::Runtime)
}

/// `sluice run --config FILE`.
pub fn run(config_path: &Path) -> Result<(), AppError> {
    let config = Config::load(config_path)?;
    runtime(config.proxy.workers)?.block_on(serve_config(config, Some(config_path.to_owned())))
}

/// Serves the proxy described by `config` until a shutdown signal, then
/// drains. With `config_path`, SIGHUP re-reads that file.
pub async fn serve_config(config: Config, config_path: Option<PathBuf>) -> Result<(), AppError> {
    let (routing, proxy) = sluice_proxy::build(&config)?;
    let listener = TcpListener::bind(config.proxy.listen)
        .await
        .map_err(|source| AppError::Bind {
            addr: config.proxy.listen,
            source,
        })?;
    // The bound address, not the configured one: port 0 picks a free port.
    let bound = listener.local_addr().unwrap_or(config.proxy.listen);
    info!(listen = %bound, generation = routing.snapshot().generation(), "sluice proxy listening");
    if let Some(path) = config_path {
        tokio::spawn(reload_on_sighup(path, Arc::clone(&routing)));
    }
    let drained = sluice_proxy::serve(listener, proxy, ListenerOptions::from(&config.proxy), shutdown_signal()).await;
    if drained {
        Ok(())
    } else {
        Err(AppError::Other(
            "drain timeout passed with requests still in flight".into(),
        ))
    }
}

/// Resolves on the first SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => info!("SIGTERM received"),
                    _ = int.recv() => info!("SIGINT received"),
                }
            }
            _ => {
                error!("cannot install signal handlers; stopping only on Ctrl-C");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// On SIGHUP, re-reads the file; an invalid file keeps the running table.
async fn reload_on_sighup(path: PathBuf, routing: Arc<RoutingHandle>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            error!("cannot listen for SIGHUP; config reload on signal is off");
            return;
        };
        while hup.recv().await.is_some() {
            match reload(&path, &routing) {
                Ok(generation) => info!(path = %path.display(), generation, "config reloaded"),
                Err(e) => {
                    error!(path = %path.display(), error = %one_line(&e), "config reload failed; keeping the running config")
                }
            }
        }
    }
}

/// Re-reads the config file and swaps in its routing table.
pub fn reload(path: &Path, routing: &RoutingHandle) -> Result<u64, AppError> {
    let config = Config::load(path)?;
    let (specs, policy) = sluice_proxy::routing_from_config(&config);
    Ok(routing.replace(specs, policy)?.generation())
}

/// Multi-problem errors on one log line, so log pipelines keep them whole.
fn one_line(e: &AppError) -> String {
    e.to_string().replace(":\n  - ", ": ").replace("\n  - ", "; ")
}
