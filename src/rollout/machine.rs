//! The canary's state machine and the budget's verdict. Pure: data and `now` in,
//! decisions out; no I/O, no clock, no atomics.

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{BudgetConfig, RolloutConfig, Weight};
use crate::rollout::window::Stats;

/// A stable error rate below this counts as this for `max_error_rate_vs_stable`, so a
/// stable at 0 errors does not turn the canary's first error into a rollback: with a
/// ratio of 3, the canary may reach 3 % while stable is clean.
pub const STABLE_RATE_FLOOR: f64 = 0.01;

/// The share of requests that may exceed `max_p99_latency` (p99 > T ⇔ more than 1 % of
/// requests are slower than T).
pub const P99_SHARE: f64 = 0.01;

/// Where a route's canary is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Fixed weight (no rollout configured).
    Steady,
    /// Walking `rollout.steps`.
    RollingOut,
    /// Held by an operator at its current weight.
    Paused,
    /// Weight 0, latched until resumed or re-armed by a new canary.
    RolledBack,
    /// At 100 %.
    Promoted,
}

/// Why the budget was breached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreachKind {
    ErrorRate,
    ErrorRateVsStable,
    P99Latency,
    /// The sequential test on errors reached its upper bound.
    Sequential,
    /// The sequential test on slow requests reached its upper bound.
    SequentialLatency,
}

/// The numbers behind a breach.
#[derive(Debug, Clone, PartialEq)]
pub struct Breach {
    pub kind: BreachKind,
    /// The canary's observed value (a rate, or the share of slow requests).
    pub observed: f64,
    /// The limit it crossed.
    pub threshold: f64,
    pub canary: Stats,
    pub stable: Stats,
    pub window: Duration,
}

/// What an operator asks for through the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Rollback,
    Resume,
    Promote,
    Pause,
}

/// A change of state, to be applied, persisted and reported.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    RolledBack { breach: Option<Breach> },
    Stepped { from: Weight, to: Weight },
    Promoted { from: Weight },
    Paused { at: Weight },
    Resumed { to: Weight },
}

/// A command that makes no sense in the current phase.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {command} a route that is {phase}")]
pub struct Conflict {
    pub command: &'static str,
    pub phase: Phase,
}

/// The state machine of one route's canary.
#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    phase: Phase,
    /// The weight the canary gets (0 when rolled back).
    weight: Weight,
    /// When the current weight was entered (for `step_interval`).
    since: Instant,
    /// The phase a pause returns to.
    paused_from: Option<Phase>,
    configured: Weight,
    rollout: Option<RolloutConfig>,
}

// === impl Machine ===

impl Machine {
    /// A fresh canary at its configured weight; rolling out when a rollout is configured
    /// and a step above that weight remains.
    pub fn new(configured: Weight, rollout: Option<RolloutConfig>, now: Instant) -> Machine {
        let phase = match &rollout {
            Some(r) if r.steps.iter().any(|&s| s > configured) => Phase::RollingOut,
            Some(_) => Phase::Promoted,
            None => Phase::Steady,
        };
        Machine {
            phase,
            weight: configured,
            since: now,
            paused_from: None,
            configured,
            rollout,
        }
    }

    /// Restores a persisted phase and weight (the hold timer restarts at `now`).
    pub fn restore(
        &mut self,
        phase: Phase,
        weight: Weight,
        paused_from: Option<Phase>,
        now: Instant,
    ) {
        self.phase = phase;
        self.weight = if phase == Phase::RolledBack {
            Weight::ZERO
        } else {
            weight
        };
        self.paused_from = paused_from;
        self.since = now;
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn weight(&self) -> Weight {
        self.weight
    }

    pub fn configured(&self) -> Weight {
        self.configured
    }

    pub fn paused_from(&self) -> Option<Phase> {
        self.paused_from
    }

    /// A config reload changed the weight or the rollout of an unchanged canary. A
    /// rolled-back, paused or promoted canary keeps its state; a steady one follows the
    /// new weight; a rolling-out one keeps its step unless the new weight is higher.
    pub fn reconfigure(
        &mut self,
        configured: Weight,
        rollout: Option<RolloutConfig>,
        now: Instant,
    ) {
        self.configured = configured;
        self.rollout = rollout;
        match self.phase {
            Phase::Steady | Phase::RollingOut => {
                let fresh = Machine::new(configured, self.rollout.clone(), now);
                if self.phase == Phase::RollingOut && fresh.phase == Phase::RollingOut {
                    self.weight = self.weight.max(configured);
                } else {
                    self.phase = fresh.phase;
                    self.weight = fresh.weight;
                    self.since = now;
                }
            }
            Phase::Paused | Phase::RolledBack | Phase::Promoted => {}
        }
    }

    /// Advances the rollout when the current step has been held for `step_interval`
    /// and the canary is within budget.
    pub fn tick(&mut self, now: Instant, within_budget: bool) -> Option<Decision> {
        if self.phase != Phase::RollingOut || !within_budget {
            return None;
        }
        let rollout = self.rollout.as_ref()?;
        if now.saturating_duration_since(self.since) < rollout.step_interval {
            return None;
        }
        let next = rollout.steps.iter().copied().find(|&s| s > self.weight)?;
        let from = self.weight;
        self.weight = next;
        self.since = now;
        if next == Weight::FULL {
            self.phase = Phase::Promoted;
            Some(Decision::Promoted { from })
        } else {
            Some(Decision::Stepped { from, to: next })
        }
    }

    /// Moves a rolling-out canary to `weight` (a step decided elsewhere: the fleet
    /// judge). `None` when not rolling out or already there.
    pub fn step_to(&mut self, weight: Weight, now: Instant) -> Option<Decision> {
        if self.phase != Phase::RollingOut || weight == self.weight {
            return None;
        }
        let from = self.weight;
        self.weight = weight;
        self.since = now;
        if weight == Weight::FULL {
            self.phase = Phase::Promoted;
            Some(Decision::Promoted { from })
        } else {
            Some(Decision::Stepped { from, to: weight })
        }
    }

    /// The budget was breached: roll back (once).
    pub fn breach(&mut self, breach: Breach, now: Instant) -> Option<Decision> {
        if self.phase == Phase::RolledBack {
            return None;
        }
        self.roll_back(now);
        Some(Decision::RolledBack {
            breach: Some(breach),
        })
    }

    /// An operator's command. `Ok(None)`: already in the requested state.
    pub fn command(
        &mut self,
        command: Command,
        now: Instant,
    ) -> Result<Option<Decision>, Conflict> {
        match command {
            Command::Rollback => {
                if self.phase == Phase::RolledBack {
                    return Ok(None);
                }
                self.roll_back(now);
                Ok(Some(Decision::RolledBack { breach: None }))
            }
            Command::Resume => match self.phase {
                Phase::RolledBack => {
                    let fresh = Machine::new(self.configured, self.rollout.clone(), now);
                    self.phase = fresh.phase;
                    self.weight = fresh.weight;
                    self.since = now;
                    Ok(Some(Decision::Resumed { to: self.weight }))
                }
                Phase::Paused => {
                    self.phase = self.paused_from.take().unwrap_or(Phase::Steady);
                    self.since = now;
                    Ok(Some(Decision::Resumed { to: self.weight }))
                }
                Phase::Steady | Phase::RollingOut | Phase::Promoted => Ok(None),
            },
            Command::Promote => {
                if self.phase == Phase::Promoted {
                    return Ok(None);
                }
                let from = self.weight;
                self.phase = Phase::Promoted;
                self.weight = Weight::FULL;
                self.paused_from = None;
                self.since = now;
                Ok(Some(Decision::Promoted { from }))
            }
            Command::Pause => match self.phase {
                Phase::Paused => Ok(None),
                Phase::RolledBack => Err(Conflict {
                    command: "pause",
                    phase: self.phase,
                }),
                Phase::Steady | Phase::RollingOut | Phase::Promoted => {
                    self.paused_from = Some(self.phase);
                    self.phase = Phase::Paused;
                    Ok(Some(Decision::Paused { at: self.weight }))
                }
            },
        }
    }

    fn roll_back(&mut self, now: Instant) {
        self.phase = Phase::RolledBack;
        self.weight = Weight::ZERO;
        self.paused_from = None;
        self.since = now;
    }
}

/// The budget's verdict on the window: `Some` when the canary has spent it. No verdict
/// while the canary has fewer than `min_requests` in the window.
pub fn judge(
    budget: &BudgetConfig,
    stable: Stats,
    canary: Stats,
    window: Duration,
) -> Option<Breach> {
    if canary.requests < u64::from(budget.min_requests) || canary.requests == 0 {
        return None;
    }
    let breach = |kind, observed, threshold| Breach {
        kind,
        observed,
        threshold,
        canary,
        stable,
        window,
    };
    let canary_rate = canary.error_rate();
    if let Some(max) = budget.max_error_rate {
        if canary_rate > max {
            return Some(breach(BreachKind::ErrorRate, canary_rate, max));
        }
    }
    if let Some(ratio) = budget.max_error_rate_vs_stable {
        let limit = ratio * stable.error_rate().max(STABLE_RATE_FLOOR);
        if canary_rate > limit {
            return Some(breach(BreachKind::ErrorRateVsStable, canary_rate, limit));
        }
    }
    if budget.max_p99_latency.is_some() {
        let share = canary.slow as f64 / canary.requests as f64;
        if share > P99_SHARE {
            return Some(breach(BreachKind::P99Latency, share, P99_SHARE));
        }
    }
    None
}

// === impl Phase ===

impl Phase {
    pub const ALL: [Phase; 5] = [
        Phase::Steady,
        Phase::RollingOut,
        Phase::Paused,
        Phase::RolledBack,
        Phase::Promoted,
    ];

    /// The SPEC name (`steady`, `rolling_out`, …), used in the API, metrics and state files.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Steady => "steady",
            Phase::RollingOut => "rolling_out",
            Phase::Paused => "paused",
            Phase::RolledBack => "rolled_back",
            Phase::Promoted => "promoted",
        }
    }

    pub fn parse(s: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl BreachKind ===

impl BreachKind {
    pub const ALL: [BreachKind; 5] = [
        BreachKind::ErrorRate,
        BreachKind::ErrorRateVsStable,
        BreachKind::P99Latency,
        BreachKind::Sequential,
        BreachKind::SequentialLatency,
    ];

    /// The kind whose `as_str` is `s` (a fleet record's reason).
    pub fn parse(s: &str) -> Option<BreachKind> {
        BreachKind::ALL.into_iter().find(|kind| kind.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        self.reason().as_str()
    }

    /// The `rollbacks_total` reason of a rollback for this breach.
    pub fn reason(self) -> crate::telemetry::RollbackReason {
        use crate::telemetry::RollbackReason;
        match self {
            BreachKind::ErrorRate => RollbackReason::ErrorRate,
            BreachKind::ErrorRateVsStable => RollbackReason::ErrorRateVsStable,
            BreachKind::P99Latency => RollbackReason::P99Latency,
            BreachKind::Sequential => RollbackReason::SequentialErrorRate,
            BreachKind::SequentialLatency => RollbackReason::SequentialLatency,
        }
    }
}

// === impl Command ===

impl Command {
    pub fn parse(s: &str) -> Option<Command> {
        match s {
            "rollback" => Some(Command::Rollback),
            "resume" => Some(Command::Resume),
            "promote" => Some(Command::Promote),
            "pause" => Some(Command::Pause),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
