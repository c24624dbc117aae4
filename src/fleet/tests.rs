//! Keys, the view's totals and the operator's record transitions, without etcd.

use super::*;

fn keys(instance: &str, boot: &str) -> Keys {
    Keys::new("/canary-proxy/", "checkout", instance, boot)
}

fn put(view: &mut View, key: &str, value: &Published, revision: i64) {
    let bytes = serde_json::to_vec(value).unwrap();
    view.apply("/canary-proxy/checkout/", key, Some(&bytes), revision);
}

fn counts(requests: u64, errors: u64) -> Counts {
    Counts {
        requests,
        errors,
        ..Counts::default()
    }
}

#[test]
fn totals_sum_every_instance_and_boot_of_one_canary_and_epoch() {
    let mut view = View::default();
    let a = keys("a", "b1");
    let a_again = keys("a", "b2");
    let b = keys("b", "b1");
    let p = |s, c| Published {
        stable: counts(s, 0),
        canary: counts(c, c / 10),
    };
    put(&mut view, &a.counts("web", "c1", 0), &p(100, 10), 5);
    put(&mut view, &a_again.counts("web", "c1", 0), &p(50, 20), 6);
    put(&mut view, &b.counts("web", "c1", 0), &p(7, 30), 7);
    // Another epoch, canary, and route: not in the sum.
    put(&mut view, &b.counts("web", "c1", 1), &p(1000, 1000), 8);
    put(&mut view, &b.counts("web", "c2", 0), &p(1000, 1000), 9);
    put(&mut view, &b.counts("web2", "c1", 0), &p(1000, 1000), 10);
    let [stable, canary] = view.totals("web", "c1", 0);
    assert_eq!(stable.requests, 157);
    assert_eq!(canary, counts(60, 6));
    assert_eq!(view.revision, 10);
    // A boot's later counters replace its earlier ones: nothing counted twice.
    put(&mut view, &a.counts("web", "c1", 0), &p(110, 12), 11);
    assert_eq!(view.totals("web", "c1", 0)[0].requests, 167);
}

#[test]
fn members_judge_and_records_follow_puts_and_deletes() {
    let base = "/canary-proxy/checkout/";
    let mut view = View::default();
    let a = keys("a", "b1");
    view.apply(base, &a.member(), Some(b"{}"), 3);
    view.apply(base, &keys("b", "b9").member(), Some(b"{}"), 4);
    view.apply(base, &a.judge(), Some(a.me().as_bytes()), 5);
    assert_eq!(view.members.len(), 2);
    assert_eq!(view.judge.as_deref(), Some("a/b1"));
    view.apply(base, &a.member(), None, 6);
    view.apply(base, &a.judge(), None, 6);
    assert_eq!(view.members.len(), 1);
    assert_eq!(view.judge, None);
    let record = next_record(
        None,
        Command::Rollback,
        "ops",
        "a",
        "bad".into(),
        "t".into(),
    )
    .unwrap();
    let bytes = serde_json::to_vec(&record).unwrap();
    view.apply(base, &a.record("web/v2", "c1"), Some(&bytes), 7);
    assert_eq!(
        view.record("web/v2", "c1").map(|(r, rev)| (r.state, *rev)),
        Some((RecordState::RolledBack, 7))
    );
    // Malformed values and foreign keys change nothing.
    view.apply(base, &a.record("web/v2", "c1"), Some(b"not json"), 8);
    view.apply(base, "/elsewhere/x", Some(b"{}"), 9);
    assert_eq!(view.record("web/v2", "c1").map(|(r, _)| r.seq), Some(1));
}

#[test]
fn only_record_keys_are_records() {
    let a = keys("a", "b1");
    assert!(a.is_record(&a.record("web", "c1")));
    assert!(!a.is_record(&a.counts("web", "c1", 0)));
    assert!(!a.is_record(&a.judge()));
    assert!(!a.is_record("/elsewhere/record/web/c1"));
}

#[test]
fn route_names_become_one_key_segment() {
    assert_eq!(segment("web-v2.api_1"), "web-v2.api_1");
    assert_eq!(segment("a/b c"), "a%2Fb%20c");
    assert!(!keys("i", "b").counts("a/b", "c", 0).contains("a/b/"));
}

#[test]
fn resume_out_of_a_rollback_re_arms_at_a_new_epoch() {
    let rolled = next_record(
        None,
        Command::Rollback,
        "fleet:a",
        "a",
        "sequential_error_rate".into(),
        "t".into(),
    )
    .unwrap();
    assert_eq!(
        (rolled.seq, rolled.epoch, rolled.state),
        (1, 0, RecordState::RolledBack)
    );
    let resumed = next_record(
        Some(&rolled),
        Command::Resume,
        "ops",
        "b",
        "fixed".into(),
        "t".into(),
    )
    .unwrap();
    assert_eq!(
        (resumed.seq, resumed.epoch, resumed.state),
        (2, 1, RecordState::Armed)
    );
    assert_eq!(
        resumed.weight_basis_points, None,
        "the rollout starts again"
    );
    let paused = next_record(
        Some(&resumed),
        Command::Pause,
        "ops",
        "b",
        "look".into(),
        "t".into(),
    )
    .unwrap();
    assert_eq!((paused.seq, paused.epoch), (3, 1));
    let resumed = next_record(
        Some(&paused),
        Command::Resume,
        "ops",
        "b",
        "go".into(),
        "t".into(),
    )
    .unwrap();
    assert_eq!(
        (resumed.epoch, resumed.state),
        (1, RecordState::Armed),
        "resuming a pause keeps the evidence"
    );
    let stepped = Record {
        weight_basis_points: Some(5_000),
        ..resumed
    };
    let paused = next_record(
        Some(&stepped),
        Command::Pause,
        "ops",
        "b",
        "x".into(),
        "t".into(),
    )
    .unwrap();
    assert_eq!(
        paused.weight_basis_points,
        Some(5_000),
        "a pause keeps the step"
    );
}

#[test]
fn a_command_that_finds_the_fleet_there_already_is_a_conflict_naming_who() {
    let rolled = next_record(
        None,
        Command::Rollback,
        "fleet:a",
        "a",
        "x".into(),
        "12:00".into(),
    )
    .unwrap();
    let err = next_record(
        Some(&rolled),
        Command::Rollback,
        "ops",
        "b",
        "y".into(),
        "t".into(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, CommandError::Conflict(m) if m.contains("fleet:a") && m.contains("rolled_back")),
        "{err}"
    );
    let err = next_record(None, Command::Resume, "ops", "b", "y".into(), "t".into()).unwrap_err();
    assert!(matches!(err, CommandError::Conflict(_)));
    let err = next_record(
        Some(&rolled),
        Command::Pause,
        "ops",
        "b",
        "y".into(),
        "t".into(),
    )
    .unwrap_err();
    assert!(matches!(&err, CommandError::Conflict(m) if m.contains("resume it first")));
}
