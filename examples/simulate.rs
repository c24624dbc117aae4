//! The budget's acceptance figure: a seeded, deterministic simulation that drives the
//! proxy's own decision code (`RouteRuntime::record`, the same call the data path
//! makes) with synthetic outcomes, for both the threshold rule and the sequential
//! test, at 1, 10 and 100 canary requests/s (stable gets 9× the canary's traffic: a
//! 10 % canary).
//!
//! `cargo run --release --example simulate [-- --quick]`
//!
//! Prints two markdown tables:
//! - false rollbacks per simulated hour on equal versions (1 % vs 1 %, 0 % vs 0 %),
//!   over one continuous run per cell (a false rollback is counted, resumed, and the
//!   run goes on);
//! - canary requests and seconds until rollback for 5 % vs 1 %, 2 % vs 1 % and
//!   100 % vs 0 % (median and 90th percentile over independent trials, each with a
//!   freshly armed canary; "n/a" when fewer than half the trials rolled back).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use canary_proxy::config::parse_str;
use canary_proxy::events::Events;
use canary_proxy::rollout::machine::Command;
use canary_proxy::rollout::{Outcome, RouteRuntime, Shared};
use canary_proxy::routing::Side;
use canary_proxy::snapshot::Snapshot;
use canary_proxy::telemetry::{Class, ErrorKind, Telemetry};

/// splitmix64: small, seedable, good enough for Bernoulli draws.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Threshold,
    Sequential,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Threshold => "threshold",
            Mode::Sequential => "sequential",
        }
    }
}

/// A freshly armed route with the default budget of `mode` (window 30 s, min 50;
/// threshold: max 5 %; sequential: tolerance 2, margin 1 %, α 0.001, β 0.05).
fn route(mode: Mode) -> (Arc<RouteRuntime>, Arc<Shared>, Snapshot) {
    let toml = format!(
        "[[route]]\nname = \"sim\"\nstable = {{ endpoints = [\"127.0.0.1:1\"] }}\ncanary = {{ endpoints = [\"127.0.0.1:2\"] }}\ncanary_weight = 10\n[route.budget]\nmode = \"{}\"\n",
        mode.name()
    );
    let config = parse_str(&toml, Path::new("sim.toml")).expect("valid simulation config");
    let (shared, trips) = Shared::new(Arc::new(Events::new(None)), Telemetry::new());
    // The driver is not needed: the latch flips inside `record`.
    drop(trips);
    let snapshot = Snapshot::build(config, 1, None, &shared, Instant::now());
    let runtime = Arc::clone(&snapshot.routes[0].runtime);
    (runtime, shared, snapshot)
}

fn outcome(error: bool) -> Outcome {
    Outcome {
        class: if error {
            Class::ServerError
        } else {
            Class::Success
        },
        error: error.then_some(ErrorKind::Status),
        latency: Duration::from_millis(5),
    }
}

/// Drives one armed canary; calls `on_rollback(canary_requests, seconds)` at each
/// rollback (then resumes) until `seconds` of simulated time or `on_rollback` says stop.
fn drive(
    mode: Mode,
    canary_rps: f64,
    p_stable: f64,
    p_canary: f64,
    seconds: f64,
    seed: u64,
    mut on_rollback: impl FnMut(u64, f64) -> bool,
) {
    let (runtime, shared, _snapshot) = route(mode);
    let mut rng = Rng(seed);
    let base = Instant::now();
    let step = 1.0 / (canary_rps * 10.0);
    let events = (seconds / step) as u64;
    let (mut canary, mut since) = (0u64, 0.0);
    for k in 0..events {
        let t = k as f64 * step;
        let now = base + Duration::from_secs_f64(t);
        let (side, p) = if k % 10 == 9 {
            canary += 1;
            (Side::Canary, p_canary)
        } else {
            (Side::Stable, p_stable)
        };
        runtime.record(side, outcome(rng.next_f64() < p), now);
        if runtime.is_rolled_back() {
            if !on_rollback(canary, t - since) {
                return;
            }
            let _ = runtime.command(Command::Resume, now);
            canary = 0;
            since = t;
        }
        if k % 1_000_000 == 0 {
            // The exporter buffers histogram samples until upkeep (every 5 s in the proxy).
            shared.telemetry.upkeep();
        }
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rates = [1.0, 10.0, 100.0];
    // Simulated hours per cell: more at low traffic, where each hour is cheap.
    let hours = |rps: f64| -> f64 {
        let h = match rps as u64 {
            1 => 2000.0,
            10 => 500.0,
            _ => 200.0,
        };
        if quick {
            h / 20.0
        } else {
            h
        }
    };
    let trials = if quick { 20 } else { 100 };

    println!("### False rollbacks on equal versions (per simulated hour)\n");
    println!("| canary req/s | errors (both sides) | hours | threshold | sequential |");
    println!("|---|---|---|---|---|");
    for rps in rates {
        for p in [0.01, 0.0] {
            let h = hours(rps);
            let mut cells = Vec::new();
            for mode in [Mode::Threshold, Mode::Sequential] {
                let mut count = 0u64;
                drive(mode, rps, p, p, h * 3600.0, 7 + rps as u64, |_, _| {
                    count += 1;
                    true
                });
                cells.push(format!("{:.4} ({count})", count as f64 / h));
            }
            println!(
                "| {rps} | {:.0} % | {h} | {} | {} |",
                p * 100.0,
                cells[0],
                cells[1]
            );
        }
    }

    println!(
        "\n### Until rollback: canary requests / seconds (median, p90 over {trials} trials)\n"
    );
    println!("| canary req/s | canary vs stable | threshold | sequential |");
    println!("|---|---|---|---|");
    for rps in rates {
        for (pc, ps) in [(0.05, 0.01), (0.02, 0.01), (1.0, 0.0)] {
            let mut cells = Vec::new();
            for mode in [Mode::Threshold, Mode::Sequential] {
                let (mut requests, mut secs) = (Vec::new(), Vec::new());
                for trial in 0..trials {
                    drive(mode, rps, ps, pc, 3600.0, 1000 + trial, |n, t| {
                        requests.push(n as f64);
                        secs.push(t);
                        false
                    });
                }
                if requests.len() * 2 < trials as usize {
                    cells.push(format!("n/a ({}/{trials} within 1 h)", requests.len()));
                    continue;
                }
                requests.sort_by(f64::total_cmp);
                secs.sort_by(f64::total_cmp);
                cells.push(format!(
                    "{:.0} / {:.0} s (p90 {:.0} / {:.0} s; {}/{trials})",
                    percentile(&requests, 0.5),
                    percentile(&secs, 0.5),
                    percentile(&requests, 0.9),
                    percentile(&secs, 0.9),
                    requests.len()
                ));
            }
            println!(
                "| {rps} | {:.0} % vs {:.0} % | {} | {} |",
                pc * 100.0,
                ps * 100.0,
                cells[0],
                cells[1]
            );
        }
    }
}
