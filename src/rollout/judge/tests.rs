//! The judge takes single outcomes and counts alike; its verdict and its breach share
//! one gate.

use proptest::prelude::*;

use super::*;
use crate::config::{parse_str, RouteConfig};

fn route(budget: &str) -> RouteConfig {
    let toml = format!(
        r#"
[[route]]
name = "r"
stable = {{ endpoints = ["127.0.0.1:1"] }}
canary = {{ endpoints = ["127.0.0.1:2"], version = "v1" }}
canary_weight = 10
[route.budget]
{budget}
"#
    );
    let mut config = parse_str(&toml, std::path::Path::new("t.toml")).unwrap();
    config.routes.remove(0)
}

fn sequential() -> RouteConfig {
    route("mode = \"sequential\"\nmin_requests = 50\nwindow = \"30s\"")
}

/// Stable at 1 % and the canary at `canary_every`-th request an error, `n` canary
/// requests, fed one by one.
fn feed_singles(judge: &Judge, n: u64, canary_every: u64, now: Instant) -> Option<Breach> {
    let mut breach = None;
    for i in 0..n {
        for j in 0..4 {
            let error = (i * 4 + j) % 100 == 0;
            judge.observe(Side::Stable, error, Duration::from_millis(1), now, true);
        }
        let judged = judge.observe(
            Side::Canary,
            i % canary_every == 0,
            Duration::from_millis(1),
            now,
            true,
        );
        breach = breach.or(judged.breach);
    }
    breach
}

#[test]
fn counts_in_one_batch_reach_the_same_verdict_as_single_outcomes() {
    let now = Instant::now();
    let config = sequential();
    let singles = Judge::new(&config.budget, now);
    let batch = Judge::new(&config.budget, now);
    // 400 canary requests at 20 % errors against a 1 % stable side.
    assert!(feed_singles(&singles, 400, 5, now).is_some());
    batch.observe_counts(
        Side::Stable,
        Counts {
            requests: 1600,
            errors: 16,
            ..Counts::default()
        },
        now,
        true,
    );
    let breach = batch.observe_counts(
        Side::Canary,
        Counts {
            requests: 400,
            errors: 80,
            ..Counts::default()
        },
        now,
        true,
    );
    let breach = breach.expect("the batch breaches like the singles");
    assert_eq!(breach.kind, BreachKind::Sequential);
    assert_eq!(batch.verdict(now), Verdict::Failing);
    assert_eq!(batch.armed_requests(), 400);
    assert_eq!(batch.window().stats(Side::Canary, now).errors, 80);
}

#[test]
fn counts_below_min_requests_hold_the_verdict_and_the_breach() {
    let now = Instant::now();
    let judge = Judge::new(&sequential().budget, now);
    let all_errors = Counts {
        requests: 49,
        errors: 49,
        ..Counts::default()
    };
    assert_eq!(
        judge.observe_counts(Side::Canary, all_errors, now, true),
        None
    );
    assert_eq!(judge.verdict(now), Verdict::Undecided);
    let one = Counts {
        requests: 1,
        errors: 1,
        ..Counts::default()
    };
    assert!(judge.observe_counts(Side::Canary, one, now, true).is_some());
    assert_eq!(judge.verdict(now), Verdict::Failing);
}

#[test]
fn a_latched_canary_is_recorded_but_not_judged() {
    let now = Instant::now();
    let judge = Judge::new(&sequential().budget, now);
    let errors = Counts {
        requests: 500,
        errors: 500,
        ..Counts::default()
    };
    assert_eq!(judge.observe_counts(Side::Canary, errors, now, false), None);
    assert_eq!(judge.armed_requests(), 0);
    assert_eq!(judge.window().stats(Side::Canary, now).requests, 500);
    judge.rearm();
    assert_eq!(judge.window().stats(Side::Canary, now).requests, 0);
}

#[test]
fn threshold_criteria_apply_to_counts() {
    let now = Instant::now();
    let config = route("mode = \"threshold\"\nmin_requests = 20\nmax_error_rate = 0.1");
    let judge = Judge::new(&config.budget, now);
    let counts = |requests, errors| Counts {
        requests,
        errors,
        ..Counts::default()
    };
    assert_eq!(
        judge.observe_counts(Side::Canary, counts(19, 19), now, true),
        None
    );
    let breach = judge
        .observe_counts(Side::Canary, counts(1, 0), now, true)
        .expect("19 errors in 20");
    assert_eq!(breach.kind, BreachKind::ErrorRate);
}

#[test]
fn counts_since_never_go_below_zero() {
    let later = Counts {
        requests: 10,
        errors: 1,
        slow: 0,
        slo_misses: 3,
    };
    let earlier = Counts {
        requests: 4,
        errors: 2,
        slow: 0,
        slo_misses: 1,
    };
    assert_eq!(
        later.since(earlier),
        Counts {
            requests: 6,
            errors: 0,
            slow: 0,
            slo_misses: 2
        }
    );
    assert_eq!(earlier.plus(later.since(earlier)).requests, later.requests);
}

proptest! {
    /// Without the floor in play, a batch of counts moves the statistic about as far as
    /// the same outcomes one by one, in any split. Not exactly: the decay (half-life
    /// 5 700 requests) makes order matter, and errors-first is the worst order.
    #[test]
    fn a_batch_equals_its_singles(errors in 0u64..60, ok in 0u64..200, cut in 0u64..260) {
        let now = Instant::now();
        let config = sequential();
        let singles = Judge::new(&config.budget, now);
        let batches = Judge::new(&config.budget, now);
        // Errors first, so the statistic never rests on the floor mid-way.
        let outcomes: Vec<bool> = (0..errors).map(|_| true).chain((0..ok).map(|_| false)).collect();
        for &error in &outcomes {
            singles.observe(Side::Canary, error, Duration::ZERO, now, true);
        }
        let cut = (cut as usize).min(outcomes.len());
        for part in [&outcomes[..cut], &outcomes[cut..]] {
            let counts = Counts {
                requests: part.len() as u64,
                errors: part.iter().filter(|e| **e).count() as u64,
                ..Counts::default()
            };
            batches.observe_counts(Side::Canary, counts, now, true);
        }
        let a = singles.status(now).errors.unwrap().statistic;
        let b = batches.status(now).errors.unwrap().statistic;
        let floor = singles.budget().bounds.floor;
        prop_assume!(a > floor + 1e-9);
        prop_assert!((a - b).abs() < 0.1 * a.abs().max(1.0), "singles {a} vs batches {b}");
    }
}
