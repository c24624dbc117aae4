//! The `text` field: one line a person reads in a chat channel, built from whatever
//! numbers the event carries (a missing one is left out, never guessed).
//!
//! `canary-proxy: rollback of route checkout (canary v2): sequential_error_rate — 7 of
//! the last 18 canary requests failed`

use serde_json::{Map, Value};

use crate::events::Event;

/// The line for `event`; `version` is its route's `canary.version`.
pub(super) fn line(event: &Event, version: Option<&str>) -> String {
    let route = match (event.route.as_deref(), version) {
        (Some(route), Some(version)) => format!("route {route} (canary {version})"),
        (Some(route), None) => format!("route {route}"),
        (None, _) => "the proxy".to_string(),
    };
    let d = &event.details;
    let what = match event.kind {
        "rollback" => format!("rollback of {route}: {}", breach(event)),
        "would_rollback" => format!(
            "would roll back {route} (observe only, enforce = false): {}",
            breach(event)
        ),
        "step" => match (percent(d, "from_weight"), percent(d, "to_weight")) {
            (Some(from), Some(to)) => format!("{route} stepped from {from} to {to}"),
            _ => format!("{route} stepped: {}", event.reason),
        },
        "promote" => match percent(d, "from_weight") {
            Some(from) => format!("{route} promoted to 100% (from {from})"),
            None => format!("{route} promoted to 100%"),
        },
        "pause" | "resume" => {
            let verb = if event.kind == "pause" {
                "paused"
            } else {
                "resumed"
            };
            match percent(d, "weight") {
                Some(at) => format!("{route} {verb} at {at} by {}", event.reason),
                None => format!("{route} {verb} by {}", event.reason),
            }
        }
        "reload" => match number(d, "generation") {
            Some(generation) => format!("config reloaded (generation {generation})"),
            None => "config reloaded".to_string(),
        },
        "reload_failed" => format!(
            "config reload rejected, the previous config keeps serving: {}",
            event.reason
        ),
        other => match event.route {
            Some(_) => format!("{other} of {route}: {}", event.reason),
            None => format!("{other}: {}", event.reason),
        },
    };
    format!("canary-proxy: {what}")
}

/// `reason — what the numbers say`, or the bare reason when they say nothing.
fn breach(event: &Event) -> String {
    let d = &event.details;
    let reason = event.reason.as_str();
    let counts = |what: &str, key: &str| {
        let n = number(d, "canary_requests")?;
        let k = number(d, key)?;
        Some(format!("{k} of the last {n} canary requests {what}"))
    };
    let crossed = || Some((rate(d, "observed")?, rate(d, "threshold")?));
    let detail = match reason {
        "manual" => Some("by an operator".to_string()),
        "sequential_error_rate" => counts("failed", "canary_errors"),
        "sequential_latency" => counts("were slower than the latency SLO", "canary_slow"),
        "p99_latency" => counts("were slower than max_p99_latency", "canary_slow"),
        "error_rate" => counts("failed", "canary_errors").map(|c| match crossed() {
            Some((observed, limit)) => format!("{c} ({observed} > {limit})"),
            None => c,
        }),
        "error_rate_vs_stable" => counts("failed", "canary_errors").map(|c| {
            match (crossed(), rate(d, "stable_error_rate")) {
                (Some((observed, limit)), Some(stable)) => {
                    format!("{c} ({observed} > {limit}; stable {stable})")
                }
                _ => c,
            }
        }),
        _ => None,
    };
    match detail {
        Some(detail) => format!("{reason} — {detail}"),
        None => reason.to_string(),
    }
}

fn number(d: &Map<String, Value>, key: &str) -> Option<u64> {
    d.get(key).and_then(Value::as_u64)
}

/// A weight field (already in percent) as `25%` / `0.5%`.
fn percent(d: &Map<String, Value>, key: &str) -> Option<String> {
    d.get(key).and_then(Value::as_f64).map(|p| format!("{p}%"))
}

/// A rate field (a fraction) as a percentage with one decimal: `12.5%`.
fn rate(d: &Map<String, Value>, key: &str) -> Option<String> {
    let fraction = d.get(key).and_then(Value::as_f64)?;
    fraction
        .is_finite()
        .then(|| format!("{:.1}%", fraction * 100.0))
}
