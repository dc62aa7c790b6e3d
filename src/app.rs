//! `sluice run`: build everything from the config, serve until SIGTERM or
//! SIGINT, re-read the config on SIGHUP.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sluice_admin_api::{AdminState, Metrics, TokenSet};
use sluice_config::Config;
use sluice_control::alerts::Alerter;
use sluice_proxy::ListenerOptions;
use sluice_store::{Engine, Store};
use std::sync::atomic::AtomicBool;
use tracing::{error, info};

use crate::error::{AppError, bind};
use crate::leader::{lead, load_fences, replica_name, resume_rollout};
use crate::sinks::{GuardMetrics, HealthAudit};

/// A multi-threaded runtime with `workers` threads (default: one per
/// core); for one worker, tokio's single-threaded scheduler, run by the
/// thread that starts it: one event loop, as nginx's and HAProxy's
/// workers are, without the work-stealing scheduler's cross-thread
/// bookkeeping (1.6% fewer instructions on HTTP/1.1, none measurable on
/// unary gRPC; per CPU-second within the noise: docs/performance.md).
pub fn runtime(workers: Option<usize>) -> Result<tokio::runtime::Runtime, AppError> {
    if workers == Some(1) {
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(AppError::Runtime);
    }
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
    /// Take the listening sockets over from a running sluice.
    pub upgrade: bool,
    /// The Unix socket for upgrades (default: derived from the proxy port).
    pub upgrade_socket: Option<PathBuf>,
}

/// `sluice run --config FILE [--reset-state] [--upgrade]`.
pub fn run(config_path: &Path, mut options: RunOptions) -> Result<(), AppError> {
    let (config, _) = Config::load_with_env(config_path, &Config::process_env())?;
    options.config_path = Some(config_path.to_owned());
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
    let environment = std::env::var("DEPLOYMENT_ENV").ok().filter(|v| !v.is_empty());
    let routing = crate::state::open_routing(&config, &store, options.reset_state, environment.clone()).await?;
    // Replicas on one PostgreSQL store serve each other's routing changes.
    crate::state::follow(
        store.clone(),
        Arc::clone(&routing),
        sluice_routing::routing_from_config(&config)?.0,
    );
    let (outlier_tx, outlier_rx) = tokio::sync::mpsc::channel(256);
    let mut proxy = sluice_proxy::proxy_for(&config, Arc::clone(&routing));
    if config.outlier.enabled {
        proxy = proxy.with_outlier_reports(outlier_tx, config.outlier.consecutive_failures);
    }
    let proxy = Arc::new(proxy);
    crate::access_log::start(&proxy);
    let log_tap = Arc::new(sluice_routing::tap::LogTap::default());
    proxy.access_log().set_tap(Arc::clone(&log_tap));
    let metrics = Arc::new(Metrics::new());
    let tokens = Arc::new(TokenSet::load(&config.admin.tokens)?);
    let health_ready = Arc::new(AtomicBool::new(false));
    let alerter = Alerter::start(config.alerts.webhooks.clone(), environment.clone());
    let recorder = crate::rollouts::Recorder::start(
        store.clone(),
        alerter.clone(),
        crate::rollouts::RecorderSettings {
            environment: environment.clone(),
            rollouts_url: format!("http://{}/api/v1/rollouts", config.admin.listen),
        },
    );
    load_fences(&store, &routing).await;
    let peers = Arc::new(sluice_control::cluster::PeerWindows::default());
    if store.engine() == Engine::Postgres {
        tokio::spawn(crate::state::share_windows(
            store.clone(),
            Arc::clone(&routing),
            Arc::clone(&peers),
            config.rollback.window,
        ));
    }
    let rollouts = Arc::new(
        sluice_control::rollout::Engine::new(Arc::clone(&routing), Arc::new(recorder)).with_peers(Arc::clone(&peers)),
    );
    let defaults = rollout_defaults(&config)?;
    // One process owns a SQLite store; replicas on PostgreSQL elect one
    // leader for the rollout controller and the rollback guard.
    let leading = Arc::new(AtomicBool::new(store.engine() == Engine::Sqlite));
    let replica = Arc::new(sluice_admin_api::ReplicaView::default());
    let admin_state = AdminState {
        leading: Arc::clone(&leading),
        replica: Arc::clone(&replica),
        routing: Arc::clone(&routing),
        store: store.clone(),
        tokens: Arc::clone(&tokens),
        metrics: Arc::clone(&metrics),
        environment: environment.clone(),
        drain_timeout: config.proxy.drain_timeout,
        metrics_require_token: config.admin.metrics_require_token,
        window: config.rollback.window,
        max_error_ratio: config.rollback.max_error_ratio,
        max_p95: config.rollback.max_p95,
        health_ready: Arc::clone(&health_ready),
        rollouts,
        rollout_defaults: defaults,
        started: tokio::time::Instant::now(),
        log_tap,
    };
    let leading_for_loop = Arc::clone(&leading);
    tokio::spawn(sluice_control::guard::run_while_leading(
        Arc::clone(&routing),
        config.rollback.clone(),
        alerter.clone(),
        Arc::new(GuardMetrics(Arc::clone(&metrics))),
        leading,
        peers,
    ));
    let health_configs = config
        .pools
        .iter()
        .map(|p| (p.name.clone(), p.health.clone()))
        .collect();
    let sink = Arc::new(HealthAudit {
        store: store.clone(),
        alerter: alerter.clone(),
        environment: environment.clone(),
    });
    tokio::spawn(sluice_control::health::run(
        Arc::clone(&routing),
        health_configs,
        config.health.clone(),
        sink.clone(),
        Arc::clone(&health_ready),
    ));
    tokio::spawn(sluice_control::discovery::run(
        Arc::clone(&routing),
        config.discovery.clone(),
        Arc::new(crate::sinks::DiscoveryAudit {
            store: store.clone(),
            alerter: alerter.clone(),
            environment: environment.clone(),
            metrics: Arc::clone(&metrics),
        }),
    ));
    tokio::spawn(crate::sweep::run(Arc::clone(&routing), proxy.upstreams().clone()));
    tokio::spawn(sluice_control::outlier::run(
        Arc::clone(&routing),
        config.outlier.clone(),
        outlier_rx,
        sink,
    ));
    // Taking over from a running sluice: its sockets, not new ones.
    let upgrade_path = |port: u16| {
        options
            .upgrade_socket
            .clone()
            .unwrap_or_else(|| crate::upgrade::default_socket(port))
    };
    let mut inherited = if options.upgrade {
        let path = upgrade_path(config.proxy.listen.port());
        let (sockets, old) = crate::upgrade::take_over(&path)?;
        info!(path = %path.display(), sockets = sockets.len(), "took the listening sockets over");
        Some((sockets, old, path))
    } else {
        None
    };
    let mut take = |name: &str| inherited.as_mut().and_then(|(sockets, _, _)| sockets.remove(name));
    let admin_listener = match take("admin") {
        Some(l) => crate::upgrade::adopt(l)?,
        None => bind(config.admin.listen).await?,
    };
    let listener = match take("proxy") {
        Some(l) => crate::upgrade::adopt(l)?,
        None => bind(config.proxy.listen).await?,
    };
    let inherited_tls = take("tls");
    let tls = match &config.proxy.tls {
        Some(tls) => Some(crate::tls::start(tls, &store, environment.clone(), inherited_tls).await?),
        None => None,
    };
    // Copies of the listening sockets, to hand to a future upgrade.
    let mut handoff = Vec::new();
    for (name, fd) in [
        ("proxy", listener.as_fd().try_clone_to_owned()),
        ("admin", admin_listener.as_fd().try_clone_to_owned()),
    ] {
        handoff.push((
            name,
            fd.map_err(|e| AppError::Other(format!("cannot duplicate a socket: {e}")))?,
        ));
    }
    if let Some(t) = &tls {
        let fd = t.listener.as_fd().try_clone_to_owned();
        handoff.push((
            "tls",
            fd.map_err(|e| AppError::Other(format!("cannot duplicate a socket: {e}")))?,
        ));
    }
    // Bound addresses, not the configured ones: port 0 picks a free port.
    let admin_bound = admin_listener.local_addr().unwrap_or(config.admin.listen);
    let bound = listener.local_addr().unwrap_or(config.proxy.listen);
    replica.set_name(replica_name(admin_bound));
    if store.engine() == Engine::Sqlite {
        replica.set_leader(Some(replica.name().to_owned()));
        resume_rollout(&store, &admin_state.rollouts, &admin_state.rollout_defaults).await;
    } else {
        tokio::spawn(lead(
            store.clone(),
            Arc::clone(&admin_state.rollouts),
            admin_state.rollout_defaults.clone(),
            Arc::clone(&leading_for_loop),
            Arc::clone(&replica),
        ));
    }
    let handoff: crate::upgrade::Handoff = Arc::new(std::sync::Mutex::new(handoff));
    let (moves_tx, moves_rx) = tokio::sync::mpsc::unbounded_channel();
    let _config_watcher = options.config_path.and_then(|path| {
        crate::reload::Reloader {
            path,
            routing: Arc::clone(&routing),
            proxy: Arc::clone(&proxy),
            metrics: Arc::clone(&metrics),
            store: store.clone(),
            baseline: config.clone(),
            listener: Some(crate::reload::ListenerMove {
                moves: moves_tx,
                handoff: Arc::clone(&handoff),
            }),
        }
        .spawn()
    });
    info!(listen = %admin_bound, tokens = config.admin.tokens.len(), "sluice admin API listening");
    info!(listen = %bound, generation = routing.snapshot().generation(), "sluice proxy listening");
    // The admin API stops with the process; its event streams never end
    // by themselves, so it is not part of the drain.
    tokio::spawn(sluice_admin_api::serve(
        admin_listener,
        admin_state,
        std::future::pending(),
    ));
    let _token_watcher = sluice_admin_api::watch_token_files(Arc::clone(&tokens), store.clone(), environment)
        .map_err(|e| AppError::Other(format!("cannot watch the admin token files: {e}")))?;
    // One signal, or a completed upgrade, stops every listener.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let path = upgrade_path(bound.port());
    if let Some((_, old, old_path)) = inherited.take() {
        crate::upgrade::ready(old);
        crate::upgrade::replace_socket(&old_path);
    }
    crate::upgrade::serve(path, handoff, stop_tx.clone());
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let opts = ListenerOptions::from(&config.proxy);
    let logged = Arc::clone(&proxy);
    let plain = sluice_proxy::serve_moving(
        listener,
        None,
        Arc::clone(&proxy),
        opts,
        stopped(stop_rx.clone()),
        Some(moves_rx),
    );
    let secure = async {
        match tls {
            Some(t) => sluice_proxy::serve_with(t.listener, Some(t.acceptor), proxy, opts, stopped(stop_rx)).await,
            None => true,
        }
    };
    let (plain_drained, tls_drained) = tokio::join!(plain, secure);
    let drained = plain_drained && tls_drained;
    crate::access_log::close(logged).await;
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
/// Continues the rollout a previous process left unfinished: at its stored
/// step (the stored weights are already being served), or from the start
/// when it was still in its pre-checks. The old record is closed as
/// `resumed`; the continuation is a new record.
/// Rollout defaults: `[rollback]` for analysis, the story's
/// `CANARY_PERCENTAGE` (5) and `CANARY_DURATION` (5m) for the first step.
fn rollout_defaults(config: &Config) -> Result<sluice_control::rollout::RolloutDefaults, AppError> {
    let bad = |name: &str, v: &str| AppError::Other(format!("{name}={v:?} is not valid"));
    let canary_percentage = match std::env::var("CANARY_PERCENTAGE") {
        Ok(v) => v
            .trim()
            .parse::<sluice_config::Weight>()
            .ok()
            .filter(|p| !p.is_zero())
            .ok_or_else(|| bad("CANARY_PERCENTAGE", &v))?,
        Err(_) => sluice_config::Weight::percent(5).unwrap_or(sluice_config::Weight::FULL),
    };
    let canary_duration = match std::env::var("CANARY_DURATION") {
        Ok(v) => humantime::parse_duration(v.trim()).map_err(|_| bad("CANARY_DURATION", &v))?,
        Err(_) => std::time::Duration::from_secs(300),
    };
    Ok(sluice_control::rollout::RolloutDefaults {
        analysis: config.rollback.clone(),
        canary_percentage,
        canary_duration,
    })
}

#[cfg(test)]
mod tests {
    use tokio::runtime::RuntimeFlavor;

    #[test]
    fn one_worker_is_one_event_loop_and_more_share_the_work() {
        let one = super::runtime(Some(1)).unwrap();
        assert_eq!(one.handle().runtime_flavor(), RuntimeFlavor::CurrentThread);
        let two = super::runtime(Some(2)).unwrap();
        assert_eq!(two.handle().runtime_flavor(), RuntimeFlavor::MultiThread);
        assert_eq!(two.metrics().num_workers(), 2);
    }
}
