//! Rate limits (`[[rate_limits]]`): a token bucket per key, as GCRA (the
//! generic cell rate algorithm: one "theoretical arrival time" per bucket
//! instead of a token count and a timestamp), per replica.
//!
//! Keyed limits keep their buckets in a fixed table whatever the number of
//! distinct keys: each key hashes (keyed per process, so keys cannot be
//! crafted to collide) to two slots and is judged by the less
//! loaded one, both then charged ("conservative update", as in a
//! count-min sketch). A flood of new keys cannot grow memory; at worst it
//! loads the table so that keys sharing both slots with heavy ones are
//! limited with them. No lock: each slot is one atomic updated by
//! compare-and-swap.

use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use sluice_config::{RateKey, RateLimitConfig};

/// Slots of a keyed limit's table (two per key): 512 KiB.
const SLOTS: usize = 1 << 16;

/// Requests refused, by the kind of key of the limit that refused them
/// (`sluice_rate_limited_total{key}`), in the order of [`KEY_KINDS`].
pub static REFUSED: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];
pub const KEY_KINDS: [&str; 3] = ["client_ip", "header", "global"];

fn kind(key: &RateKey) -> usize {
    match key {
        RateKey::ClientIp => 0,
        RateKey::Header(_) => 1,
        RateKey::Global => 2,
    }
}

/// Every configured limit, in order.
#[derive(Debug)]
pub struct RateLimits {
    limits: Vec<Limit>,
    /// Time zero for the arrival times (nanoseconds since).
    epoch: Instant,
    /// Keys header values (any length) with SipHash.
    hasher: std::collections::hash_map::RandomState,
    /// Secret seeds of the addresses' hash (see [`RateLimits::slots_of_ip`]).
    seeds: [u64; 2],
}

#[derive(Debug)]
struct Limit {
    config: RateLimitConfig,
    /// Nanoseconds between requests at the rate.
    interval: u64,
    /// How far ahead of now a bucket's arrival time may run: the burst.
    tolerance: u64,
    /// One slot for `global`, [`SLOTS`] for keyed limits.
    slots: Box<[AtomicU64]>,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// Which limit (its index in the config).
    pub limit: usize,
    /// When the request would have been allowed.
    pub retry_after: Duration,
}

impl RateLimits {
    pub fn new(configs: &[RateLimitConfig]) -> Self {
        let limits = configs
            .iter()
            .map(|config| {
                let interval = ((1e9 / config.rate).round() as u64).max(1);
                let slots = match config.key {
                    RateKey::Global => 1,
                    RateKey::ClientIp | RateKey::Header(_) => SLOTS,
                };
                Limit {
                    config: config.clone(),
                    interval,
                    tolerance: interval.saturating_mul(u64::from(config.burst)),
                    slots: (0..slots).map(|_| AtomicU64::new(0)).collect(),
                }
            })
            .collect();
        Self {
            limits,
            epoch: Instant::now(),
            hasher: std::collections::hash_map::RandomState::new(),
            seeds: [rand::random(), rand::random()],
        }
    }

    /// The limits as configured (a reload with the same keeps the buckets).
    pub fn configs(&self) -> impl Iterator<Item = &RateLimitConfig> {
        self.limits.iter().map(|l| &l.config)
    }

    /// Charges one request against every limit that applies to it, in
    /// order; the first that refuses says how long to wait. `header`
    /// reads a request header's value by name.
    pub fn check<'a>(
        &self,
        now: Instant,
        client: std::net::IpAddr,
        header: impl Fn(&str) -> Option<&'a [u8]>,
    ) -> Result<(), Limited> {
        let since = now.saturating_duration_since(self.epoch);
        let t = since
            .as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(since.subsec_nanos()));
        for (i, limit) in self.limits.iter().enumerate() {
            let slots = match &limit.config.key {
                RateKey::Global => (0, 0),
                RateKey::ClientIp => self.slots_of_ip(client),
                RateKey::Header(name) => match header(name) {
                    Some(value) => self.slots_of(value),
                    // Not counted by this limit (documented).
                    None => continue,
                },
            };
            limit.charge(t, slots).map_err(|wait| {
                if let Some(refused) = REFUSED.get(kind(&limit.config.key)) {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
                Limited {
                    limit: i,
                    retry_after: Duration::from_nanos(wait),
                }
            })?;
        }
        Ok(())
    }

    /// The key's two slots, from one 64-bit keyed hash.
    fn slots_of(&self, key: &(impl Hash + ?Sized)) -> (usize, usize) {
        split(self.hasher.hash_one(key))
    }

    /// An address's two slots: a folded multiply of its 128 bits with two
    /// secret seeds (as foldhash and wyhash mix), a tenth of SipHash's
    /// cost; the seeds are random per process, and nothing of the hash is
    /// ever shown to clients, so addresses cannot be picked to collide.
    fn slots_of_ip(&self, client: std::net::IpAddr) -> (usize, usize) {
        let bits = match client {
            std::net::IpAddr::V4(v4) => u128::from(v4.to_bits()),
            std::net::IpAddr::V6(v6) => v6.to_bits() ^ (1 << 127),
        };
        let fold = |a: u64, b: u64| {
            let m = u128::from(a).wrapping_mul(u128::from(b));
            (m as u64) ^ ((m >> 64) as u64)
        };
        let [s0, s1] = self.seeds;
        let h = fold((bits as u64) ^ s0, ((bits >> 64) as u64) ^ s1);
        split(fold(h ^ s1, s0 | 1))
    }
}

/// Two table indices from a 64-bit hash's two halves.
fn split(h: u64) -> (usize, usize) {
    let mask = (SLOTS - 1) as u64;
    ((h & mask) as usize, ((h >> 32) & mask) as usize)
}

impl Limit {
    /// GCRA on the less loaded of the key's slots; `Err(wait)` in
    /// nanoseconds when refused (nothing is charged then).
    fn charge(&self, t: u64, (a, b): (usize, usize)) -> Result<(), u64> {
        let (Some(first), Some(second)) = (self.slots.get(a), self.slots.get(b)) else {
            return Ok(());
        };
        loop {
            let seen = first.load(Ordering::Relaxed).min(second.load(Ordering::Relaxed));
            let next = seen.max(t).saturating_add(self.interval);
            if next - t > self.tolerance {
                return Err(next - t - self.tolerance);
            }
            // Charged where the arrival time was the one judged by; a
            // concurrent change there means judging again.
            let (lower, other) = if first.load(Ordering::Relaxed) == seen {
                (first, second)
            } else {
                (second, first)
            };
            if lower
                .compare_exchange_weak(seen, next, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                other.fetch_max(next, Ordering::Relaxed);
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
#[path = "ratelimit_tests.rs"]
mod tests;
