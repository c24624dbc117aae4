//! The judge: one place for the budget's rules. It owns the window, both sequential
//! tests (errors, slow requests) and the arming count, and answers two questions:
//! `observe` (does this evidence breach the budget?) and `verdict` (healthy, undecided
//! or failing, now?). Both apply the same gate — no verdict before `min_requests`
//! canary requests since the canary was armed — so the API and the rollout never call
//! "failing" a canary that will not be rolled back (issue 13).
//!
//! Evidence comes as single outcomes (the request path, lock-free, O(1)) or as
//! **counts** (`observe_counts`: the fleet judge feeds the sums of every instance's
//! counters, SPEC §10). A count of one is the same evidence as one outcome.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, Guard};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::config::{BudgetConfig, BudgetMode};
use crate::events::Event;
use crate::routing::Side;

use super::machine::{judge as window_rules, Breach, BreachKind};
use super::sequential::{self, Bounds, Verdict};
use super::window::{Sample, Stats, Window};

/// Cumulative or delta counts of one side's outcomes, as an instance publishes them to
/// the fleet (SPEC §10) and the judge takes them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub requests: u64,
    /// Outcomes that count against the budget.
    pub errors: u64,
    /// Slower than `max_p99_latency` (0 when unset).
    #[serde(default)]
    pub slow: u64,
    /// Slower than `latency_slo` (0 when unset).
    #[serde(default)]
    pub slo_misses: u64,
}

/// A route's budget with the sequential test's bounds precomputed.
#[derive(Debug)]
pub struct Budget {
    pub config: BudgetConfig,
    pub bounds: Bounds,
}

/// What `observe` found: the breach if any, the outcome as counts (for the fleet
/// counters), and whether the budget enforces (from the same budget it judged by).
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    pub breach: Option<Breach>,
    pub counts: Counts,
    pub enforce: bool,
}

/// The sequential tests' state after an update: the canary requests since arming and
/// both statistics (`latency`: with `latency_slo` only).
#[derive(Debug, Clone, Copy)]
struct Evidence {
    armed: u64,
    errors: f64,
    latency: Option<f64>,
}

/// The budget's rules over one route's evidence.
#[derive(Debug)]
pub struct Judge {
    /// Replaced (and so cleared) when a reload changes `budget.window`.
    window: ArcSwap<Window>,
    budget: ArcSwap<Budget>,
    errors_test: sequential::Test,
    latency_test: sequential::Test,
    /// Canary requests (or counted canary requests) since the canary was armed.
    armed_requests: AtomicU64,
}

/// The budget's current verdict and the evidence behind it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VerdictStatus {
    /// `sequential` or `threshold`.
    pub mode: &'static str,
    /// `healthy`, `undecided` or `failing`.
    pub verdict: &'static str,
    /// false: observe only (`enforce = false`).
    pub enforce: bool,
    /// Sequential mode only: canary requests since the canary was armed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary_requests: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<TestStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<TestStatus>,
}

/// One sequential test: the statistic, its bounds and the hypotheses.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TestStatus {
    pub statistic: f64,
    pub upper: f64,
    pub lower: f64,
    /// The stable side's rate (errors, or slow requests).
    pub stable_rate: f64,
    /// "As good as stable" and "worse than tolerated".
    pub p0: f64,
    pub p1: f64,
}

/// Whether a rollout step may advance on `verdict` (one rule for a single instance's
/// driver and the fleet judge). Threshold mode: while not failing. Sequential mode:
/// only on positive evidence (healthy), except the step out of 0 %, where no canary
/// traffic can produce evidence.
pub fn step_may_advance(mode: BudgetMode, verdict: Verdict, weight: crate::config::Weight) -> bool {
    match mode {
        BudgetMode::Threshold => verdict != Verdict::Failing,
        BudgetMode::Sequential => {
            verdict == Verdict::Healthy
                || (weight == crate::config::Weight::ZERO && verdict != Verdict::Failing)
        }
    }
}

// === impl Budget ===

impl Budget {
    pub fn new(config: &BudgetConfig) -> Budget {
        Budget {
            config: config.clone(),
            bounds: Bounds::new(&config.sequential),
        }
    }
}

// === impl Counts ===

impl Counts {
    /// `self − earlier`, per field, never below 0 (a counter that went down — another
    /// boot's key — adds nothing).
    pub fn since(self, earlier: Counts) -> Counts {
        Counts {
            requests: self.requests.saturating_sub(earlier.requests),
            errors: self.errors.saturating_sub(earlier.errors),
            slow: self.slow.saturating_sub(earlier.slow),
            slo_misses: self.slo_misses.saturating_sub(earlier.slo_misses),
        }
    }

    /// Field-wise sum.
    pub fn plus(self, other: Counts) -> Counts {
        Counts {
            requests: self.requests + other.requests,
            errors: self.errors + other.errors,
            slow: self.slow + other.slow,
            slo_misses: self.slo_misses + other.slo_misses,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.requests == 0
    }
}

// === impl Judge ===

impl Judge {
    pub fn new(budget: &BudgetConfig, now: Instant) -> Judge {
        Judge {
            window: ArcSwap::from_pointee(Window::new(budget.window, now)),
            budget: ArcSwap::from_pointee(Budget::new(budget)),
            errors_test: sequential::Test::default(),
            latency_test: sequential::Test::default(),
            armed_requests: AtomicU64::new(0),
        }
    }

    /// A reloaded budget; the window starts empty only if its length changed.
    pub fn reconfigure(&self, budget: &BudgetConfig, now: Instant) {
        if self.window.load().length() != budget.window {
            self.window.store(Arc::new(Window::new(budget.window, now)));
        }
        self.budget.store(Arc::new(Budget::new(budget)));
    }

    pub fn budget(&self) -> Guard<Arc<Budget>> {
        self.budget.load()
    }

    pub fn window(&self) -> Guard<Arc<Window>> {
        self.window.load()
    }

    /// Canary requests seen since the canary was armed.
    pub fn armed_requests(&self) -> u64 {
        self.armed_requests.load(Ordering::Relaxed)
    }

    /// Hot path: one outcome on `side` at `now`. `armed`: the canary is being judged
    /// (not latched); when false, the outcome is only recorded.
    pub fn observe(
        &self,
        side: Side,
        error: bool,
        latency: Duration,
        now: Instant,
        armed: bool,
    ) -> Judged {
        let budget = self.budget.load();
        let config = &budget.config;
        let window = self.window.load();
        let slow = config.max_p99_latency.is_some_and(|limit| latency > limit);
        let slo_miss = config.latency_slo.map(|slo| latency > slo);
        window.record(
            side,
            Sample {
                error,
                slow,
                latency,
            },
            now,
        );
        let counts = Counts {
            requests: 1,
            errors: u64::from(error),
            slow: u64::from(slow),
            slo_misses: u64::from(slo_miss == Some(true)),
        };
        let sequential = config.mode == BudgetMode::Sequential;
        if sequential && side == Side::Stable {
            self.errors_test.stable(error);
            if let Some(miss) = slo_miss {
                self.latency_test.stable(miss);
            }
        }
        if side == Side::Stable || !armed {
            return Judged {
                breach: None,
                counts,
                enforce: config.enforce,
            };
        }
        let evidence = sequential.then(|| Evidence {
            armed: self.armed_requests.fetch_add(1, Ordering::Relaxed) + 1,
            errors: self
                .errors_test
                .canary(error, &config.sequential, &budget.bounds),
            latency: slo_miss.map(|miss| {
                self.latency_test
                    .canary(miss, &config.sequential, &budget.bounds)
            }),
        });
        Judged {
            breach: self.breach_on(&budget, &window, now, evidence),
            counts,
            enforce: config.enforce,
        }
    }

    /// Counts on `side` at `now` (the fleet judge's deltas of the fleet's totals). The
    /// window gets them in its current slice; the sequential tests take them as a batch.
    pub fn observe_counts(
        &self,
        side: Side,
        counts: Counts,
        now: Instant,
        armed: bool,
    ) -> Option<Breach> {
        if counts.is_empty() {
            return None;
        }
        let budget = self.budget.load();
        let config = &budget.config;
        let window = self.window.load();
        window.record_counts(
            side,
            Stats {
                requests: counts.requests,
                errors: counts.errors,
                slow: counts.slow,
            },
            now,
        );
        let sequential = config.mode == BudgetMode::Sequential;
        if sequential && side == Side::Stable {
            self.errors_test
                .stable_counts(counts.requests, counts.errors);
            if config.latency_slo.is_some() {
                self.latency_test
                    .stable_counts(counts.requests, counts.slo_misses);
            }
        }
        if side == Side::Stable || !armed {
            return None;
        }
        if sequential {
            self.armed_requests
                .fetch_add(counts.requests, Ordering::Relaxed);
            self.errors_test.canary_counts(
                counts.requests,
                counts.errors,
                &config.sequential,
                &budget.bounds,
            );
            if config.latency_slo.is_some() {
                self.latency_test.canary_counts(
                    counts.requests,
                    counts.slo_misses,
                    &config.sequential,
                    &budget.bounds,
                );
            }
        }
        self.breach(&budget, &window, now)
    }

    /// The one rule: the sequential tests (gated by `min_requests` since armed), then
    /// the window's criteria (gated by `min_requests` in the window).
    fn breach(&self, budget: &Budget, window: &Window, now: Instant) -> Option<Breach> {
        let config = &budget.config;
        let evidence = (config.mode == BudgetMode::Sequential).then(|| Evidence {
            armed: self.armed_requests.load(Ordering::Relaxed),
            errors: self.errors_test.statistic(),
            latency: config.latency_slo.map(|_| self.latency_test.statistic()),
        });
        self.breach_on(budget, window, now, evidence)
    }

    /// `breach` on evidence already in hand (the request path has it from the
    /// updates it just made: no second read).
    fn breach_on(
        &self,
        budget: &Budget,
        window: &Window,
        now: Instant,
        evidence: Option<Evidence>,
    ) -> Option<Breach> {
        let config = &budget.config;
        if let Some(evidence) = evidence.filter(|e| e.armed >= u64::from(config.min_requests)) {
            let upper = budget.bounds.upper;
            let kind = if evidence.errors >= upper {
                Some((BreachKind::Sequential, evidence.errors))
            } else {
                evidence
                    .latency
                    .filter(|s| *s >= upper)
                    .map(|s| (BreachKind::SequentialLatency, s))
            };
            if let Some((kind, observed)) = kind {
                return Some(Breach {
                    kind,
                    observed,
                    threshold: upper,
                    canary: window.stats(Side::Canary, now),
                    stable: window.stats(Side::Stable, now),
                    window: window.length(),
                });
            }
        }
        if config.has_window_criteria() {
            let stable = window.stats(Side::Stable, now);
            let canary = window.stats(Side::Canary, now);
            return window_rules(config, stable, canary, window.length());
        }
        None
    }

    fn gate_open(&self, config: &BudgetConfig) -> bool {
        self.armed_requests.load(Ordering::Relaxed) >= u64::from(config.min_requests)
    }

    /// The budget's verdict now. Threshold mode: failing on a breach, healthy once the
    /// window holds `min_requests` canary requests within budget. Sequential mode: the
    /// tests' verdict once `min_requests` canary requests were seen since arming (the
    /// same gate as `observe`), else undecided.
    pub fn verdict(&self, now: Instant) -> Verdict {
        let budget = self.budget.load();
        let config = &budget.config;
        let window = self.window.load();
        let stable = window.stats(Side::Stable, now);
        let canary = window.stats(Side::Canary, now);
        if window_rules(config, stable, canary, window.length()).is_some() {
            return Verdict::Failing;
        }
        match config.mode {
            BudgetMode::Threshold if canary.requests >= u64::from(config.min_requests) => {
                Verdict::Healthy
            }
            BudgetMode::Threshold => Verdict::Undecided,
            BudgetMode::Sequential if !self.gate_open(config) => Verdict::Undecided,
            BudgetMode::Sequential => {
                let errors = budget.bounds.verdict(self.errors_test.statistic());
                let latency = config.latency_slo.map_or(Verdict::Healthy, |_| {
                    budget.bounds.verdict(self.latency_test.statistic())
                });
                match (errors, latency) {
                    (Verdict::Failing, _) | (_, Verdict::Failing) => Verdict::Failing,
                    (Verdict::Healthy, Verdict::Healthy) => Verdict::Healthy,
                    _ => Verdict::Undecided,
                }
            }
        }
    }

    /// The verdict with its evidence, for `/api/v1/routes` and the verdict gauges.
    pub fn status(&self, now: Instant) -> VerdictStatus {
        let budget = self.budget.load();
        let config = &budget.config;
        let test = |test: &sequential::Test| {
            let evidence = test.evidence(&config.sequential);
            TestStatus {
                statistic: evidence.statistic,
                upper: budget.bounds.upper,
                lower: budget.bounds.lower,
                stable_rate: evidence.stable_rate,
                p0: evidence.p0,
                p1: evidence.p1,
            }
        };
        let sequential = config.mode == BudgetMode::Sequential;
        VerdictStatus {
            mode: match config.mode {
                BudgetMode::Sequential => "sequential",
                BudgetMode::Threshold => "threshold",
            },
            verdict: self.verdict(now).as_str(),
            enforce: config.enforce,
            canary_requests: sequential.then(|| self.armed_requests()),
            errors: sequential.then(|| test(&self.errors_test)),
            latency: (sequential && config.latency_slo.is_some()).then(|| test(&self.latency_test)),
        }
    }

    /// Adds the sequential test's evidence to an event about a sequential breach.
    pub fn with_evidence(&self, event: Event, kind: BreachKind) -> Event {
        let test = match kind {
            BreachKind::Sequential => &self.errors_test,
            BreachKind::SequentialLatency => &self.latency_test,
            BreachKind::ErrorRate | BreachKind::ErrorRateVsStable | BreachKind::P99Latency => {
                return event
            }
        };
        let budget = self.budget.load();
        let evidence = test.evidence(&budget.config.sequential);
        event
            .with("lower", budget.bounds.lower)
            .with("p0", evidence.p0)
            .with("p1", evidence.p1)
            .with("stable_rate", evidence.stable_rate)
            .with("armed_canary_requests", self.armed_requests())
    }

    /// Back to no evidence: a resumed (or force-promoted) canary is judged afresh.
    pub fn rearm(&self) {
        self.window.load().clear();
        self.errors_test.reset();
        self.latency_test.reset();
        self.armed_requests.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
