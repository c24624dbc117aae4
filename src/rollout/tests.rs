//! The driver over a paused clock: steps advance on hold time and stop at a breach; a
//! tripped breach is reported only once it is on disk.

use std::path::Path;

use super::*;
use crate::config::parse_str;
use crate::snapshot::Snapshot;
use arc_swap::ArcSwap;

fn snapshot(shared: &Arc<Shared>) -> Snapshot {
    let toml = r#"
[[route]]
name = "r"
stable = { endpoints = ["127.0.0.1:1"] }
canary = { endpoints = ["127.0.0.1:2"], version = "v1" }
canary_weight = 0
[route.budget]
mode = "threshold"
window = "30s"
min_requests = 5
max_error_rate = 0.1
[route.rollout]
steps = [10, 50, 100]
step_interval = "60s"
"#;
    let config = parse_str(toml, Path::new("t.toml")).unwrap();
    Snapshot::build(config, 1, None, shared, Instant::now())
}

fn outcome(error: bool) -> Outcome {
    Outcome {
        class: if error {
            Class::ServerError
        } else {
            Class::Success
        },
        error: error.then_some(ErrorKind::Status),
        latency: Duration::from_millis(2),
    }
}

#[tokio::test(start_paused = true)]
async fn steps_advance_on_a_paused_clock_and_stop_at_a_breach() {
    let (shared, trips) = Shared::new(Arc::new(Events::new(None)), Telemetry::new());
    let snapshots = Arc::new(ArcSwap::from_pointee(snapshot(&shared)));
    let runtime = Arc::clone(&snapshots.load().routes[0].runtime);
    tokio::spawn(drive(
        crate::app::runtimes_of(Arc::clone(&snapshots)),
        trips,
        std::future::pending(),
    ));

    let weight = |r: &RouteRuntime| r.effective().percent();
    assert_eq!(weight(&runtime), 0.0);
    assert_eq!(runtime.status(Instant::now()).state, "rolling_out");
    tokio::time::sleep(Duration::from_secs(59)).await;
    assert_eq!(weight(&runtime), 0.0, "held for less than step_interval");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(weight(&runtime), 10.0);
    // Healthy traffic does not stop the walk.
    for _ in 0..20 {
        runtime.record(Side::Canary, outcome(false), Instant::now());
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(weight(&runtime), 50.0);

    // A breach (3 errors in 23 requests > 10 %): the recording call itself flips the
    // weight, before the driver runs.
    for _ in 0..20 {
        runtime.record(Side::Canary, outcome(false), Instant::now());
    }
    for _ in 0..2 {
        runtime.record(Side::Canary, outcome(true), Instant::now());
    }
    assert_eq!(
        weight(&runtime),
        50.0,
        "2 errors in 22 requests is within 10 %"
    );
    for _ in 0..1 {
        runtime.record(Side::Canary, outcome(true), Instant::now());
    }
    assert_eq!(weight(&runtime), 0.0);
    assert!(runtime.is_rolled_back());
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(weight(&runtime), 0.0, "no step after a rollback");
    let status = runtime.status(Instant::now());
    assert_eq!(status.state, "rolled_back");

    let kinds: Vec<_> = shared.events.list().iter().map(|e| e.kind).collect();
    assert_eq!(kinds, ["step", "step", "rollback"]);

    // Resume restarts the walk from the configured weight.
    runtime.command(Command::Resume, Instant::now()).unwrap();
    assert_eq!(weight(&runtime), 0.0);
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert_eq!(weight(&runtime), 10.0);
}

#[tokio::test(start_paused = true)]
async fn the_window_forgets_old_errors() {
    let (shared, _trips) = Shared::new(Arc::new(Events::new(None)), Telemetry::new());
    let snapshot = snapshot(&shared);
    let runtime = &snapshot.routes[0].runtime;
    // 4 errors (below min_requests), then 30 s later the window has moved on.
    for _ in 0..4 {
        runtime.record(Side::Canary, outcome(true), Instant::now());
    }
    tokio::time::advance(Duration::from_secs(31)).await;
    for _ in 0..10 {
        runtime.record(Side::Canary, outcome(false), Instant::now());
    }
    assert!(!runtime.is_rolled_back());
    let status = runtime.status(Instant::now());
    assert_eq!(
        (status.window.canary.requests, status.window.canary.errors),
        (10, 0)
    );
}

/// A fixed-weight route at 50 % whose decisions persist to `state`.
fn persisted(shared: &Arc<Shared>, state: &Path) -> Snapshot {
    let toml = format!(
        r#"
[state]
dir = "{}"
[[route]]
name = "r"
stable = {{ endpoints = ["127.0.0.1:1"] }}
canary = {{ endpoints = ["127.0.0.1:2"], version = "v1" }}
canary_weight = 50
[route.budget]
mode = "threshold"
min_requests = 5
max_error_rate = 0.1
"#,
        state.display()
    );
    let config = parse_str(&toml, Path::new("t.toml")).unwrap();
    Snapshot::build(config, 1, None, shared, Instant::now())
}

/// Between the trip on the request path and the driver's fsync, routing already sends
/// every request to stable, but nothing reports the decision: the API shows the state
/// before it with that state's weight (never `steady` at 0 %), the gauges and counters
/// are unchanged and there is no event. Whatever reports it, at any moment, implies the
/// state file is on disk.
#[tokio::test]
async fn a_tripped_breach_is_reported_only_once_it_is_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let file = store::path(&state, "r");
    let (shared, mut trips) = Shared::new(Arc::new(Events::new(None)), Telemetry::new());
    let snapshot = persisted(&shared, &state);
    let runtime = Arc::clone(&snapshot.routes[0].runtime);
    let ratio = "canary_proxy_canary_weight_ratio{route=\"r\"} ";
    let rollbacks = "canary_proxy_rollbacks_total{route=\"r\",reason=\"error_rate\"} 1";

    for _ in 0..5 {
        runtime.record(Side::Canary, outcome(true), Instant::now());
    }
    assert!(
        runtime.is_rolled_back(),
        "the breaching request flips routing"
    );
    assert_eq!(runtime.effective(), Weight::ZERO);
    let status = runtime.status(Instant::now());
    assert_eq!((status.state, status.effective_weight), ("steady", 50.0));
    let metrics = shared.telemetry.render();
    assert!(metrics.contains(&format!("{ratio}0.5")), "{metrics}");
    assert!(!metrics.contains(rollbacks), "{metrics}");
    assert!(shared.events.list().is_empty());
    assert!(!file.exists());

    // The driver settles while another thread reads what an operator could see.
    let trip = trips.try_recv().expect("the trip reaches the driver");
    let settled = std::sync::atomic::AtomicBool::new(false);
    let polls = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            let mut polls = 0;
            loop {
                let done = settled.load(Ordering::Acquire);
                let status = runtime.status(Instant::now());
                let metrics = shared.telemetry.render();
                let events = shared.events.list();
                // Read after the reports: a report seen implies the file was there.
                let on_disk = file.exists();
                match status.state {
                    "steady" => assert_eq!(status.effective_weight, 50.0, "half-applied"),
                    "rolled_back" => {
                        assert_eq!(status.effective_weight, 0.0);
                        assert!(on_disk, "the API showed a rollback not yet on disk");
                    }
                    other => panic!("unexpected state {other}"),
                }
                if metrics.contains(&format!("{ratio}0\n")) || metrics.contains(rollbacks) {
                    assert!(on_disk, "the metrics showed a rollback not yet on disk");
                }
                if !events.is_empty() {
                    assert!(on_disk, "an event reported a rollback not yet on disk");
                }
                polls += 1;
                if done {
                    return polls;
                }
            }
        });
        trip.settle();
        settled.store(true, Ordering::Release);
        watcher.join().unwrap()
    });
    assert!(polls >= 1);

    let saved = store::load(&state, "r").unwrap().expect("the state file");
    assert_eq!(saved.state, "rolled_back");
    let status = runtime.status(Instant::now());
    assert_eq!(
        (status.state, status.effective_weight),
        ("rolled_back", 0.0)
    );
    let metrics = shared.telemetry.render();
    assert!(metrics.contains(&format!("{ratio}0\n")), "{metrics}");
    assert!(metrics.contains(rollbacks), "{metrics}");
    let kinds: Vec<_> = shared.events.list().iter().map(|e| e.kind).collect();
    assert_eq!(kinds, ["rollback"]);

    // Resume: on disk first, then the latch opens.
    let status = runtime.command(Command::Resume, Instant::now()).unwrap();
    assert_eq!((status.state, status.effective_weight), ("steady", 50.0));
    assert!(!runtime.is_rolled_back());
    assert_eq!(store::load(&state, "r").unwrap().unwrap().state, "steady");
}

/// A trip still in flight to the driver keeps routing on stable through whatever the
/// driver or an operator does first (here a pause, which syncs the atomics).
#[tokio::test]
async fn a_pending_trip_survives_an_earlier_decision() {
    let dir = tempfile::tempdir().unwrap();
    let (shared, mut trips) = Shared::new(Arc::new(Events::new(None)), Telemetry::new());
    let snapshot = persisted(&shared, dir.path());
    let runtime = Arc::clone(&snapshot.routes[0].runtime);
    for _ in 0..5 {
        runtime.record(Side::Canary, outcome(true), Instant::now());
    }
    let status = runtime.command(Command::Pause, Instant::now()).unwrap();
    assert_eq!((status.state, status.effective_weight), ("paused", 50.0));
    assert!(
        runtime.is_rolled_back(),
        "the pause must not reopen the latch"
    );
    trips.try_recv().unwrap().settle();
    let status = runtime.status(Instant::now());
    assert_eq!(
        (status.state, status.effective_weight),
        ("rolled_back", 0.0)
    );
}

/// Issue 13's bug: the verdict and the rollback follow one rule with one gate. Before
/// `min_requests` canary requests the sequential test may already lean "failing", but
/// no rollback happens, so the API and the rollout must not say "failing" either; at
/// `min_requests` both turn at once.
#[tokio::test]
async fn the_verdict_and_the_rollback_share_the_min_requests_gate() {
    let (shared, _trips) = Shared::new(Arc::new(Events::new(None)), Telemetry::new());
    let toml = r#"
[[route]]
name = "r"
stable = { endpoints = ["127.0.0.1:1"] }
canary = { endpoints = ["127.0.0.1:2"] }
canary_weight = 50
[route.budget]
mode = "sequential"
min_requests = 20
"#;
    let config = parse_str(toml, Path::new("t.toml")).unwrap();
    let snapshot = Snapshot::build(config, 1, None, &shared, Instant::now());
    let runtime = &snapshot.routes[0].runtime;
    for n in 1..=19 {
        runtime.record(Side::Canary, outcome(true), Instant::now());
        assert!(!runtime.is_rolled_back(), "rolled back at {n}");
        let status = runtime.status(Instant::now());
        assert_eq!(status.verdict.verdict, "undecided", "after {n}: {status:?}");
        let evidence = status.verdict.errors.as_ref().unwrap();
        if n == 19 {
            // The evidence alone would already say failing: the gate holds it.
            assert!(evidence.statistic >= evidence.upper, "{evidence:?}");
        }
    }
    runtime.record(Side::Canary, outcome(true), Instant::now());
    assert!(runtime.is_rolled_back(), "rolled back at min_requests");
    assert_eq!(runtime.verdict(Instant::now()), Verdict::Failing);
}
