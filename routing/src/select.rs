//! Choosing a pool and a backend for one request, from one snapshot.
//!
//! Pools: with stickiness, a stable hash of the client's key lands on a slot
//! in `[0, SLOTS)` and the slot's cumulative weight range names the pool, so
//! moving weight towards a pool only adds clients to it. Without stickiness,
//! a random slot. Backends: power-of-two-choices on in-flight requests.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{COOKIE, HeaderValue};
use http::{HeaderMap, HeaderName};
use rand::Rng;
use sluice_config::{MatchOn, MatchRule, Sticky};

use crate::error::ProxyError;
use crate::table::{Backend, BackendId, Pool, RoutingTable, SLOTS};

/// Testers reach a pool directly with this header, when the config allows.
pub const POOL_OVERRIDE_HEADER: HeaderName = HeaderName::from_static("x-sluice-pool");

/// The outcome of pool selection.
#[derive(Debug)]
pub struct PoolChoice<'t> {
    pub pool: &'t Pool,
    /// A new cohort cookie to hand to a client that had none.
    pub set_cookie: Option<HeaderValue>,
}

/// Picks the pool for a request with `headers` from `peer`.
pub fn choose_pool<'t>(
    table: &'t RoutingTable,
    headers: &HeaderMap,
    peer: IpAddr,
) -> Result<PoolChoice<'t>, ProxyError> {
    let policy = table.policy();
    if policy.allow_pool_override
        && let Some(wanted) = headers.get(&POOL_OVERRIDE_HEADER)
    {
        let pool = wanted
            .to_str()
            .ok()
            .and_then(|name| table.pool(name))
            .ok_or(ProxyError::UnknownPoolOverride)?;
        return Ok(PoolChoice { pool, set_cookie: None });
    }
    // Testers matched by header or cookie go to their pool whatever the
    // weights, while it has a routable backend; everyone else is split as
    // before (nothing to look at when no rules are set).
    if table.has_matches() {
        for pool in table.pools() {
            if !pool.routable.is_empty() && pool.matches.iter().any(|rule| matches(rule, headers)) {
                return Ok(PoolChoice { pool, set_cookie: None });
            }
        }
    }
    let (slot, set_cookie) = match &policy.sticky {
        None => (random_slot(), None),
        Some(Sticky::Cookie(name)) => match cookie_value(headers, name) {
            Some(value) => (slot_of(value.as_bytes()), None),
            None => new_cohort_cookie(name),
        },
        Some(Sticky::Header(name)) => match headers.get(name.as_str()) {
            Some(v) => (slot_of(v.as_bytes()), None),
            None => (random_slot(), None),
        },
        Some(Sticky::ClientIp) => match peer {
            IpAddr::V4(ip) => (slot_of(&ip.octets()), None),
            IpAddr::V6(ip) => (slot_of(&ip.octets()), None),
        },
    };
    let pool = table.pool_for_slot(slot).ok_or(ProxyError::NoPool)?;
    Ok(PoolChoice { pool, set_cookie })
}

/// Power-of-two-choices: two distinct random backends, the one with fewer
/// requests in flight wins.
pub fn choose_backend(pool: &Pool) -> Option<&Arc<Backend>> {
    let backends = &pool.routable;
    match backends.len() {
        0 => None,
        1 => backends.first(),
        _ if pool.weighted => weighted_choice(backends),
        n => {
            let mut rng = rand::rng();
            let a = rng.random_range(0..n);
            let mut b = rng.random_range(0..n - 1);
            if b >= a {
                b += 1;
            }
            let (x, y) = (backends.get(a)?, backends.get(b)?);
            let (won, lost) = if y.in_flight() < x.in_flight() { (y, x) } else { (x, y) };
            // The clock and a roll only while the winner ramps.
            if pool.slow_start.is_zero() || !won.ramping() {
                return Some(won);
            }
            Some(ramped(
                won,
                lost,
                pool.slow_start,
                crate::table::clock_ms(),
                rng.random(),
            ))
        }
    }
}

/// Power-of-two-choices by weight (SRV records): two picks in proportion
/// to the weights, the one with fewer requests in flight *per unit of
/// weight* wins (ties to the first), so shares follow the weights under
/// load too. Out of line: only pools with weights come here.
#[inline(never)]
fn weighted_choice(backends: &[Arc<Backend>]) -> Option<&Arc<Backend>> {
    let total: u64 = backends.iter().map(|b| u64::from(b.weight())).sum();
    let mut rng = rand::rng();
    let mut pick = || {
        let mut roll = rng.random_range(0..total.max(1));
        backends.iter().find(|b| {
            let w = u64::from(b.weight());
            if roll < w {
                true
            } else {
                roll -= w;
                false
            }
        })
    };
    let (x, y) = (pick()?, pick()?);
    let load = |a: &Backend, b: &Backend| a.in_flight().saturating_mul(u64::from(b.weight()));
    Some(if load(y, x) < load(x, y) { y } else { x })
}

/// A routable backend of `pool` none of whose ids is in `tried`: where a
/// retry goes. The less loaded of two random picks, as for a first try
/// (no slow-start ramp: a retry is rare and needs a backend now).
pub fn choose_other_backend<'p>(pool: &'p Pool, tried: &[BackendId]) -> Option<&'p Arc<Backend>> {
    let fresh = || pool.routable.iter().filter(|b| !tried.contains(&b.id()));
    let n = fresh().count();
    if n == 0 {
        return None;
    }
    let mut rng = rand::rng();
    let x = fresh().nth(rng.random_range(0..n))?;
    if n == 1 {
        return Some(x);
    }
    let y = fresh().nth(rng.random_range(0..n))?;
    Some(if y.in_flight() < x.in_flight() { y } else { x })
}

/// Slow start: a ramping winner keeps its pick with the probability of its
/// ramp (`roll` uniform in [0, 1)), so its share grows from a tenth to all
/// of it over the window.
fn ramped<'a>(
    won: &'a Arc<Backend>,
    lost: &'a Arc<Backend>,
    window: Duration,
    now: u64,
    roll: f64,
) -> &'a Arc<Backend> {
    let share = won.ramp(window, now);
    if share < 1.0 && roll >= share && lost.ramp(window, now) > share {
        lost
    } else {
        won
    }
}

fn random_slot() -> u32 {
    rand::rng().random_range(0..SLOTS)
}

/// A stable slot for a key: FNV-1a then a 64-bit finaliser (MurmurHash3's
/// fmix64) so that similar keys spread evenly. Both are fixed algorithms, so
/// cohorts survive restarts and upgrades, unlike `DefaultHasher`.
pub fn slot_of(key: &[u8]) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    (h % u64::from(SLOTS)) as u32
}

fn matches(rule: &MatchRule, headers: &HeaderMap) -> bool {
    match &rule.on {
        MatchOn::Header(name) => headers
            .get_all(name.as_str())
            .iter()
            .any(|v| v.as_bytes() == rule.value.as_bytes()),
        MatchOn::Cookie(name) => cookie_value(headers, name) == Some(rule.value.as_str()),
    }
}

/// Finds `name=value` in the request's `Cookie` headers without allocating.
fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name && !v.is_empty()).then_some(v)
        })
}

/// A random cohort id for a new client, its slot, and the `Set-Cookie` that
/// keeps the client there.
fn new_cohort_cookie(name: &str) -> (u32, Option<HeaderValue>) {
    let id: u64 = rand::rng().random();
    let value = format!("{id:016x}");
    let slot = slot_of(value.as_bytes());
    let header = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age=31536000");
    (slot, HeaderValue::from_str(&header).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{PoolSpec, RoutingPolicy};
    use sluice_config::UpstreamProtocol;

    fn table(weights: &[(&str, u32)], sticky: Option<Sticky>) -> RoutingTable {
        let specs: Vec<PoolSpec> = weights
            .iter()
            .enumerate()
            .map(|(i, (name, w))| PoolSpec {
                name: (*name).into(),
                version: "v".into(),
                weight: sluice_config::Weight::percent(*w).unwrap(),
                protocol: UpstreamProtocol::Http1,
                backends: vec![format!("127.0.0.1:{}", 1000 + i)],
                tls: None,
                matches: Vec::new(),
            })
            .collect();
        let policy = RoutingPolicy {
            sticky,
            allow_pool_override: true,
            ..RoutingPolicy::default()
        };
        RoutingTable::build(1, &specs, policy, None).unwrap()
    }

    #[test]
    fn slots_follow_cumulative_weights() {
        let t = table(&[("blue", 95), ("green", 5)], None);
        assert_eq!(&*t.pool_for_slot(0).unwrap().name, "blue");
        assert_eq!(&*t.pool_for_slot(9499).unwrap().name, "blue");
        assert_eq!(&*t.pool_for_slot(9500).unwrap().name, "green");
        assert_eq!(&*t.pool_for_slot(9999).unwrap().name, "green");
    }

    #[test]
    fn zero_weight_pool_owns_no_slot() {
        let t = table(&[("blue", 100), ("green", 0)], None);
        assert!((0..SLOTS).all(|s| &*t.pool_for_slot(s).unwrap().name == "blue"));
    }

    #[test]
    fn cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("a=1; sluice_cohort=abc; b=2"));
        assert_eq!(cookie_value(&h, "sluice_cohort"), Some("abc"));
        assert_eq!(cookie_value(&h, "sluice"), None);
    }

    #[test]
    fn missing_cookie_gets_one_that_leads_back_to_the_same_pool() {
        let t = table(&[("blue", 50), ("green", 50)], Some(Sticky::Cookie("c".into())));
        let ip = IpAddr::from([127, 0, 0, 1]);
        for _ in 0..100 {
            let first = choose_pool(&t, &HeaderMap::new(), ip).unwrap();
            let set = first.set_cookie.unwrap();
            let pair = set.to_str().unwrap().split(';').next().unwrap().to_owned();
            let mut h = HeaderMap::new();
            h.insert(COOKIE, HeaderValue::from_str(&pair).unwrap());
            let again = choose_pool(&t, &h, ip).unwrap();
            assert_eq!(first.pool.name, again.pool.name);
            assert!(again.set_cookie.is_none());
        }
    }

    #[test]
    fn override_header_names_a_pool_or_is_rejected() {
        let t = table(&[("blue", 100), ("green", 0)], None);
        let ip = IpAddr::from([127, 0, 0, 1]);
        let mut h = HeaderMap::new();
        h.insert(POOL_OVERRIDE_HEADER, HeaderValue::from_static("green"));
        assert_eq!(&*choose_pool(&t, &h, ip).unwrap().pool.name, "green");
        h.insert(POOL_OVERRIDE_HEADER, HeaderValue::from_static("purple"));
        assert!(matches!(choose_pool(&t, &h, ip), Err(ProxyError::UnknownPoolOverride)));
    }

    #[test]
    fn p2c_prefers_the_less_loaded_backend() {
        let specs = vec![PoolSpec {
            name: "p".into(),
            version: "v".into(),
            weight: sluice_config::Weight::percent(100).unwrap(),
            protocol: UpstreamProtocol::Http1,
            backends: vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()],
            tls: None,
            matches: Vec::new(),
        }];
        let t = RoutingTable::build(1, &specs, RoutingPolicy::default(), None).unwrap();
        let pool = &t.pools()[0];
        let _busy: Vec<_> = (0..3)
            .map(|_| crate::table::InFlight::start(&pool.backends[0]))
            .collect();
        for _ in 0..50 {
            assert_eq!(choose_backend(pool).unwrap().addr(), "127.0.0.1:2");
        }
    }

    #[test]
    fn slot_hash_is_stable_across_builds() {
        // Pinned values: a change here would move every sticky client.
        assert_eq!(slot_of(b"client-1"), slot_of(b"client-1"));
        let spread: std::collections::HashSet<u32> =
            (0..1000).map(|i| slot_of(format!("k{i}").as_bytes()) / 1000).collect();
        assert_eq!(spread.len(), 10, "keys should reach every tenth of the slot range");
    }

    fn share(t: &RoutingTable, pool: &str) -> u32 {
        (0..SLOTS)
            .filter(|s| t.pool_for_slot(*s).is_some_and(|p| &*p.name == pool))
            .count() as u32
    }

    #[test]
    fn a_pool_without_healthy_backends_hands_its_share_to_the_others_in_proportion() {
        let t = table(&[("a", 20), ("b", 30), ("c", 50)], None);
        t.pool("c").unwrap().backends[0].set_healthy(false);
        let rebuilt = RoutingTable::build(1, &t.specs(), t.policy().clone(), Some(&t)).unwrap();
        assert_eq!(rebuilt.pool("c").unwrap().weight, 50, "configured weight stays");
        assert_eq!(rebuilt.pool("c").unwrap().effective_weight, 0);
        assert_eq!(share(&rebuilt, "a"), 4000);
        assert_eq!(share(&rebuilt, "b"), 6000);
        assert_eq!(share(&rebuilt, "c"), 0);

        for p in rebuilt.pools() {
            p.backends[0].set_healthy(false);
        }
        let none = RoutingTable::build(1, &t.specs(), t.policy().clone(), Some(&rebuilt)).unwrap();
        assert!(matches!(
            choose_pool(&none, &HeaderMap::new(), IpAddr::from([127, 0, 0, 1])),
            Err(ProxyError::NoPool)
        ));
    }

    #[test]
    fn a_returning_backend_s_share_rises_roughly_linearly_over_its_window() {
        let a = Arc::new(Backend::new("127.0.0.1:1").unwrap());
        let b = Arc::new(Backend::new("127.0.0.1:2").unwrap());
        b.returned(1_000);
        let window = Duration::from_secs(10);
        let mut rng = rand::rng();
        // Ten buckets of a second; two candidates each winning half the
        // picks, as power-of-two-choices does with equal load.
        let share = |bucket: u64, rng: &mut rand::rngs::ThreadRng| {
            let picks = (0..10_000u64)
                .filter(|&i| {
                    let now = 1_000 + bucket * 1_000 + i / 10;
                    let (won, lost) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
                    Arc::ptr_eq(ramped(won, lost, window, now, rng.random()), &b)
                })
                .count();
            picks as f64 / 10_000.0
        };
        for bucket in 0..10 {
            let got = share(bucket, &mut rng);
            let expected = 0.5 * (0.1 + 0.9 * (bucket as f64 + 0.5) / 10.0);
            assert!(
                (got - expected).abs() < 0.02,
                "bucket {bucket}: {got:.3}, expected {expected:.3}"
            );
        }
        // After the window: its whole share, and no more clock reads.
        assert!((share(10, &mut rng) - 0.5).abs() < 0.02);
        assert_eq!(b.ramp(window, 99_999), 1.0);
    }

    #[test]
    fn only_a_backend_back_from_unhealthy_or_ejected_ramps() {
        let b = Backend::new("127.0.0.1:3").unwrap();
        let window = Duration::from_secs(30);
        assert_eq!(b.ramp(window, crate::table::clock_ms()), 1.0, "routable from the start");
        b.set_healthy(true);
        assert_eq!(
            b.ramp(window, crate::table::clock_ms()),
            1.0,
            "still healthy is no return"
        );
        b.set_healthy(false);
        b.set_healthy(true);
        assert!(b.ramp(window, crate::table::clock_ms()) < 0.2, "healthy again");
        let c = Backend::new("127.0.0.1:4").unwrap();
        c.set_ejected(true);
        c.set_ejected(false);
        assert!(c.ramp(window, crate::table::clock_ms()) < 0.2, "back from an ejection");
    }

    #[test]
    fn a_pool_s_slow_start_comes_from_its_health_section() {
        let config = sluice_config::Config::from_toml(
            "[health]\nslow_start = \"30s\"\n[pools.blue]\nversion = \"v1\"\nweight = 100\nbackends = [\"127.0.0.1:1\"]\n\
             [pools.green]\nversion = \"v2\"\nweight = 0\nbackends = [\"127.0.0.1:2\"]\n[pools.green.health]\nslow_start = \"0s\"\n",
        )
        .unwrap();
        let (specs, policy) = crate::routing_from_config(&config).unwrap();
        let t = RoutingTable::build(1, &specs, policy, None).unwrap();
        assert_eq!(t.pool("blue").unwrap().slow_start, Duration::from_secs(30));
        assert_eq!(t.pool("green").unwrap().slow_start, Duration::ZERO);
    }

    #[test]
    fn testers_matched_by_header_or_cookie_reach_their_pool_whatever_the_weights() {
        let config = sluice_config::Config::from_toml(
            "[pools.blue]\nversion = \"v1\"\nweight = 100\nbackends = [\"127.0.0.1:1\"]\n\
             [pools.green]\nversion = \"v2\"\nweight = 0\nbackends = [\"127.0.0.1:2\"]\n\
             [[pools.green.match]]\nheader = \"X-Beta\"\nvalue = \"1\"\n\
             [[pools.green.match]]\ncookie = \"beta\"\nvalue = \"yes\"\n",
        )
        .unwrap();
        let (specs, policy) = crate::routing_from_config(&config).unwrap();
        let t = RoutingTable::build(1, &specs, policy, None).unwrap();
        let peer: IpAddr = "192.0.2.1".parse().unwrap();
        let pool_for = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(*k, HeaderValue::from_static(v));
            }
            choose_pool(&t, &h, peer).unwrap().pool.name.to_string()
        };
        assert_eq!(pool_for(&[("x-beta", "1")]), "green");
        assert_eq!(pool_for(&[("cookie", "a=b; beta=yes")]), "green");
        for other in [
            &[("x-beta", "2")][..],
            &[("cookie", "beta=no")],
            &[("x-beta-2", "1")],
            &[],
        ] {
            assert_eq!(pool_for(other), "blue", "{other:?}");
        }
        // Without a routable backend, testers are split like everyone.
        t.pool("green").unwrap().backends[0].set_healthy(false);
        let t = RoutingTable::build(2, &specs, t.policy().clone(), Some(&t)).unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-beta", HeaderValue::from_static("1"));
        assert_eq!(&*choose_pool(&t, &h, peer).unwrap().pool.name, "blue");
    }
}
