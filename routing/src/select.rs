//! Choosing a pool and a backend for one request, from one snapshot.
//!
//! Pools: with stickiness, a stable hash of the client's key lands on a slot
//! in `[0, SLOTS)` and the slot's cumulative weight range names the pool, so
//! moving weight towards a pool only adds clients to it. Without stickiness,
//! a random slot. Backends: power-of-two-choices on in-flight requests.

use std::net::IpAddr;
use std::sync::Arc;

use http::header::{COOKIE, HeaderValue};
use http::{HeaderMap, HeaderName};
use rand::Rng;
use sluice_config::Sticky;

use crate::error::ProxyError;
use crate::table::{Backend, Pool, RoutingTable, SLOTS};

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
        n => {
            let mut rng = rand::rng();
            let a = rng.random_range(0..n);
            let mut b = rng.random_range(0..n - 1);
            if b >= a {
                b += 1;
            }
            let (x, y) = (backends.get(a)?, backends.get(b)?);
            Some(if y.in_flight() < x.in_flight() { y } else { x })
        }
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
                weight: *w,
                protocol: UpstreamProtocol::Http1,
                backends: vec![format!("127.0.0.1:{}", 1000 + i)],
                tls: None,
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
            weight: 100,
            protocol: UpstreamProtocol::Http1,
            backends: vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()],
            tls: None,
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
}
