//! Config hot reload: on SIGHUP, and when the file changes (watched with
//! `notify` through its directory, so a Kubernetes-style replacement by
//! rename is seen; events are debounced and a content that did not change
//! is ignored). The new file is parsed, validated and built completely
//! before anything is swapped; a bad file keeps the running config, is
//! logged on one line with its key paths, counted and audited.
//!
//! Routing follows the last intent: what the file changed since the last
//! reload (a pool's weight, version or backends) is applied, as actor
//! `config-file`; what it left as it was keeps the runtime value set
//! through the API, a rollback or a rollout.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sluice_admin_api::Metrics;
use sluice_config::Config;
use sluice_routing::{Actor, PoolSpec, RoutingAction, RoutingHandle, RoutingTable};
use sluice_store::{AuditEntry, Store};
use sluice_transport::files::{self, FileWatcher};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::error::AppError;

/// Everything a reload needs.
pub struct Reloader {
    pub path: PathBuf,
    pub routing: Arc<RoutingHandle>,
    /// Whose access log a reload turns on, off or moves.
    pub proxy: Arc<sluice_proxy::Proxy>,
    pub metrics: Arc<Metrics>,
    pub store: Store,
    /// The file as last loaded: the baseline for "what the file changed".
    pub baseline: Config,
    /// Where a changed `proxy.listen` goes (none: it needs a restart).
    pub listener: Option<ListenerMove>,
}

/// Moves the proxy listener to a new address: bound here, served by the
/// accept loop, and handed to a future binary upgrade instead of the old.
pub struct ListenerMove {
    pub moves: mpsc::UnboundedSender<tokio::net::TcpListener>,
    pub handoff: crate::upgrade::Handoff,
}

/// Settings a reload cannot change in place, for the warning that says so.
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if old.admin.listen != new.admin.listen {
        keys.push("admin.listen");
    }
    if old.proxy.tls != new.proxy.tls {
        keys.push("proxy.tls (certificate files themselves reload on change)");
    }
    if old.proxy.request_id_header != new.proxy.request_id_header {
        keys.push("proxy.request_id_header");
    }
    if old.proxy.workers != new.proxy.workers {
        keys.push("proxy.workers");
    }
    if old.store != new.store {
        keys.push("store");
    }
    if old.health != new.health || old.rollback != new.rollback || old.outlier != new.outlier {
        keys.push("health / rollback / outlier");
    }
    let (mut a, mut b) = (old.proxy.timeouts, new.proxy.timeouts);
    (a.upstream_response, b.upstream_response) = (Duration::ZERO, Duration::ZERO);
    if a != b {
        keys.push("proxy.timeouts other than upstream_response");
    }
    keys
}

/// Binds the new proxy address, with a copy of the socket for upgrades.
async fn bind_moved(addr: std::net::SocketAddr) -> Result<(tokio::net::TcpListener, std::os::fd::OwnedFd), AppError> {
    use std::os::fd::AsFd;
    let listener = crate::error::bind(addr).await?;
    let fd = listener
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| AppError::Other(format!("cannot duplicate a socket: {e}")))?;
    Ok((listener, fd))
}

/// What to do with one pool's field: the file's new value when the file
/// changed it, else the value being served.
fn intent<T: PartialEq + Clone>(old_file: Option<&T>, new_file: &T, running: Option<&T>) -> T {
    match (old_file, running) {
        (Some(old), Some(run)) if old == new_file => run.clone(),
        _ => new_file.clone(),
    }
}

/// The routing specs a reload should apply: the new file, except where it
/// left a pool's weight, version or backends as the old file had them.
pub fn merge(old_file: &Config, specs: Vec<PoolSpec>, running: &RoutingTable) -> Vec<PoolSpec> {
    let run_specs = running.specs();
    specs
        .into_iter()
        .map(|mut spec| {
            let old = old_file.pool(&spec.name);
            let run_spec = run_specs.iter().find(|s| s.name == spec.name);
            spec.weight = intent(old.map(|p| &p.weight), &spec.weight, run_spec.map(|s| &s.weight));
            spec.version = intent(old.map(|p| &p.version), &spec.version, run_spec.map(|s| &s.version));
            spec.backends = intent(old.map(|p| &p.backends), &spec.backends, run_spec.map(|s| &s.backends));
            spec.matches = intent(old.map(|p| &p.matches), &spec.matches, run_spec.map(|s| &s.matches));
            spec
        })
        .collect()
}

impl Reloader {
    /// Re-reads the file and applies it; returns the new generation.
    pub async fn reload(&mut self) -> Result<u64, AppError> {
        let (config, _) = Config::load_with_env(&self.path, &Config::process_env())?;
        let (specs, mut policy) = sluice_routing::routing_from_config(&config)?;
        let specs = merge(&self.baseline, specs, &self.routing.snapshot());
        policy.probe_new_backends = true;
        // The new socket is bound before anything changes: an address in
        // use fails the reload as a whole.
        let moved = match (&self.listener, config.proxy.listen != self.baseline.proxy.listen) {
            (Some(_), true) => Some(bind_moved(config.proxy.listen).await?),
            (None, true) => {
                warn!("proxy.listen changed; it applies after a restart");
                None
            }
            _ => None,
        };
        let table = self
            .routing
            .replace(specs, policy, &Actor::ConfigFile, RoutingAction::ConfigReload)
            .await?;
        self.proxy.access_log().configure(&config.access_log);
        self.proxy.tracing().configure(&config.tracing);
        self.proxy.limits().configure(&config.rate_limits);
        if let (Some((listener, fd)), Some(mover)) = (moved, &self.listener) {
            crate::upgrade::replace_handoff(&mover.handoff, "proxy", fd);
            info!(listen = ?listener.local_addr().ok(), "proxy listener moving to the new address");
            let _ = mover.moves.send(listener);
        }
        let later = needs_restart(&self.baseline, &config);
        if !later.is_empty() {
            warn!(settings = %later.join(", "), "changed settings apply after a restart (or `sluice run --upgrade`)");
        }
        self.baseline = config;
        Ok(table.generation())
    }

    /// Starts watching now (so no change after this call is missed) and
    /// reloads on SIGHUP and on file changes until the process ends. Keep
    /// the returned watcher alive.
    pub fn spawn(self) -> Option<FileWatcher> {
        let (tx, rx) = mpsc::unbounded_channel::<&'static str>();
        let watcher = watch(&self.path, tx.clone());
        spawn_sighup(tx);
        tokio::spawn(self.run(rx));
        watcher
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<&'static str>) {
        while let Some(trigger) = rx.recv().await {
            if trigger == "file" {
                files::settle(&mut rx).await;
                // A touch or a rewrite with the same content changes nothing.
                if let Ok((same, _)) = Config::load_with_env(&self.path, &Config::process_env())
                    && same == self.baseline
                {
                    continue;
                }
            }
            match self.reload().await {
                Ok(generation) => {
                    self.metrics.config_reload(true);
                    info!(path = %self.path.display(), generation, trigger, "config reloaded");
                }
                Err(e) => {
                    self.metrics.config_reload(false);
                    let message = one_line(&e);
                    error!(path = %self.path.display(), error = %message, trigger, "config reload failed; keeping the running config");
                    let entry = AuditEntry {
                        actor: Actor::ConfigFile.as_str().into(),
                        action: "config.reload".into(),
                        target: self.path.display().to_string(),
                        result: format!("rejected: {message}"),
                        ..Default::default()
                    };
                    if let Err(e) = self.store.append_audit(&entry).await {
                        error!(error = %e, "could not audit the failed reload");
                    }
                }
            }
        }
    }
}

/// Watches the file's directory; `None` (logged) when watching is impossible.
fn watch(path: &Path, tx: mpsc::UnboundedSender<&'static str>) -> Option<FileWatcher> {
    match files::watch(&[path.to_path_buf()], tx, "file") {
        Ok(w) => Some(w),
        Err(e) => {
            warn!(path = %path.display(), error = %e, "cannot watch the config file; reload on SIGHUP only");
            None
        }
    }
}

fn spawn_sighup(tx: mpsc::UnboundedSender<&'static str>) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            error!("cannot listen for SIGHUP; config reload on signal is off");
            return;
        };
        while hup.recv().await.is_some() {
            if tx.send("sighup").is_err() {
                return;
            }
        }
    });
}

/// Multi-problem errors on one log line, so log pipelines keep them whole.
pub fn one_line(e: &AppError) -> String {
    e.to_string().replace(":\n  - ", ": ").replace("\n  - ", "; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_routing::RoutingPolicy;

    fn config(blue: u32, green_backends: &str) -> Config {
        Config::from_toml(&format!(
            "[pools.blue]\nversion = \"v1\"\nweight = {blue}\nbackends = [\"127.0.0.1:1\"]\n\
             [pools.green]\nversion = \"v2\"\nweight = {}\nbackends = [{green_backends}]\n",
            100 - blue
        ))
        .unwrap()
    }

    fn specs_of(config: &Config) -> Vec<PoolSpec> {
        sluice_routing::routing_from_config(config).unwrap().0
    }

    fn running(blue: u32) -> RoutingTable {
        let (mut specs, _) = sluice_routing::routing_from_config(&config(100, "\"127.0.0.1:2\"")).unwrap();
        specs[0].weight = sluice_config::Weight::percent(blue).unwrap();
        specs[1].weight = specs[0].weight.rest();
        RoutingTable::build(5, &specs, RoutingPolicy::default(), None).unwrap()
    }

    #[test]
    fn weights_the_file_did_not_touch_keep_their_runtime_values() {
        // The API moved traffic to 30/70; the file only changed green's backends.
        let merged = merge(
            &config(100, "\"127.0.0.1:2\""),
            specs_of(&config(100, "\"127.0.0.1:3\"")),
            &running(30),
        );
        assert_eq!(
            (merged[0].weight.to_string(), merged[1].weight.to_string()),
            ("30".into(), "70".into())
        );
        assert_eq!(merged[1].backends, ["127.0.0.1:3"]);
    }

    #[test]
    fn weights_edited_in_the_file_win() {
        let merged = merge(
            &config(100, "\"127.0.0.1:2\""),
            specs_of(&config(80, "\"127.0.0.1:2\"")),
            &running(30),
        );
        assert_eq!(
            (merged[0].weight.to_string(), merged[1].weight.to_string()),
            ("80".into(), "20".into())
        );
    }

    #[test]
    fn settings_a_reload_cannot_apply_are_named_and_the_others_are_not() {
        let base = config(100, "\"127.0.0.1:2\"");
        let with = |text: &str| Config::from_toml(&format!("{text}\n{}", base_toml())).unwrap();
        let ids = with("[proxy]\nrequest_id_header = \"x-correlation-id\"");
        assert_eq!(needs_restart(&base, &ids), ["proxy.request_id_header"]);
        // The access log and tracing are applied by the reload itself.
        let observed = with("[access_log]\nenabled = true\n[tracing]\npropagate = false");
        assert!(needs_restart(&base, &observed).is_empty());
        assert!(needs_restart(&base, &base).is_empty());
    }

    fn base_toml() -> String {
        "[pools.blue]\nversion = \"v1\"\nweight = 100\nbackends = [\"127.0.0.1:1\"]\n\
         [pools.green]\nversion = \"v2\"\nweight = 0\nbackends = [\"127.0.0.1:2\"]\n"
            .to_owned()
    }
}
