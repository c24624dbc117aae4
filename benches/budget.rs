//! The budget's per-request pieces: window record, verdict, and a full
//! `RouteRuntime::record` (metrics handles + window + verdict).

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use tokio::time::Instant;

use canary_proxy::config::parse_str;
use canary_proxy::events::Events;
use canary_proxy::rollout::machine::judge;
use canary_proxy::rollout::window::{Sample, Window};
use canary_proxy::rollout::{Outcome, Shared};
use canary_proxy::routing::Side;
use canary_proxy::snapshot::Snapshot;
use canary_proxy::telemetry::{Class, Telemetry};

/// Default mode (sequential) with the latency test and two window hard stops.
const CONFIG: &str = r#"
[[route]]
name = "bench"
stable = { endpoints = ["127.0.0.1:9001"] }
canary = { endpoints = ["127.0.0.1:9002"] }
canary_weight = 10
[route.budget]
max_error_rate = 0.5
max_error_rate_vs_stable = 3.0
max_p99_latency = "500ms"
latency_slo = "200ms"
"#;

/// The window rule alone.
const THRESHOLD: &str = r#"
[[route]]
name = "bench"
stable = { endpoints = ["127.0.0.1:9001"] }
canary = { endpoints = ["127.0.0.1:9002"] }
canary_weight = 10
[route.budget]
mode = "threshold"
max_error_rate = 0.5
"#;

fn budget(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let now = Instant::now();
    let sample = Sample {
        error: false,
        slow: false,
        latency: Duration::from_micros(800),
    };

    let window = Window::new(Duration::from_secs(30), now);
    c.bench_function("window/record", |b| {
        b.iter(|| window.record(black_box(Side::Canary), black_box(sample), now))
    });
    c.bench_function("window/stats_both_sides", |b| {
        b.iter(|| {
            (
                window.stats(Side::Stable, black_box(now)),
                window.stats(Side::Canary, black_box(now)),
            )
        })
    });

    let config = parse_str(CONFIG, Path::new("bench.toml")).unwrap();
    let budget = config.routes[0].budget.clone();
    let stable = window.stats(Side::Stable, now);
    let canary = window.stats(Side::Canary, now);
    c.bench_function("judge", |b| {
        b.iter(|| {
            judge(
                black_box(&budget),
                black_box(stable),
                black_box(canary),
                Duration::from_secs(30),
            )
        })
    });

    let (shared, _trips) = Shared::new(Arc::new(Events::new(None)), Telemetry::new());
    let snapshot = Snapshot::build(config, 1, None, &shared, now);
    let route = &snapshot.routes[0].runtime;
    let ok = Outcome {
        class: Class::Success,
        error: None,
        latency: Duration::from_micros(800),
    };
    c.bench_function("runtime/record_stable", |b| {
        b.iter(|| route.record(black_box(Side::Stable), black_box(ok), now))
    });
    c.bench_function("runtime/record_canary_sequential", |b| {
        b.iter(|| route.record(black_box(Side::Canary), black_box(ok), now))
    });

    let config = parse_str(THRESHOLD, Path::new("bench.toml")).unwrap();
    let (shared, _trips) = Shared::new(Arc::new(Events::new(None)), Telemetry::new());
    let snapshot = Snapshot::build(config, 1, None, &shared, now);
    let threshold = &snapshot.routes[0].runtime;
    c.bench_function("runtime/record_canary_threshold", |b| {
        b.iter(|| threshold.record(black_box(Side::Canary), black_box(ok), now))
    });

    let test = canary_proxy::rollout::sequential::Test::default();
    let seq = canary_proxy::config::SequentialConfig::default();
    let bounds = canary_proxy::rollout::sequential::Bounds::new(&seq);
    c.bench_function("sequential/canary_update", |b| {
        b.iter(|| test.canary(black_box(false), &seq, &bounds))
    });
    c.bench_function("sequential/stable_update", |b| {
        b.iter(|| test.stable(black_box(false)))
    });
}

criterion_group!(benches, budget);
criterion_main!(benches);
