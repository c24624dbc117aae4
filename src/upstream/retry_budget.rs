//! The shield's retry budget: retries may add at most `ratio` of the route's requests,
//! plus `min_per_second`, so a dead canary cannot double the load on stable (the
//! budget of Linkerd and Finagle, rather than a fixed retry count).
//!
//! Counted over the last second with two one-second windows, the previous one weighted
//! by how much of it still lies within the last second (the sliding-window estimate).
//! Lock-free: a request costs one atomic increment (and, once a second, the roll);
//! races at the roll only blur the estimate by a few requests. Pure: the caller passes
//! `now`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

const WINDOW: Duration = Duration::from_secs(1);

/// One route's retry budget.
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    min_per_second: f64,
    origin: Instant,
    /// Index of the current window (whole seconds since `origin`).
    window: AtomicU64,
    requests: [AtomicU64; 2],
    retries: [AtomicU64; 2],
}

// === impl RetryBudget ===

impl RetryBudget {
    pub fn new(ratio: f64, min_per_second: u32, now: Instant) -> RetryBudget {
        RetryBudget {
            ratio,
            min_per_second: f64::from(min_per_second),
            origin: now,
            window: AtomicU64::new(0),
            requests: [AtomicU64::new(0), AtomicU64::new(0)],
            retries: [AtomicU64::new(0), AtomicU64::new(0)],
        }
    }

    /// Counts one request of the route (a first attempt, not a retry).
    pub fn deposit(&self, now: Instant) {
        let current = self.roll(now);
        self.requests[slot(current)].fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one retry from the budget; `false` when it is spent.
    pub fn withdraw(&self, now: Instant) -> bool {
        let current = self.roll(now);
        let elapsed = now.saturating_duration_since(self.origin);
        let into_window = (elapsed.as_secs_f64() - current as f64).clamp(0.0, 1.0);
        let weight = 1.0 - into_window;
        let estimate = |counts: &[AtomicU64; 2]| {
            let cur = counts[slot(current)].load(Ordering::Relaxed) as f64;
            let prev = counts[slot(current + 1)].load(Ordering::Relaxed) as f64;
            cur + prev * weight
        };
        let allowed = self.min_per_second + self.ratio * estimate(&self.requests);
        // Count first, then check: concurrent failures cannot all pass one check.
        self.retries[slot(current)].fetch_add(1, Ordering::Relaxed);
        if estimate(&self.retries) > allowed {
            self.retries[slot(current)].fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Moves to the window `now` falls in, clearing what is more than one window old.
    fn roll(&self, now: Instant) -> u64 {
        let now_window = now.saturating_duration_since(self.origin).as_secs() / WINDOW.as_secs();
        let seen = self.window.load(Ordering::Acquire);
        if now_window <= seen {
            return seen;
        }
        if self
            .window
            .compare_exchange(seen, now_window, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            // The slot of `now_window` held window `now_window - 2` (or older): clear
            // it. If more than one window passed, the previous one is empty too.
            self.requests[slot(now_window)].store(0, Ordering::Relaxed);
            self.retries[slot(now_window)].store(0, Ordering::Relaxed);
            if now_window > seen + 1 {
                self.requests[slot(now_window + 1)].store(0, Ordering::Relaxed);
                self.retries[slot(now_window + 1)].store(0, Ordering::Relaxed);
            }
        }
        self.window.load(Ordering::Acquire)
    }
}

fn slot(window: u64) -> usize {
    (window % 2) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(origin: Instant, ms: u64) -> Instant {
        origin + Duration::from_millis(ms)
    }

    /// Requests spread over `seconds`, a retry wanted for each: how many were allowed.
    fn allowed(ratio: f64, min: u32, per_second: u64, seconds: u64) -> u64 {
        let origin = Instant::now();
        let budget = RetryBudget::new(ratio, min, origin);
        let mut allowed = 0;
        for i in 0..per_second * seconds {
            let now = at(origin, i * 1000 / per_second);
            budget.deposit(now);
            allowed += u64::from(budget.withdraw(now));
        }
        allowed
    }

    #[test]
    fn without_traffic_only_the_minimum_is_allowed() {
        let origin = Instant::now();
        let budget = RetryBudget::new(0.2, 10, origin);
        let granted = (0..100).filter(|_| budget.withdraw(origin)).count();
        assert_eq!(granted, 10);
        // The next second brings no new allowance beyond the minimum.
        let later = at(origin, 2_500);
        let granted = (0..100).filter(|_| budget.withdraw(later)).count();
        assert_eq!(granted, 10);
    }

    #[test]
    fn steady_traffic_gets_ratio_plus_minimum() {
        // 1 000 req/s for 10 s, every one failing: about (0.2 × 1000 + 10)/s.
        let granted = allowed(0.2, 10, 1000, 10);
        let expected = 10 * 210;
        assert!(
            granted.abs_diff(expected) <= expected / 10,
            "granted {granted}, expected about {expected}"
        );
        // Never more than the bound over any whole second, plus the carry-over.
        assert!(granted <= 10 * 210 + 210, "{granted}");
    }

    #[test]
    fn a_zero_budget_refuses_everything() {
        assert_eq!(allowed(0.0, 0, 100, 3), 0);
    }

    #[test]
    fn old_windows_are_forgotten() {
        let origin = Instant::now();
        let budget = RetryBudget::new(1.0, 0, origin);
        for _ in 0..100 {
            budget.deposit(origin);
        }
        assert!(budget.withdraw(at(origin, 500)));
        // Three seconds later, no request in the last second: nothing is allowed.
        assert!(!budget.withdraw(at(origin, 3_100)));
    }

    proptest::proptest! {
        /// Over any run, retries never exceed the minimum plus the ratio of requests,
        /// per second, with one second of carry-over.
        #[test]
        fn retries_stay_within_the_budget(
            ratio in 0.0f64..1.0,
            min in 0u32..20,
            per_second in 1u64..500,
            seconds in 1u64..5,
        ) {
            let granted = allowed(ratio, min, per_second, seconds) as f64;
            let bound = (seconds + 1) as f64 * (f64::from(min) + ratio * per_second as f64) + 1.0;
            proptest::prop_assert!(granted <= bound, "{} > {}", granted, bound);
        }
    }
}
