//! The canary's runtime: measure every response, judge the budget, roll back at once,
//! walk the rollout, persist decisions.
//!
//! Data flows one way. The request path calls `RouteRuntime::record`, which updates
//! atomics only (metrics handles, the window) and, when that outcome breaches the
//! budget, flips the route's latch and effective weight itself (`trip`), so the very
//! next request goes to stable. It then tells the driver through an unbounded channel;
//! the driver updates the state machine, persists, and emits the event. Operators'
//! commands and rollout steps go through the same machine under a per-route mutex that
//! the request path never takes.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::{BudgetConfig, RouteConfig, Weight};
use crate::events::{Event, Events};
use crate::routing::{Side, Snapshot};
use crate::telemetry::{Class, ErrorKind, RouteMeters, Telemetry};

pub mod machine;
pub mod store;
pub mod window;

use machine::{judge, Breach, Command, Conflict, Decision, Machine, Phase};
use store::{Identity, Saved};
use window::{Sample, Window};

/// How often the driver checks rollout steps.
pub const TICK: Duration = Duration::from_millis(100);

/// What the control plane shares with every route runtime.
#[derive(Debug)]
pub struct Shared {
    pub events: Arc<Events>,
    pub telemetry: Arc<Telemetry>,
    trips: mpsc::UnboundedSender<Trip>,
}

/// A breach found on the request path, for the driver to settle.
#[derive(Debug)]
pub struct Trip {
    runtime: Arc<RouteRuntime>,
    breach: Breach,
    at: Instant,
}

/// One exchange's result as the budget sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub class: Class,
    /// `Some` when it counts against the budget.
    pub error: Option<ErrorKind>,
    /// Until the response head (or the failure).
    pub latency: Duration,
}

/// The runtime state of one route's canary; survives config reloads while the canary's
/// identity (version, endpoints) is unchanged.
#[derive(Debug)]
pub struct RouteRuntime {
    pub name: Arc<str>,
    identity: Identity,
    /// Hot path: the latch. When set, every request goes to stable.
    rolled_back: AtomicBool,
    /// Hot path: the split weight in basis points.
    effective: AtomicU16,
    /// Replaced (and so cleared) when a reload changes `budget.window`.
    window: ArcSwap<Window>,
    budget: ArcSwap<BudgetConfig>,
    machine: Mutex<Machine>,
    meters: RouteMeters,
    state_dir: Mutex<Option<PathBuf>>,
    shared: Arc<Shared>,
}

/// A route as `/api/v1/routes` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RouteStatus {
    pub name: String,
    pub state: &'static str,
    /// Percent.
    pub configured_weight: f64,
    /// Percent; 0 when rolled back.
    pub effective_weight: f64,
    pub canary_version: Option<String>,
    pub window: WindowStatus,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WindowStatus {
    pub seconds: f64,
    pub stable: SideStatus,
    pub canary: SideStatus,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SideStatus {
    pub requests: u64,
    pub errors: u64,
    pub error_rate: f64,
    /// Approximate (histogram bucket bound); `null` without samples.
    pub p99_seconds: Option<f64>,
}

// === impl Shared ===

impl Shared {
    pub fn new(
        events: Arc<Events>,
        telemetry: Arc<Telemetry>,
    ) -> (Arc<Shared>, mpsc::UnboundedReceiver<Trip>) {
        let (trips, rx) = mpsc::unbounded_channel();
        (
            Arc::new(Shared {
                events,
                telemetry,
                trips,
            }),
            rx,
        )
    }
}

// === impl RouteRuntime ===

impl RouteRuntime {
    /// A runtime for `route`, restored from `state_dir` when it holds a decision about
    /// this same canary.
    pub fn new(
        route: &RouteConfig,
        state_dir: Option<PathBuf>,
        shared: &Arc<Shared>,
        now: Instant,
    ) -> Arc<RouteRuntime> {
        let identity = identity(route);
        let mut machine = Machine::new(route.canary_weight, route.rollout.clone(), now);
        if let Some(dir) = &state_dir {
            match store::load(dir, &route.name) {
                Ok(Some(saved)) if saved.canary == identity => {
                    if let Some(phase) = Phase::parse(&saved.state) {
                        let weight = Weight::from_basis_points(saved.weight_basis_points)
                            .unwrap_or(Weight::ZERO);
                        let paused_from = saved.paused_from.as_deref().and_then(Phase::parse);
                        machine.restore(phase, weight, paused_from, now);
                        tracing::info!(route = %route.name, state = %phase, weight = %weight, "restored canary state");
                    }
                }
                Ok(Some(_)) => {
                    tracing::info!(route = %route.name, "saved state is about another canary version or endpoints; starting fresh")
                }
                Ok(None) => {}
                Err(err) => {
                    tracing::warn!(route = %route.name, error = %err, "cannot read saved state; starting fresh")
                }
            }
        }
        let runtime = Arc::new(RouteRuntime {
            name: Arc::from(route.name.as_str()),
            identity,
            rolled_back: AtomicBool::new(false),
            effective: AtomicU16::new(0),
            window: ArcSwap::from_pointee(Window::new(route.budget.window, now)),
            budget: ArcSwap::from_pointee(route.budget.clone()),
            meters: shared.telemetry.route_meters(&route.name),
            machine: Mutex::new(machine),
            state_dir: Mutex::new(state_dir),
            shared: Arc::clone(shared),
        });
        runtime
            .meters
            .configured_ratio
            .set(route.canary_weight.percent() / 100.0);
        runtime.sync(&runtime.lock());
        runtime
    }

    /// Whether this runtime can carry on for `route` after a reload: same canary
    /// (version and endpoints).
    pub fn same_canary(&self, route: &RouteConfig) -> bool {
        self.identity == identity(route)
    }

    /// Applies a reloaded config of the same canary: new budget, weight and rollout;
    /// the latch and the rollout step are kept, and so is the window unless its length
    /// changed (then it starts empty).
    pub fn reconfigure(&self, route: &RouteConfig, state_dir: Option<PathBuf>, now: Instant) {
        if self.window.load().length() != route.budget.window {
            self.window
                .store(Arc::new(Window::new(route.budget.window, now)));
        }
        self.budget.store(Arc::new(route.budget.clone()));
        *self.state_dir.lock().unwrap_or_else(|p| p.into_inner()) = state_dir;
        self.meters
            .configured_ratio
            .set(route.canary_weight.percent() / 100.0);
        let mut machine = self.lock();
        machine.reconfigure(route.canary_weight, route.rollout.clone(), now);
        self.sync(&machine);
    }

    pub fn is_rolled_back(&self) -> bool {
        self.rolled_back.load(Ordering::Acquire)
    }

    /// The weight the split uses now (0 when rolled back).
    pub fn effective(&self) -> Weight {
        if self.is_rolled_back() {
            return Weight::ZERO;
        }
        Weight::from_basis_points(self.effective.load(Ordering::Relaxed)).unwrap_or(Weight::ZERO)
    }

    /// Hot path: counts one exchange and rolls back at once if it spends the budget.
    pub fn record(self: &Arc<Self>, side: Side, outcome: Outcome, now: Instant) {
        self.meters.record(
            side,
            outcome.class,
            outcome.error,
            Some(outcome.latency.as_secs_f64()),
        );
        let budget = self.budget.load();
        let window = self.window.load();
        let slow = budget
            .max_p99_latency
            .is_some_and(|limit| outcome.latency > limit);
        window.record(
            side,
            Sample {
                error: outcome.error.is_some(),
                slow,
                latency: outcome.latency,
            },
            now,
        );
        if side == Side::Canary && !self.is_rolled_back() {
            let stable = window.stats(Side::Stable, now);
            let canary = window.stats(Side::Canary, now);
            if let Some(breach) = judge(&budget, stable, canary, window.length()) {
                self.trip(breach, now);
            }
        }
    }

    /// Latches the rollback on the request path; the first caller wins and tells the
    /// driver.
    fn trip(self: &Arc<Self>, breach: Breach, now: Instant) {
        if self
            .rolled_back
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.effective.store(0, Ordering::Relaxed);
            self.meters.weight_ratio.set(0.0);
            let trip = Trip {
                runtime: Arc::clone(self),
                breach,
                at: now,
            };
            if let Err(unsent) = self.shared.trips.send(trip) {
                // The driver is gone (shutting down): settle it here.
                let trip = unsent.0;
                trip.runtime.settle(trip.breach, trip.at);
            }
        }
    }

    /// Driver: records a tripped breach in the machine, persists it, emits the event.
    fn settle(&self, breach: Breach, at: Instant) {
        let mut machine = self.lock();
        if let Some(decision) = machine.breach(breach, at) {
            self.apply(&machine, decision);
        } else {
            self.sync(&machine);
        }
    }

    /// Driver: advances the rollout when its step has been held within budget.
    pub fn tick(&self, now: Instant) {
        let within = !self.is_rolled_back() && {
            let budget = self.budget.load();
            let window = self.window.load();
            judge(
                &budget,
                window.stats(Side::Stable, now),
                window.stats(Side::Canary, now),
                window.length(),
            )
            .is_none()
        };
        let mut machine = self.lock();
        if let Some(decision) = machine.tick(now, within) {
            self.apply(&machine, decision);
        }
    }

    /// Admin: an operator's command.
    pub fn command(&self, command: Command, now: Instant) -> Result<RouteStatus, Conflict> {
        {
            let mut machine = self.lock();
            let was = machine.phase();
            if let Some(decision) = machine.command(command, now)? {
                if was == Phase::RolledBack {
                    // A resumed (or force-promoted) canary is judged on fresh evidence.
                    self.window.load().clear();
                }
                self.apply(&machine, decision);
            }
        }
        Ok(self.status(now))
    }

    pub fn status(&self, now: Instant) -> RouteStatus {
        let machine = self.lock();
        let window = self.window.load();
        let side = |side| {
            let report = window.report(side, now);
            SideStatus {
                requests: report.stats.requests,
                errors: report.stats.errors,
                error_rate: report.stats.error_rate(),
                p99_seconds: report.p99().map(|d| d.as_secs_f64()),
            }
        };
        RouteStatus {
            name: self.name.to_string(),
            state: machine.phase().as_str(),
            configured_weight: machine.configured().percent(),
            effective_weight: self.effective().percent(),
            canary_version: self.identity.version.clone(),
            window: WindowStatus {
                seconds: window.length().as_secs_f64(),
                stable: side(Side::Stable),
                canary: side(Side::Canary),
            },
        }
    }

    /// Makes the hot-path atomics and the gauges agree with the machine.
    fn sync(&self, machine: &Machine) {
        let rolled_back = machine.phase() == Phase::RolledBack;
        if rolled_back {
            self.rolled_back.store(true, Ordering::Release);
            self.effective.store(0, Ordering::Relaxed);
        } else {
            self.effective
                .store(machine.weight().basis_points(), Ordering::Relaxed);
            self.rolled_back.store(false, Ordering::Release);
        }
        self.meters
            .weight_ratio
            .set(self.effective().percent() / 100.0);
        self.meters.set_state(machine.phase());
    }

    /// Applies a decision: atomics, metrics, the state file, the event.
    fn apply(&self, machine: &Machine, decision: Decision) {
        self.sync(machine);
        let route = Some(&*self.name);
        let event = match &decision {
            Decision::RolledBack {
                breach: Some(breach),
            } => {
                self.meters.rollback(breach.kind.as_str());
                Event::new("rollback", route, breach.kind.as_str())
                    .with("observed", breach.observed)
                    .with("threshold", breach.threshold)
                    .with("window_seconds", breach.window.as_secs_f64())
                    .with("canary_requests", breach.canary.requests)
                    .with("canary_errors", breach.canary.errors)
                    .with("canary_slow", breach.canary.slow)
                    .with("stable_requests", breach.stable.requests)
                    .with("stable_errors", breach.stable.errors)
                    .with("stable_error_rate", breach.stable.error_rate())
            }
            Decision::RolledBack { breach: None } => {
                self.meters.rollback("manual");
                Event::new("rollback", route, "manual")
            }
            Decision::Stepped { from, to } => Event::new("step", route, "step held within budget")
                .with("from_weight", from.percent())
                .with("to_weight", to.percent()),
            Decision::Promoted { from } => Event::new("promote", route, "promoted")
                .with("from_weight", from.percent())
                .with("to_weight", 100.0),
            Decision::Paused { at } => {
                Event::new("pause", route, "operator").with("weight", at.percent())
            }
            Decision::Resumed { to } => {
                Event::new("resume", route, "operator").with("weight", to.percent())
            }
        };
        self.persist(machine, &event.reason);
        self.shared
            .events
            .record(event.with("state", machine.phase().as_str()));
    }

    fn persist(&self, machine: &Machine, reason: &str) {
        let dir = self
            .state_dir
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(dir) = dir else {
            return;
        };
        let saved = Saved {
            route: self.name.to_string(),
            state: machine.phase().as_str().to_string(),
            weight_basis_points: machine.weight().basis_points(),
            paused_from: machine.paused_from().map(|p| p.as_str().to_string()),
            canary: self.identity.clone(),
            reason: reason.to_string(),
            updated: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        };
        if let Err(err) = store::save(&dir, &saved) {
            // The decision stands in memory; only its survival across a restart is lost.
            tracing::error!(route = %self.name, dir = %dir.display(), error = %err, "cannot persist canary state");
        }
    }

    fn lock(&self) -> MutexGuard<'_, Machine> {
        self.machine.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn identity(route: &RouteConfig) -> Identity {
    Identity {
        version: route.canary_version.clone(),
        endpoints: route
            .canary
            .endpoints
            .iter()
            .map(ToString::to_string)
            .collect(),
    }
}

/// The driver: settles trips and ticks rollouts until `shutdown`.
pub async fn drive(
    snapshots: Arc<ArcSwap<Snapshot>>,
    mut trips: mpsc::UnboundedReceiver<Trip>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            trip = trips.recv() => match trip {
                Some(trip) => trip.runtime.settle(trip.breach, trip.at),
                None => return,
            },
            _ = interval.tick() => {
                let snapshot = snapshots.load();
                let now = Instant::now();
                for route in &snapshot.routes {
                    route.runtime.tick(now);
                }
            }
            () = &mut shutdown => break,
        }
    }
    // A breach tripped just before shutdown must still be persisted and reported.
    while let Ok(trip) = trips.try_recv() {
        trip.runtime.settle(trip.breach, trip.at);
    }
}

#[cfg(test)]
mod tests;
