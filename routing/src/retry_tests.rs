#![allow(clippy::unwrap_used)]

use std::time::Duration;

use http::Method;
use sluice_config::{RetryConfig, RetryOn};

use crate::error::ProxyError;
use crate::retry::{Condition, RetryBudget, RetryPolicy};

fn policy(budget: f64, min_per_second: u32) -> RetryPolicy {
    RetryPolicy::from_config(&RetryConfig {
        attempts: 2,
        on: RetryOn::DEFAULT,
        budget,
        min_per_second,
        per_try_timeout: Some(Duration::from_secs(2)),
    })
    .unwrap()
}

#[test]
fn one_try_is_no_policy() {
    assert_eq!(RetryPolicy::from_config(&RetryConfig::default()), None);
}

#[test]
fn only_what_is_safe_goes_again() {
    let p = policy(0.2, 3);
    // Never reached the backend: any method.
    assert!(p.retries(Condition::ConnectFailure, &Method::POST));
    // Reached it: idempotent methods only.
    assert!(p.retries(Condition::Reset, &Method::GET));
    assert!(p.retries(Condition::Reset, &Method::PUT));
    assert!(!p.retries(Condition::Reset, &Method::POST));
    assert!(!p.retries(Condition::Status503, &Method::PATCH));
    assert!(p.retries(Condition::Status503, &Method::DELETE));
    // Not in the default set.
    assert!(!p.retries(Condition::Status502, &Method::GET));
    assert!(!p.retries(Condition::Timeout, &Method::GET));
}

#[test]
fn conditions_come_from_errors_and_statuses() {
    assert_eq!(
        Condition::of_error(ProxyError::ConnectFailed),
        Some(Condition::ConnectFailure)
    );
    assert_eq!(
        Condition::of_error(ProxyError::ConnectTimeout),
        Some(Condition::ConnectFailure)
    );
    assert_eq!(Condition::of_error(ProxyError::UpstreamReset), Some(Condition::Reset));
    assert_eq!(
        Condition::of_error(ProxyError::UpstreamTimeout),
        Some(Condition::Timeout)
    );
    assert_eq!(Condition::of_error(ProxyError::UpstreamMalformed), None);
    assert_eq!(Condition::of_status(503), Some(Condition::Status503));
    assert_eq!(Condition::of_status(500), None);
}

#[test]
fn the_budget_holds_retries_to_a_share_of_requests_plus_a_floor() {
    let p = policy(0.2, 1);
    let b = RetryBudget::default();
    let mut now = 100_000;
    let mut made = 0;
    // 10 s of 100 requests a second, every one wanting a retry.
    for _ in 0..10 {
        for _ in 0..100 {
            b.count_request(now);
            if b.try_retry(&p, Condition::Reset, now) {
                made += 1;
            }
            now += 10;
        }
    }
    // 20% of 1,000 requests plus 1 a second for 10 s, give or take the
    // requests not yet counted when the first retries were asked for.
    assert!((200..=210).contains(&made), "{made} retries");
    assert_eq!(b.made()[Condition::Reset as usize], made);
    assert_eq!(b.exhausted(), 1000 - made);
}

#[test]
fn a_quiet_pool_still_gets_its_floor_and_old_seconds_fall_out() {
    let p = policy(0.2, 2);
    let b = RetryBudget::default();
    let granted = (0..50)
        .filter(|_| b.try_retry(&p, Condition::ConnectFailure, 5_000))
        .count();
    assert_eq!(granted, 20, "2 a second over 10 s");
    // Ten seconds later the window holds none of them.
    assert!(b.try_retry(&p, Condition::ConnectFailure, 15_000));
}
