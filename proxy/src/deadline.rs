//! A timer a client connection keeps for its requests' backend deadlines.
//!
//! `tokio::time::timeout` registers a new timer in the runtime's wheel for
//! every request and removes it when the request ends: both under the
//! timer driver's lock. A connection's requests come one after another
//! (on HTTP/2, each stream's buffers come with their own `Deadline`), so
//! their deadlines only move later: one timer, left where it is when it
//! is still early enough and moved on only when it fires before the
//! current deadline, serves them all with about one registration per
//! timeout period instead of one per request. The HTTP/1.1 loop's head
//! timer is moved the same way ([`moved_on`]).

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::task::Poll;
use std::time::Duration;

use tokio::time::{Instant, Sleep, sleep_until};

/// A deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedOut;

/// See the module docs.
#[derive(Debug, Default)]
pub struct Deadline {
    sleep: Option<Pin<Box<Sleep>>>,
}

/// What no deadline reaches (as `tokio::time::timeout` does for durations
/// that would overflow): about 30 years.
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

impl Deadline {
    /// Runs `fut` until it is done or `timeout` after `start` passes.
    pub async fn within<F: Future>(
        &mut self,
        start: Instant,
        timeout: Duration,
        fut: F,
    ) -> Result<F::Output, TimedOut> {
        let deadline = start.checked_add(timeout).unwrap_or_else(|| start + FAR_FUTURE);
        let sleep = match &mut self.sleep {
            Some(sleep) => {
                // A later timer (the timeout was shortened by a reload) would
                // fire too late: moved back now.
                if sleep.deadline() > deadline {
                    sleep.as_mut().reset(deadline);
                }
                sleep
            }
            None => self.sleep.insert(Box::pin(sleep_until(deadline))),
        };
        let mut fut = pin!(fut);
        poll_fn(|cx| {
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(Ok(out));
            }
            loop {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                // Set for an earlier request: on to this one's deadline,
                // and polled again to register it.
                if !moved_on(sleep.as_mut(), deadline) {
                    return Poll::Ready(Err(TimedOut));
                }
            }
        })
        .await
    }
}

/// For a timer that has fired: whether it was set for an earlier deadline
/// than `deadline`, and so is moved on to it (to be polled again) instead
/// of meaning that `deadline` has passed.
pub(crate) fn moved_on(timer: Pin<&mut Sleep>, deadline: Instant) -> bool {
    if timer.deadline() >= deadline {
        return false;
    }
    timer.reset(deadline);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_timer_serves_deadlines_that_move_later() {
        let mut deadline = Deadline::default();
        let quick = deadline
            .within(Instant::now(), Duration::from_secs(5), async { 1 })
            .await;
        assert_eq!(quick, Ok(1));
        // The timer set for the first request (5 s) fires early for this
        // one, which still gets its whole 10 s.
        tokio::time::advance(Duration::from_secs(1)).await;
        let start = Instant::now();
        let slow = deadline
            .within(
                start,
                Duration::from_secs(10),
                tokio::time::sleep(Duration::from_secs(9)),
            )
            .await;
        assert_eq!(slow, Ok(()));
        assert!(Instant::now() >= start + Duration::from_secs(9));
        let start = Instant::now();
        let late = deadline
            .within(start, Duration::from_secs(3), std::future::pending::<()>())
            .await;
        assert_eq!(late, Err(TimedOut));
        assert_eq!(Instant::now(), start + Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_shorter_timeout_than_the_last_one_still_holds() {
        let mut deadline = Deadline::default();
        let start = Instant::now();
        assert_eq!(deadline.within(start, Duration::from_secs(60), async {}).await, Ok(()));
        let late = deadline
            .within(start, Duration::from_secs(2), std::future::pending::<()>())
            .await;
        assert_eq!(late, Err(TimedOut));
        assert_eq!(Instant::now(), start + Duration::from_secs(2));
        // And a timeout past what an instant can hold is no timeout.
        let long = deadline.within(Instant::now(), Duration::MAX, async { 7 }).await;
        assert_eq!(long, Ok(7));
    }
}
