//! `/metrics` in the Prometheus text format.
//!
//! Request-path numbers are atomics owned by the data plane (see
//! `sluice_routing::stats`); they are turned into metric families here at
//! scrape time from the current routing snapshot, so recording a request
//! never touches a label map or a lock. Control-plane counters (admin
//! requests, reloads, rollbacks) live in an ordinary `prometheus` registry.
//! Labels are bounded: pools, backends, status codes, error kinds.

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::header::CONTENT_TYPE;
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType, Quantile, Summary,
};
use prometheus::{Encoder, IntCounterVec, Opts, Registry, TextEncoder};
use sluice_routing::mirror::ShadowResult;
use sluice_routing::ratelimit::{KEY_KINDS, REFUSED};
use sluice_routing::retry::Condition;
use sluice_routing::stats::{
    ACCESS_LOG_DROPPED, CONNECTION_PANICS, LATENCY_BOUNDS, OPEN_CONNECTIONS, REFUSED_CONNECTIONS, SPANS_DROPPED,
    UpstreamErrorKind,
};
use sluice_routing::table::Cap;
use sluice_routing::{RoutingTable, grpc};

use sluice_control::guard::BreachKind;

use crate::AdminState;

/// Rollbacks asked for through the API: of all pools at once, by hand.
const MANUAL_ROLLBACK: (&str, &str) = ("all", "manual");

/// Control-plane counters.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    admin_requests: IntCounterVec,
    config_reloads: IntCounterVec,
    rollbacks: IntCounterVec,
    discovery: IntCounterVec,
    /// When each name last resolved to a non-empty set.
    discovered_at: std::sync::Mutex<std::collections::HashMap<String, tokio::time::Instant>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

// Names and labels are constants of this file, valid and registered once:
// a failure here is a programming error caught by the tests.
#[allow(clippy::expect_used)]
fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let vec = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    registry
        .register(Box::new(vec.clone()))
        .expect("metric registered once");
    vec
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let admin_requests = counter_vec(
            &registry,
            "sluice_admin_requests_total",
            "Admin API requests by response status.",
            &["code"],
        );
        let config_reloads = counter_vec(
            &registry,
            "sluice_config_reloads_total",
            "Config reloads by result (ok, error).",
            &["result"],
        );
        let rollbacks = counter_vec(
            &registry,
            "sluice_rollbacks_total",
            "Weight rollbacks by pool and reason (manual, error_ratio, latency).",
            &["pool", "reason"],
        );
        let discovery = counter_vec(
            &registry,
            "sluice_discovery_resolutions_total",
            "DNS resolutions of the names among the backends, by result (ok, empty, error).",
            &["name", "result"],
        );
        // Known label values exist from the first scrape, at 0, so
        // `rate()` and alerts see them before the first event.
        for result in ["ok", "error"] {
            config_reloads.with_label_values(&[result]);
        }
        rollbacks.with_label_values(&[MANUAL_ROLLBACK.0, MANUAL_ROLLBACK.1]);
        Self {
            registry,
            admin_requests,
            config_reloads,
            rollbacks,
            discovery,
            discovered_at: Default::default(),
        }
    }

    /// One DNS resolution of `name` (`ok`, `empty` or `error`).
    pub fn discovery_resolved(&self, name: &str, result: &str) {
        self.discovery.with_label_values(&[name, result]).inc();
        if result == "ok" {
            self.discovered_at
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(name.to_owned(), tokio::time::Instant::now());
        }
    }

    /// Per pool and name, the addresses in use; per name, the age of the
    /// last good answer (what an alert on stale discovery watches).
    fn discovery_families(&self, table: &RoutingTable) -> Vec<MetricFamily> {
        let resolved = &table.policy().resolved;
        let mut backends = Vec::new();
        for pool in table.pools() {
            for entry in pool.entries.iter().filter(|e| sluice_routing::discovered::is_name(e)) {
                // Every name from the first scrape, at 0 until it resolves.
                for result in ["ok", "empty", "error"] {
                    self.discovery.with_label_values(&[entry.as_str(), result]);
                }
                let n = resolved.get(entry).map_or(0, Vec::len);
                backends.push(gauge(&[("pool", &*pool.name), ("name", entry)], n as f64));
            }
        }
        if backends.is_empty() {
            return Vec::new();
        }
        let at = self.discovered_at.lock().unwrap_or_else(|e| e.into_inner());
        let ages = resolved
            .keys()
            .filter_map(|name| Some(gauge(&[("name", name)], at.get(name)?.elapsed().as_secs_f64())))
            .collect();
        vec![
            family(
                "sluice_discovery_backends",
                "Addresses a name among a pool's backends resolves to now (this replica).",
                MetricType::GAUGE,
                backends,
            ),
            family(
                "sluice_discovery_last_success_age_seconds",
                "Seconds since a name last resolved to addresses (the last good set serves meanwhile).",
                MetricType::GAUGE,
                ages,
            ),
        ]
    }

    pub fn admin_request(&self, status: u16) {
        self.admin_requests.with_label_values(&[status.to_string()]).inc();
    }

    pub fn config_reload(&self, ok: bool) {
        self.config_reloads
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
    }

    /// The pool and reason a rollback through the API is counted under.
    pub fn manual_rollback(&self) {
        self.rollback(MANUAL_ROLLBACK.0, MANUAL_ROLLBACK.1);
    }

    pub fn rollback(&self, pool: &str, reason: &str) {
        self.rollbacks.with_label_values(&[pool, reason]).inc();
    }

    /// Every family, as exposition text; window gauges cover `window`.
    pub fn render(&self, table: &RoutingTable, window: std::time::Duration, environment: Option<&str>) -> Vec<u8> {
        // Every pool's automatic rollbacks, at 0 until one happens (a
        // pool added later gets its series at the next scrape).
        for pool in table.pools() {
            for kind in BreachKind::ALL {
                self.rollbacks.with_label_values(&[&*pool.name, kind.label()]);
            }
        }
        let mut families = traffic_families(table, window);
        families.extend(self.discovery_families(table));
        families.push(family(
            "sluice_info",
            "Always 1; labels name the version and the deployment environment (DEPLOYMENT_ENV).",
            MetricType::GAUGE,
            vec![gauge(
                &[
                    ("version", env!("CARGO_PKG_VERSION")),
                    ("environment", environment.unwrap_or("")),
                ],
                1.0,
            )],
        ));
        families.extend(self.registry.gather());
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail on I/O; a malformed family would
        // be a bug in this file, shown as an empty scrape in the log.
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        out
    }
}

pub(crate) async fn scrape(State(state): State<AdminState>, req: Request) -> Response {
    if state.metrics_require_token
        && let Err(e) = crate::caller_of(&state, &req)
    {
        return e.into_response();
    }
    let mut body = state
        .metrics
        .render(&state.routing.snapshot(), state.window, state.environment.as_deref());
    if let Some(rollout) = state.rollouts.current() {
        body.extend_from_slice(rollout_families(&rollout).as_bytes());
    }
    // Asked at scrape time: a shared store can go away while traffic flows.
    let up = u8::from(state.store.ping().await);
    let leader = u8::from(state.leading.load(std::sync::atomic::Ordering::Relaxed));
    for (name, help, value) in [
        ("sluice_store_up", "1 when the store answers a query.", up),
        (
            "sluice_leader",
            "1 on the replica that runs rollouts and rollback decisions.",
            leader,
        ),
    ] {
        body.extend_from_slice(format!("# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n").as_bytes());
    }
    ([(CONTENT_TYPE, prometheus::TEXT_FORMAT)], body).into_response()
}

/// The current rollout: its step (0 outside the steps) and state.
fn rollout_families(r: &sluice_control::rollout::Status) -> String {
    use sluice_control::rollout::Phase;
    let step = match r.phase {
        Phase::Step(i) | Phase::Paused(i) => i + 1,
        _ => 0,
    };
    let families = vec![
        family(
            "sluice_rollout_step",
            "Step of the current rollout (1-based; 0 before and after its steps).",
            MetricType::GAUGE,
            vec![gauge(&[("from", &r.spec.from), ("to", &r.spec.to)], step as f64)],
        ),
        family(
            "sluice_rollout_duration_seconds",
            "Time since the current rollout started.",
            MetricType::GAUGE,
            vec![gauge(
                &[("from", &r.spec.from), ("to", &r.spec.to)],
                r.started.elapsed().as_secs_f64(),
            )],
        ),
        family(
            "sluice_rollout_state",
            "1 for the state the current rollout is in.",
            MetricType::GAUGE,
            Phase::every(0)
                .iter()
                .map(|p| {
                    gauge(
                        &[("state", p.name())],
                        if p.name() == r.phase.name() { 1.0 } else { 0.0 },
                    )
                })
                .collect(),
        ),
    ];
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
        tracing::error!(error = %e, "metrics encoding failed");
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(k, v)| {
            let mut l = LabelPair::default();
            l.set_name((*k).to_owned());
            l.set_value((*v).to_owned());
            l
        })
        .collect()
}

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_owned());
    f.set_help(help.to_owned());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

fn counter(pairs: &[(&str, &str)], value: f64) -> Metric {
    let mut c = Counter::default();
    c.set_value(value);
    let mut m = Metric::default();
    m.set_label(labels(pairs));
    m.set_counter(c);
    m
}

fn gauge(pairs: &[(&str, &str)], value: f64) -> Metric {
    let mut g = Gauge::default();
    g.set_value(value);
    let mut m = Metric::default();
    m.set_label(labels(pairs));
    m.set_gauge(g);
    m
}

fn traffic_families(table: &RoutingTable, window: std::time::Duration) -> Vec<MetricFamily> {
    let now = tokio::time::Instant::now();
    let mut error_ratio = Vec::new();
    let mut quantiles = Vec::new();
    let mut requests = Vec::new();
    let mut grpc_calls = Vec::new();
    let mut durations = Vec::new();
    let mut weights = Vec::new();
    let mut errors = Vec::new();
    let mut in_flight = Vec::new();
    let mut pending = Vec::new();
    let mut shed = Vec::new();
    let mut retries = Vec::new();
    let mut retries_refused = Vec::new();
    let mut shadow = Vec::new();
    let mut route_ratio = Vec::new();
    let mut route_requests = Vec::new();
    let mut healthy = Vec::new();
    let mut effective = Vec::new();
    for pool in table.pools() {
        let name = &*pool.name;
        for (code, n) in pool.stats.statuses() {
            requests.push(counter(&[("pool", name), ("code", &code.to_string())], n as f64));
        }
        // Every code from the first scrape, so rate() and alerts see 0s.
        for (code, n) in grpc::CODE_NAMES.iter().zip(pool.stats.grpc_codes()) {
            grpc_calls.push(counter(&[("pool", name), ("grpc_code", code)], n as f64));
        }
        let (cumulative, total, sum) = pool.stats.latency();
        let mut h = Histogram::default();
        h.set_sample_count(total);
        h.set_sample_sum(sum);
        h.set_bucket(
            LATENCY_BOUNDS
                .iter()
                .zip(cumulative)
                .map(|(bound, count)| {
                    let mut b = Bucket::default();
                    b.set_upper_bound(*bound);
                    b.set_cumulative_count(count);
                    b
                })
                .collect(),
        );
        let mut m = Metric::default();
        m.set_label(labels(&[("pool", name)]));
        m.set_histogram(h);
        durations.push(m);
        weights.push(gauge(&[("pool", name)], pool.weight.as_f64()));
        for (condition, n) in Condition::ALL.iter().zip(pool.stats.retries.made()) {
            retries.push(counter(&[("pool", name), ("reason", condition.name())], n as f64));
        }
        retries_refused.push(counter(&[("pool", name)], pool.stats.retries.exhausted() as f64));
        for result in ShadowResult::ALL {
            shadow.push(counter(
                &[("pool", name), ("result", result.label())],
                pool.stats.shadow.get(result) as f64,
            ));
        }
        effective.push(gauge(&[("pool", name)], pool.effective_weight.as_f64()));
        let snap = pool.stats.window.snapshot(now, window);
        error_ratio.push(gauge(&[("pool", name)], snap.error_ratio()));
        for (i, route) in table.policy().routes.iter().enumerate() {
            let snap = pool.routes.snapshot(i, now, window);
            let labels = [("pool", name), ("route", &*route.name)];
            route_ratio.push(gauge(&labels, snap.error_ratio()));
            route_requests.push(gauge(&labels, snap.requests as f64));
        }
        let mut summary = Summary::default();
        summary.set_sample_count(snap.requests);
        summary.set_sample_sum(snap.latency_sum().as_secs_f64());
        summary.set_quantile(
            [0.5, 0.95, 0.99]
                .into_iter()
                .map(|q| {
                    let mut quantile = Quantile::default();
                    quantile.set_quantile(q);
                    quantile.set_value(snap.quantile(q).map_or(0.0, |d| d.as_secs_f64()));
                    quantile
                })
                .collect(),
        );
        let mut m = Metric::default();
        m.set_label(labels(&[("pool", name)]));
        m.set_summary(summary);
        quantiles.push(m);
        for backend in &pool.backends {
            in_flight.push(gauge(
                &[("pool", name), ("backend", backend.addr())],
                backend.in_flight() as f64,
            ));
            pending.push(gauge(
                &[("pool", name), ("backend", backend.addr())],
                f64::from(backend.pending()),
            ));
            for cap in Cap::ALL {
                shed.push(counter(
                    &[("pool", name), ("backend", backend.addr()), ("cap", cap.label())],
                    backend.shed(cap) as f64,
                ));
            }
            healthy.push(gauge(
                &[("pool", name), ("backend", backend.addr())],
                if backend.is_healthy() { 1.0 } else { 0.0 },
            ));
            // Every kind from the first scrape, at 0 until it happens.
            for kind in UpstreamErrorKind::ALL {
                errors.push(counter(
                    &[("pool", name), ("backend", backend.addr()), ("kind", kind.label())],
                    backend.errors().count(kind) as f64,
                ));
            }
        }
    }
    let mut families = vec![
        family(
            "sluice_requests_total",
            "Requests answered, by pool and status code.",
            MetricType::COUNTER,
            requests,
        ),
        family(
            "sluice_grpc_requests_total",
            "gRPC calls answered, by pool and grpc-status code (sluice's own failures included).",
            MetricType::COUNTER,
            grpc_calls,
        ),
        family(
            "sluice_request_duration_seconds",
            "Time from request to response head, by pool.",
            MetricType::HISTOGRAM,
            durations,
        ),
        family(
            "sluice_pool_error_ratio",
            "Errors over requests in the live window, by pool.",
            MetricType::GAUGE,
            error_ratio,
        ),
        family(
            "sluice_pool_latency_seconds",
            "Latency quantiles over the live window, by pool.",
            MetricType::SUMMARY,
            quantiles,
        ),
        family(
            "sluice_pool_weight",
            "Share of traffic (percent) each pool is configured to receive.",
            MetricType::GAUGE,
            weights,
        ),
        family(
            "sluice_pool_effective_weight",
            "Share of traffic (percent) each pool serves now: 0 while it has no healthy backend.",
            MetricType::GAUGE,
            effective,
        ),
        family(
            "sluice_backend_healthy",
            "1 when the backend passes its health checks, else 0.",
            MetricType::GAUGE,
            healthy,
        ),
        family(
            "sluice_backend_in_flight",
            "Requests in flight per backend.",
            MetricType::GAUGE,
            in_flight,
        ),
        family(
            "sluice_backend_pending",
            "Requests waiting for a new connection to the backend (connecting).",
            MetricType::GAUGE,
            pending,
        ),
        family(
            "sluice_backend_shed_total",
            "Requests refused with 503 at a backend's cap: in_flight (backend-overloaded) or pending (upstream-overloaded).",
            MetricType::COUNTER,
            shed,
        ),
        family(
            "sluice_retries_total",
            "Tries sent again to another backend of the pool ([retry]), by why the try before failed.",
            MetricType::COUNTER,
            retries,
        ),
        family(
            "sluice_retry_budget_exhausted_total",
            "Retries not made because the pool's retry budget was spent (the failed try's answer went to the client).",
            MetricType::COUNTER,
            retries_refused,
        ),
        family(
            "sluice_route_error_ratio",
            "Error ratio of each [[analysis.routes]] route of each pool over the live window (this replica).",
            MetricType::GAUGE,
            route_ratio,
        ),
        family(
            "sluice_route_window_requests",
            "Requests of each [[analysis.routes]] route of each pool in the live window (this replica).",
            MetricType::GAUGE,
            route_requests,
        ),
        family(
            "sluice_shadow_requests_total",
            "Copies of live requests sent to the pool by [[mirror]] or a rollout's mirror step: answered (any status, counted in the pool's window too), failed (no answer in time), dropped (too many copies in flight).",
            MetricType::COUNTER,
            shadow,
        ),
        family(
            "sluice_routing_generation",
            "Generation of the routing table being served.",
            MetricType::GAUGE,
            vec![gauge(&[], table.generation() as f64)],
        ),
        family(
            "sluice_open_connections",
            "Client connections open on the proxy listeners.",
            MetricType::GAUGE,
            vec![gauge(
                &[],
                OPEN_CONNECTIONS.load(std::sync::atomic::Ordering::Relaxed) as f64,
            )],
        ),
        family(
            "sluice_connections_refused_total",
            "Client connections closed on accept at proxy.limits.max_connections.",
            MetricType::COUNTER,
            vec![counter(
                &[],
                REFUSED_CONNECTIONS.load(std::sync::atomic::Ordering::Relaxed) as f64,
            )],
        ),
        family(
            "sluice_connection_panics_total",
            "Client connections closed because their task panicked (a bug: please report it); no other connection is affected.",
            MetricType::COUNTER,
            vec![counter(
                &[],
                CONNECTION_PANICS.load(std::sync::atomic::Ordering::Relaxed) as f64,
            )],
        ),
        family(
            "sluice_access_log_dropped_total",
            "Access-log lines dropped: the writer was behind (its bounded buffer full) or could not write.",
            MetricType::COUNTER,
            vec![counter(
                &[],
                ACCESS_LOG_DROPPED.load(std::sync::atomic::Ordering::Relaxed) as f64,
            )],
        ),
        family(
            "sluice_spans_dropped_total",
            "Spans dropped: the exporter was behind (its bounded queue full) or the collector did not take them.",
            MetricType::COUNTER,
            vec![counter(
                &[],
                SPANS_DROPPED.load(std::sync::atomic::Ordering::Relaxed) as f64,
            )],
        ),
        family(
            "sluice_rate_limited_total",
            "Requests refused with 429 by [[rate_limits]], by the kind of key of the limit that refused them (per replica).",
            MetricType::COUNTER,
            KEY_KINDS
                .iter()
                .zip(&REFUSED)
                .map(|(key, n)| counter(&[("key", key)], n.load(std::sync::atomic::Ordering::Relaxed) as f64))
                .collect(),
        ),
    ];
    if !errors.is_empty() {
        families.push(family(
            "sluice_upstream_errors_total",
            "Failed exchanges with a backend, by pool, backend and kind.",
            MetricType::COUNTER,
            errors,
        ));
    }
    // Families without samples are not valid exposition.
    families.retain(|f| !f.get_metric().is_empty());
    families
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use sluice_routing::{PoolSpec, RoutingPolicy};

    #[test]
    fn known_series_exist_at_zero_from_the_first_scrape() {
        let spec = PoolSpec {
            name: "blue".into(),
            version: "v1".into(),
            weight: sluice_config::Weight::percent(100).unwrap(),
            protocol: sluice_config::UpstreamProtocol::Http1,
            backends: vec!["127.0.0.1:1".into()],
            tls: None,
            matches: Vec::new(),
        };
        let table = RoutingTable::build(1, &[spec], RoutingPolicy::default(), None).unwrap();
        let text = String::from_utf8(Metrics::new().render(&table, std::time::Duration::from_secs(30), None)).unwrap();
        let zero = |series: &str| {
            assert!(
                text.lines().any(|l| l == format!("{series} 0")),
                "{series} 0 missing from:\n{text}"
            );
        };
        for kind in UpstreamErrorKind::ALL {
            zero(&format!(
                "sluice_upstream_errors_total{{pool=\"blue\",backend=\"127.0.0.1:1\",kind=\"{}\"}}",
                kind.label()
            ));
        }
        zero("sluice_rollbacks_total{pool=\"blue\",reason=\"error_ratio\"}");
        zero("sluice_rollbacks_total{pool=\"blue\",reason=\"latency\"}");
        zero("sluice_rollbacks_total{pool=\"all\",reason=\"manual\"}");
        zero("sluice_config_reloads_total{result=\"ok\"}");
        zero("sluice_config_reloads_total{result=\"error\"}");
        zero("sluice_grpc_requests_total{pool=\"blue\",grpc_code=\"UNAVAILABLE\"}");
    }
}
