use proptest::prelude::*;

use super::*;

const WINDOW: Duration = Duration::from_secs(30);
const SLICE: Duration = Duration::from_secs(1);

fn ok() -> Sample {
    Sample {
        error: false,
        slow: false,
        latency: Duration::from_millis(3),
    }
}

fn err() -> Sample {
    Sample {
        error: true,
        ..ok()
    }
}

#[test]
fn counts_per_side() {
    let t0 = Instant::now();
    let w = Window::new(WINDOW, t0);
    for _ in 0..7 {
        w.record(Side::Canary, ok(), t0);
    }
    w.record(Side::Canary, err(), t0);
    w.record(Side::Stable, err(), t0);
    assert_eq!(
        w.stats(Side::Canary, t0),
        Stats {
            requests: 8,
            errors: 1,
            slow: 0
        }
    );
    assert_eq!(w.stats(Side::Stable, t0).requests, 1);
    assert_eq!(w.stats(Side::Canary, t0).error_rate(), 0.125);
}

#[test]
fn old_slices_fall_out_of_the_window() {
    let t0 = Instant::now();
    let w = Window::new(WINDOW, t0);
    w.record(Side::Canary, err(), t0);
    w.record(Side::Canary, ok(), t0 + Duration::from_secs(10));
    // Slice 0 is still inside at t = 29.9 s, gone at t = 30 s.
    assert_eq!(
        w.stats(Side::Canary, t0 + Duration::from_millis(29_900))
            .requests,
        2
    );
    let later = w.stats(Side::Canary, t0 + WINDOW);
    assert_eq!((later.requests, later.errors), (1, 0));
    assert_eq!(
        w.stats(Side::Canary, t0 + Duration::from_secs(40)).requests,
        0
    );
}

#[test]
fn recycled_slices_start_from_zero() {
    let t0 = Instant::now();
    let w = Window::new(WINDOW, t0);
    for _ in 0..5 {
        w.record(Side::Canary, err(), t0);
    }
    // Same ring position, 30 slices later.
    let t1 = t0 + WINDOW;
    w.record(Side::Canary, ok(), t1);
    assert_eq!(
        w.stats(Side::Canary, t1),
        Stats {
            requests: 1,
            errors: 0,
            slow: 0
        }
    );
}

#[test]
fn clear_forgets_everything() {
    let t0 = Instant::now();
    let w = Window::new(WINDOW, t0);
    w.record(Side::Canary, err(), t0);
    w.record(Side::Stable, err(), t0);
    w.clear();
    assert_eq!(w.stats(Side::Canary, t0), Stats::default());
    assert_eq!(w.stats(Side::Stable, t0), Stats::default());
    w.record(Side::Canary, ok(), t0);
    assert_eq!(w.stats(Side::Canary, t0).requests, 1);
}

#[test]
fn tiny_windows_use_one_millisecond_slices() {
    let t0 = Instant::now();
    let w = Window::new(Duration::from_millis(5), t0);
    w.record(Side::Canary, err(), t0);
    assert_eq!(
        w.stats(Side::Canary, t0 + Duration::from_millis(29))
            .requests,
        1
    );
    assert_eq!(
        w.stats(Side::Canary, t0 + Duration::from_millis(30))
            .requests,
        0
    );
}

#[test]
fn p99_from_the_histogram() {
    let t0 = Instant::now();
    let w = Window::new(WINDOW, t0);
    assert_eq!(w.report(Side::Canary, t0).p99(), None);
    for _ in 0..99 {
        w.record(Side::Canary, ok(), t0); // 3 ms → the 5 ms bucket
    }
    assert_eq!(
        w.report(Side::Canary, t0).p99(),
        Some(Duration::from_millis(5))
    );
    for _ in 0..3 {
        w.record(
            Side::Canary,
            Sample {
                latency: Duration::from_millis(400),
                ..ok()
            },
            t0,
        );
    }
    assert_eq!(
        w.report(Side::Canary, t0).p99(),
        Some(Duration::from_millis(500))
    );
    w.record(
        Side::Stable,
        Sample {
            latency: Duration::from_secs(100),
            ..ok()
        },
        t0,
    );
    assert_eq!(
        w.report(Side::Stable, t0).p99(),
        Some(Duration::from_secs(30))
    );
}

proptest! {
    /// The window's counts equal a brute-force count over the events whose slice lies
    /// in the last `SLICES` slices, for any ascending sequence of events.
    #[test]
    fn window_matches_brute_force(
        gaps in proptest::collection::vec(0u64..3_000, 1..200),
        errors in proptest::collection::vec(any::<bool>(), 200),
        sides in proptest::collection::vec(any::<bool>(), 200),
        probe in 0u64..5_000,
    ) {
        let t0 = Instant::now();
        let w = Window::new(WINDOW, t0);
        let mut t = 0u64;
        let mut events = Vec::new();
        for (i, gap) in gaps.iter().enumerate() {
            t += gap;
            let side = if sides[i] { Side::Canary } else { Side::Stable };
            let sample = if errors[i] { err() } else { ok() };
            w.record(side, sample, t0 + Duration::from_millis(t));
            events.push((t, side, errors[i]));
        }
        let now_ms = t + probe;
        let current = now_ms / SLICE.as_millis() as u64;
        for side in [Side::Stable, Side::Canary] {
            let expected = events
                .iter()
                .filter(|(at, s, _)| *s == side && at / 1000 + SLICES as u64 > current)
                .fold(Stats::default(), |mut acc, (_, _, e)| {
                    acc.requests += 1;
                    acc.errors += u64::from(*e);
                    acc
                });
            prop_assert_eq!(w.stats(side, t0 + Duration::from_millis(now_ms)), expected);
        }
    }
}
