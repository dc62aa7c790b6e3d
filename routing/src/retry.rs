//! Retries: which failed tries a pool tries again ([`RetryPolicy`], from
//! `[retry]`), and the budget that keeps them a small share of its traffic
//! ([`RetryBudget`], kept in the pool's counters across snapshots).
//!
//! The budget is Linkerd's and Envoy's: over the last 10 s, retries stay
//! within `budget` × the pool's requests plus `min_per_second` × 10, so a
//! failing pool never sees its load doubled by its own clients' retries.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::Method;
use sluice_config::{RetryConfig, RetryOn};

use crate::error::ProxyError;

/// Seconds the budget looks back over.
pub const BUDGET_WINDOW_SECS: u64 = 10;

/// Why a try failed, as `[retry] on` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    ConnectFailure = 0,
    Reset = 1,
    Status502 = 2,
    Status503 = 3,
    Timeout = 4,
}

impl Condition {
    /// Every condition, in the order of their counters.
    pub const ALL: [Condition; 5] = [
        Condition::ConnectFailure,
        Condition::Reset,
        Condition::Status502,
        Condition::Status503,
        Condition::Timeout,
    ];

    /// The `reason` label of `sluice_retries_total`, as config spells it.
    pub fn name(self) -> &'static str {
        match self {
            Condition::ConnectFailure => "connect-failure",
            Condition::Reset => "reset",
            Condition::Status502 => "502",
            Condition::Status503 => "503",
            Condition::Timeout => "timeout",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Condition::ConnectFailure => RetryOn::CONNECT_FAILURE,
            Condition::Reset => RetryOn::RESET,
            Condition::Status502 => RetryOn::STATUS_502,
            Condition::Status503 => RetryOn::STATUS_503,
            Condition::Timeout => RetryOn::TIMEOUT,
        }
    }

    /// The condition a failed try ended in, if it is one retries know.
    pub fn of_error(err: ProxyError) -> Option<Condition> {
        match err {
            ProxyError::ConnectFailed | ProxyError::ConnectTimeout => Some(Condition::ConnectFailure),
            ProxyError::UpstreamReset => Some(Condition::Reset),
            ProxyError::UpstreamTimeout => Some(Condition::Timeout),
            _ => None,
        }
    }

    pub fn of_status(status: u16) -> Option<Condition> {
        match status {
            502 => Some(Condition::Status502),
            503 => Some(Condition::Status503),
            _ => None,
        }
    }

    /// Whether a request the backend never saw: any method may go again.
    fn never_reached(self) -> bool {
        self == Condition::ConnectFailure
    }
}

/// A pool's retries, as `[retry]` (with its overrides) sets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all (2..=5).
    pub attempts: u8,
    pub on: RetryOn,
    /// Retries per thousand requests over the window.
    pub budget_per_mille: u32,
    pub min_per_second: u32,
    pub per_try_timeout: Option<Duration>,
}

impl RetryPolicy {
    /// The policy a pool's config asks for; none when it makes one try.
    pub fn from_config(c: &RetryConfig) -> Option<Self> {
        let attempts = u8::try_from(c.attempts).ok().filter(|&n| n > 1)?;
        Some(Self {
            attempts,
            on: c.on,
            budget_per_mille: (c.budget.clamp(0.0, 1.0) * 1000.0).round() as u32,
            min_per_second: c.min_per_second,
            per_try_timeout: c.per_try_timeout,
        })
    }

    /// Whether a try of `method` that failed with `condition` may go again:
    /// the condition is one the pool retries, and either the backend never
    /// saw the request or the method is idempotent (RFC 9110 §9.2.2), so a
    /// second copy cannot do anything twice.
    pub fn retries(&self, condition: Condition, method: &Method) -> bool {
        self.on.contains(condition.bit()) && (condition.never_reached() || method.is_idempotent())
    }
}

/// Requests and retries of one pool over the last [`BUDGET_WINDOW_SECS`],
/// second by second; with the retries made and refused, by condition.
#[derive(Debug, Default)]
pub struct RetryBudget {
    slots: [Slot; BUDGET_WINDOW_SECS as usize],
    /// Retries made, by [`Condition`].
    made: [AtomicU64; 5],
    /// Retries refused because the budget was spent.
    exhausted: AtomicU64,
}

/// One second of the window.
#[derive(Debug, Default)]
struct Slot {
    /// The second it counts (since the process clock's epoch).
    second: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

impl RetryBudget {
    /// The slot for `second`, emptied first when it last counted an older one.
    fn slot(&self, second: u64) -> Option<&Slot> {
        let slot = self.slots.get((second % BUDGET_WINDOW_SECS) as usize)?;
        let seen = slot.second.load(Ordering::Relaxed);
        if seen != second
            && slot
                .second
                .compare_exchange(seen, second, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            // One thread turns the slot over; a count racing it can be lost,
            // which an estimate over ten seconds can afford.
            slot.requests.store(0, Ordering::Relaxed);
            slot.retries.store(0, Ordering::Relaxed);
        }
        Some(slot)
    }

    /// Counts one client request to the pool at `now_ms` (process clock).
    pub fn count_request(&self, now_ms: u64) {
        if let Some(slot) = self.slot(now_ms / 1000) {
            slot.requests.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Requests and retries over the window ending at `second`.
    fn totals(&self, second: u64) -> (u64, u64) {
        let oldest = second.saturating_sub(BUDGET_WINDOW_SECS - 1);
        self.slots
            .iter()
            .filter(|s| (oldest..=second).contains(&s.second.load(Ordering::Relaxed)))
            .fold((0, 0), |(req, ret), s| {
                (
                    req + s.requests.load(Ordering::Relaxed),
                    ret + s.retries.load(Ordering::Relaxed),
                )
            })
    }

    /// Takes one retry for `condition` from the budget when it allows one
    /// at `now_ms`; counts it as made, or as refused.
    pub fn try_retry(&self, policy: &RetryPolicy, condition: Condition, now_ms: u64) -> bool {
        let second = now_ms / 1000;
        let (requests, retries) = self.totals(second);
        let allowed = requests.saturating_mul(u64::from(policy.budget_per_mille)) / 1000
            + u64::from(policy.min_per_second) * BUDGET_WINDOW_SECS;
        if retries >= allowed {
            self.exhausted.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if let Some(slot) = self.slot(second) {
            slot.retries.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(n) = self.made.get(condition as usize) {
            n.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// Retries made so far, by condition (in [`Condition::ALL`]'s order).
    pub fn made(&self) -> [u64; 5] {
        std::array::from_fn(|i| self.made.get(i).map_or(0, |n| n.load(Ordering::Relaxed)))
    }

    /// Retries refused so far because the budget was spent.
    pub fn exhausted(&self) -> u64 {
        self.exhausted.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
#[path = "retry_tests.rs"]
mod tests;
