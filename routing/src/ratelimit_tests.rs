use std::net::{IpAddr, Ipv4Addr};

use super::*;

fn limits(key: RateKey, rate: f64, burst: u32) -> RateLimits {
    RateLimits::new(&[RateLimitConfig { key, rate, burst }])
}

fn ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(n))
}

fn no_header(_: &str) -> Option<&'static [u8]> {
    None
}

/// Requests allowed for `client` when offered at `offered` per second
/// for `seconds`, on a simulated clock.
fn allowed(l: &RateLimits, client: IpAddr, offered: u64, seconds: u64, start: Duration) -> u64 {
    let step = Duration::from_nanos(1_000_000_000 / offered);
    (0..offered * seconds)
        .filter(|&i| l.check(l.epoch + start + step * i as u32, client, no_header).is_ok())
        .count() as u64
}

#[test]
fn a_key_offered_five_times_its_rate_gets_its_rate() {
    let l = limits(RateKey::ClientIp, 100.0, 200);
    // 10 s at 500/s: 100/s plus the first burst.
    let got = allowed(&l, ip(1), 500, 10, Duration::ZERO);
    let expected = 100 * 10 + 200;
    assert!(
        got.abs_diff(expected) <= expected / 20,
        "{got} of an expected {expected}"
    );
    // Another client is not limited by the first one's traffic.
    assert_eq!(allowed(&l, ip(2), 100, 1, Duration::from_secs(10)), 100);
}

#[test]
fn a_burst_passes_at_once_then_the_wait_is_named() {
    let l = limits(RateKey::Global, 10.0, 5);
    let now = l.epoch + Duration::from_secs(60);
    for i in 0..5 {
        assert!(l.check(now, ip(i), no_header).is_ok(), "request {i} of the burst");
    }
    let refused = l.check(now, ip(9), no_header).unwrap_err();
    assert_eq!(refused.limit, 0);
    assert_eq!(refused.retry_after, Duration::from_millis(100));
    // One interval later, one more.
    assert!(l.check(now + Duration::from_millis(100), ip(9), no_header).is_ok());
    assert!(l.check(now + Duration::from_millis(100), ip(9), no_header).is_err());
}

#[test]
fn a_header_limit_counts_each_value_and_skips_requests_without_it() {
    let l = limits(RateKey::Header("x-api-key".into()), 1.0, 1);
    let now = l.epoch + Duration::from_secs(5);
    let key = |v: &'static [u8]| move |name: &str| (name == "x-api-key").then_some(v);
    assert!(l.check(now, ip(1), key(b"alpha")).is_ok());
    assert!(
        l.check(now, ip(2), key(b"alpha")).is_err(),
        "the same key from elsewhere"
    );
    assert!(l.check(now, ip(1), key(b"beta")).is_ok());
    for _ in 0..10 {
        assert!(l.check(now, ip(1), no_header).is_ok(), "no key, not counted");
    }
}

#[test]
fn a_million_new_keys_grow_nothing_and_leave_a_steady_client_its_rate() {
    let l = limits(RateKey::ClientIp, 100.0, 100);
    let table = l.limits[0].slots.len();
    // One second: a million addresses once each, and a steady client at
    // its rate between them.
    let mut steady = 0;
    for i in 0..1_000_000u32 {
        let now = l.epoch + Duration::from_micros(u64::from(i));
        let _ = l.check(now, ip(0x0a00_0000 + i), no_header);
        if i % 10_000 == 0 && l.check(now, ip(1), no_header).is_ok() {
            steady += 1;
        }
    }
    assert_eq!(l.limits[0].slots.len(), table);
    assert_eq!(steady, 100, "the steady client was limited by the flood");
}

#[test]
fn limits_apply_in_order_and_the_first_refusal_is_named() {
    let l = RateLimits::new(&[
        RateLimitConfig {
            key: RateKey::ClientIp,
            rate: 1000.0,
            burst: 1000,
        },
        RateLimitConfig {
            key: RateKey::Global,
            rate: 1.0,
            burst: 2,
        },
    ]);
    let now = l.epoch + Duration::from_secs(1);
    assert!(l.check(now, ip(1), no_header).is_ok());
    assert!(l.check(now, ip(2), no_header).is_ok());
    assert_eq!(l.check(now, ip(3), no_header).unwrap_err().limit, 1);
}
