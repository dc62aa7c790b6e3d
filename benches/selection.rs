//! Per-request costs: one table load, pool choice (random and sticky) and
//! power-of-two-choices backend choice with 2, 10, 100 and 1000 backends
//! (flat, not linear); recording an outcome; rewriting the headers.
//!
//! `cargo bench --bench selection`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::HeaderMap;
use sluice_config::{Sticky, UpstreamProtocol};
use sluice_routing::select::{choose_backend, choose_pool};
use sluice_routing::{PoolSpec, RoutingHandle, RoutingPolicy};

fn handle(backends: usize, sticky: Option<Sticky>) -> RoutingHandle {
    let pool = |name: &str, weight, base: usize| PoolSpec {
        name: name.into(),
        version: "v1".into(),
        weight,
        protocol: UpstreamProtocol::Http1,
        backends: (0..backends)
            .map(|i| format!("10.{}.{}.{}:8080", base, i / 256, i % 256))
            .collect(),
        tls: None,
        matches: Vec::new(),
    };
    let policy = RoutingPolicy {
        sticky,
        ..RoutingPolicy::default()
    };
    RoutingHandle::new(
        &[
            pool("blue", sluice_config::Weight::percent(90).unwrap(), 1),
            pool("green", sluice_config::Weight::percent(10).unwrap(), 2),
        ],
        policy,
    )
    .unwrap()
}

fn selection(c: &mut Criterion) {
    let peer: IpAddr = "192.0.2.10".parse().unwrap();
    let mut cookie = HeaderMap::new();
    cookie.insert(
        http::header::COOKIE,
        "session=abc; cohort=0123456789abcdef".parse().unwrap(),
    );
    let mut group = c.benchmark_group("select");
    for n in [2usize, 10, 100, 1000] {
        let random = handle(n, None);
        group.bench_with_input(BenchmarkId::new("random_pool+p2c", n), &n, |b, _| {
            let empty = HeaderMap::new();
            b.iter(|| {
                let table = random.load();
                let choice = choose_pool(&table, black_box(&empty), peer).unwrap();
                black_box(choose_backend(choice.pool).unwrap().addr().len())
            })
        });
        let sticky = handle(n, Some(Sticky::Cookie("cohort".into())));
        group.bench_with_input(BenchmarkId::new("sticky_cookie+p2c", n), &n, |b, _| {
            b.iter(|| {
                let table = sticky.load();
                let choice = choose_pool(&table, black_box(&cookie), peer).unwrap();
                black_box(choose_backend(choice.pool).unwrap().addr().len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, selection);

/// What the request path pays to record one outcome: pool counters plus
/// the live window (target: under 100 ns).
fn recording(c: &mut Criterion) {
    use sluice_routing::stats::PoolStats;
    use sluice_routing::window::Outcome;
    use std::time::Duration;
    let stats = PoolStats::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    c.bench_function("record/stats+window", |b| {
        b.iter(|| {
            let now = tokio::time::Instant::now();
            stats.record(black_box(200), black_box(Duration::from_micros(850)));
            stats
                .window
                .record(now, black_box(Duration::from_micros(850)), black_box(Outcome::Success));
        })
    });
}

criterion_group!(recording_benches, recording);

/// Hop-by-hop removal and the forwarding headers, on a typical browser
/// request's header map.
fn header_rewrite(c: &mut Criterion) {
    use sluice_proxy::headers::{ForwardedFor, add_forwarding, strip_hop_by_hop};
    let mut base = HeaderMap::new();
    for (k, v) in [
        ("host", "app.example.com"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36"),
        ("accept", "text/html,application/xhtml+xml"),
        ("accept-encoding", "gzip, deflate, br"),
        ("accept-language", "en-GB,en;q=0.9"),
        ("cookie", "session=abc; cohort=0123456789abcdef"),
        ("connection", "keep-alive"),
    ] {
        base.insert(k, v.parse().unwrap());
    }
    let fwd = ForwardedFor::new("192.0.2.10".parse().unwrap(), false);
    let host = base["host"].clone();
    c.bench_function("headers/rewrite", |b| {
        b.iter(|| {
            let mut h = base.clone();
            strip_hop_by_hop(&mut h);
            add_forwarding(&mut h, &fwd, &host);
            black_box(h.len())
        })
    });
}

criterion_group!(header_benches, header_rewrite);
criterion_main!(benches, recording_benches, header_benches);
