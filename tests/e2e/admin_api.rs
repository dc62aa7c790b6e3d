//! The admin API in process (`Router::oneshot`) on a real SQLite store:
//! every endpoint's success path and each error class, with the state
//! (generation, weights, audit rows) checked before and after.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sluice_admin_api::{AdminState, Metrics, TokenSet};
use sluice_routing::RoutingHandle;
use sluice_store::{AuditQuery, Store};
use tower::ServiceExt;

const OPERATOR: &str = "op-secret-1";
const VIEWER: &str = "view-secret-1";

struct Api {
    router: Router,
    routing: Arc<RoutingHandle>,
    store: Store,
    _dir: tempfile::TempDir,
}

async fn api() -> Api {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ci"), format!("{OPERATOR}\n")).unwrap();
    std::fs::write(dir.path().join("grafana"), VIEWER).unwrap();
    let toml = format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[[admin.tokens]]
name = "ci"
role = "operator"
secret = "file:{d}/ci"
[[admin.tokens]]
name = "grafana"
role = "viewer"
secret = "file:{d}/grafana"
[store]
url = "sqlite://{d}/sluice.db"
[pools.blue]
version = "v1"
weight = 100
backends = ["127.0.0.1:9001", "127.0.0.1:9002"]
[pools.green]
version = "v2"
weight = 0
backends = ["127.0.0.1:9011"]
"#,
        d = dir.path().display()
    );
    let config = sluice_config::Config::from_toml(&toml).unwrap();
    let store = sluice::app::open_store(&config).await.unwrap();
    let routing = sluice::state::open_routing(&config, &store, false, Some("test".into()))
        .await
        .unwrap();
    let state = AdminState {
        leading: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        replica: Arc::new(sluice_admin_api::ReplicaView::named("test".into())),
        routing: Arc::clone(&routing),
        store: store.clone(),
        tokens: Arc::new(TokenSet::load(&config.admin.tokens).unwrap()),
        metrics: Arc::new(Metrics::new()),
        environment: Some("test".into()),
        drain_timeout: Duration::from_secs(5),
        metrics_require_token: false,
        window: Duration::from_secs(30),
        max_error_ratio: 0.05,
        max_p95: Duration::from_secs(1),
        health_ready: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        rollouts: Arc::new(sluice_control::rollout::Engine::new(
            Arc::clone(&routing),
            Arc::new(sluice::rollouts::Recorder::start(
                store.clone(),
                sluice_control::alerts::Alerter::start(vec![], None),
                sluice::rollouts::RecorderSettings {
                    environment: None,
                    rollouts_url: "http://127.0.0.1:9901/api/v1/rollouts".into(),
                },
            )),
        )),
        rollout_defaults: sluice_control::rollout::RolloutDefaults {
            analysis: config.rollback.clone(),
            canary_percentage: sluice_config::Weight::percent(5).unwrap(),
            canary_duration: Duration::from_secs(300),
        },
        started: tokio::time::Instant::now(),
        log_tap: Default::default(),
    };
    Api {
        router: sluice_admin_api::router(state),
        routing,
        store,
        _dir: dir,
    }
}

impl Api {
    async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<&str>) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(b.to_owned())),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, value)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(VIEWER), None).await
    }

    async fn op(&self, method: Method, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(method, path, Some(OPERATOR), Some(&body.to_string())).await
    }

    fn generation(&self) -> u64 {
        self.routing.snapshot().generation()
    }

    fn weight(&self, pool: &str) -> sluice_config::Weight {
        self.routing.snapshot().pool(pool).unwrap().weight
    }

    async fn audit(&self) -> Vec<sluice_store::AuditRecord> {
        self.store.audit(&AuditQuery::default()).await.unwrap()
    }
}

fn error_code(v: &Value) -> &str {
    v["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {v}"))
}

#[tokio::test]
async fn auth_matrix() {
    let api = api().await;
    let (status, body) = api.call(Method::GET, "/api/v1/status", None, None).await;
    assert_eq!(status, 401);
    assert_eq!(error_code(&body), "unauthorized");
    let res = api
        .router
        .clone()
        .oneshot(Request::get("/api/v1/pools").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.headers()["www-authenticate"], "Bearer realm=\"sluice\"");
    assert_eq!(api.call(Method::GET, "/api/v1/status", Some("nope"), None).await.0, 401);
    assert_eq!(
        api.call(Method::GET, "/api/v1/status", Some("op-secret"), None).await.0,
        401
    );
    assert_eq!(api.get("/api/v1/status").await.0, 200);
    let weights = json!({"weights": {"blue": 90, "green": 10}}).to_string();
    let (status, body) = api
        .call(Method::PUT, "/api/v1/weights", Some(VIEWER), Some(&weights))
        .await;
    assert_eq!(status, 403);
    assert_eq!(error_code(&body), "forbidden");
    assert_eq!(api.weight("blue"), 100);
    let (status, _) = api
        .call(Method::PUT, "/api/v1/weights", Some(OPERATOR), Some(&weights))
        .await;
    assert_eq!(status, 200);
    assert_eq!(api.weight("green"), 10);
    // Unauthenticated paths stay open.
    assert_eq!(api.call(Method::GET, "/health/live", None, None).await.0, 200);
    assert_eq!(api.call(Method::GET, "/metrics", None, None).await.0, 200);
}

#[tokio::test]
async fn status_and_pools_never_show_secrets() {
    let api = api().await;
    let (status, body) = api.get("/api/v1/status").await;
    assert_eq!(status, 200);
    assert_eq!(body["generation"], api.generation());
    assert_eq!(body["pools"][0]["name"], "blue");
    assert_eq!(body["pools"][0]["backends"][1]["addr"], "127.0.0.1:9002");
    assert_eq!(body["store"]["reachable"], true);
    let text = body.to_string();
    assert!(!text.contains(OPERATOR) && !text.contains(VIEWER));
    let (status, body) = api.get("/api/v1/pools/green").await;
    assert_eq!((status, body["version"].as_str()), (StatusCode::OK, Some("v2")));
    let (status, body) = api.get("/api/v1/pools/purple").await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "not-found"));
    assert_eq!(api.get("/api/v1/pools").await.1["pools"].as_array().unwrap().len(), 2);
    assert_eq!(api.get("/api/v1/nothing-here").await.0, 404);
}

#[tokio::test]
async fn weights_change_is_stored_audited_and_answered_with_the_generation() {
    let api = api().await;
    let before = api.generation();
    let (status, body) = api
        .op(
            Method::PUT,
            "/api/v1/weights",
            json!({"weights": {"blue": 70, "green": 30}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["generation"], before + 1);
    assert_eq!(api.weight("green"), 30);
    let stored = api.store.load_routing().await.unwrap().unwrap();
    assert_eq!(stored.generation as u64, before + 1);
    assert_eq!(stored.pools[1].weight_hundredths, 3_000);
    let last = &api.audit().await[0];
    assert_eq!(
        (last.entry.actor.as_str(), last.entry.action.as_str()),
        ("ci", "weights.set")
    );
    assert_eq!(last.entry.result, "ok");
    assert_eq!(last.entry.environment.as_deref(), Some("test"));
    assert!(last.entry.after.as_deref().unwrap().contains("\"weight\":30"));
}

#[tokio::test]
async fn rejected_weight_changes_change_nothing_but_leave_a_rejection_row() {
    let api = api().await;
    let cases: [(&str, u16, &str); 6] = [
        ("{not json", 400, "bad-json"),
        (r#"{"weights": {"blue": 90, "red": 10}}"#, 400, "unknown-pool"),
        (r#"{"weights": {"blue": 90, "green": 20}}"#, 422, "invalid-weights"),
        (
            r#"{"weights": {"blue": 50.505, "green": 49.495}}"#,
            422,
            "invalid-weights",
        ),
        (r#"{"weights": {"blue": 100}}"#, 422, "invalid-weights"),
        (r#"{"weights": {"blue": 90, "green": 10}, "extra": 1}"#, 400, "bad-json"),
    ];
    for (i, (body, status, code)) in cases.into_iter().enumerate() {
        let generation = api.generation();
        let rows = api.audit().await.len();
        let (got, err) = api
            .call(Method::PUT, "/api/v1/weights", Some(OPERATOR), Some(body))
            .await;
        assert_eq!(got.as_u16(), status, "case {i}: {err}");
        assert_eq!(error_code(&err), code, "case {i}");
        assert!(!err["error"]["message"].as_str().unwrap().is_empty());
        assert_eq!(api.generation(), generation, "case {i} changed the table");
        assert_eq!(api.weight("blue"), 100);
        let audit = api.audit().await;
        assert_eq!(audit.len(), rows + 1, "case {i}: exactly one rejection row");
        assert!(
            audit[0].entry.result.starts_with(&format!("rejected {status}")),
            "{:?}",
            audit[0]
        );
    }
}

#[tokio::test]
async fn weight_on_a_pool_without_backends_needs_force() {
    let api = api().await;
    let (status, _) = api
        .op(Method::PUT, "/api/v1/pools/green", json!({"backends": []}))
        .await;
    assert_eq!(status, 200);
    let generation = api.generation();
    let (status, body) = api
        .op(
            Method::PUT,
            "/api/v1/weights",
            json!({"weights": {"blue": 50, "green": 50}}),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "pool-has-no-backends")
    );
    assert_eq!(api.generation(), generation);
    let (status, _) = api
        .op(
            Method::PUT,
            "/api/v1/weights",
            json!({"weights": {"blue": 50, "green": 50}, "force": true}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(api.weight("green"), 50);
}

#[tokio::test]
async fn replacing_a_pool_that_carries_traffic_needs_force_and_is_recorded_as_a_deployment() {
    let api = api().await;
    let (status, body) = api
        .op(Method::PUT, "/api/v1/pools/blue", json!({"version": "v1.1"}))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "pool-carries-traffic")
    );
    assert_eq!(&*api.routing.snapshot().pool("blue").unwrap().version, "v1");

    let (status, body) = api
        .op(
            Method::PUT,
            "/api/v1/pools/green",
            json!({"version": "v3", "backends": ["127.0.0.1:9021", "127.0.0.1:9022"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let green = api.routing.snapshot();
    let green = green.pool("green").unwrap();
    assert_eq!((&*green.version, green.backends.len()), ("v3", 2));
    let history = api.store.deployments(10).await.unwrap();
    assert_eq!(
        (
            history[0].pool.as_str(),
            history[0].from_version.as_deref(),
            history[0].to_version.as_str()
        ),
        ("green", Some("v2"), "v3")
    );

    let cases = [
        ("/api/v1/pools/purple", json!({"version": "v9"}), 404, "not-found"),
        ("/api/v1/pools/green", json!({}), 422, "nothing-to-change"),
        (
            "/api/v1/pools/green",
            json!({"backends": ["nope"]}),
            422,
            "invalid-backends",
        ),
        (
            "/api/v1/pools/green",
            json!({"backends": ["127.0.0.1:1", "127.0.0.1:1"]}),
            422,
            "invalid-backends",
        ),
    ];
    for (path, body, status, code) in cases {
        let generation = api.generation();
        let (got, err) = api.op(Method::PUT, path, body).await;
        assert_eq!((got.as_u16(), error_code(&err)), (status, code), "{path}: {err}");
        assert_eq!(api.generation(), generation);
    }
    let (status, _) = api
        .op(
            Method::PUT,
            "/api/v1/pools/blue",
            json!({"version": "v1.1", "force": true}),
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn backends_are_added_removed_and_drained() {
    let api = api().await;
    let (status, _) = api
        .op(
            Method::POST,
            "/api/v1/pools/green/backends",
            json!({"addr": "127.0.0.1:9012"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(api.routing.snapshot().pool("green").unwrap().backends.len(), 2);
    let (status, body) = api
        .op(
            Method::POST,
            "/api/v1/pools/green/backends",
            json!({"addr": "127.0.0.1:9012"}),
        )
        .await;
    assert_eq!((status, error_code(&body)), (StatusCode::CONFLICT, "backend-exists"));
    let (status, _) = api
        .op(Method::POST, "/api/v1/pools/green/backends", json!({"address": "x"}))
        .await;
    assert_eq!(status, 400);

    let (status, _) = api
        .call(
            Method::DELETE,
            "/api/v1/pools/green/backends/127.0.0.1:9012",
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = api
        .call(
            Method::DELETE,
            "/api/v1/pools/green/backends/127.0.0.1:9999",
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(status, 404);

    // Blue carries all traffic: its last backend cannot go without force.
    let (status, _) = api
        .call(
            Method::POST,
            "/api/v1/pools/blue/backends/127.0.0.1:9001/drain",
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = api
        .call(
            Method::DELETE,
            "/api/v1/pools/blue/backends/127.0.0.1:9002",
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!((status, error_code(&body)), (StatusCode::CONFLICT, "last-backend"));
    let (status, body) = api
        .call(
            Method::POST,
            "/api/v1/pools/blue/backends/127.0.0.1:9002/drain?force=true",
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["in_flight_at_start"], 0);
    assert_eq!(body["drained"], true);
    assert!(api.routing.snapshot().pool("blue").unwrap().backends.is_empty());
}

#[tokio::test]
async fn rollback_restores_the_weights_before_the_last_change() {
    let api = api().await;
    let (status, body) = api.op(Method::POST, "/api/v1/rollback", json!({})).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "nothing-to-roll-back")
    );
    api.op(
        Method::PUT,
        "/api/v1/weights",
        json!({"weights": {"blue": 80, "green": 20}}),
    )
    .await;
    api.op(
        Method::PUT,
        "/api/v1/weights",
        json!({"weights": {"blue": 10, "green": 90}}),
    )
    .await;
    let (status, body) = api.op(Method::POST, "/api/v1/rollback", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (api.weight("blue").to_string(), api.weight("green").to_string()),
        ("80".into(), "20".into())
    );
    let last = &api.audit().await[0];
    assert_eq!(
        (last.entry.action.as_str(), last.entry.actor.as_str()),
        ("rollback", "ci")
    );
}

#[tokio::test]
async fn audit_is_filtered_by_actor_action_time_and_limit() {
    let api = api().await;
    api.op(
        Method::PUT,
        "/api/v1/weights",
        json!({"weights": {"blue": 80, "green": 20}}),
    )
    .await;
    api.op(Method::PUT, "/api/v1/weights", json!({"weights": {"blue": 70}}))
        .await;
    let (_, all) = api.get("/api/v1/audit").await;
    assert_eq!(all["entries"].as_array().unwrap().len(), 3, "{all}");
    let (_, ci) = api.get("/api/v1/audit?actor=ci").await;
    assert_eq!(ci["entries"].as_array().unwrap().len(), 2);
    let (_, one) = api.get("/api/v1/audit?actor=ci&limit=1").await;
    assert!(
        one["entries"][0]["result"]
            .as_str()
            .unwrap()
            .starts_with("rejected 422")
    );
    let (_, init) = api.get("/api/v1/audit?action=routing.init").await;
    assert_eq!(init["entries"][0]["actor"], "config-file");
    let (_, later) = api.get("/api/v1/audit?since=2999-01-01T00:00:00Z").await;
    assert!(later["entries"].as_array().unwrap().is_empty());
    let (status, err) = api.get("/api/v1/audit?since=yesterday").await;
    assert_eq!((status, error_code(&err)), (StatusCode::BAD_REQUEST, "bad-query"));
    assert_eq!(api.get("/api/v1/audit?limit=0").await.0, 400);
}

#[tokio::test]
async fn health_endpoints_answer_without_a_token() {
    let api = api().await;
    let (status, body) = api.call(Method::GET, "/health/ready", None, None).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("ready")));
    let (status, body) = api.call(Method::GET, "/health/live", None, None).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("live")));
}

#[tokio::test]
async fn events_stream_a_snapshot_then_each_change() {
    let api = api().await;
    let req = Request::get("/api/v1/events")
        .header("authorization", format!("Bearer {VIEWER}"))
        .body(Body::empty())
        .unwrap();
    let res = api.router.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut body = res.into_body();
    let next_event = async |body: &mut Body| -> String {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
                .await
                .expect("no event within 5 s")
                .unwrap()
                .unwrap();
            if let Ok(data) = frame.into_data() {
                let text = String::from_utf8_lossy(&data).into_owned();
                // Live statistics come every second in between.
                if text.contains("event:") && !text.contains("event: stats") {
                    return text;
                }
            }
        }
    };
    let first = next_event(&mut body).await;
    assert!(first.contains("event: snapshot"), "{first}");
    api.op(
        Method::PUT,
        "/api/v1/weights",
        json!({"weights": {"blue": 60, "green": 40}}),
    )
    .await;
    let change = next_event(&mut body).await;
    assert!(change.contains("event: routing"), "{change}");
    assert!(
        change.contains("\"actor\":\"ci\"") && change.contains("\"weight\":40"),
        "{change}"
    );
    // And the per-second statistics for the live charts.
    let stats = loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("no stats event within 5 s")
            .unwrap()
            .unwrap();
        if let Ok(data) = frame.into_data() {
            let text = String::from_utf8_lossy(&data).into_owned();
            if text.contains("event: stats") {
                break text;
            }
        }
    };
    assert!(stats.contains("\"window\"") && stats.contains("\"p95_ms\""), "{stats}");
}

/// `(METHOD, path)` pairs the router declares, read from its source.
fn routes_in_source() -> std::collections::BTreeSet<(String, String)> {
    let src = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/admin-api/src/lib.rs")).unwrap();
    let mut routes = std::collections::BTreeSet::new();
    for line in src.lines().filter(|l| l.trim_start().starts_with(".route(\"")) {
        let path = line.split('"').nth(1).unwrap();
        let full = if path.starts_with("/health") || path == "/metrics" || path == "/" || path == "/dashboard.js" {
            path.to_owned()
        } else {
            format!("/api/v1{path}")
        };
        for method in ["get", "put", "post", "delete"] {
            if line.contains(&format!("{method}(")) {
                routes.insert((method.to_uppercase(), full.clone()));
            }
        }
    }
    routes
}

/// `(METHOD, path)` pairs documented in docs/admin-api.yaml.
fn routes_in_openapi() -> std::collections::BTreeSet<(String, String)> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/admin-api.yaml")).unwrap();
    let mut routes = std::collections::BTreeSet::new();
    let mut path = None;
    for line in doc.lines().skip_while(|l| *l != "paths:").skip(1) {
        if !line.starts_with(' ') {
            break;
        }
        if let Some(p) = line.strip_prefix("  /") {
            path = Some(format!("/{}", p.trim_end_matches(':')));
        } else if let Some(m) = line.strip_prefix("    ").and_then(|m| m.strip_suffix(':'))
            && ["get", "put", "post", "delete"].contains(&m)
        {
            routes.insert((m.to_uppercase(), path.clone().unwrap()));
        }
    }
    routes
}

#[tokio::test]
async fn openapi_document_and_router_agree() {
    let served = routes_in_source();
    let documented = routes_in_openapi();
    assert!(served.len() >= 15, "parsed only {served:?}");
    assert_eq!(served, documented, "routes and docs/admin-api.yaml differ");
    // And every documented route really answers (no fallback, no 405).
    let api = api().await;
    for (method, path) in &documented {
        if path == "/api/v1/events" || path == "/api/v1/logs/stream" {
            // Streams that never end; covered by their own tests.
            continue;
        }
        let concrete = path
            .replace("{pool}", "green")
            .replace("{addr}", "127.0.0.1:9011")
            .replace("{id}", "1");
        let body = (method != "GET").then_some("{}");
        let (status, value) = api.call(method.parse().unwrap(), &concrete, Some(OPERATOR), body).await;
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {concrete}");
        let fallback = value["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("no such endpoint"));
        assert!(!fallback, "{method} {concrete} is documented but not served");
    }
}

/// Every route of the router, with no token, a viewer's and an operator's:
/// the health and metrics routes are open, every `/api/v1` route needs a
/// token, and every route that changes something needs the operator role.
#[tokio::test]
async fn every_route_requires_the_right_role() {
    let api = api().await;
    let routes = routes_in_source();
    assert!(routes.len() >= 20, "parsed only {routes:?}");
    for (method, path) in &routes {
        if path == "/api/v1/events" {
            continue; // a stream that never ends; its auth is tested above
        }
        let concrete = path
            .replace("{pool}", "green")
            .replace("{addr}", "127.0.0.1:9011")
            .replace("{id}", "1")
            .replace("{action}", "pause");
        let m: Method = method.parse().unwrap();
        let body = (method != "GET").then_some("{}");
        let (anonymous, _) = api.call(m.clone(), &concrete, None, body).await;
        let (viewer, _) = api.call(m.clone(), &concrete, Some(VIEWER), body).await;
        let (wrong, _) = api.call(m.clone(), &concrete, Some("not-a-token"), body).await;
        if !concrete.starts_with("/api/v1") {
            assert_ne!(
                anonymous,
                StatusCode::UNAUTHORIZED,
                "{method} {concrete} is open by design"
            );
            continue;
        }
        assert_eq!(
            anonymous,
            StatusCode::UNAUTHORIZED,
            "{method} {concrete} without a token"
        );
        assert_eq!(
            wrong,
            StatusCode::UNAUTHORIZED,
            "{method} {concrete} with a wrong token"
        );
        if concrete.starts_with("/api/v1/logs") {
            // Access-log lines name clients and paths: operators only.
            assert_eq!(viewer, StatusCode::FORBIDDEN, "a viewer may not read {concrete}");
        } else if method == "GET" {
            assert!(
                viewer != StatusCode::UNAUTHORIZED && viewer != StatusCode::FORBIDDEN,
                "a viewer may read {concrete}: {viewer}"
            );
        } else {
            assert_eq!(viewer, StatusCode::FORBIDDEN, "a viewer may not {method} {concrete}");
        }
    }
}

#[tokio::test]
async fn an_oversized_admin_body_is_refused_and_changes_nothing() {
    let api = api().await;
    let before = api.generation();
    let huge = format!(
        r#"{{"weights": {{"blue": 100, "green": 0}}, "pad": "{}"}}"#,
        "x".repeat(100_000)
    );
    let (status, _) = api
        .call(Method::PUT, "/api/v1/weights", Some(OPERATOR), Some(&huge))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(api.generation(), before);
}
