//! The sequential test of canary vs stable: a Wald sequential probability ratio test
//! (SPRT) on the canary's error indicator, against the stable side's live error rate,
//! with bounded memory. O(1) and allocation-free per response; lock-free (atomics).
//!
//! For each canary outcome x ∈ {0, 1} (1 = error) it adds the log-likelihood ratio
//!
//! ```text
//! llr(x) = x·ln(p1/p0) + (1−x)·ln((1−p1)/(1−p0))
//! p0 = max(p̂_stable, FLOOR)                 "the canary is as good as stable"
//! p1 = min(tolerance·p0 + margin, 0.99)     "the canary is worse than tolerated"
//! ```
//!
//! to a statistic `S ← max(L, λ·S + llr)`, and reads it against Wald's bounds
//! `A = ln((1−β)/α)` (failing) and `B = ln(β/(1−α))` (healthy). `λ` (per canary
//! request) makes old evidence fade; the floor `L = −1.5·A` caps how
//! much good evidence a canary can bank, so one that turns bad after hours of health is
//! still caught within a few hundred requests. Evidence counts requests, not seconds:
//! at 1 request/s the test needs the same number of requests as at 1000/s, and a
//! quiet canary is held (undecided), never passed by default.
//!
//! `p̂_stable` is the stable side's error rate from decayed counts with a Beta(1, 99)
//! prior (mean 1 %), so a stable side that has served little counts as a plausible
//! 1 % rather than 0 %. The same test runs on the share of requests slower than
//! `latency_slo` when one is set.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::SequentialConfig;

/// The lowest baseline rate the test assumes: keeps `ln(p1/p0)` finite when stable
/// has no errors.
pub const FLOOR: f64 = 0.001;
/// Per-canary-request decay of the statistic (half-life ≈ 5 700 requests).
pub const DECAY: f64 = 1.0 - 1.0 / 8192.0;
/// Per-stable-request decay of the stable counts (half-life ≈ 14 000 requests).
pub const STABLE_DECAY: f64 = 1.0 - 1.0 / 20_000.0;
/// Beta prior on the stable rate: `PRIOR_ERRORS` in `PRIOR_REQUESTS` (1 %).
pub const PRIOR_ERRORS: f64 = 1.0;
pub const PRIOR_REQUESTS: f64 = 100.0;

/// The three verdicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Evidence that the canary is not worse than tolerated.
    Healthy,
    /// Not enough evidence either way: hold the weight.
    Undecided,
    /// Evidence that the canary is worse than tolerated: roll back.
    Failing,
}

/// Wald's bounds and the floor, from α and β.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    /// Failing at or above.
    pub upper: f64,
    /// Healthy at or below.
    pub lower: f64,
    /// The statistic never goes below this.
    pub floor: f64,
}

/// One Bernoulli stream under test (errors, or slow requests).
#[derive(Debug, Default)]
pub struct Test {
    /// The statistic S (f64 bits).
    statistic: AtomicU64,
    /// Decayed stable counts (f64 bits).
    stable_events: AtomicU64,
    stable_requests: AtomicU64,
}

/// Everything the API and events show about one test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evidence {
    pub statistic: f64,
    pub stable_rate: f64,
    pub p0: f64,
    pub p1: f64,
}

// === impl Bounds ===

impl Bounds {
    pub fn new(config: &SequentialConfig) -> Bounds {
        let upper = ((1.0 - config.beta) / config.alpha).ln();
        let lower = (config.beta / (1.0 - config.alpha)).ln();
        Bounds {
            upper,
            lower,
            // Good evidence is capped at 1.5× what failing needs, so a false alarm
            // needs an excursion of 2.5 × upper from the floor (see README).
            floor: -1.5 * upper,
        }
    }

    pub fn verdict(&self, statistic: f64) -> Verdict {
        if statistic >= self.upper {
            Verdict::Failing
        } else if statistic <= self.lower {
            Verdict::Healthy
        } else {
            Verdict::Undecided
        }
    }
}

/// The log-likelihood ratio of one canary outcome for baseline `p0` and alternative
/// `p1`.
pub fn llr(event: bool, p0: f64, p1: f64) -> f64 {
    if event {
        (p1 / p0).ln()
    } else {
        ((1.0 - p1) / (1.0 - p0)).ln()
    }
}

/// `(p0, p1)` for a stable rate estimate.
pub fn hypotheses(stable_rate: f64, config: &SequentialConfig) -> (f64, f64) {
    let p0 = stable_rate.clamp(FLOOR, 0.98);
    let p1 = (config.tolerance * p0 + config.margin)
        .min(0.99)
        .max(p0 + 1e-6);
    (p0, p1)
}

// === impl Test ===

impl Test {
    /// A stable outcome: updates the baseline.
    pub fn stable(&self, event: bool) {
        update(&self.stable_requests, |n| n * STABLE_DECAY + 1.0);
        update(&self.stable_events, |e| {
            e * STABLE_DECAY + f64::from(u8::from(event))
        });
    }

    /// A canary outcome: updates the statistic, returns it.
    pub fn canary(&self, event: bool, config: &SequentialConfig, bounds: &Bounds) -> f64 {
        let (p0, p1) = hypotheses(self.stable_rate(), config);
        let step = llr(event, p0, p1);
        update(&self.statistic, |s| (s * DECAY + step).max(bounds.floor))
    }

    /// `requests` stable outcomes of which `events` were events, as one batch: the
    /// same decay as that many single outcomes.
    pub fn stable_counts(&self, requests: u64, events: u64) {
        let decay = STABLE_DECAY.powf(requests as f64);
        update(&self.stable_requests, |n| n * decay + requests as f64);
        update(&self.stable_events, |e| {
            e * decay + events.min(requests) as f64
        });
    }

    /// `requests` canary outcomes of which `events` were events, as one batch (the
    /// fleet judge's deltas): the statistic decays as over that many single outcomes
    /// and gains their log-likelihood ratios, each decayed as if the batch's outcomes
    /// came evenly mixed; the floor applies once, at the end. Returns the new statistic.
    pub fn canary_counts(
        &self,
        requests: u64,
        events: u64,
        config: &SequentialConfig,
        bounds: &Bounds,
    ) -> f64 {
        let events = events.min(requests);
        let (p0, p1) = hypotheses(self.stable_rate(), config);
        let n = requests as f64;
        let mean = (events as f64 * llr(true, p0, p1)
            + (requests - events) as f64 * llr(false, p0, p1))
            / n.max(1.0);
        // The batch's order is unknown: take its outcomes as evenly mixed, each decayed
        // by the ones after it (Σ λ^j for j < n).
        let decay = DECAY.powf(n);
        let step = mean * (1.0 - decay) / (1.0 - DECAY);
        update(&self.statistic, |s| (s * decay + step).max(bounds.floor))
    }

    /// The stable rate estimate (posterior mean).
    pub fn stable_rate(&self) -> f64 {
        let events = f64::from_bits(self.stable_events.load(Ordering::Relaxed));
        let requests = f64::from_bits(self.stable_requests.load(Ordering::Relaxed));
        (events + PRIOR_ERRORS) / (requests + PRIOR_REQUESTS)
    }

    pub fn statistic(&self) -> f64 {
        f64::from_bits(self.statistic.load(Ordering::Relaxed))
    }

    pub fn evidence(&self, config: &SequentialConfig) -> Evidence {
        let stable_rate = self.stable_rate();
        let (p0, p1) = hypotheses(stable_rate, config);
        Evidence {
            statistic: self.statistic(),
            stable_rate,
            p0,
            p1,
        }
    }

    /// Back to no evidence (a re-armed canary).
    pub fn reset(&self) {
        self.statistic.store(0f64.to_bits(), Ordering::Relaxed);
    }
}

/// Lock-free read-modify-write of an f64 held in an `AtomicU64`; returns the new value.
fn update(cell: &AtomicU64, f: impl Fn(f64) -> f64) -> f64 {
    let mut current = cell.load(Ordering::Relaxed);
    loop {
        let next = f(f64::from_bits(current));
        match cell.compare_exchange_weak(
            current,
            next.to_bits(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Ok(_) => return next,
            Err(seen) => current = seen,
        }
    }
}

// === impl Verdict ===

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Healthy => "healthy",
            Verdict::Undecided => "undecided",
            Verdict::Failing => "failing",
        }
    }
}

#[cfg(test)]
mod tests;
