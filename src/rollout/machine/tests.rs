use super::*;

fn w(p: f64) -> Weight {
    Weight::from_percent(p).unwrap()
}

fn budget() -> BudgetConfig {
    BudgetConfig {
        mode: crate::config::BudgetMode::Threshold,
        window: Duration::from_secs(30),
        min_requests: 50,
        max_error_rate: Some(0.05),
        max_error_rate_vs_stable: None,
        max_p99_latency: None,
        error_statuses: vec![crate::config::StatusMatch::Class(5)],
        sequential: crate::config::SequentialConfig::default(),
        latency_slo: None,
        enforce: true,
    }
}

fn stats(requests: u64, errors: u64) -> Stats {
    Stats {
        requests,
        errors,
        slow: 0,
    }
}

fn rollout() -> RolloutConfig {
    RolloutConfig {
        steps: vec![w(1.0), w(5.0), w(25.0), w(50.0), w(100.0)],
        step_interval: Duration::from_secs(120),
    }
}

const WIN: Duration = Duration::from_secs(30);

#[test]
fn no_verdict_below_min_requests() {
    let b = budget();
    assert_eq!(judge(&b, stats(0, 0), stats(49, 49), WIN), None);
    assert!(judge(&b, stats(0, 0), stats(50, 3), WIN).is_some());
}

#[test]
fn absolute_error_rate() {
    let b = budget();
    // 5 % is within budget, above is not.
    assert_eq!(judge(&b, stats(0, 0), stats(100, 5), WIN), None);
    let breach = judge(&b, stats(0, 0), stats(100, 6), WIN).unwrap();
    assert_eq!(breach.kind, BreachKind::ErrorRate);
    assert_eq!(breach.observed, 0.06);
    assert_eq!(breach.threshold, 0.05);
    assert_eq!(breach.canary, stats(100, 6));
}

#[test]
fn relative_to_stable_with_a_floor() {
    let b = BudgetConfig {
        max_error_rate: Some(0.5),
        max_error_rate_vs_stable: Some(3.0),
        ..budget()
    };
    // Both at 2 %: fine. Canary at 10 % vs stable 2 % (limit 6 %): breach.
    assert_eq!(judge(&b, stats(1000, 20), stats(100, 2), WIN), None);
    let breach = judge(&b, stats(1000, 20), stats(100, 10), WIN).unwrap();
    assert_eq!(breach.kind, BreachKind::ErrorRateVsStable);
    assert!((breach.threshold - 0.06).abs() < 1e-12);
    // Stable clean: the floor (1 %) makes the limit 3 %, not 0.
    assert_eq!(judge(&b, stats(1000, 0), stats(100, 3), WIN), None);
    assert!(judge(&b, stats(1000, 0), stats(100, 4), WIN).is_some());
}

#[test]
fn latency_share() {
    let b = BudgetConfig {
        max_p99_latency: Some(Duration::from_millis(500)),
        ..budget()
    };
    let at = |slow| Stats {
        requests: 100,
        errors: 0,
        slow,
    };
    assert_eq!(judge(&b, stats(0, 0), at(1), WIN), None);
    assert_eq!(
        judge(&b, stats(0, 0), at(2), WIN).unwrap().kind,
        BreachKind::P99Latency
    );
    // Without max_p99_latency slow requests are not judged.
    assert_eq!(judge(&budget(), stats(0, 0), at(50), WIN), None);
}

#[test]
fn steady_route_only_changes_on_breach_or_command() {
    let t0 = Instant::now();
    let mut m = Machine::new(w(10.0), None, t0);
    assert_eq!(m.phase(), Phase::Steady);
    assert_eq!(m.tick(t0 + Duration::from_secs(3600), true), None);
    let breach = judge(&budget(), stats(0, 0), stats(50, 50), WIN).unwrap();
    assert!(matches!(
        m.breach(breach.clone(), t0),
        Some(Decision::RolledBack { .. })
    ));
    assert_eq!((m.phase(), m.weight()), (Phase::RolledBack, Weight::ZERO));
    // Latched: a second breach is not a second decision.
    assert_eq!(m.breach(breach, t0), None);
    assert_eq!(m.tick(t0 + Duration::from_secs(3600), true), None);
    assert_eq!(
        m.command(Command::Resume, t0).unwrap(),
        Some(Decision::Resumed { to: w(10.0) })
    );
    assert_eq!((m.phase(), m.weight()), (Phase::Steady, w(10.0)));
}

#[test]
fn rollout_walks_steps_on_hold_time() {
    let t0 = Instant::now();
    let mut m = Machine::new(Weight::ZERO, Some(rollout()), t0);
    assert_eq!(m.phase(), Phase::RollingOut);
    let step = Duration::from_secs(120);
    assert_eq!(m.tick(t0 + step - Duration::from_millis(1), true), None);
    // Not within budget: hold.
    assert_eq!(m.tick(t0 + step, false), None);
    let mut now = t0 + step;
    let mut seen = Vec::new();
    while let Some(decision) = m.tick(now, true) {
        seen.push(decision);
        now += step;
    }
    assert_eq!(
        seen,
        vec![
            Decision::Stepped {
                from: w(0.0),
                to: w(1.0)
            },
            Decision::Stepped {
                from: w(1.0),
                to: w(5.0)
            },
            Decision::Stepped {
                from: w(5.0),
                to: w(25.0)
            },
            Decision::Stepped {
                from: w(25.0),
                to: w(50.0)
            },
            Decision::Promoted { from: w(50.0) },
        ]
    );
    assert_eq!((m.phase(), m.weight()), (Phase::Promoted, Weight::FULL));
}

#[test]
fn rollout_starts_from_the_configured_weight() {
    let t0 = Instant::now();
    let mut m = Machine::new(w(10.0), Some(rollout()), t0);
    assert_eq!(m.weight(), w(10.0));
    assert_eq!(
        m.tick(t0 + Duration::from_secs(120), true),
        Some(Decision::Stepped {
            from: w(10.0),
            to: w(25.0)
        })
    );
    // Configured at 100 with a rollout: nothing left to walk.
    assert_eq!(
        Machine::new(Weight::FULL, Some(rollout()), t0).phase(),
        Phase::Promoted
    );
}

#[test]
fn breach_during_rollout_rolls_back_and_resume_restarts() {
    let t0 = Instant::now();
    let mut m = Machine::new(Weight::ZERO, Some(rollout()), t0);
    m.tick(t0 + Duration::from_secs(120), true);
    m.tick(t0 + Duration::from_secs(240), true);
    assert_eq!(m.weight(), w(5.0));
    let breach = judge(&budget(), stats(0, 0), stats(60, 10), WIN).unwrap();
    assert!(m.breach(breach, t0 + Duration::from_secs(250)).is_some());
    assert_eq!(m.tick(t0 + Duration::from_secs(10_000), true), None);
    m.command(Command::Resume, t0 + Duration::from_secs(300))
        .unwrap();
    assert_eq!((m.phase(), m.weight()), (Phase::RollingOut, Weight::ZERO));
}

#[test]
fn pause_holds_and_resume_continues() {
    let t0 = Instant::now();
    let mut m = Machine::new(w(1.0), Some(rollout()), t0);
    assert_eq!(
        m.command(Command::Pause, t0).unwrap(),
        Some(Decision::Paused { at: w(1.0) })
    );
    assert_eq!(m.command(Command::Pause, t0).unwrap(), None);
    assert_eq!(m.tick(t0 + Duration::from_secs(1000), true), None);
    m.command(Command::Resume, t0 + Duration::from_secs(1000))
        .unwrap();
    assert_eq!(m.phase(), Phase::RollingOut);
    // The hold restarts at resume.
    assert_eq!(m.tick(t0 + Duration::from_secs(1100), true), None);
    assert!(m.tick(t0 + Duration::from_secs(1120), true).is_some());
}

#[test]
fn commands_and_conflicts() {
    let t0 = Instant::now();
    let mut m = Machine::new(w(10.0), None, t0);
    assert_eq!(m.command(Command::Resume, t0).unwrap(), None);
    assert_eq!(
        m.command(Command::Rollback, t0).unwrap(),
        Some(Decision::RolledBack { breach: None })
    );
    assert_eq!(m.command(Command::Rollback, t0).unwrap(), None);
    let conflict = m.command(Command::Pause, t0).unwrap_err();
    assert_eq!(
        conflict.to_string(),
        "cannot pause a route that is rolled_back"
    );
    assert_eq!(
        m.command(Command::Promote, t0).unwrap(),
        Some(Decision::Promoted { from: Weight::ZERO })
    );
    assert_eq!((m.phase(), m.weight()), (Phase::Promoted, Weight::FULL));
    assert_eq!(m.command(Command::Promote, t0).unwrap(), None);
}

#[test]
fn reconfigure_keeps_latched_states() {
    let t0 = Instant::now();
    let mut m = Machine::new(w(10.0), None, t0);
    m.command(Command::Rollback, t0).unwrap();
    m.reconfigure(w(50.0), None, t0);
    assert_eq!((m.phase(), m.weight()), (Phase::RolledBack, Weight::ZERO));
    m.command(Command::Resume, t0).unwrap();
    assert_eq!(m.weight(), w(50.0));
    m.reconfigure(w(20.0), None, t0);
    assert_eq!((m.phase(), m.weight()), (Phase::Steady, w(20.0)));
}

#[test]
fn phase_names_round_trip() {
    for phase in Phase::ALL {
        assert_eq!(Phase::parse(phase.as_str()), Some(phase));
    }
    assert_eq!(Phase::parse("nope"), None);
}

#[test]
fn without_window_criteria_the_window_never_breaches() {
    // The request path skips the window entirely in this case; `judge` agrees.
    let b = BudgetConfig {
        max_error_rate: None,
        ..budget()
    };
    assert!(!b.has_window_criteria());
    assert_eq!(judge(&b, stats(0, 0), stats(1000, 1000), WIN), None);
    assert!(budget().has_window_criteria());
}
