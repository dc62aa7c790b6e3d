//! `sluice run`: build everything from the config, serve until SIGTERM or
//! SIGINT, re-read the config on SIGHUP.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sluice_config::{Config, ConfigError};
use sluice_proxy::{ListenerOptions, RoutingHandle, TableError};
use sluice_store::{Engine, Store, StoreError};
use tokio::net::TcpListener;
use tracing::{error, info};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("routing table: {0}")]
    Table(#[from] TableError),
    #[error(transparent)]
    Store(#[from] StoreError),
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

/// How `sluice run` starts.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Re-read on SIGHUP.
    pub config_path: Option<PathBuf>,
    /// Take the config's routing state over the stored one.
    pub reset_state: bool,
}

/// `sluice run --config FILE [--reset-state]`.
pub fn run(config_path: &Path, reset_state: bool) -> Result<(), AppError> {
    let config = Config::load(config_path)?;
    let options = RunOptions {
        config_path: Some(config_path.to_owned()),
        reset_state,
    };
    runtime(config.proxy.workers)?.block_on(serve_config(config, options))
}

/// Opens the store and brings its schema to this binary's version: applied
/// automatically when `store.auto_migrate` (default for SQLite), else
/// checked, refusing a schema that is behind or newer.
pub async fn open_store(config: &Config) -> Result<Store, AppError> {
    let store = Store::connect(&config.store.url).await?;
    let auto = config.store.auto_migrate.unwrap_or(store.engine() == Engine::Sqlite);
    if auto {
        let applied = store.migrate_up().await?;
        if !applied.is_empty() {
            info!(?applied, "store migrations applied");
        }
    }
    store.check_schema().await?;
    Ok(store)
}

/// Serves the proxy described by `config` until a shutdown signal, then
/// drains.
pub async fn serve_config(config: Config, options: RunOptions) -> Result<(), AppError> {
    let store = open_store(&config).await?;
    let routing = crate::state::open_routing(&config, &store, options.reset_state).await?;
    let proxy = sluice_proxy::proxy_for(&config, Arc::clone(&routing));
    let listener = TcpListener::bind(config.proxy.listen)
        .await
        .map_err(|source| AppError::Bind {
            addr: config.proxy.listen,
            source,
        })?;
    // The bound address, not the configured one: port 0 picks a free port.
    let bound = listener.local_addr().unwrap_or(config.proxy.listen);
    info!(listen = %bound, generation = routing.snapshot().generation(), "sluice proxy listening");
    if let Some(path) = options.config_path {
        tokio::spawn(reload_on_sighup(path, Arc::clone(&routing)));
    }
    let drained = sluice_proxy::serve(listener, proxy, ListenerOptions::from(&config.proxy), shutdown_signal()).await;
    store.close().await;
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
            match reload(&path, &routing).await {
                Ok(generation) => info!(path = %path.display(), generation, "config reloaded"),
                Err(e) => {
                    error!(path = %path.display(), error = %one_line(&e), "config reload failed; keeping the running config")
                }
            }
        }
    }
}

/// Re-reads the config file and swaps in its routing table.
pub async fn reload(path: &Path, routing: &RoutingHandle) -> Result<u64, AppError> {
    let config = Config::load(path)?;
    let (specs, policy) = sluice_proxy::routing_from_config(&config);
    let table = routing
        .replace(specs, policy, crate::state::CONFIG_ACTOR, "config.reload")
        .await?;
    Ok(table.generation())
}

/// Multi-problem errors on one log line, so log pipelines keep them whole.
fn one_line(e: &AppError) -> String {
    e.to_string().replace(":\n  - ", ": ").replace("\n  - ", "; ")
}
