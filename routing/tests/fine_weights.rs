//! Weights in steps of 0.01%, and the weighted split with testers matched
//! beside it: exact slot shares, the split over many requests, and sticky
//! clients that only ever move towards the pool gaining weight.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::net::IpAddr;

use http::{HeaderMap, HeaderValue};
use sluice_config::{Config, Sticky, Weight};
use sluice_routing::select::choose_pool;
use sluice_routing::{PoolSpec, RoutingPolicy, RoutingTable};

fn two_pools(green_hundredths: u32, sticky: Option<Sticky>) -> RoutingTable {
    let green = Weight::from_hundredths(green_hundredths).unwrap();
    let spec = |name: &str, weight, port| PoolSpec {
        name: name.into(),
        version: "v".into(),
        weight,
        protocol: sluice_config::UpstreamProtocol::Http1,
        backends: vec![format!("127.0.0.1:{port}")],
        tls: None,
        matches: Vec::new(),
    };
    let policy = RoutingPolicy {
        sticky,
        ..RoutingPolicy::default()
    };
    RoutingTable::build(
        1,
        &[spec("blue", green.rest(), 1), spec("green", green, 2)],
        policy,
        None,
    )
    .unwrap()
}

#[test]
fn a_hundredth_of_a_percent_is_one_slot_of_ten_thousand() {
    for (hundredths, slots) in [(1, 1), (10, 10), (1234, 1234), (9999, 9999)] {
        let t = two_pools(hundredths, None);
        let owned = (0..10_000u32)
            .filter(|s| t.pool_for_slot(*s).is_some_and(|p| &*p.name == "green"))
            .count();
        assert_eq!(owned, slots, "green at {hundredths} hundredths");
    }
}

/// Over 200,000 choices with `blue`/`green` weights and a tester rule
/// sending `x-beta: 1` to green: how many testers reached green, and how
/// many requests carrying `other` did.
fn split_with_testers(blue: &str, green: &str, other: &HeaderMap) -> (usize, usize, usize) {
    let config = Config::from_toml(&format!(
        "[pools.blue]\nversion = \"v1\"\nweight = {blue}\nbackends = [\"127.0.0.1:1\"]\n\
         [pools.green]\nversion = \"v2\"\nweight = {green}\nbackends = [\"127.0.0.1:2\"]\n\
         [[pools.green.match]]\nheader = \"x-beta\"\nvalue = \"1\"\n"
    ))
    .unwrap();
    let (specs, policy) = sluice_routing::routing_from_config(&config).unwrap();
    let t = RoutingTable::build(1, &specs, policy, None).unwrap();
    let peer: IpAddr = "192.0.2.1".parse().unwrap();
    let mut tester = HeaderMap::new();
    tester.insert("x-beta", HeaderValue::from_static("1"));
    let n = 200_000;
    let to_green = |headers: &HeaderMap| {
        (0..n)
            .filter(|_| &*choose_pool(&t, headers, peer).unwrap().pool.name == "green")
            .count()
    };
    (to_green(&tester), to_green(other), n)
}

#[test]
fn a_tenth_of_a_percent_is_served_within_five_hundredths_of_a_point_with_testers_beside_it() {
    let (testers, green, n) = split_with_testers("99.9", "0.1", &HeaderMap::new());
    assert_eq!(testers, n, "testers matched 100%");
    // 0.1% of 200,000 is 200, one standard deviation 14 requests (0.007
    // points): ±0.05 points (±100 requests) is seven of them.
    let share = green as f64 * 100.0 / n as f64;
    assert!((share - 0.1).abs() <= 0.05, "green served {share:.3}% ({green} of {n})");
}

#[test]
fn with_testers_matched_everyone_else_keeps_the_exact_split() {
    let mut other = HeaderMap::new();
    other.insert("x-beta", HeaderValue::from_static("0"));
    let (testers, green, n) = split_with_testers("90", "10", &other);
    assert_eq!(testers, n, "testers matched 100%");
    // 10% of 200,000 drawn at random: one standard deviation is 134
    // requests, 0.067 points; five of them, 0.34 points, is the bound a
    // correct split never crosses by chance. (Within 0.05 points every
    // time, as issue 26 asks, no per-request random choice can be.)
    let points = (green as f64 / n as f64 - 0.10).abs() * 100.0;
    assert!(points <= 0.34, "green got {green} of {n} ({points:.3} points off)");
}

#[test]
fn sticky_clients_only_move_towards_the_pool_gaining_hundredths() {
    let clients: Vec<IpAddr> = (0..20_000u32)
        .map(|i| IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]))
        .collect();
    let on_green = |hundredths: u32| -> HashSet<IpAddr> {
        let t = two_pools(hundredths, Some(Sticky::ClientIp));
        clients
            .iter()
            .copied()
            .filter(|ip| &*choose_pool(&t, &HeaderMap::new(), *ip).unwrap().pool.name == "green")
            .collect()
    };
    // Every 0.01 step from 0 to 1%, then whole steps to 100%.
    let steps: Vec<u32> = (0..=100).chain((2..=100).map(|p| p * 100)).collect();
    let mut before = HashSet::new();
    for hundredths in steps {
        let now = on_green(hundredths);
        assert!(before.is_subset(&now), "at {hundredths} hundredths a client left green");
        before = now;
    }
    assert_eq!(before.len(), clients.len(), "at 100% every client is on green");
}
