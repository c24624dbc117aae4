//! The driver over a paused clock: steps advance on hold time and stop at a breach.

use std::path::Path;

use super::*;
use crate::config::parse_str;

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
    tokio::spawn(drive(Arc::clone(&snapshots), trips, std::future::pending()));

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
