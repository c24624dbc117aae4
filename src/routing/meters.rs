//! The data path's per-route metric handles, beside the judgement's: what clients
//! received, retries and the shield (SPEC §11), endpoint ejections.

use metrics::Counter;

use crate::telemetry::{
    Class, RetryReason, Telemetry, ENDPOINT_EJECTIONS_TOTAL, RESPONSES_TOTAL, RETRIES_TOTAL,
    RETRY_BUDGET_EXHAUSTED_TOTAL, SHIELDED_TOTAL, UPSTREAMS,
};

use super::Side;

/// The data path's handles of one route.
#[derive(Debug)]
pub struct PathMeters {
    responses: [Counter; 6],
    pub shielded: Counter,
    retries: [[Counter; 3]; 2],
    pub retry_budget_exhausted: Counter,
    ejections: [Counter; 2],
}

// === impl PathMeters ===

impl PathMeters {
    /// Registers (or finds) the data path's series of `route`.
    pub fn new(telemetry: &Telemetry, route: &str) -> PathMeters {
        let counter = |name, extra: &[(&'static str, &'static str)]| {
            telemetry.route_counter(name, route, extra)
        };
        PathMeters {
            responses: Class::ALL
                .map(|class| counter(RESPONSES_TOTAL, &[("class", class.as_str())])),
            shielded: counter(SHIELDED_TOTAL, &[]),
            retries: UPSTREAMS.map(|side| {
                RetryReason::ALL.map(|reason| {
                    counter(
                        RETRIES_TOTAL,
                        &[("upstream", side), ("reason", reason.as_str())],
                    )
                })
            }),
            retry_budget_exhausted: counter(RETRY_BUDGET_EXHAUSTED_TOTAL, &[]),
            ejections: UPSTREAMS
                .map(|side| counter(ENDPOINT_EJECTIONS_TOTAL, &[("upstream", side)])),
        }
    }

    /// Hot path: one response as the client received it.
    pub fn response(&self, class: Class) {
        self.responses[class as usize].increment(1);
    }

    pub fn retry(&self, side: Side, reason: RetryReason) {
        self.retries[side as usize][reason as usize].increment(1);
    }

    pub fn ejection(&self, side: Side) {
        self.ejections[side as usize].increment(1);
    }
}
