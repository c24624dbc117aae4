//! The judgement's per-route metric handles: exchanges by side and class, latency,
//! errors by kind, weights, state, rollbacks, the verdict and its evidence. Registered
//! once per route runtime through `Telemetry`, incremented without a registry lookup.

use metrics::{Counter, Gauge, Histogram};

use crate::routing::Side;
use crate::telemetry::{
    Class, ErrorKind, RollbackReason, Telemetry, CANARY_CONFIGURED_WEIGHT_RATIO, CANARY_STATE,
    CANARY_VERDICT, CANARY_WEIGHT_RATIO, REQUESTS_TOTAL, REQUEST_DURATION, ROLLBACKS_TOTAL,
    SEQUENTIAL_EVIDENCE, SEQUENTIAL_EVIDENCE_BOUND, UPSTREAMS, UPSTREAM_ERRORS_TOTAL, VERDICTS,
    WOULD_ROLLBACK_TOTAL,
};

use super::machine::Phase;

/// The handles of one route.
#[derive(Debug)]
pub struct RouteMeters {
    requests: [[Counter; 6]; 2],
    duration: [Histogram; 2],
    errors: [[Counter; 6]; 2],
    pub weight_ratio: Gauge,
    pub configured_ratio: Gauge,
    rollbacks: [Counter; 6],
    states: [Gauge; 5],
    pub would_rollback: Counter,
    /// Sequential evidence (errors, latency) and its two bounds; set at scrape time.
    evidence: [Gauge; 2],
    evidence_bounds: [Gauge; 2],
    verdicts: [Gauge; 3],
}

// === impl RouteMeters ===

impl RouteMeters {
    /// Registers (or finds) every series of `route`.
    pub fn new(telemetry: &Telemetry, route: &str) -> RouteMeters {
        let counter = |name, extra: &[(&'static str, &'static str)]| {
            telemetry.route_counter(name, route, extra)
        };
        let gauge = |name, extra: &[(&'static str, &'static str)]| {
            telemetry.route_gauge(name, route, extra)
        };
        RouteMeters {
            requests: UPSTREAMS.map(|side| {
                Class::ALL.map(|class| {
                    counter(
                        REQUESTS_TOTAL,
                        &[("upstream", side), ("class", class.as_str())],
                    )
                })
            }),
            duration: UPSTREAMS.map(|side| {
                telemetry.route_histogram(REQUEST_DURATION, route, &[("upstream", side)])
            }),
            errors: UPSTREAMS.map(|side| {
                ErrorKind::ALL.map(|kind| {
                    counter(
                        UPSTREAM_ERRORS_TOTAL,
                        &[("upstream", side), ("kind", kind.as_str())],
                    )
                })
            }),
            weight_ratio: gauge(CANARY_WEIGHT_RATIO, &[]),
            configured_ratio: gauge(CANARY_CONFIGURED_WEIGHT_RATIO, &[]),
            rollbacks: RollbackReason::ALL
                .map(|reason| counter(ROLLBACKS_TOTAL, &[("reason", reason.as_str())])),
            states: Phase::ALL.map(|phase| gauge(CANARY_STATE, &[("state", phase.as_str())])),
            would_rollback: counter(WOULD_ROLLBACK_TOTAL, &[]),
            evidence: ["errors", "latency"]
                .map(|test| gauge(SEQUENTIAL_EVIDENCE, &[("test", test)])),
            evidence_bounds: ["upper", "lower"]
                .map(|bound| gauge(SEQUENTIAL_EVIDENCE_BOUND, &[("bound", bound)])),
            verdicts: VERDICTS.map(|verdict| gauge(CANARY_VERDICT, &[("verdict", verdict)])),
        }
    }

    /// Hot path: counts one exchange.
    pub fn record(&self, side: Side, class: Class, error: Option<ErrorKind>, seconds: Option<f64>) {
        let s = side as usize;
        self.requests[s][class as usize].increment(1);
        if let Some(kind) = error {
            self.errors[s][kind as usize].increment(1);
        }
        if let Some(seconds) = seconds {
            self.duration[s].record(seconds);
        }
    }

    pub fn rollback(&self, reason: RollbackReason) {
        self.rollbacks[reason as usize].increment(1);
    }

    pub fn set_state(&self, phase: Phase) {
        for (gauge, p) in self.states.iter().zip(Phase::ALL) {
            gauge.set(if p == phase { 1.0 } else { 0.0 });
        }
    }

    /// Scrape time: the verdict and the evidence behind it (`None`: threshold mode, or
    /// no latency test).
    pub fn set_verdict(
        &self,
        verdict: &str,
        errors: Option<f64>,
        latency: Option<f64>,
        bounds: Option<(f64, f64)>,
    ) {
        for (gauge, name) in self.verdicts.iter().zip(VERDICTS) {
            gauge.set(if name == verdict { 1.0 } else { 0.0 });
        }
        let [e, l] = &self.evidence;
        e.set(errors.unwrap_or(0.0));
        l.set(latency.unwrap_or(0.0));
        if let Some((upper, lower)) = bounds {
            self.evidence_bounds[0].set(upper);
            self.evidence_bounds[1].set(lower);
        }
    }
}
