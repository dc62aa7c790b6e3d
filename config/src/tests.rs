use std::path::PathBuf;
use std::time::Duration;

use super::*;

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples").join(name)
}

fn problems(text: &str) -> Vec<String> {
    match Config::from_toml(text) {
        Ok(c) => panic!("expected errors, got {c:?}"),
        Err(e) => e.problems(),
    }
}

#[test]
fn every_example_validates() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seen += 1;
        }
    }
    assert!(seen >= 3, "expected the minimal, blue-green and canary examples");
}

#[test]
fn minimal_example_gets_defaults() {
    let c = Config::load(&example("minimal.toml")).unwrap();
    assert_eq!(c.proxy.timeouts, Timeouts::default());
    assert_eq!(c.proxy.limits.max_header_bytes, 64 * 1024);
    assert_eq!(c.proxy.limits.max_headers, 100);
    assert_eq!(c.admin.listen.to_string(), "127.0.0.1:9901");
    assert_eq!(c.store.url, "sqlite://sluice.db");
    assert_eq!(c.health.interval, Duration::from_secs(10));
    assert_eq!(c.sticky, None);
    assert_eq!(c.pools.len(), 1);
    assert_eq!(c.pools[0].weight, 100);
}

#[test]
fn canary_example_reads_overrides() {
    let c = Config::load(&example("canary.toml")).unwrap();
    assert_eq!(c.sticky, Some(Sticky::Cookie("sluice_cohort".into())));
    assert!(c.proxy.allow_pool_override);
    let canary = c.pool("canary").unwrap();
    assert_eq!(canary.protocol, UpstreamProtocol::Http2);
    assert_eq!(canary.health.path, "/healthz");
    assert_eq!(canary.health.interval, Duration::from_secs(5));
    // Unset keys inherit from [health], then the built-in defaults.
    assert_eq!(canary.health.unhealthy_threshold, 3);
    assert_eq!(c.pool("stable").unwrap().health.path, "/health/ready");
}

#[test]
fn broken_file_reports_one_error_per_bad_key_with_its_path() {
    let text = r#"
[proxy]
listen = "not-an-address"
lissen = "0.0.0.0:1"

[proxy.timeouts]
connect = "soon"

[admin.tokens]
oops = 1

[[store.extra]]

[sticky]
cookie = "a"
header = "b"

[pools.blue]
version = "v1"
weight = 150
backends = ["127.0.0.1:9001", "nope"]

[pools.green]
weight = 10
"#;
    let got = problems(text);
    let expect = [
        "proxy.listen:",
        "proxy.lissen: unknown key",
        "proxy.timeouts.connect:",
        "admin.tokens: expected an array of tables",
        "store.extra: unknown key",
        "sticky: set exactly one of",
        "pools.blue.weight: must be a percentage between 0 and 100 with at most two decimals (e.g. 10 or 0.5)",
        "pools.blue.backends[1]:",
        "pools.green.version: is required",
        "pools.green.backends: a pool with weight above 0 needs at least one backend",
    ];
    for e in expect {
        assert!(got.iter().any(|g| g.starts_with(e)), "missing {e:?} in {got:#?}");
    }
    assert_eq!(got.len(), expect.len(), "one error per bad key: {got:#?}");
}

#[test]
fn weights_must_sum_to_100() {
    let got = problems(
        r#"
[pools.blue]
version = "v1"
weight = 60
backends = ["127.0.0.1:1"]
[pools.green]
version = "v2"
weight = 30
backends = ["127.0.0.1:2"]
"#,
    );
    assert_eq!(got, vec!["pools: weights must sum to 100, they sum to 90"]);
}

#[test]
fn weights_take_two_decimals_and_no_more() {
    let two = |blue: &str, green: &str| {
        format!(
            "[pools.blue]\nversion = \"v1\"\nweight = {blue}\nbackends = [\"127.0.0.1:1\"]\n\
             [pools.green]\nversion = \"v2\"\nweight = {green}\nbackends = [\"127.0.0.1:2\"]\n"
        )
    };
    let c = Config::from_toml(&two("99.9", "0.1")).unwrap();
    assert_eq!(c.pool("green").unwrap().weight.hundredths(), 10);
    assert_eq!(c.pool("blue").unwrap().weight.to_string(), "99.9");
    let c = Config::from_toml(&two("87.66", "12.34")).unwrap();
    assert_eq!(c.pool("green").unwrap().weight.hundredths(), 1234);
    assert_eq!(
        problems(&two("99.995", "0.005")),
        vec![
            "pools.blue.weight: must be a percentage between 0 and 100 with at most two decimals (e.g. 10 or 0.5)",
            "pools.green.weight: must be a percentage between 0 and 100 with at most two decimals (e.g. 10 or 0.5)",
        ]
    );
    assert_eq!(
        problems(&two("99.9", "0.09")),
        vec!["pools: weights must sum to 100, they sum to 99.99"]
    );
}

#[test]
fn secrets_must_be_references_and_are_never_echoed() {
    let got = problems(
        r#"
[[admin.tokens]]
name = "ci"
role = "admin"
secret = "hunter2-super-secret"
[pools.blue]
version = "v1"
weight = 100
backends = ["127.0.0.1:1"]
"#,
    );
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(got[0].starts_with("admin.tokens[0].role:"));
    assert!(got[1].starts_with("admin.tokens[0].secret: must be a reference"));
    assert!(got.iter().all(|g| !g.contains("hunter2")));
}

#[test]
fn syntax_errors_are_reported_not_panicked() {
    let err = Config::from_toml("[pools.blue\nversion=").unwrap_err();
    assert!(matches!(err, ConfigError::Syntax(_)), "{err}");
}

#[test]
fn missing_file_is_a_read_error() {
    let err = Config::load(&example("does-not-exist.toml")).unwrap_err();
    assert!(err.to_string().contains("does-not-exist.toml"));
}

#[test]
fn no_pools_is_an_error() {
    assert_eq!(
        problems("[proxy]\n"),
        vec!["pools: at least one pool is required, e.g. [pools.blue] with version, weight and backends"]
    );
}

#[test]
fn admin_on_a_public_address_needs_tokens_or_insecure() {
    let pools = "[pools.blue]\nversion = \"v1\"\nweight = 100\nbackends = [\"127.0.0.1:1\"]\n";
    let got = problems(&format!("[admin]\nlisten = \"0.0.0.0:9901\"\n{pools}"));
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0].starts_with("admin.listen: the admin API on 0.0.0.0:9901"),
        "{got:#?}"
    );
    Config::from_toml(&format!("[admin]\nlisten = \"0.0.0.0:9901\"\ninsecure = true\n{pools}")).unwrap();
    Config::from_toml(&format!("[admin]\nlisten = \"127.0.0.1:9901\"\n{pools}")).unwrap();
}

#[test]
fn story_environment_overrides_apply_and_bad_values_are_named() {
    let mut c = Config::load(&example("canary.toml")).unwrap();
    let env = |k: &str| match k {
        "HEALTH_CHECK_INTERVAL" => Some("3s".to_owned()),
        "AUTOMATIC_ROLLBACK_ON_ERROR" => Some("false".to_owned()),
        _ => None,
    };
    c.apply_env(env).unwrap();
    assert_eq!(c.health.interval, Duration::from_secs(3));
    assert!(c.pools.iter().all(|p| p.health.interval == Duration::from_secs(3)));
    assert!(!c.rollback.enabled);
    let err = c
        .apply_env(|k| (k == "HEALTH_CHECK_TIMEOUT").then(|| "soon".to_owned()))
        .unwrap_err();
    assert!(err.to_string().contains("HEALTH_CHECK_TIMEOUT"), "{err}");

    // BLUE_GREEN_MODE names the active pool: it gets all the traffic.
    c.apply_env(|k| (k == "BLUE_GREEN_MODE").then(|| "canary".to_owned()))
        .unwrap();
    assert_eq!(c.pool("canary").unwrap().weight, 100);
    assert_eq!(c.pool("stable").unwrap().weight, 0);
    let err = c
        .apply_env(|k| (k == "BLUE_GREEN_MODE").then(|| "purple".to_owned()))
        .unwrap_err();
    assert!(
        err.to_string().contains("BLUE_GREEN_MODE") && err.to_string().contains("stable"),
        "{err}"
    );
}

#[test]
fn sluice_variables_override_any_key_and_sources_say_where_values_came_from() {
    let vars: Vec<(String, String)> = [
        ("SLUICE_PROXY__LISTEN", "127.0.0.1:7000"),
        ("SLUICE_POOLS__STABLE__WEIGHT", "90"),
        ("SLUICE_POOLS__CANARY__WEIGHT", "10"),
        ("SLUICE_TOKEN", "not-config"),
        ("HEALTH_CHECK_TIMEOUT", "1s"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let (c, sources) = Config::load_with_env(&example("canary.toml"), &vars).unwrap();
    assert_eq!(c.proxy.listen.to_string(), "127.0.0.1:7000");
    assert_eq!(c.pool("canary").unwrap().weight, 10);
    assert_eq!(c.pool("canary").unwrap().health.timeout, Duration::from_secs(1));
    assert_eq!(sources.of("proxy.listen"), Source::Env("SLUICE_PROXY__LISTEN".into()));
    assert_eq!(sources.of("pools.canary.health.path"), Source::File);
    assert_eq!(sources.of("proxy.drain_timeout"), Source::Default);
    assert_eq!(sources.of("health.timeout"), Source::Env("HEALTH_CHECK_TIMEOUT".into()));

    let bad = vec![("SLUICE_PROXY__WORKERS".to_owned(), "zero".to_owned())];
    let err = Config::load_with_env(&example("canary.toml"), &bad).unwrap_err();
    assert!(
        err.to_string().contains("proxy.workers") && err.to_string().contains("SLUICE_PROXY__WORKERS"),
        "{err}"
    );
}

#[test]
fn grpc_health_checks_need_http2_pools() {
    let text = "[health]\nmode = \"grpc\"\ngrpc_service = \"shop.Cart\"\n\
                [pools.blue]\nversion = \"v1\"\nweight = 100\nprotocol = \"http2\"\nbackends = [\"127.0.0.1:50051\"]\n";
    let config = Config::from_toml(text).unwrap();
    assert_eq!(config.pools[0].health.mode, HealthMode::Grpc);
    assert_eq!(config.pools[0].health.grpc_service, "shop.Cart");
    let http1 = text.replace("protocol = \"http2\"\n", "");
    assert_eq!(
        problems(&http1),
        vec!["pools.blue.protocol: gRPC health checks ([health] mode = \"grpc\") need protocol = \"http2\""]
    );
    let bad = text.replace("\"grpc\"", "\"tcp\"");
    assert_eq!(
        problems(&bad),
        vec!["health.mode: \"tcp\" is not a health mode; use \"http\" or \"grpc\""]
    );
}

#[test]
fn access_log_is_off_by_default_and_its_keys_are_checked() {
    let base = "[pools.blue]\nversion = \"v1\"\nweight = 100\nbackends = [\"127.0.0.1:9001\"]\n";
    let c = Config::from_toml(base).unwrap();
    assert_eq!(c.access_log, AccessLogConfig::default());
    assert!(!c.access_log.enabled);

    let on = format!(
        "[access_log]\nenabled = true\npath = \"/var/log/sluice.log\"\nformat = \"combined\"\nsample = 0.25\n{base}"
    );
    let a = Config::from_toml(&on).unwrap().access_log;
    assert!(a.enabled);
    assert_eq!(a.path, "/var/log/sluice.log");
    assert_eq!(a.format, AccessLogFormat::Combined);
    assert_eq!(a.sample, 0.25);

    let bad = format!("[access_log]\npath = \"\"\nformat = \"clf\"\nsample = 1.5\nbuffer = 3\n{base}");
    let found = problems(&bad);
    for key in [
        "access_log.path",
        "access_log.format",
        "access_log.sample",
        "access_log.buffer",
    ] {
        assert!(found.iter().any(|p| p.starts_with(key)), "{key} not named in {found:?}");
    }
}

#[test]
fn tracing_propagates_by_default_exports_only_when_told_and_checks_its_keys() {
    let base = "[pools.blue]\nversion = \"v1\"\nweight = 100\nbackends = [\"127.0.0.1:9001\"]\n";
    let t = Config::from_toml(base).unwrap().tracing;
    assert_eq!(t, TracingConfig::default());
    assert!(t.propagate && t.otlp_endpoint.is_none() && t.sample_ratio == 1.0);

    let on = format!("[tracing]\notlp_endpoint = \"http://127.0.0.1:4318/v1/traces\"\nsample_ratio = 0.01\n{base}");
    let t = Config::from_toml(&on).unwrap().tracing;
    assert!(t.propagate);
    assert_eq!(t.otlp_endpoint.as_deref(), Some("http://127.0.0.1:4318/v1/traces"));
    assert_eq!(t.sample_ratio, 0.01);

    let off = format!("[tracing]\npropagate = false\n{base}");
    assert!(!Config::from_toml(&off).unwrap().tracing.propagate);

    for (bad, key) in [
        (
            "propagate = false\notlp_endpoint = \"http://c:4318/v1/traces\"",
            "tracing.propagate",
        ),
        ("otlp_endpoint = \"https://c:4318/v1/traces\"", "tracing.otlp_endpoint"),
        ("otlp_endpoint = \"c:4318\"", "tracing.otlp_endpoint"),
        ("otlp_endpoint = \"http:///v1/traces\"", "tracing.otlp_endpoint"),
        ("sample_ratio = 2.0", "tracing.sample_ratio"),
        ("exporter = \"jaeger\"", "tracing.exporter"),
    ] {
        let found = problems(&format!("[tracing]\n{bad}\n{base}"));
        assert!(found.iter().any(|p| p.starts_with(key)), "{key} not named in {found:?}");
    }
}

#[test]
fn rate_limits_are_read_in_order_with_a_second_s_burst_by_default() {
    let base = "[pools.blue]\nversion = \"v1\"\nweight = 100\nbackends = [\"127.0.0.1:9001\"]\n";
    assert!(Config::from_toml(base).unwrap().rate_limits.is_empty());
    let text = format!(
        "[[rate_limits]]\nkey = \"client_ip\"\nrate = 100\nburst = 200\n\
         [[rate_limits]]\nkey = \"header:X-Api-Key\"\nrate = 2.5\n\
         [[rate_limits]]\nkey = \"global\"\nrate = 1000\n{base}"
    );
    let limits = Config::from_toml(&text).unwrap().rate_limits;
    assert_eq!(
        limits,
        vec![
            RateLimitConfig {
                key: RateKey::ClientIp,
                rate: 100.0,
                burst: 200
            },
            RateLimitConfig {
                key: RateKey::Header("x-api-key".into()),
                rate: 2.5,
                burst: 3
            },
            RateLimitConfig {
                key: RateKey::Global,
                rate: 1000.0,
                burst: 1000
            },
        ]
    );
    for (bad, key) in [
        ("key = \"ip\"\nrate = 1", "rate_limits[0].key"),
        ("key = \"header:bad name\"\nrate = 1", "rate_limits[0].key"),
        ("rate = 1", "rate_limits[0].key"),
        ("key = \"global\"\nrate = 0", "rate_limits[0].rate"),
        ("key = \"global\"", "rate_limits[0].rate"),
        ("key = \"global\"\nrate = 1\nburst = 0", "rate_limits[0].burst"),
        ("key = \"global\"\nrate = 1\nwindow = \"1s\"", "rate_limits[0].window"),
    ] {
        let found = problems(&format!("[[rate_limits]]\n{bad}\n{base}"));
        assert!(found.iter().any(|p| p.starts_with(key)), "{key} not named in {found:?}");
    }
}

#[test]
fn slow_start_is_off_by_default_and_a_pool_may_set_its_own() {
    let text = "[health]\nslow_start = \"30s\"\n\
        [pools.blue]\nversion = \"v1\"\nweight = 100\nbackends = [\"127.0.0.1:9001\"]\n\
        [pools.green]\nversion = \"v2\"\nweight = 0\nbackends = [\"127.0.0.1:9002\"]\n\
        [pools.green.health]\nslow_start = \"5s\"\n";
    let c = Config::from_toml(text).unwrap();
    assert_eq!(c.health.slow_start, Duration::from_secs(30));
    let green = c.pools.iter().find(|p| p.name == "green").unwrap();
    assert_eq!(green.health.slow_start, Duration::from_secs(5));
    assert_eq!(HealthConfig::default().slow_start, Duration::ZERO);
    assert!(
        problems(&text.replace("\"5s\"", "\"soon\""))
            .iter()
            .any(|p| p.starts_with("pools.green.health.slow_start"))
    );
}

#[test]
fn match_rules_name_a_header_or_a_cookie_and_a_value() {
    let base = "[pools.blue]\nversion = \"v1\"\nweight = 100\nbackends = [\"127.0.0.1:9001\"]\n\
        [pools.green]\nversion = \"v2\"\nweight = 0\nbackends = [\"127.0.0.1:9002\"]\n";
    let text = format!(
        "{base}[[pools.green.match]]\nheader = \"X-Beta\"\nvalue = \"1\"\n[[pools.green.match]]\ncookie = \"beta\"\nvalue = \"yes\"\n"
    );
    let c = Config::from_toml(&text).unwrap();
    let green = c.pools.iter().find(|p| p.name == "green").unwrap();
    assert_eq!(
        green.matches,
        vec![
            MatchRule {
                on: MatchOn::Header("x-beta".into()),
                value: "1".into()
            },
            MatchRule {
                on: MatchOn::Cookie("beta".into()),
                value: "yes".into()
            },
        ]
    );
    for (bad, key) in [
        ("header = \"x-beta\"", "pools.green.match[0].value"),
        ("value = \"1\"", "pools.green.match[0].header"),
        (
            "header = \"a\"\ncookie = \"b\"\nvalue = \"1\"",
            "pools.green.match[0].header",
        ),
        ("header = \"bad name\"\nvalue = \"1\"", "pools.green.match[0].header"),
        ("header = \"x\"\nvalue = \"\"", "pools.green.match[0].value"),
        (
            "header = \"x\"\nvalue = \"1\"\nregex = \".*\"",
            "pools.green.match[0].regex",
        ),
    ] {
        let found = problems(&format!("{base}[[pools.green.match]]\n{bad}\n"));
        assert!(found.iter().any(|p| p.starts_with(key)), "{key} not named in {found:?}");
    }
}

#[test]
fn retries_are_off_until_written_and_a_pool_overrides_any_key() {
    let pools = "[pools.blue]\nversion = \"v1\"\nweight = 100\nbackends = [\"127.0.0.1:9001\"]\n\
                 [pools.green]\nversion = \"v2\"\nweight = 0\nbackends = [\"127.0.0.1:9002\"]\n";
    let off = Config::from_toml(pools).unwrap();
    assert_eq!(off.retry.attempts, 1);
    assert!(off.pools.iter().all(|p| p.retry.attempts == 1));
    let text = format!(
        "[retry]\non = [\"connect-failure\", \"502\"]\nbudget = 0.1\nper_try_timeout = \"2s\"\n{pools}\
         [pools.green.retry]\nattempts = 3\n"
    );
    let c = Config::from_toml(&text).unwrap();
    let (blue, green) = (&c.pools[0].retry, &c.pools[1].retry);
    assert_eq!(blue.attempts, 2, "writing [retry] turns retries on");
    assert_eq!(blue.on, RetryOn(RetryOn::CONNECT_FAILURE | RetryOn::STATUS_502));
    assert_eq!((blue.budget, blue.min_per_second), (0.1, 3));
    assert_eq!(blue.per_try_timeout, Some(Duration::from_secs(2)));
    assert_eq!(green.attempts, 3);
    assert_eq!(green.on, blue.on, "the rest comes from [retry]");
    for (bad, key) in [
        ("attempts = 6", "retry.attempts"),
        ("attempts = 0", "retry.attempts"),
        ("on = [\"500\"]", "retry.on"),
        ("budget = 1.5", "retry.budget"),
        ("min_per_second = -1", "retry.min_per_second"),
        ("per_try_timeout = \"0s\"", "retry.per_try_timeout"),
        ("tries = 2", "retry.tries"),
    ] {
        let found = problems(&format!("[retry]\n{bad}\n{pools}"));
        assert!(found.iter().any(|p| p.starts_with(key)), "{key} not named in {found:?}");
    }
}

#[test]
fn mirrors_name_a_pool_and_a_share() {
    let pools = "[pools.blue]\nversion = \"v1\"\nweight = 100\nbackends = [\"127.0.0.1:9001\"]\n\
                 [pools.green]\nversion = \"v2\"\nweight = 0\nbackends = [\"127.0.0.1:9002\"]\n";
    assert!(Config::from_toml(pools).unwrap().mirrors.is_empty());
    let c = Config::from_toml(&format!("[[mirror]]\nto = \"green\"\npercent = 2.5\n{pools}")).unwrap();
    assert_eq!(
        c.mirrors,
        vec![MirrorConfig {
            to: "green".into(),
            percent: 2.5,
            max_body_bytes: 65_536,
            timeout: Duration::from_secs(5),
            allow_non_idempotent: false,
        }]
    );
    for (bad, key) in [
        ("to = \"red\"\npercent = 1", "mirror[0].to"),
        ("percent = 1", "mirror[0].to"),
        ("to = \"green\"", "mirror[0].percent"),
        ("to = \"green\"\npercent = 0", "mirror[0].percent"),
        ("to = \"green\"\npercent = 101", "mirror[0].percent"),
        ("to = \"green\"\npercent = 1\ntimeout = \"0s\"", "mirror[0].timeout"),
        (
            "to = \"green\"\npercent = 1\nmax_body_bytes = -1",
            "mirror[0].max_body_bytes",
        ),
    ] {
        let found = problems(&format!("[[mirror]]\n{bad}\n{pools}"));
        assert!(found.iter().any(|p| p.starts_with(key)), "{key} not named in {found:?}");
    }
    let twice = problems(&format!(
        "[[mirror]]\nto = \"green\"\npercent = 1\n[[mirror]]\nto = \"green\"\npercent = 2\n{pools}"
    ));
    assert!(twice.iter().any(|p| p.starts_with("mirror[1].to")), "{twice:?}");
}

#[test]
fn analysis_routes_are_named_prefixes() {
    let pools = "[pools.blue]\nversion = \"v1\"\nweight = 100\nbackends = [\"127.0.0.1:9001\"]\n";
    let c = Config::from_toml(&format!(
        "[[analysis.routes]]\nname = \"predict\"\nprefix = \"/predict\"\n[[analysis.routes]]\nname = \"api\"\nprefix = \"/api/\"\n{pools}"
    ))
    .unwrap();
    assert_eq!(
        c.analysis_routes,
        vec![
            RouteConfig {
                name: "predict".into(),
                prefix: "/predict".into()
            },
            RouteConfig {
                name: "api".into(),
                prefix: "/api/".into()
            },
        ]
    );
    for (bad, key) in [
        ("name = \"Predict\"\nprefix = \"/p\"", "analysis.routes[0].name"),
        ("prefix = \"/p\"", "analysis.routes[0].name"),
        ("name = \"p\"\nprefix = \"p\"", "analysis.routes[0].prefix"),
        ("name = \"p\"", "analysis.routes[0].prefix"),
        ("name = \"p\"\nprefix = \"/p\"\nweight = 1", "analysis.routes[0].weight"),
    ] {
        let found = problems(&format!("[[analysis.routes]]\n{bad}\n{pools}"));
        assert!(found.iter().any(|p| p.starts_with(key)), "{key} not named in {found:?}");
    }
    let many: String = (0..17)
        .map(|i| format!("[[analysis.routes]]\nname = \"r{i}\"\nprefix = \"/{i}\"\n"))
        .collect();
    assert!(
        problems(&format!("{many}{pools}"))
            .iter()
            .any(|p| p.starts_with("analysis.routes"))
    );
}
