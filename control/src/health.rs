//! Active health checks: one prober task per backend, started and stopped
//! as backends come and go. A prober sends the pool's HTTP probe every
//! interval, counts consecutive passes and failures ([`Thresholds`]), and on
//! a change of verdict sets the backend's flag and rebuilds the routing
//! snapshot (so requests never look health up themselves).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use rand::Rng;
use sluice_config::{HealthConfig, HealthMode, UpstreamProtocol};
use sluice_routing::RoutingHandle;
use sluice_routing::table::Backend;
use sluice_transport::UpstreamTls;

use crate::{direct, grpc};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// Rise/fall counting: a pure state machine, separate from any I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    healthy: bool,
    passes: u32,
    failures: u32,
    rise: u32,
    fall: u32,
}

impl Thresholds {
    /// A backend presumed `healthy`; `rise` passes in a row make an
    /// unhealthy one healthy, `fall` failures in a row the reverse.
    pub fn new(healthy: bool, rise: u32, fall: u32) -> Self {
        Self {
            healthy,
            passes: 0,
            failures: 0,
            rise: rise.max(1),
            fall: fall.max(1),
        }
    }

    /// Records one probe; returns the new verdict when it changed.
    pub fn record(&mut self, passed: bool) -> Option<bool> {
        if passed {
            self.passes += 1;
            self.failures = 0;
            if !self.healthy && self.passes >= self.rise {
                self.healthy = true;
                return Some(true);
            }
        } else {
            self.failures += 1;
            self.passes = 0;
            if self.healthy && self.failures >= self.fall {
                self.healthy = false;
                return Some(false);
            }
        }
        None
    }
}

/// Told about every change of a backend's health (audit, alerts).
pub trait HealthSink: Send + Sync {
    fn changed(&self, pool: &str, backend: &str, healthy: bool, detail: &str);
}

/// Probes one backend once, in the pool's protocol: `Ok(())` when it
/// answers an expected status (or SERVING, in gRPC mode) within the
/// timeout, else why not.
pub async fn probe(
    addr: &str,
    tls: Option<&UpstreamTls>,
    protocol: UpstreamProtocol,
    cfg: &HealthConfig,
) -> Result<(), String> {
    tokio::time::timeout(cfg.timeout, exchange(addr, tls, protocol, cfg))
        .await
        .map_err(|_| format!("no answer within {:?}", cfg.timeout))?
}

async fn exchange(
    addr: &str,
    tls: Option<&UpstreamTls>,
    protocol: UpstreamProtocol,
    cfg: &HealthConfig,
) -> Result<(), String> {
    let host = cfg.host.as_deref().unwrap_or(addr);
    if cfg.mode == HealthMode::Grpc {
        let call = grpc::Call {
            method: grpc::HEALTH_CHECK,
            message: grpc::health_request(&cfg.grpc_service),
            user_agent: "sluice-health-check",
        };
        let answer = grpc::unary(addr, tls, host, &call).await?;
        return answer.serving();
    }
    let method = Method::from_bytes(cfg.method.as_bytes()).unwrap_or(Method::GET);
    let mut req = Request::builder()
        .method(method)
        .uri(direct::target(protocol, tls.is_some(), host, &cfg.path)?)
        .header(http::header::USER_AGENT, "sluice-health-check");
    if protocol == UpstreamProtocol::Http1 {
        req = req.header(http::header::HOST, host);
    }
    let req = req
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("probe request: {e}"))?;
    let res = direct::send(addr, tls, protocol, req).await?;
    // Only the status matters; the body is never read (a probe must not
    // buffer whatever the endpoint sends), and the connection goes with it.
    let (lo, hi) = cfg.expected_status;
    let status = res.status().as_u16();
    if (lo..=hi).contains(&status) {
        Ok(())
    } else {
        Err(format!("status {status}"))
    }
}

/// Runs the health checker until the routing handle goes away. `ready` is
/// set once every backend present at start has been probed once.
pub async fn run(
    routing: Arc<RoutingHandle>,
    configs: HashMap<String, HealthConfig>,
    default: HealthConfig,
    sink: Arc<dyn HealthSink>,
    ready: Arc<AtomicBool>,
) {
    let mut probers: HashMap<(String, String), (Arc<Backend>, JoinHandle<()>)> = HashMap::new();
    let mut changes = routing.subscribe();
    let initial = routing.snapshot();
    let mut first_round = Vec::new();
    loop {
        let table = routing.snapshot();
        let mut present = Vec::new();
        for pool in table.pools() {
            let cfg = configs.get(&*pool.name).cloned().unwrap_or_else(|| default.clone());
            for backend in &pool.backends {
                let key = (pool.name.to_string(), backend.addr().to_owned());
                present.push(key.clone());
                let stale = probers.get(&key).is_some_and(|(b, _)| !Arc::ptr_eq(b, backend));
                if stale && let Some((_, task)) = probers.remove(&key) {
                    task.abort();
                }
                if probers.contains_key(&key) {
                    continue;
                }
                let at_start = initial
                    .pool(&pool.name)
                    .is_some_and(|p| p.backends.iter().any(|b| Arc::ptr_eq(b, backend)));
                let (done_tx, done_rx) = tokio::sync::oneshot::channel();
                if at_start {
                    first_round.push(done_rx);
                }
                let task = tokio::spawn(prober(
                    Arc::clone(&routing),
                    pool.name.to_string(),
                    Arc::clone(backend),
                    cfg.clone(),
                    Arc::clone(&sink),
                    done_tx,
                ));
                probers.insert(key, (Arc::clone(backend), task));
            }
        }
        probers.retain(|key, (_, task)| {
            let keep = present.contains(key);
            if !keep {
                task.abort();
            }
            keep
        });
        if !first_round.is_empty() {
            let waiting = std::mem::take(&mut first_round);
            let ready = Arc::clone(&ready);
            tokio::spawn(async move {
                for done in waiting {
                    let _ = done.await;
                }
                ready.store(true, Ordering::Release);
                info!("first health-check round done");
            });
        } else if probers.is_empty() {
            ready.store(true, Ordering::Release);
        }
        // Reconcile again when routing changes (new or removed backends).
        match changes.recv().await {
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

async fn prober(
    routing: Arc<RoutingHandle>,
    pool: String,
    backend: Arc<Backend>,
    cfg: HealthConfig,
    sink: Arc<dyn HealthSink>,
    first_done: tokio::sync::oneshot::Sender<()>,
) {
    let presumed = backend.is_healthy();
    // A backend still waiting for its first pass needs only one.
    let rise = if presumed { cfg.healthy_threshold } else { 1 };
    let mut thresholds = Thresholds::new(presumed, rise, cfg.unhealthy_threshold);
    let mut first_done = Some(first_done);
    // Every backend is probed at once; a random offset of up to a tenth of
    // the interval after that keeps the probes of many backends apart.
    let jitter_ms = rand::rng().random_range(0..=u64::try_from(cfg.interval.as_millis() / 10).unwrap_or(0));
    let mut pause = cfg.interval + Duration::from_millis(jitter_ms);
    loop {
        // The pool's TLS as of now: a reload may have changed it.
        let (tls, protocol) = routing
            .snapshot()
            .pool(&pool)
            .map_or((None, UpstreamProtocol::Http1), |p| (p.tls.clone(), p.protocol));
        // A discovered backend's certificate is checked against the name
        // it was found under, as requests do.
        let tls = match (tls, backend.discovered_as()) {
            (Some(t), Some(host)) => t.named(host).ok().map(Arc::new),
            (t, _) => t,
        };
        let result = probe(backend.addr(), tls.as_deref(), protocol, &cfg).await;
        if let Err(why) = &result {
            debug!(%pool, backend = backend.addr(), %why, "probe failed");
        }
        if let Some(healthy) = thresholds.record(result.is_ok()) {
            if healthy {
                // A backend past its first probe needs the usual rise next time.
                thresholds = Thresholds::new(true, cfg.healthy_threshold, cfg.unhealthy_threshold);
                // It was down and has recovered: an outlier ejection from
                // while it was failing no longer applies.
                backend.set_ejected(false);
                backend.record_exchange(false);
            }
            backend.set_healthy(healthy);
            let detail = match &result {
                Ok(()) => format!("{pool} backend {} is up", backend.addr()),
                Err(why) => format!("{pool} backend {} is down: {why}", backend.addr()),
            };
            if healthy {
                info!(%pool, backend = backend.addr(), "backend up");
            } else {
                warn!(%pool, backend = backend.addr(), %detail, "backend down");
            }
            let table = routing.refresh_health(&detail).await;
            sink.changed(&pool, backend.addr(), healthy, &detail);
            if let Some(p) = table.pool(&pool)
                && !p.weight.is_zero()
                && p.routable.is_empty()
            {
                sink.changed(
                    &pool,
                    "*",
                    false,
                    &format!("pool {pool} has no healthy backend; its share goes to the other pools"),
                );
            }
        }
        if let Some(done) = first_done.take() {
            let _ = done.send(());
        }
        tokio::time::sleep(pause).await;
        pause = cfg.interval;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rise_and_fall_need_consecutive_results() {
        let mut t = Thresholds::new(true, 2, 3);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(true), None, "a pass resets the failures");
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), Some(false));
        assert_eq!(t.record(false), None, "already down");
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(true), Some(true));
    }

    #[tokio::test]
    async fn probes_check_status_and_time() {
        let cfg = HealthConfig {
            timeout: Duration::from_millis(300),
            ..HealthConfig::default()
        };
        // Nothing listens there.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let err = probe(&closed.to_string(), None, UpstreamProtocol::Http1, &cfg)
            .await
            .unwrap_err();
        assert!(err.starts_with("connect"), "{err}");
        // Accepts and never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        tokio::spawn(async move {
            let _keep = silent.accept().await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let err = probe(&addr.to_string(), None, UpstreamProtocol::Http1, &cfg)
            .await
            .unwrap_err();
        assert!(err.starts_with("no answer"), "{err}");
    }
}
