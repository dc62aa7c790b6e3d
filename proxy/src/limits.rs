//! The rate limits as the proxy holds them (`[[rate_limits]]`, see
//! `sluice_routing::ratelimit`): off, one relaxed load per request; a
//! reload with the same limits keeps their buckets, changed limits start
//! new ones.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwapOption;
use http::Request;
use sluice_config::RateLimitConfig;
use sluice_routing::ProxyError;
use sluice_routing::ratelimit::RateLimits;
use tokio::time::Instant;

#[derive(Debug, Default)]
pub struct Limits {
    on: AtomicBool,
    limits: ArcSwapOption<RateLimits>,
    /// Serialises reloads (control plane only).
    changing: Mutex<()>,
}

impl Limits {
    /// Applies `[[rate_limits]]`.
    pub fn configure(&self, configs: &[RateLimitConfig]) {
        let _changing = self.changing.lock().unwrap_or_else(PoisonError::into_inner);
        let same = self
            .limits
            .load()
            .as_ref()
            .is_some_and(|l| l.configs().eq(configs.iter()));
        if same {
            return;
        }
        if configs.is_empty() {
            self.on.store(false, Ordering::Relaxed);
            self.limits.store(None);
        } else {
            self.limits.store(Some(Arc::new(RateLimits::new(configs))));
            self.on.store(true, Ordering::Relaxed);
        }
    }

    /// Charges `req` against the limits; a refusal is sluice's 429.
    #[inline(always)]
    pub(crate) fn check<B>(&self, req: &Request<B>, client: IpAddr, now: Instant) -> Result<(), ProxyError> {
        if !self.on.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.check_on(req, client, now)
    }

    #[inline(never)]
    fn check_on<B>(&self, req: &Request<B>, client: IpAddr, now: Instant) -> Result<(), ProxyError> {
        let Some(limits) = self.limits.load_full() else {
            return Ok(());
        };
        let header = |name: &str| req.headers().get(name).map(|v| v.as_bytes());
        limits.check(now, client, header).map_err(|limited| {
            // Whole seconds, rounded up: "Retry-After: 0" would invite a
            // retry that is refused again.
            let nanos = limited.retry_after.as_nanos().div_ceil(1_000_000_000);
            ProxyError::RateLimited {
                retry_after_secs: u32::try_from(nanos.max(1)).unwrap_or(u32::MAX),
            }
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use sluice_config::RateKey;

    #[test]
    fn a_reload_keeps_unchanged_limits_buckets_and_replaces_changed_ones() {
        let limits = Limits::default();
        assert!(!limits.on.load(Ordering::Relaxed));
        let one = [RateLimitConfig {
            key: RateKey::Global,
            rate: 1.0,
            burst: 1,
        }];
        limits.configure(&one);
        let first = limits.limits.load_full().unwrap();
        limits.configure(&one);
        assert!(
            Arc::ptr_eq(&first, &limits.limits.load_full().unwrap()),
            "same limits, same buckets"
        );
        let mut two = one.clone();
        two[0].rate = 2.0;
        limits.configure(&two);
        assert!(!Arc::ptr_eq(&first, &limits.limits.load_full().unwrap()));
        limits.configure(&[]);
        assert!(!limits.on.load(Ordering::Relaxed) && limits.limits.load().is_none());
    }
}
