//! The sliding window of outcomes per upstream side, recorded inline with atomics.
//!
//! The window is cut into `SLICES` time slices. A slice is tagged with the index of the
//! time slice it holds (`epoch`); the first writer of a new slice index claims it with a
//! compare-and-swap and zeroes its counters. Reading sums the slices whose index lies in
//! `(current - SLICES, current]`, so the window covers between `window - slice` and
//! `window` of history. No lock and no channel: an outcome is never dropped under load
//! (the only loss is an increment racing the instant a slice is recycled, by design).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::routing::Side;

/// Slices per window: a 30 s window moves in 1 s steps.
pub const SLICES: usize = 30;

/// Upper bounds of the latency histogram kept per slice, in microseconds. Only used to
/// report an approximate p99 (the bucket's upper bound); the budget's latency criterion
/// counts requests above `max_p99_latency` exactly instead.
pub const LATENCY_BOUNDS_US: [u64; 15] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000, 30_000_000,
];
const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_US.len() + 1;

/// Counts for one side over the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub requests: u64,
    pub errors: u64,
    /// Requests slower than the budget's `max_p99_latency` (0 when it is unset).
    pub slow: u64,
}

/// Stats plus the latency histogram, for reporting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub stats: Stats,
    pub latency: [u64; LATENCY_BUCKETS],
}

/// One outcome, as the window needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub error: bool,
    pub slow: bool,
    pub latency: Duration,
}

/// The window of a route: both sides.
#[derive(Debug)]
pub struct Window {
    origin: Instant,
    slice_nanos: u64,
    length: Duration,
    sides: [SideWindow; 2],
}

#[derive(Debug)]
struct SideWindow {
    slices: [Slice; SLICES],
}

#[derive(Debug, Default)]
struct Slice {
    /// Slice index + 1; 0 = never used.
    epoch: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
    slow: AtomicU64,
    latency: [AtomicU64; LATENCY_BUCKETS],
}

// === impl Window ===

impl Window {
    /// A window of `length` (at least `SLICES` milliseconds) starting at `origin`.
    pub fn new(length: Duration, origin: Instant) -> Window {
        let slice_nanos = (length.as_nanos() / SLICES as u128).max(1_000_000) as u64;
        Window {
            origin,
            slice_nanos,
            length,
            sides: [SideWindow::default(), SideWindow::default()],
        }
    }

    pub fn length(&self) -> Duration {
        self.length
    }

    /// Records one outcome for `side` at `now`.
    pub fn record(&self, side: Side, sample: Sample, now: Instant) {
        let index = self.index(now);
        let slice = self.sides[side_index(side)].claim(index);
        slice.requests.fetch_add(1, Ordering::Relaxed);
        if sample.error {
            slice.errors.fetch_add(1, Ordering::Relaxed);
        }
        if sample.slow {
            slice.slow.fetch_add(1, Ordering::Relaxed);
        }
        slice.latency[latency_bucket(sample.latency)].fetch_add(1, Ordering::Relaxed);
    }

    /// Records counts for `side` in the slice of `now` (the fleet judge's deltas). They
    /// carry no latency, so the histogram (for the API's p99) does not change.
    pub fn record_counts(&self, side: Side, counts: Stats, now: Instant) {
        let index = self.index(now);
        let slice = self.sides[side_index(side)].claim(index);
        slice.requests.fetch_add(counts.requests, Ordering::Relaxed);
        slice.errors.fetch_add(counts.errors, Ordering::Relaxed);
        slice.slow.fetch_add(counts.slow, Ordering::Relaxed);
    }

    /// Counts for `side` over the window ending at `now`.
    pub fn stats(&self, side: Side, now: Instant) -> Stats {
        let current = self.index(now);
        let mut stats = Stats::default();
        for slice in self.sides[side_index(side)].live(current) {
            stats.requests += slice.requests.load(Ordering::Relaxed);
            stats.errors += slice.errors.load(Ordering::Relaxed);
            stats.slow += slice.slow.load(Ordering::Relaxed);
        }
        stats
    }

    /// Counts and latency histogram for `side` (for the admin API; not on the hot path).
    pub fn report(&self, side: Side, now: Instant) -> Report {
        let current = self.index(now);
        let mut report = Report::default();
        for slice in self.sides[side_index(side)].live(current) {
            report.stats.requests += slice.requests.load(Ordering::Relaxed);
            report.stats.errors += slice.errors.load(Ordering::Relaxed);
            report.stats.slow += slice.slow.load(Ordering::Relaxed);
            for (total, bucket) in report.latency.iter_mut().zip(&slice.latency) {
                *total += bucket.load(Ordering::Relaxed);
            }
        }
        report
    }

    /// Forgets everything (a resumed or re-armed canary starts from a clean window).
    pub fn clear(&self) {
        for side in &self.sides {
            for slice in &side.slices {
                slice.epoch.store(0, Ordering::Release);
            }
        }
    }

    fn index(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.origin).as_nanos();
        (elapsed / u128::from(self.slice_nanos)) as u64
    }
}

fn side_index(side: Side) -> usize {
    match side {
        Side::Stable => 0,
        Side::Canary => 1,
    }
}

fn latency_bucket(latency: Duration) -> usize {
    let us = latency.as_micros().min(u128::from(u64::MAX)) as u64;
    LATENCY_BOUNDS_US
        .iter()
        .position(|&bound| us <= bound)
        .unwrap_or(LATENCY_BOUNDS_US.len())
}

// === impl SideWindow ===

impl Default for SideWindow {
    fn default() -> Self {
        SideWindow {
            slices: std::array::from_fn(|_| Slice::default()),
        }
    }
}

impl SideWindow {
    /// The slice for time index `index`, recycled if it still holds an older one.
    fn claim(&self, index: u64) -> &Slice {
        let slice = &self.slices[(index % SLICES as u64) as usize];
        let tag = index + 1;
        let seen = slice.epoch.load(Ordering::Acquire);
        if seen < tag
            && slice
                .epoch
                .compare_exchange(seen, tag, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            slice.requests.store(0, Ordering::Relaxed);
            slice.errors.store(0, Ordering::Relaxed);
            slice.slow.store(0, Ordering::Relaxed);
            for bucket in &slice.latency {
                bucket.store(0, Ordering::Relaxed);
            }
        }
        // A newer tag (a racing writer with a later `now`) is still within one slice of
        // ours: counting into it loses nothing that matters.
        slice
    }

    /// Slices holding an index in `(current - SLICES, current]`.
    fn live(&self, current: u64) -> impl Iterator<Item = &Slice> {
        let oldest = (current + 1).saturating_sub(SLICES as u64);
        self.slices.iter().filter(move |slice| {
            let tag = slice.epoch.load(Ordering::Acquire);
            // tag = index + 1, so index ∈ [oldest, current] ⇔ tag ∈ (oldest, current + 1].
            tag > oldest && tag <= current + 1
        })
    }
}

// === impl Report ===

impl Report {
    /// Approximate p99: the upper bound of the histogram bucket holding the 99th
    /// percentile. `None` without samples; the last bucket reports its lower bound.
    pub fn p99(&self) -> Option<Duration> {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (total * 99).div_ceil(100);
        let mut seen = 0;
        for (i, count) in self.latency.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let bound = LATENCY_BOUNDS_US
                    .get(i)
                    .or(LATENCY_BOUNDS_US.last())
                    .copied()
                    .unwrap_or(0);
                return Some(Duration::from_micros(bound));
            }
        }
        None
    }
}

// === impl Stats ===

impl Stats {
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }
}

#[cfg(test)]
mod tests;
