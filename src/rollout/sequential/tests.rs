use super::*;

fn config() -> SequentialConfig {
    SequentialConfig::default()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn bounds_are_walds() {
    // α = 0.001, β = 0.05: A = ln(0.95 / 0.001), B = ln(0.05 / 0.999).
    let b = Bounds::new(&config());
    assert!(close(b.upper, (0.95f64 / 0.001).ln()));
    assert!(close(b.upper, 6.856_461_984_594_35));
    assert!(close(b.lower, (0.05f64 / 0.999).ln()));
    assert!(close(b.floor, -1.5 * b.upper));
    assert_eq!(b.verdict(b.upper), Verdict::Failing);
    assert_eq!(b.verdict(b.lower), Verdict::Healthy);
    assert_eq!(b.verdict(0.0), Verdict::Undecided);
}

#[test]
fn log_likelihood_ratio_by_hand() {
    // p0 = 1 %, p1 = 3 %: an error weighs ln 3, a success ln(0.97 / 0.99).
    assert!(close(llr(true, 0.01, 0.03), 3f64.ln()));
    assert!(close(llr(false, 0.01, 0.03), (0.97f64 / 0.99).ln()));
    assert!(close(llr(false, 0.01, 0.03), -0.020_408_871_631_207_123));
}

#[test]
fn hypotheses_follow_stable_with_a_floor() {
    let c = config(); // tolerance 2, margin 0.01
    let (p0, p1) = hypotheses(0.01, &c);
    assert!(close(p0, 0.01) && close(p1, 0.03));
    let (p0, p1) = hypotheses(0.0, &c);
    assert!(close(p0, FLOOR) && close(p1, 2.0 * FLOOR + 0.01));
    let (p0, p1) = hypotheses(0.9, &c);
    assert!(close(p0, 0.9) && close(p1, 0.99));
    assert!(p1 > p0);
}

#[test]
fn stable_rate_has_a_one_percent_prior_and_learns() {
    let t = Test::default();
    assert!(close(t.stable_rate(), 0.01));
    for i in 0..10_000 {
        t.stable(i % 20 == 0); // 5 %
    }
    let rate = t.stable_rate();
    assert!((rate - 0.05).abs() < 0.003, "{rate}");
}

#[test]
fn statistic_accumulates_then_decays_and_floors() {
    let c = config();
    let b = Bounds::new(&c);
    let t = Test::default();
    // Stable at its 1 % prior: p0 = 1 %, p1 = 3 %.
    let s1 = t.canary(true, &c, &b);
    assert!(close(s1, 3f64.ln()));
    let s2 = t.canary(false, &c, &b);
    assert!(close(s2, s1 * DECAY + (0.97f64 / 0.99).ln()));
    // Enough successes pin it to the floor, and it never goes below.
    for _ in 0..20_000 {
        t.canary(false, &c, &b);
    }
    assert!(close(t.statistic(), b.floor));
    t.reset();
    assert_eq!(t.statistic(), 0.0);
}

#[test]
fn all_errors_cross_the_upper_bound_in_a_few_requests() {
    let c = config();
    let b = Bounds::new(&c);
    let t = Test::default();
    let mut n = 0;
    while t.canary(true, &c, &b) < b.upper {
        n += 1;
    }
    // ln 3 per error at the 1 % prior: ceil(6.86 / 1.0986) = 7 errors.
    assert_eq!(n + 1, 7);
}

#[test]
fn decay_makes_old_evidence_fade() {
    let c = config();
    let b = Bounds::new(&c);
    let with_history = Test::default();
    for _ in 0..100_000 {
        with_history.canary(false, &c, &b);
    }
    // A burst of errors after a long healthy history is still seen: the credit is
    // capped at the floor, so the climb is bounded.
    let mut n = 0;
    while with_history.canary(true, &c, &b) < b.upper {
        n += 1;
    }
    assert!(n < 20, "{n}");
}
