//! The recent history of every route, for a dashboard opened after the fact
//! (`GET /api/v1/history`).
//!
//! A task samples each route's status every `INTERVAL` (5 s) and keeps the last
//! `CAPACITY` points (180: 15 minutes) per route in a ring. History follows the route's
//! name: a reload that keeps the name keeps its history (even for a new canary, whose
//! points then continue the same line), and a route the config no longer has loses
//! its history at the next sample. Memory is bounded: `CAPACITY` points per route,
//! under 200 bytes each. The history lives in memory only; a restart starts it empty
//! (the events, which the dashboard draws as markers, survive with `[state] dir`).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::time::{Instant, MissedTickBehavior};

use crate::rollout::{RouteStatus, SideStatus};
use crate::snapshot::Snapshot;

/// How often each route is sampled.
pub const INTERVAL: Duration = Duration::from_secs(5);

/// Points kept per route: 15 minutes at `INTERVAL`.
pub const CAPACITY: usize = 180;

/// The recent history of every route: one ring of points per route name.
#[derive(Debug)]
pub struct History {
    interval: Duration,
    capacity: usize,
    routes: Mutex<BTreeMap<String, VecDeque<Point>>>,
}

/// One sample of a route, as `/api/v1/history` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Point {
    /// When it was taken: Unix seconds (millisecond precision).
    pub t: f64,
    /// The route's state then (`steady`, `rolling_out`, `paused`, `rolled_back`,
    /// `promoted`).
    pub state: &'static str,
    /// Percent; 0 when rolled back.
    pub effective_weight: f64,
    /// Percent.
    pub configured_weight: f64,
    /// The budget's window as of `t` (its last `window` seconds, not the interval
    /// since the previous point): requests, errors, error rate, approximate p99.
    pub stable: SideStatus,
    /// The canary side, as `stable`.
    pub canary: SideStatus,
}

/// The body of `GET /api/v1/history`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HistoryView {
    /// Seconds between two points of a route.
    pub interval_seconds: f64,
    /// Points kept per route (the oldest is dropped first).
    pub capacity: usize,
    /// The proxy's clock when this was served (Unix seconds): lets a browser place
    /// its own polls on the same time axis.
    pub now: f64,
    /// Route name → its points, oldest first.
    pub routes: BTreeMap<String, Vec<Point>>,
}

// === impl Point ===

impl Point {
    /// The point of a route's `status` taken at `t` (Unix seconds).
    pub fn of(status: RouteStatus, t: f64) -> Point {
        Point {
            t,
            state: status.state,
            effective_weight: status.effective_weight,
            configured_weight: status.configured_weight,
            stable: status.window.stable,
            canary: status.window.canary,
        }
    }
}

// === impl History ===

impl History {
    /// An empty history sampled every `interval` (`INTERVAL` in production; tests pass
    /// a shorter one), keeping `CAPACITY` points per route.
    pub fn new(interval: Duration) -> History {
        History::with_capacity(interval, CAPACITY)
    }

    /// `new` keeping `capacity` points per route (at least 1).
    pub fn with_capacity(interval: Duration, capacity: usize) -> History {
        History {
            interval,
            capacity: capacity.max(1),
            routes: Mutex::new(BTreeMap::new()),
        }
    }

    /// How often the routes are sampled.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Adds one point per route of `snapshot`, taken at `now` (Unix seconds `t`), and
    /// drops the history of routes it no longer has.
    pub fn sample(&self, snapshot: &Snapshot, now: Instant, t: f64) {
        // Statuses first: each takes its route's machine lock, never under ours.
        let points = snapshot
            .routes
            .iter()
            .map(|route| {
                let status = route.runtime.status(now);
                (status.name.clone(), Point::of(status, t))
            })
            .collect();
        self.record(points);
    }

    /// Appends one point per route named, drops the routes not named.
    pub fn record(&self, points: Vec<(String, Point)>) {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let named: HashSet<&str> = points.iter().map(|(name, _)| name.as_str()).collect();
        routes.retain(|name, _| named.contains(name.as_str()));
        for (name, point) in points {
            let ring = routes
                .entry(name)
                .or_insert_with(|| VecDeque::with_capacity(self.capacity));
            while ring.len() >= self.capacity {
                ring.pop_front();
            }
            ring.push_back(point);
        }
    }

    /// Everything kept, for `/api/v1/history`.
    pub fn view(&self) -> HistoryView {
        let routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        HistoryView {
            interval_seconds: self.interval.as_secs_f64(),
            capacity: self.capacity,
            now: unix_now(),
            routes: routes
                .iter()
                .map(|(name, ring)| (name.clone(), ring.iter().cloned().collect()))
                .collect(),
        }
    }

    /// Samples every route of the current snapshot every `interval` (the first at
    /// once) until `shutdown`.
    pub async fn run(
        self: Arc<Self>,
        snapshots: Arc<ArcSwap<Snapshot>>,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut interval = tokio::time::interval(self.interval);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => {
                    let snapshot = snapshots.load();
                    self.sample(&snapshot, Instant::now(), unix_now());
                }
                () = &mut shutdown => return,
            }
        }
    }
}

/// The wall clock as Unix seconds, to the millisecond.
fn unix_now() -> f64 {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    (seconds * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(t: f64, state: &'static str, weight: f64) -> Point {
        let side = SideStatus {
            requests: 10,
            errors: 1,
            error_rate: 0.1,
            p99_seconds: Some(0.005),
        };
        Point {
            t,
            state,
            effective_weight: weight,
            configured_weight: 50.0,
            stable: side.clone(),
            canary: side,
        }
    }

    #[test]
    fn keeps_the_last_capacity_points_oldest_first() {
        let history = History::with_capacity(INTERVAL, 3);
        for i in 0..5 {
            let i = f64::from(i);
            history.record(vec![("shop".into(), point(i, "steady", i))]);
        }
        let view = history.view();
        let shop = &view.routes["shop"];
        assert_eq!(
            shop.iter().map(|p| p.t).collect::<Vec<_>>(),
            [2.0, 3.0, 4.0]
        );
        assert_eq!(shop[2].effective_weight, 4.0);
        assert_eq!(view.capacity, 3);
        assert_eq!(view.interval_seconds, 5.0);
    }

    #[test]
    fn follows_names_and_drops_removed_routes() {
        let history = History::new(INTERVAL);
        history.record(vec![
            ("a".into(), point(1.0, "steady", 5.0)),
            ("b".into(), point(1.0, "steady", 5.0)),
        ]);
        history.record(vec![
            ("a".into(), point(2.0, "rolled_back", 0.0)),
            ("c".into(), point(2.0, "steady", 5.0)),
        ]);
        let view = history.view();
        assert_eq!(view.routes.keys().collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(view.routes["a"].len(), 2);
        assert_eq!(view.routes["a"][1].state, "rolled_back");
        assert_eq!(view.routes["c"].len(), 1);
    }
}
