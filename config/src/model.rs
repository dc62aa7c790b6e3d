//! The validated configuration: every value here has passed its checks, so
//! the rest of sluice never re-validates.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Routing weights always sum to this (100%).
pub const WEIGHT_TOTAL: crate::Weight = crate::Weight::FULL;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub proxy: ProxyConfig,
    pub admin: AdminConfig,
    pub store: StoreConfig,
    pub health: HealthConfig,
    pub sticky: Option<Sticky>,
    pub rollback: RollbackConfig,
    pub alerts: AlertsConfig,
    pub outlier: OutlierConfig,
    pub access_log: AccessLogConfig,
    pub tracing: TracingConfig,
    /// `[[rate_limits]]`, in the file's order (every one must allow).
    pub rate_limits: Vec<RateLimitConfig>,
    /// `[retry]`: the defaults every pool's retries start from.
    pub retry: RetryConfig,
    /// `[[mirror]]`: copies of live requests sent to a pool, answers
    /// discarded.
    pub mirrors: Vec<MirrorConfig>,
    /// `[discovery]`: how backends written as names are followed.
    pub discovery: crate::DiscoveryConfig,
    /// `[[analysis.routes]]`: path prefixes judged apart, in order.
    pub analysis_routes: Vec<RouteConfig>,
    /// Pools in a stable order (sorted by name), which is also the order of
    /// their slices in the cumulative weight ranges.
    pub pools: Vec<PoolConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    pub listen: SocketAddr,
    /// Which HTTP servers serve clients (and which client talks HTTP/1.1 to
    /// backends); a reload switches new connections.
    pub engine: Engine,
    /// Runtime worker threads; defaults to the number of cores.
    pub workers: Option<usize>,
    /// Honour the `x-sluice-pool` header (testers reaching a pool directly).
    pub allow_pool_override: bool,
    /// The header that carries each request's id (lower-case; `None`:
    /// `request_id_header = ""`, no ids).
    pub request_id_header: Option<String>,
    /// How long in-flight requests get to finish on SIGTERM.
    pub drain_timeout: Duration,
    pub timeouts: Timeouts,
    pub limits: Limits,
    pub tls: Option<TlsConfig>,
}

/// The HTTP engines of the data plane.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Engine {
    /// sluice's own HTTP/1.1 loop and HTTP/2 server, and its own HTTP/1.1
    /// client to backends (hyper for what they hand over).
    #[default]
    Sluice,
    /// hyper's HTTP/1.1 and HTTP/2 servers and hyper's client: the way
    /// back if an operator meets a protocol bug in sluice's own engines.
    Hyper,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Sluice => "sluice",
            Engine::Hyper => "hyper",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect to a backend.
    pub connect: Duration,
    /// Reading a client's request head (slowloris guard). hyper also runs
    /// it while a keep-alive client connection waits for its next request,
    /// so it is the client-side idle limit too.
    pub request_header: Duration,
    /// From sending the request upstream to receiving the response head.
    pub upstream_response: Duration,
    /// How long an idle pooled backend connection may be reused.
    pub keep_alive_idle: Duration,
    /// The most a gRPC call's `grpc-timeout` may ask for: a call with one
    /// gets the lower of the two as its deadline (head and body), instead
    /// of `upstream_response`.
    pub max_grpc_timeout: Duration,
    /// A gRPC stream whose backend sends nothing for this long after its
    /// response began is ended with UNAVAILABLE (zero: never).
    pub stream_idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(2),
            request_header: Duration::from_secs(10),
            upstream_response: Duration::from_secs(30),
            keep_alive_idle: Duration::from_secs(60),
            max_grpc_timeout: Duration::from_secs(3600),
            stream_idle: Duration::ZERO,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head (request line + headers) in bytes → 431 beyond.
    pub max_header_bytes: usize,
    /// Most request header fields → 431 beyond.
    pub max_headers: usize,
    /// Largest request body in bytes → 413 beyond.
    pub max_request_body_bytes: u64,
    /// Open client connections, all listeners together; more are closed
    /// as soon as they are accepted.
    pub max_connections: usize,
    /// Requests in flight to one backend; more get 503 + `Retry-After`
    /// (0: no limit).
    pub max_in_flight_per_backend: u32,
    /// Requests waiting for a new connection to one backend (its TCP
    /// connect); more fail at once with 503 `upstream-overloaded` (0: no
    /// limit).
    pub max_pending_per_backend: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_request_body_bytes: 100 * 1024 * 1024,
            max_connections: 20_000,
            max_in_flight_per_backend: 1024,
            max_pending_per_backend: 1024,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    pub listen: SocketAddr,
    /// The first certificate is the default when no SNI name matches.
    pub certificates: Vec<CertificateConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateConfig {
    pub cert: SecretRef,
    pub key: SecretRef,
}

/// Where a secret lives; the value itself never appears in config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    File(PathBuf),
    Env(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub tokens: Vec<TokenConfig>,
    /// Put `/metrics` behind a token too.
    pub metrics_require_token: bool,
    /// Allow the admin API on a non-loopback address without tokens.
    pub insecure: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Viewer,
    Operator,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TokenConfig {
    pub name: String,
    pub role: Role,
    pub secret: SecretRef,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoreConfig {
    pub url: String,
    /// Apply pending migrations at start; `None` means the engine's default.
    pub auto_migrate: Option<bool>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    pub method: String,
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    /// Accepted probe statuses, inclusive.
    pub expected_status: (u16, u16),
    pub host: Option<String>,
    /// What a probe asks: an HTTP request (`method`, `path`) or the gRPC
    /// health checking protocol.
    pub mode: HealthMode,
    /// The service a gRPC probe names (`""`: the server as a whole).
    pub grpc_service: String,
    /// A backend that becomes routable again (healthy, or back from an
    /// ejection) ramps from a tenth of its share to all of it over this
    /// long (zero: at once).
    pub slow_start: Duration,
}

/// How backends are probed (`[health] mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HealthMode {
    /// `method path`, passing on `expected_status`.
    #[default]
    Http,
    /// `grpc.health.v1.Health/Check` for `grpc_service`, passing on SERVING.
    Grpc,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            method: "GET".into(),
            path: "/health/ready".into(),
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            expected_status: (200, 299),
            host: None,
            mode: HealthMode::Http,
            grpc_service: String::new(),
            slow_start: Duration::ZERO,
        }
    }
}

/// What places a client in a stable cohort.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sticky {
    Cookie(String),
    /// Header name, lower-cased.
    Header(String),
    ClientIp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RollbackConfig {
    /// Act on a breach (`AUTOMATIC_ROLLBACK_ON_ERROR`); when off, alert only.
    pub enabled: bool,
    pub window: Duration,
    pub max_error_ratio: f64,
    pub max_p95: Duration,
    pub min_requests: u64,
    /// Breaching evaluations in a row before acting.
    pub consecutive_breaches: u32,
    /// The most the chance may be, over a whole protection period (or a
    /// rollout step), of ever judging a pool that is exactly at its
    /// thresholds to be breaching them (the sequential tests' level).
    pub alpha: f64,
    /// The candidate against the stable pool over the window (opt-in for
    /// the guard; rollouts' defaults): most of the request pairs in which
    /// it may be slower (Mann–Whitney's effect size, 0.5–1)…
    pub max_slower_share: Option<f64>,
    /// …most its error ratio may exceed the stable pool's…
    pub max_error_ratio_increase: Option<f64>,
    /// …and most its P95 may be as a multiple of the stable pool's.
    pub max_p95_ratio: Option<f64>,
    pub evaluation_interval: Duration,
    /// How long after a change the pool that gained traffic is watched.
    pub protection: Duration,
}

impl Default for RollbackConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window: Duration::from_secs(30),
            max_error_ratio: 0.01,
            max_p95: Duration::from_millis(1000),
            min_requests: 20,
            consecutive_breaches: 2,
            alpha: 0.001,
            max_slower_share: None,
            max_error_ratio_increase: None,
            max_p95_ratio: None,
            evaluation_interval: Duration::from_secs(1),
            protection: Duration::from_secs(30 * 60),
        }
    }
}

/// Passive outlier detection: backends failing exchanges in a row are
/// taken out of rotation for a while.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierConfig {
    pub enabled: bool,
    /// Upstream failures (5xx or failed exchanges) in a row that eject.
    pub consecutive_failures: u32,
    /// Ejection time is this times the number of ejections so far…
    pub base_ejection: Duration,
    /// …capped here.
    pub max_ejection: Duration,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
        }
    }
}

/// The access log: one line per request (`[access_log]`).
#[derive(Debug, Clone, PartialEq)]
pub struct AccessLogConfig {
    pub enabled: bool,
    /// `"-"` for standard output, else a file, reopened when it is rotated.
    pub path: String,
    pub format: AccessLogFormat,
    /// Share of 1xx–3xx lines kept (0–1); 4xx, 5xx and sluice's own errors
    /// are always written.
    pub sample: f64,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            path: "-".into(),
            format: AccessLogFormat::Json,
            sample: 1.0,
        }
    }
}

/// One `[[analysis.routes]]` entry: requests whose path starts with
/// `prefix` are counted (and judged) as route `name` too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    pub name: String,
    pub prefix: String,
}

/// One `[[mirror]]` entry: a share of live requests copied to a pool.
#[derive(Debug, Clone, PartialEq)]
pub struct MirrorConfig {
    /// The pool the copies go to.
    pub to: String,
    /// Share of requests copied, in percent (above 0, up to 100).
    pub percent: f64,
    /// Requests with a larger body (or one of unknown length) are not
    /// copied.
    pub max_body_bytes: u64,
    /// How long a copy may take before it is given up.
    pub timeout: Duration,
    /// Copy POST, PATCH and other non-idempotent requests too.
    pub allow_non_idempotent: bool,
}

/// One `[[rate_limits]]` entry: a token bucket per key, per replica.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitConfig {
    pub key: RateKey,
    /// Requests per second allowed on average, per key.
    pub rate: f64,
    /// Requests allowed at once after a quiet spell (the bucket's size).
    pub burst: u32,
}

/// What a rate limit counts by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RateKey {
    /// The connection's peer address (not a forwarded header a client
    /// could write).
    ClientIp,
    /// A request header's value (lower-case name), e.g. an API key; a
    /// request without it is not counted by this limit.
    Header(String),
    /// Every request together.
    Global,
}

impl RateKey {
    /// As written in the config: `client_ip`, `header:NAME`, `global`.
    pub fn describe(&self) -> String {
        match self {
            Self::ClientIp => "client_ip".into(),
            Self::Header(name) => format!("header:{name}"),
            Self::Global => "global".into(),
        }
    }
}

/// W3C trace context and span export (`[tracing]`).
#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    /// Check `traceparent`/`tracestate` (an invalid one is removed) and,
    /// with an exporter, take part in the trace. Off: both pass untouched.
    pub propagate: bool,
    /// Where spans go over OTLP/HTTP (protobuf), an `http://` URL; `None`:
    /// sluice records no spans and starts no traces.
    pub otlp_endpoint: Option<String>,
    /// Share of the traces sluice starts that are sampled (0–1); a
    /// caller's sampled flag is followed (parent-based sampling).
    pub sample_ratio: f64,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            propagate: true,
            otlp_endpoint: None,
            sample_ratio: 1.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// One JSON object per line, with the field names in docs/operations.md.
    Json,
    /// nginx's and Apache's combined format plus sluice's fields.
    Combined,
}

impl AccessLogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Combined => "combined",
        }
    }
}

/// Where notifications go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertsConfig {
    pub webhooks: Vec<WebhookConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// `http://host:port/path`.
    pub url: String,
    pub format: WebhookFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    /// `{"event", "pool", "message", "at", ...}`.
    Json,
    /// `{"text": "..."}`.
    Slack,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge (h2c) to the backends.
    Http2,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    pub name: String,
    pub version: String,
    /// Share of traffic (0.01% steps); all pools sum to [`WEIGHT_TOTAL`].
    pub weight: crate::Weight,
    /// `host:port` of each backend, unique within the pool.
    pub backends: Vec<String>,
    pub protocol: UpstreamProtocol,
    /// The pool's health check: `[health]` with this pool's overrides applied.
    pub health: HealthConfig,
    /// TLS to the backends (`[pools.NAME.tls]`); plain TCP when absent.
    pub tls: Option<UpstreamTlsConfig>,
    /// `[[pools.NAME.match]]`: requests that match any go to this pool
    /// whatever the weights, while it has a routable backend.
    pub matches: Vec<MatchRule>,
    /// `[retry]` with this pool's `[pools.NAME.retry]` applied.
    pub retry: RetryConfig,
}

/// Which failed tries are tried again on another backend (`[retry]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryConfig {
    /// Tries in all, the first included (1: no retries, the default while
    /// no `[retry]` is written).
    pub attempts: u32,
    pub on: RetryOn,
    /// Retries stay within this share of the pool's requests over the last
    /// 10 s ...
    pub budget: f64,
    /// ... plus this many per second, so a quiet pool can still retry.
    pub min_per_second: u32,
    /// How long each try waits for a response head (none: the request's
    /// `upstream_response` timeout alone, which bounds all tries together).
    pub per_try_timeout: Option<Duration>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            attempts: 1,
            on: RetryOn::DEFAULT,
            budget: 0.2,
            min_per_second: 3,
            per_try_timeout: None,
        }
    }
}

/// The conditions a try is retried on, as a set (`[retry] on`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryOn(pub u8);

impl RetryOn {
    /// The request never reached the backend (connect refused or timed out).
    pub const CONNECT_FAILURE: u8 = 1;
    /// The connection broke before a response head came back.
    pub const RESET: u8 = 2;
    pub const STATUS_502: u8 = 4;
    pub const STATUS_503: u8 = 8;
    /// No response head within the per-try (or the request's) timeout.
    pub const TIMEOUT: u8 = 16;
    pub const DEFAULT: RetryOn = RetryOn(Self::CONNECT_FAILURE | Self::RESET | Self::STATUS_503);
    /// The names written in config, with their bits.
    pub const NAMES: [(&'static str, u8); 5] = [
        ("connect-failure", Self::CONNECT_FAILURE),
        ("reset", Self::RESET),
        ("502", Self::STATUS_502),
        ("503", Self::STATUS_503),
        ("timeout", Self::TIMEOUT),
    ];

    pub fn contains(self, bit: u8) -> bool {
        self.0 & bit != 0
    }
}

/// A request that goes to a pool by what it carries (testers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchRule {
    pub on: MatchOn,
    /// Compared exactly.
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatchOn {
    /// A request header (lower-case name).
    Header(String),
    /// A cookie by name.
    Cookie(String),
}

/// TLS from sluice to a pool's backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTlsConfig {
    /// CA certificates (PEM) the backends' certificates must chain to.
    pub ca: SecretRef,
    /// Checked against the backend's certificate and sent as SNI; by
    /// default the host part of each backend address.
    pub server_name: Option<String>,
    /// A client certificate and key, for backends that require mutual TLS.
    pub client_cert: Option<CertificateConfig>,
}
