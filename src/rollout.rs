//! The canary's runtime: measure every response, judge the budget, roll back at once,
//! walk the rollout, persist decisions.
//!
//! Data flows one way. The request path calls `RouteRuntime::record`, which updates
//! atomics only (metrics handles, the window) and, when that outcome breaches the
//! budget, flips the route's routing latch itself (`trip`), so the very next request
//! goes to stable. It then tells the driver through an unbounded channel; the driver
//! updates the state machine and persists it, and only then reports the decision.
//! Operators' commands and rollout steps go through the same machine under a per-route
//! mutex that the request path never takes.
//!
//! # Reported means on disk
//!
//! Nothing that reports a decision (the API's state and effective weight, the weight and
//! state gauges, `rollbacks_total`, the event and so the webhook) changes before the
//! decision is on disk: `apply` writes the state file (fsync, rename, directory fsync)
//! while holding the machine's lock, and `status` reads the machine under that lock, so
//! the API shows either the decision before it or the persisted one, never a mix. The
//! latch alone runs ahead, and only in the safe direction (stable serves): a crash
//! between the latch and the fsync loses a decision nobody was told about, and the
//! restarted proxy judges the canary afresh. That window is logged (debug,
//! `unpersisted_ms`) when the driver settles a trip.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::{RouteConfig, Weight};
use crate::events::{Event, Events};
use crate::routing::{EffectiveWeight, Side};
use crate::telemetry::{Class, ErrorKind, Telemetry};

pub mod judge;
pub mod machine;
pub mod meters;
pub mod sequential;
pub mod store;
pub mod window;

use judge::Judge;
pub use judge::{Counts, TestStatus, VerdictStatus};
use machine::{Breach, Command, Conflict, Decision, Machine, Phase};
use meters::RouteMeters;
use sequential::Verdict;
use store::Identity;

/// How often the driver checks rollout steps.
pub const TICK: Duration = Duration::from_millis(100);

/// What the control plane shares with every route runtime.
#[derive(Debug)]
pub struct Shared {
    pub events: Arc<Events>,
    pub telemetry: Arc<Telemetry>,
    /// What the fleet client tells every runtime (all false without `[fleet]`).
    pub fleet: FleetCell,
    trips: mpsc::UnboundedSender<Trip>,
}

/// The fleet's say over local judgement (SPEC §10). Without `[fleet]` every flag is
/// false and a runtime judges alone, as in SPEC §1–§9.
#[derive(Debug, Default)]
pub struct FleetCell {
    /// `[fleet]` is set: count the fleet counters, tag events with a scope.
    enabled: AtomicBool,
    /// etcd answered within `stale_after`: the fleet judge decides, and a local breach
    /// only asks for an early publish. False: judge locally, latch this instance only.
    fresh: AtomicBool,
    /// A local breach (or sharp move) since the last publish: publish early.
    nudged: AtomicBool,
}

/// A breach found on the request path, for the driver to settle.
#[derive(Debug)]
pub struct Trip {
    runtime: Arc<RouteRuntime>,
    breach: Breach,
    at: Instant,
    /// `enforce = false`: report it, change nothing.
    observe_only: bool,
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
    /// Hot path: the latch and the machine's weight as last applied, which the split
    /// reads. The latch is set by a trip before the machine knows (a breach the driver
    /// has not settled yet); cleared only when the machine leaves `RolledBack`
    /// (resume, promote).
    weight: Arc<EffectiveWeight>,
    /// The budget's rules: window, sequential tests, arming count.
    judge: Judge,
    /// What clients received, beside what the upstreams did (SPEC §11).
    users: UserCounts,
    /// The last decision as reported: why, since when, by whom and its numbers.
    decided: Mutex<Option<Decided>>,
    /// `enforce = false`: a would-be rollback has been reported and not yet cleared.
    observed_failing: AtomicBool,
    machine: Mutex<Machine>,
    /// `[fleet]`: this instance's cumulative counts per side since the fleet record's
    /// `epoch` began (SPEC §10), published by the fleet client.
    fleet_counts: [CountCells; 2],
    fleet_epoch: AtomicU64,
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
    pub verdict: VerdictStatus,
    /// Failed canary attempts whose clients got stable's answer (`[route.shield]`),
    /// since this canary's runtime began.
    pub shielded: u64,
    /// Responses clients received (proxy-made ones included) and the share that were
    /// errors, since this canary's runtime began: what users saw, beside the canary's
    /// own error rate in `window`. `null` before the first response.
    pub responses: u64,
    pub user_error_rate: Option<f64>,
    /// The last decision's reason, time and numbers; restored after a restart from
    /// `[state] dir`. `null` before the first one.
    pub reason: Option<String>,
    pub since: Option<String>,
    pub decision: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The last decision about a route's canary, as `/api/v1/routes` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Decided {
    /// The event's reason: the breach (`sequential_error_rate`, …), or the operator's
    /// words.
    pub reason: String,
    /// RFC 3339, UTC: when it was made (and persisted).
    pub since: String,
    /// The event itself: `kind`, `actor` for an operator's command, the numbers.
    pub decision: serde_json::Map<String, serde_json::Value>,
}

/// Who asked for a command, and why (`POST …/rollback` with `{"reason": "…"}`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Operator {
    /// The admin token's name (`admin` for a file with one bare token); for a fleet
    /// decision, `fleet:` and the instance that made it.
    pub name: String,
    pub reason: Option<String>,
    /// Extra event fields (a fleet decision's `judged_revision` and totals).
    pub details: Vec<(&'static str, serde_json::Value)>,
    /// Made by the fleet (`scope: "fleet"` on the event) rather than this instance.
    pub fleet: bool,
    /// A fleet rollback's breach (the `reason` label of `rollbacks_total`); `None`:
    /// an operator's (`manual`).
    pub breach: Option<machine::BreachKind>,
}

/// `Counts` as atomics (the request path adds, the fleet client reads).
#[derive(Debug, Default)]
struct CountCells {
    requests: AtomicU64,
    errors: AtomicU64,
    slow: AtomicU64,
    slo_misses: AtomicU64,
}

/// Cumulative counts of what clients received on a route.
#[derive(Debug, Default)]
struct UserCounts {
    responses: AtomicU64,
    errors: AtomicU64,
    shielded: AtomicU64,
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
                fleet: FleetCell::default(),
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
        let restored_decision = state_dir
            .as_deref()
            .and_then(|dir| store::restore(dir, &route.name, &identity, &mut machine, now));
        let runtime = Arc::new(RouteRuntime {
            name: Arc::from(route.name.as_str()),
            identity,
            weight: Arc::new(EffectiveWeight::default()),
            judge: Judge::new(&route.budget, now),
            users: UserCounts::default(),
            decided: Mutex::new(restored_decision),
            observed_failing: AtomicBool::new(false),
            meters: RouteMeters::new(&shared.telemetry, &route.name),
            machine: Mutex::new(machine),
            fleet_counts: Default::default(),
            fleet_epoch: AtomicU64::new(0),
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
        self.judge.reconfigure(&route.budget, now);
        *self.state_dir.lock().unwrap_or_else(|p| p.into_inner()) = state_dir;
        self.meters
            .configured_ratio
            .set(route.canary_weight.percent() / 100.0);
        let mut machine = self.lock();
        machine.reconfigure(route.canary_weight, route.rollout.clone(), now);
        self.sync(&machine);
    }

    pub fn is_rolled_back(&self) -> bool {
        self.weight.is_latched()
    }

    /// The weight the split uses now (0 when rolled back).
    pub fn effective(&self) -> Weight {
        self.weight.effective()
    }

    /// The cell the split reads: the latch and the weight.
    pub fn weight_cell(&self) -> &EffectiveWeight {
        &self.weight
    }

    /// Hot path: counts one exchange and rolls back at once if it spends the budget.
    pub fn record(self: &Arc<Self>, side: Side, outcome: Outcome, now: Instant) {
        self.meters.record(
            side,
            outcome.class,
            outcome.error,
            Some(outcome.latency.as_secs_f64()),
        );
        let armed = !self.is_rolled_back();
        let judged = self
            .judge
            .observe(side, outcome.error.is_some(), outcome.latency, now, armed);
        let fleet = &self.shared.fleet;
        if fleet.enabled.load(Ordering::Relaxed) {
            self.fleet_counts[side_index(side)].add(judged.counts);
            if side == Side::Canary && judged.counts.errors > 0 {
                // Evidence moved: publish early (the client caps it at 10/s).
                fleet.nudged.store(true, Ordering::Relaxed);
            }
        }
        let mut breach = judged.breach;
        let enforce = judged.enforce;
        if breach.is_some() && enforce && fleet.judges() {
            // The fleet judge decides on the fleet's totals; publish early so it sees
            // this evidence within ~100 ms. (Observe-only breaches are reported by
            // each instance, as without a fleet.)
            fleet.nudged.store(true, Ordering::Relaxed);
            breach = None;
        }
        if side == Side::Stable || !armed {
            // Only a judged canary outcome says whether the canary is within budget.
            return;
        }
        match breach {
            Some(breach) => self.trip(breach, now, enforce),
            None => {
                if !enforce && self.observed_failing.load(Ordering::Relaxed) {
                    // Back within budget: a later breach is reported again.
                    self.observed_failing.store(false, Ordering::Relaxed);
                }
            }
        }
    }

    /// Latches the rollback on the request path; the first caller wins and tells the
    /// driver. With `enforce = false` only the report happens (once per breach).
    fn trip(self: &Arc<Self>, breach: Breach, now: Instant, enforce: bool) {
        if !enforce {
            if self
                .observed_failing
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                self.meters.would_rollback.increment(1);
                let trip = Trip {
                    runtime: Arc::clone(self),
                    breach,
                    at: now,
                    observe_only: true,
                };
                if let Err(unsent) = self.shared.trips.send(trip) {
                    unsent.0.runtime.report_would_rollback(&unsent.0.breach);
                }
            }
            return;
        }
        if self.weight.latch() {
            // Routing only: the gauges, the API and the event follow once the driver has
            // the decision on disk.
            let trip = Trip {
                runtime: Arc::clone(self),
                breach,
                at: now,
                observe_only: false,
            };
            if let Err(unsent) = self.shared.trips.send(trip) {
                // The driver is gone (shutting down): settle it here.
                unsent.0.settle();
            }
        }
    }

    /// Driver: records a tripped breach in the machine, persists it, then reports it.
    fn settle_breach(&self, breach: Breach, at: Instant) {
        let mut machine = self.lock();
        if let Some(decision) = machine.breach(breach, at) {
            self.apply(&machine, decision, false);
            // The window in which a crash loses this decision: from the latch until the
            // state file and its directory are synced (and the decision reported).
            tracing::debug!(
                route = %self.name,
                unpersisted_ms = at.elapsed().as_secs_f64() * 1000.0,
                "rollback settled"
            );
        } else {
            self.sync(&machine);
        }
    }

    /// Driver, observe-only mode: the event a rollback would have been.
    fn report_would_rollback(&self, breach: &Breach) {
        let event = breach_event(
            Event::new("would_rollback", Some(&*self.name), breach.kind.as_str()),
            breach,
        )
        .with("enforce", false)
        .with("canary_version", self.identity.version.clone());
        self.shared
            .events
            .record(self.judge.with_evidence(event, breach.kind));
    }

    /// Driver: advances the rollout when its step has been held within budget.
    pub fn tick(&self, now: Instant) {
        if self.shared.fleet.is_enabled() {
            // In a fleet the steps are fleet state: the fleet judge advances them on
            // the fleet's verdict (and none advance while etcd is out of reach).
            return;
        }
        let verdict = self.verdict(now);
        let mode = self.judge.budget().config.mode;
        let within =
            !self.is_rolled_back() && judge::step_may_advance(mode, verdict, self.effective());
        let mut machine = self.lock();
        if let Some(decision) = machine.tick(now, within) {
            self.apply(&machine, decision, false);
        }
    }

    /// `[fleet]`: this instance's cumulative counts (stable, canary) since `epoch`.
    pub fn fleet_counts(&self) -> (u64, [Counts; 2]) {
        (
            self.fleet_epoch.load(Ordering::Acquire),
            [self.fleet_counts[0].get(), self.fleet_counts[1].get()],
        )
    }

    /// `[fleet]`: applies the fleet record's `command` (made by the fleet judge or an
    /// operator on any instance). A new `epoch` (the canary re-armed) starts this
    /// instance's counters again. Persists before it reports, like every decision.
    pub fn fleet_apply(
        &self,
        command: Option<Command>,
        epoch: u64,
        operator: &Operator,
        now: Instant,
    ) -> Result<RouteStatus, Conflict> {
        if self.fleet_epoch.swap(epoch, Ordering::AcqRel) != epoch {
            for cells in &self.fleet_counts {
                cells.reset();
            }
        }
        match command {
            Some(command) => self.command_by(command, operator, now),
            None => Ok(self.status(now)),
        }
    }

    /// `[fleet]`: the fleet judge advanced the rollout to `weight` (a "step" event, or
    /// "promote" at 100 %), persisted before it is reported like every decision.
    pub fn fleet_step(&self, weight: Weight, operator: &Operator, now: Instant) {
        let mut machine = self.lock();
        if let Some(decision) = machine.step_to(weight, now) {
            self.apply_by(&machine, decision, false, Some(operator));
        }
    }

    /// Whether `command` would be accepted now (an operator's fleet command is checked
    /// here before it is written to etcd).
    pub fn check_command(&self, command: Command, now: Instant) -> Result<(), Conflict> {
        let mut machine = self.lock().clone();
        machine.command(command, now).map(drop)
    }

    /// `[fleet]` with a fresh view: the fleet decides, so commands go through etcd.
    pub fn fleet_judges(&self) -> bool {
        self.shared.fleet.judges()
    }

    /// The machine's phase (`rolled_back`, …).
    pub fn phase(&self) -> Phase {
        self.lock().phase()
    }

    /// Admin: an operator's command.
    pub fn command(&self, command: Command, now: Instant) -> Result<RouteStatus, Conflict> {
        let operator = Operator {
            name: "admin".into(),
            ..Operator::default()
        };
        self.command_by(command, &operator, now)
    }

    /// Admin: `operator`'s command; its name and reason go into the event and the
    /// route's status.
    pub fn command_by(
        &self,
        command: Command,
        operator: &Operator,
        now: Instant,
    ) -> Result<RouteStatus, Conflict> {
        {
            let mut machine = self.lock();
            let was = machine.phase();
            if let Some(decision) = machine.command(command, now)? {
                if was == Phase::RolledBack {
                    // A resumed (or force-promoted) canary is judged on fresh evidence.
                    self.judge.rearm();
                    self.observed_failing.store(false, Ordering::Relaxed);
                }
                self.apply_by(&machine, decision, was == Phase::RolledBack, Some(operator));
            }
        }
        Ok(self.status(now))
    }

    /// What `/api/v1/routes` shows: the machine, read under the lock `apply` holds while
    /// it persists, so a decision shows only once it is on disk. A trip not yet settled
    /// shows the state before it, with that state's weight (routing already sends every
    /// request to stable).
    pub fn status(&self, now: Instant) -> RouteStatus {
        let machine = self.lock();
        let decided = self
            .decided
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let window = self.judge.window();
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
            effective_weight: machine.weight().percent(),
            canary_version: self.identity.version.clone(),
            window: WindowStatus {
                seconds: window.length().as_secs_f64(),
                stable: side(Side::Stable),
                canary: side(Side::Canary),
            },
            verdict: self.judge.status(now),
            reason: decided.as_ref().map(|d| d.reason.clone()),
            since: decided.as_ref().map(|d| d.since.clone()),
            decision: decided.map(|d| d.decision),
            shielded: self.users.shielded.load(Ordering::Relaxed),
            responses: self.users.responses.load(Ordering::Relaxed),
            user_error_rate: {
                let responses = self.users.responses.load(Ordering::Relaxed);
                let errors = self.users.errors.load(Ordering::Relaxed);
                (responses > 0).then(|| errors as f64 / responses as f64)
            },
        }
    }

    /// Hot path: one response as its client received it; `error` when it is one
    /// (an error status, or a proxy-made 5xx).
    pub fn record_response(&self, error: bool) {
        self.users.responses.fetch_add(1, Ordering::Relaxed);
        if error {
            self.users.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A failed canary attempt whose client got stable's answer.
    pub fn record_shielded(&self) {
        self.users.shielded.fetch_add(1, Ordering::Relaxed);
    }

    /// The budget's verdict now (see `Judge::verdict`).
    pub fn verdict(&self, now: Instant) -> Verdict {
        self.judge.verdict(now)
    }

    /// Scrape time: the verdict gauges and the sequential evidence, so a dashboard
    /// shows how close a canary is to either bound.
    pub fn export_verdict(&self, now: Instant) {
        let status = self.judge.status(now);
        self.meters.set_verdict(
            status.verdict,
            status.errors.as_ref().map(|t| t.statistic),
            status.latency.as_ref().map(|t| t.statistic),
            status.errors.as_ref().map(|t| (t.upper, t.lower)),
        );
    }

    /// Makes the hot-path atomics and the gauges agree with the machine. A latch the
    /// machine has not caught up with yet (a trip in flight to the driver) stays set;
    /// only `apply` opens it, when the machine leaves `RolledBack`.
    fn sync(&self, machine: &Machine) {
        self.weight.set(machine.weight());
        if machine.phase() == Phase::RolledBack {
            self.weight.latch();
        }
        self.meters
            .weight_ratio
            .set(machine.weight().percent() / 100.0);
        self.meters.set_state(machine.phase());
    }

    /// Applies a decision in the order that keeps every report true after a crash:
    /// persist (fsync'd), then the atomics and gauges, then the counters and the event.
    /// `rearmed`: the machine left `RolledBack`, so the latch opens (after the persist).
    fn apply(&self, machine: &Machine, decision: Decision, rearmed: bool) {
        self.apply_by(machine, decision, rearmed, None);
    }

    /// `apply` for a decision `operator` asked for (`None`: the proxy's own).
    fn apply_by(
        &self,
        machine: &Machine,
        decision: Decision,
        rearmed: bool,
        operator: Option<&Operator>,
    ) {
        let route = Some(&*self.name);
        let rollback = match &decision {
            Decision::RolledBack { breach } => {
                // The latch may close before the disk: it reports nothing and only
                // sends traffic to stable.
                self.weight.latch();
                let kind = breach
                    .as_ref()
                    .map(|b| b.kind)
                    .or(operator.and_then(|o| o.breach));
                Some(kind.map_or(crate::telemetry::RollbackReason::Manual, |k| k.reason()))
            }
            _ => None,
        };
        let event = match &decision {
            Decision::RolledBack {
                breach: Some(breach),
            } => {
                let event =
                    breach_event(Event::new("rollback", route, breach.kind.as_str()), breach);
                self.judge.with_evidence(event, breach.kind)
            }
            Decision::RolledBack { breach: None } => Event::new("rollback", route, "manual"),
            Decision::Stepped { from, to } => Event::new(
                "step",
                route,
                "advanced: the previous step held within budget for step_interval",
            )
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
        let mut event = event
            .with("state", machine.phase().as_str())
            .with("canary_version", self.identity.version.clone());
        if let Some(operator) = operator {
            event = event.with("actor", operator.name.clone());
            if let Some(reason) = &operator.reason {
                event.reason = reason.clone();
            }
            for (key, value) in &operator.details {
                event = event.with(key, value.clone());
            }
        }
        if self.shared.fleet.enabled.load(Ordering::Relaxed) {
            let fleet = operator.is_some_and(|o| o.fleet);
            event = event.with("scope", if fleet { "fleet" } else { "local" });
        }
        let mut decision = event.details.clone();
        decision.insert("kind".into(), event.kind.into());
        let decided = Decided {
            reason: event.reason.clone(),
            since: event.time.clone(),
            decision,
        };
        self.persist(machine, &decided);
        *self.decided.lock().unwrap_or_else(|p| p.into_inner()) = Some(decided);
        self.sync(machine);
        if rearmed && machine.phase() != Phase::RolledBack {
            self.weight.open();
        }
        if let Some(reason) = rollback {
            self.meters.rollback(reason);
        }
        self.shared.events.record(event);
    }

    fn persist(&self, machine: &Machine, decided: &Decided) {
        let dir = self
            .state_dir
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(dir) = dir else {
            return;
        };
        store::persist(
            &dir,
            &self.name,
            &self.identity,
            machine,
            decided,
            &self.shared.telemetry.state_write_failures,
        );
    }

    fn lock(&self) -> MutexGuard<'_, Machine> {
        self.machine.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The numbers behind a breach, as event fields.
fn breach_event(event: Event, breach: &Breach) -> Event {
    event
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

// === impl FleetCell ===

impl FleetCell {
    /// `[fleet]` is set.
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// The view is fresh (`true`) or stale (`false`); returns the previous value.
    pub fn set_fresh(&self, fresh: bool) -> bool {
        self.fresh.swap(fresh, Ordering::AcqRel)
    }

    /// The fleet judge decides (fleet mode with a fresh view).
    pub fn judges(&self) -> bool {
        self.fresh.load(Ordering::Acquire) && self.enabled.load(Ordering::Relaxed)
    }

    /// Takes the early-publish request, if any.
    pub fn take_nudge(&self) -> bool {
        self.nudged.swap(false, Ordering::AcqRel)
    }
}

// === impl CountCells ===

impl CountCells {
    fn add(&self, counts: Counts) {
        self.requests.fetch_add(counts.requests, Ordering::Relaxed);
        if counts.errors > 0 {
            self.errors.fetch_add(counts.errors, Ordering::Relaxed);
        }
        if counts.slow > 0 {
            self.slow.fetch_add(counts.slow, Ordering::Relaxed);
        }
        if counts.slo_misses > 0 {
            self.slo_misses
                .fetch_add(counts.slo_misses, Ordering::Relaxed);
        }
    }

    fn get(&self) -> Counts {
        Counts {
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            slow: self.slow.load(Ordering::Relaxed),
            slo_misses: self.slo_misses.load(Ordering::Relaxed),
        }
    }

    fn reset(&self) {
        for cell in [&self.requests, &self.errors, &self.slow, &self.slo_misses] {
            cell.store(0, Ordering::Relaxed);
        }
    }
}

fn side_index(side: Side) -> usize {
    match side {
        Side::Stable => 0,
        Side::Canary => 1,
    }
}

// === impl Trip ===

impl Trip {
    fn settle(self) {
        if self.observe_only {
            self.runtime.report_would_rollback(&self.breach);
        } else {
            self.runtime.settle_breach(self.breach, self.at);
        }
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

/// The driver: settles trips and ticks rollouts until `shutdown`. `runtimes` lists
/// the current generation's route runtimes at each tick (the snapshot above reads
/// them out; this module does not know it).
pub async fn drive(
    runtimes: impl Fn() -> Vec<Arc<RouteRuntime>>,
    mut trips: mpsc::UnboundedReceiver<Trip>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            trip = trips.recv() => match trip {
                Some(trip) => trip.settle(),
                None => return,
            },
            _ = interval.tick() => {
                let now = Instant::now();
                for runtime in runtimes() {
                    runtime.tick(now);
                }
            }
            () = &mut shutdown => break,
        }
    }
    // A breach tripped just before shutdown must still be persisted and reported.
    while let Ok(trip) = trips.try_recv() {
        trip.settle();
    }
}

#[cfg(test)]
mod tests;
