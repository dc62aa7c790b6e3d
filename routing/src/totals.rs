//! Counts since a start, for sequential tests: a pool's requests, errors
//! and latency histogram, and each route's requests and errors, from every
//! *completed* second of its live windows, each read exactly once. A
//! sliding window forgets; a sequential test needs every request since the
//! test began, and reading completed seconds (which no request writes any
//! more) gives them exactly, off the request path.

use std::sync::Arc;

use tokio::time::Instant;

use crate::routes::RouteWindows;
use crate::stats::PoolStats;
use crate::table::Pool;
use crate::window::{WINDOW_SECONDS, WindowSnapshot};

/// A pool's counts since a start.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    pub pool: WindowSnapshot,
    /// By route index (`[[analysis.routes]]`): requests and errors.
    pub routes: Vec<WindowSnapshot>,
}

impl Totals {
    /// Adds `other` (the same pool on another replica).
    pub fn merge(&mut self, other: &Totals) {
        self.pool.merge(&other.pool);
        if self.routes.len() < other.routes.len() {
            self.routes.resize(other.routes.len(), WindowSnapshot::default());
        }
        for (mine, theirs) in self.routes.iter_mut().zip(&other.routes) {
            mine.merge(theirs);
        }
    }

    /// What was counted after `base`, an earlier reading of the same
    /// running totals; all of these when the counter started over (fewer
    /// requests than `base`, e.g. a restarted replica).
    pub fn since(&self, base: &Totals) -> Totals {
        if self.pool.requests < base.pool.requests {
            return self.clone();
        }
        let routes = if self.routes.len() == base.routes.len() {
            self.routes
                .iter()
                .zip(&base.routes)
                .map(|(m, b)| m.saturating_sub(b))
                .collect()
        } else {
            self.routes.clone()
        };
        Totals {
            pool: self.pool.saturating_sub(&base.pool),
            routes,
        }
    }

    /// As text for the shared store: `requests,errors,upstream_failures`,
    /// then the latency slots that have counts (`slot:count`), then each
    /// route's `requests:errors`, separated by `;`.
    pub fn encode(&self) -> String {
        let p = &self.pool;
        let latency: Vec<String> = p
            .latency_counts()
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(slot, n)| format!("{slot}:{n}"))
            .collect();
        let routes: Vec<String> = self
            .routes
            .iter()
            .map(|r| format!("{}:{}", r.requests, r.errors))
            .collect();
        format!(
            "{},{},{};{};{}",
            p.requests,
            p.errors,
            p.upstream_failures,
            latency.join(","),
            routes.join(",")
        )
    }

    /// [`Self::encode`]'s text back; `None` for anything else (an older
    /// replica writes nothing here).
    pub fn decode(text: &str) -> Option<Totals> {
        let mut parts = text.split(';');
        let counts: Vec<u64> = parts
            .next()?
            .split(',')
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        let [requests, errors, upstream_failures] = counts.as_slice() else {
            return None;
        };
        let mut latency = vec![0; crate::window::LATENCY_SLOTS];
        for pair in parts.next()?.split(',').filter(|p| !p.is_empty()) {
            let (slot, n) = pair.split_once(':')?;
            *latency.get_mut(slot.parse::<usize>().ok()?)? = n.parse().ok()?;
        }
        let routes = parts
            .next()?
            .split(',')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (r, e) = pair.split_once(':')?;
                Some(WindowSnapshot::from_counts(
                    r.parse().ok()?,
                    e.parse().ok()?,
                    std::time::Duration::ZERO,
                ))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Totals {
            pool: WindowSnapshot::from_parts(
                std::time::Duration::ZERO,
                *requests,
                *errors,
                *upstream_failures,
                latency,
            ),
            routes,
        })
    }
}

/// Adds up a pool's completed seconds as they complete. Advance it at
/// least once a minute: the windows keep the last 60 seconds.
#[derive(Debug)]
pub struct Tally {
    stats: Arc<PoolStats>,
    routes: Arc<RouteWindows>,
    /// The first second of the pool's window not read yet.
    next: u64,
    /// The same for the route windows (their own clock).
    next_route: u64,
    totals: Totals,
}

impl Tally {
    /// Counting from the second `now` falls in.
    pub fn start(pool: &Pool, now: Instant) -> Tally {
        Tally {
            stats: Arc::clone(&pool.stats),
            routes: Arc::clone(&pool.routes),
            next: pool.stats.window.second_at(now),
            next_route: pool.routes.second_at(now),
            totals: Totals {
                pool: WindowSnapshot::default(),
                routes: vec![WindowSnapshot::default(); pool.routes.routes()],
            },
        }
    }

    /// Adds the seconds completed since the last call and returns the
    /// totals with the current second's counts so far (read again, whole,
    /// once it completes). A pool whose counters were replaced (removed and
    /// added again) goes on from its new window's current second; new
    /// routes start their counts afresh.
    pub fn advance(&mut self, pool: &Pool, now: Instant) -> Totals {
        if !Arc::ptr_eq(&self.stats, &pool.stats) {
            self.stats = Arc::clone(&pool.stats);
            self.next = pool.stats.window.second_at(now);
        }
        if !Arc::ptr_eq(&self.routes, &pool.routes) {
            self.routes = Arc::clone(&pool.routes);
            self.next_route = pool.routes.second_at(now);
            self.totals.routes = vec![WindowSnapshot::default(); pool.routes.routes()];
        }
        let window = &self.stats.window;
        if let Some(done) = window.second_at(now).checked_sub(1)
            && done >= self.next
        {
            let oldest = self.next.max(done.saturating_sub(WINDOW_SECONDS as u64 - 1));
            self.totals.pool.merge(&window.seconds(oldest, done));
            self.next = done + 1;
        }
        if let Some(done) = self.routes.second_at(now).checked_sub(1)
            && done >= self.next_route
        {
            let oldest = self.next_route.max(done.saturating_sub(WINDOW_SECONDS as u64 - 1));
            for (i, total) in self.totals.routes.iter_mut().enumerate() {
                total.merge(&self.routes.seconds(i, oldest, done));
            }
            self.next_route = done + 1;
        }
        let mut all = self.totals.clone();
        let current = window.second_at(now);
        all.pool.merge(&window.seconds(current, current));
        let current = self.routes.second_at(now);
        for (i, total) in all.routes.iter_mut().enumerate() {
            total.merge(&self.routes.seconds(i, current, current));
        }
        all
    }

    pub fn totals(&self) -> &Totals {
        &self.totals
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::table::{PoolSpec, RoutingPolicy, RoutingTable};
    use crate::window::Outcome;

    fn table() -> RoutingTable {
        let spec = PoolSpec {
            name: "green".into(),
            version: "v".into(),
            weight: sluice_config::Weight::FULL,
            protocol: sluice_config::UpstreamProtocol::Http1,
            backends: vec!["127.0.0.1:1".into()],
            tls: None,
            matches: Vec::new(),
        };
        let policy = RoutingPolicy {
            routes: vec![crate::routes::RouteRule {
                name: "api".into(),
                prefix: "/api".into(),
            }],
            ..RoutingPolicy::default()
        };
        RoutingTable::build(1, &[spec], policy, None).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn every_request_is_counted_once_however_often_it_is_read() {
        let t = table();
        let pool = t.pool("green").unwrap();
        pool.stats
            .window
            .record(Instant::now(), Duration::from_millis(5), Outcome::Success);
        let mut tally = Tally::start(pool, Instant::now());
        let mut expected = 0;
        // 200 seconds (beyond the minute the windows hold), read at
        // uneven times: 0.3 s to 7 s apart.
        for step in 0..200u64 {
            for i in 0..(step % 5) {
                let outcome = if i == 0 { Outcome::Error } else { Outcome::Success };
                pool.stats
                    .window
                    .record(Instant::now(), Duration::from_millis(900), outcome);
                pool.routes.record(0, Instant::now(), outcome);
                expected += 1;
            }
            tokio::time::advance(Duration::from_millis(300 + (step * 997) % 700)).await;
            if step % 9 != 0 {
                tally.advance(pool, Instant::now());
            }
        }
        tokio::time::advance(Duration::from_secs(2)).await;
        let totals = tally.advance(pool, Instant::now());
        assert_eq!(
            totals,
            tally.advance(pool, Instant::now()),
            "reading twice adds nothing"
        );
        // The request before the start, in the start's second, counts too.
        assert_eq!(totals.pool.requests, expected + 1);
        assert_eq!(totals.routes[0].requests, expected);
        assert_eq!(totals.pool.errors, totals.routes[0].errors);
        assert_eq!(totals.pool.slower_than(Duration::from_millis(500)), expected);
        let again = Totals::decode(&totals.encode()).unwrap();
        assert_eq!(again.pool.requests, totals.pool.requests);
        assert_eq!(again.pool.latency_counts(), totals.pool.latency_counts());
        assert_eq!(again.routes[0].errors, totals.routes[0].errors);
        assert_eq!(totals.since(&again).pool.requests, 0);
        assert_eq!(Totals::decode("garbage"), None);
        assert_eq!(Totals::decode(""), None);
    }
}
