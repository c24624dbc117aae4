//! `canary-proxy demo`: the whole product in one command. In-process stable and canary
//! backends, the proxy in front of them with a short rollout, a bounded load of
//! simulated users, and a live timeline; partway through, the canary starts failing
//! and the proxy rolls it back by itself.

use std::collections::HashSet;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::app::App;
use crate::config::parse_str;
use crate::events::{Event, Events};
use crate::rollout::{RouteRuntime, SideStatus};

/// The demo's knobs. `short` compresses every phase for tests.
#[derive(Debug, Clone, Copy)]
pub struct DemoOptions {
    pub short: bool,
    pub keep_running: bool,
}

/// What the demo observed; printed at the end and checked by tests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub requests: u64,
    pub stable_requests: u64,
    pub canary_requests: u64,
    pub users: usize,
    pub users_exposed: usize,
    pub rolled_back: bool,
    pub rollback_reason: Option<String>,
    /// Failing answers the canary gave (its own count).
    pub failed_canary_before_rollback: u64,
    /// Failing answers clients received: with the shield, stable answered the rest.
    pub users_saw_failure: u64,
    pub canary_requests_after_rollback: u64,
    pub time_to_rollback: Option<Duration>,
}

#[derive(Debug, Clone, Copy)]
struct Timing {
    step_interval: &'static str,
    /// The canary starts failing this long after it reaches 50 %…
    fail_after_half: Duration,
    /// …or at this point at the latest.
    fail_by: Duration,
    /// The demo ends this long after the failure starts.
    linger: Duration,
    tick: Duration,
    worker_pause: Duration,
}

impl Timing {
    fn new(short: bool) -> Timing {
        if short {
            Timing {
                step_interval: "600ms",
                fail_after_half: Duration::from_millis(200),
                fail_by: Duration::from_secs(5),
                linger: Duration::from_millis(900),
                tick: Duration::from_millis(300),
                worker_pause: Duration::from_millis(2),
            }
        } else {
            Timing {
                step_interval: "3s",
                fail_after_half: Duration::from_secs(1),
                fail_by: Duration::from_secs(20),
                linger: Duration::from_secs(3),
                tick: Duration::from_secs(1),
                worker_pause: Duration::from_millis(5),
            }
        }
    }
}

const USERS: u64 = 1000;
const WORKERS: u64 = 8;
const ROUTE: &str = "shop";

/// Shared counters between the load workers and the timeline.
#[derive(Debug, Default)]
struct Tally {
    stable: AtomicU64,
    canary: AtomicU64,
    /// Server errors clients received.
    users_failed: AtomicU64,
    canary_after_rollback: AtomicU64,
    exposed: Mutex<HashSet<u64>>,
}

/// The demo's proxy: serving on a task until `stop`.
struct DemoProxy {
    addr: SocketAddr,
    /// The admin listener (the proxy's own address if it had none).
    admin: SocketAddr,
    runtime: Arc<RouteRuntime>,
    events: Arc<Events>,
    /// The temporary directory with the token file, removed by `stop`.
    state: PathBuf,
    stop: oneshot::Sender<()>,
    server: JoinHandle<()>,
}

/// What the load workers, the failure, the rollback watch and the timeline share.
struct Story {
    timing: Timing,
    start: Instant,
    started_wall: SystemTime,
    proxy_addr: SocketAddr,
    runtime: Arc<RouteRuntime>,
    tally: Tally,
    /// Set when the canary starts failing (its backend reads it).
    failing: Arc<AtomicBool>,
    /// The canary backend's failing answers and requests served.
    canary_failures: Arc<AtomicU64>,
    canary_served: Arc<AtomicU64>,
    /// The canary's request count when it started failing: the rollback line reports
    /// what it did since then, not a window diluted by its healthy minutes.
    served_before_failing: AtomicU64,
    failing_since: Mutex<Option<Instant>>,
    rolled_back_at: Mutex<Option<Instant>>,
    /// The demo ends `linger` after the failure starts (set by `chaos`).
    end_at: Mutex<Instant>,
}

/// Runs the demo and prints it to stdout. Returns what it saw.
pub async fn run(options: DemoOptions) -> std::io::Result<Summary> {
    let timing = Timing::new(options.short);
    let failing = Arc::new(AtomicBool::new(false));
    let (stable, _, _) = backend("stable v1", None).await?;
    let (canary, canary_failures, canary_served) =
        backend("canary v2-demo", Some(Arc::clone(&failing))).await?;
    let proxy = DemoProxy::start(stable, canary, &timing).await?;
    print_header(&proxy, &timing);

    let start = Instant::now();
    let story = Arc::new(Story {
        timing,
        start,
        started_wall: SystemTime::now(),
        proxy_addr: proxy.addr,
        runtime: Arc::clone(&proxy.runtime),
        tally: Tally::default(),
        failing,
        canary_failures,
        canary_served,
        served_before_failing: AtomicU64::new(0),
        failing_since: Mutex::new(None),
        rolled_back_at: Mutex::new(None),
        end_at: Mutex::new(start + timing.fail_by + timing.linger),
    });
    let watcher = tokio::spawn(watch_rollback(Arc::clone(&story)));
    // With --keep-running the load goes on after the summary, until Ctrl-C.
    let keep_load = Arc::new(AtomicBool::new(options.keep_running));
    let mut workers = spawn_load(&story, &keep_load);
    let chaos = tokio::spawn(chaos(Arc::clone(&story)));

    timeline(&story, &proxy.events).await;
    if !options.keep_running {
        for worker in workers.drain(..) {
            let _ = worker.await;
        }
    }
    let _ = watcher.await;
    chaos.abort();

    let summary = story.summary(&proxy.events);
    print_summary(&summary);
    if options.keep_running {
        keep_running(proxy.admin, &keep_load, workers).await;
    }
    proxy.stop().await;
    Ok(summary)
}

/// The demo's config: one route, `stable` and `canary`, a rollout that steps every
/// `step_interval`, the sequential budget and the shield.
fn demo_toml(token_file: &Path, stable: SocketAddr, canary: SocketAddr, step: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
drain_timeout = "1s"
[admin]
listen = "127.0.0.1:0"
token_file = "{token}"
[[route]]
name = "{ROUTE}"
stable = {{ endpoints = ["{stable}"] }}
canary = {{ endpoints = ["{canary}"], version = "v2-demo" }}
canary_weight = 10
sticky = ["header:x-user-id"]
[route.budget]
window = "10s"
min_requests = 20
[route.rollout]
steps = [25, 50, 100]
step_interval = "{step}"
[route.shield]
statuses = ["5xx"]
min_retries_per_second = 50
"#,
        token = token_file.display(),
    )
}

impl DemoProxy {
    /// Writes the token file into a fresh temporary directory, binds the proxy and
    /// serves it on a task.
    async fn start(
        stable: SocketAddr,
        canary: SocketAddr,
        timing: &Timing,
    ) -> std::io::Result<DemoProxy> {
        let state = tempfile_dir()?;
        let token_file = state.join("admin-token");
        std::fs::write(&token_file, "demo-token\n")?;
        let toml = demo_toml(&token_file, stable, canary, timing.step_interval);
        let config = parse_str(&toml, &state.join("demo.toml"))
            .map_err(|errors| std::io::Error::other(format!("demo config: {errors:?}")))?;
        let app = App::bind(config).await?;
        let addr = app.local_addr()?;
        let admin = app.admin_addr().unwrap_or(addr);
        let runtime = Arc::clone(&app.snapshots().load().routes[0].runtime);
        let events = Arc::clone(app.events());
        let (stop, stop_rx) = oneshot::channel::<()>();
        let server = tokio::spawn(app.serve(async move {
            let _ = stop_rx.await;
        }));
        Ok(DemoProxy {
            addr,
            admin,
            runtime,
            events,
            state,
            stop,
            server,
        })
    }

    /// Stops the proxy, waits for its drain and removes the temporary directory.
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.server.await;
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

fn print_header(proxy: &DemoProxy, timing: &Timing) {
    let (proxy_addr, admin_addr) = (proxy.addr, proxy.admin);
    println!("canary-proxy demo: stable v1 and canary v2-demo behind one proxy\n");
    println!(
        "  proxy      http://{proxy_addr}/   (curl -H 'x-user-id: alice' http://{proxy_addr}/)"
    );
    println!("  dashboard  http://{admin_addr}/   (admin token: demo-token)");
    println!(
        "  rollout    10 → 25 → 50 → 100 %: a step every {} once the evidence says healthy",
        timing.step_interval
    );
    println!(
        "  budget     sequential test vs stable: worse than 2 × stable + 1 pp rolls back (α 0.001, β 0.05)"
    );
    println!("  load       {WORKERS} workers, {USERS} simulated users, sticky on x-user-id\n");
    println!(
        "  {:>6}  {:>6}  {:<12} {:>13} {:>6} {:>7}  {:>13} {:>6} {:>7}  verdict",
        "time", "weight", "state", "stable: req", "err", "p99", "canary: req", "err", "p99"
    );
}

/// Watches the latch at 1 ms resolution to time the rollback, until the demo's
/// latest possible end.
async fn watch_rollback(story: Arc<Story>) {
    let end = story.start + story.timing.fail_by + story.timing.linger;
    while Instant::now() < end {
        if story.runtime.is_rolled_back() {
            *lock(&story.rolled_back_at) = Some(Instant::now());
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Starts the `WORKERS` load workers, which run until the demo ends and, while
/// `keep_load` is set, beyond.
fn spawn_load(story: &Arc<Story>, keep_load: &Arc<AtomicBool>) -> Vec<JoinHandle<()>> {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    (0..WORKERS)
        .map(|worker| {
            let worker = load_worker(
                worker,
                client.clone(),
                Arc::clone(story),
                Arc::clone(keep_load),
            );
            tokio::spawn(worker)
        })
        .collect()
}

/// One simulated stream of users: a request as a random user of `USERS`, a pause, and
/// again.
async fn load_worker(
    worker: u64,
    client: Client<HttpConnector, Empty<Bytes>>,
    story: Arc<Story>,
    keep_load: Arc<AtomicBool>,
) {
    let proxy_addr = story.proxy_addr;
    let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ (worker + 1);
    while keep_load.load(Ordering::Relaxed) || Instant::now() < *lock(&story.end_at) {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let user = (seed >> 33) % USERS;
        let req = Request::get(format!("http://{proxy_addr}/checkout"))
            .header("x-user-id", format!("user-{user}"))
            .body(Empty::new());
        let Ok(req) = req else { break };
        let rolled_back = story.runtime.is_rolled_back();
        if let Ok(response) = client.request(req).await {
            let canary = response
                .headers()
                .get("x-served-by")
                .is_some_and(|v| v.as_bytes().starts_with(b"canary"));
            let failed = response.status().is_server_error();
            let _ = response.into_body().collect().await;
            story.tally.count(user, canary, failed, rolled_back);
        }
        tokio::time::sleep(story.timing.worker_pause).await;
    }
}

impl Tally {
    /// Counts one answer to `user`: which side served it, whether it failed, whether
    /// the canary was rolled back when it was sent.
    fn count(&self, user: u64, canary: bool, failed: bool, rolled_back: bool) {
        if failed {
            self.users_failed.fetch_add(1, Ordering::Relaxed);
        }
        if canary {
            self.canary.fetch_add(1, Ordering::Relaxed);
            if rolled_back {
                self.canary_after_rollback.fetch_add(1, Ordering::Relaxed);
            }
            lock(&self.exposed).insert(user);
        } else {
            self.stable.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The failure: `fail_after_half` after the canary reaches 50 % (checked every
/// 10 ms, well before the next step is due), or at `fail_by` at the latest. Moves the
/// demo's end to `linger` after it.
async fn chaos(story: Arc<Story>) {
    let Timing {
        fail_after_half,
        fail_by,
        linger,
        ..
    } = story.timing;
    let mut half_at: Option<Instant> = None;
    loop {
        if half_at.is_none() && story.runtime.effective().percent() >= 50.0 {
            half_at = Some(Instant::now());
        }
        if half_at.is_some_and(|at| at.elapsed() >= fail_after_half)
            || story.start.elapsed() >= fail_by
        {
            let served = story.canary_served.load(Ordering::Relaxed);
            story.served_before_failing.store(served, Ordering::Relaxed);
            story.failing.store(true, Ordering::Release);
            *lock(&story.failing_since) = Some(Instant::now());
            *lock(&story.end_at) = Instant::now() + linger;
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The timeline: every `tick` until the demo ends, the failure when it starts, the
/// decisions (events) since the last tick, and a status line.
async fn timeline(story: &Story, events: &Events) {
    let mut announced_failure = false;
    let mut shown_events = 0;
    let mut next_tick = story.start + story.timing.tick;
    while Instant::now() < *lock(&story.end_at) {
        tokio::time::sleep_until(next_tick).await;
        next_tick += story.timing.tick;
        let elapsed = story.start.elapsed();
        let failed_at = *lock(&story.failing_since);
        if let (false, Some(at)) = (announced_failure, failed_at) {
            announced_failure = true;
            println!(
                "  {:>5.1}s  !! canary v2-demo starts failing: 2 in 5 of its responses are 500",
                at.saturating_duration_since(story.start).as_secs_f64()
            );
        }
        for event in events.list().iter().skip(shown_events) {
            shown_events += 1;
            println!("{}", event_line(story, event, elapsed));
        }
        print_status(story, elapsed);
    }
}

/// A timeline line for a decision: a rollback with its evidence, or a weight change.
/// `elapsed` stands in for the event's own time when that does not parse.
fn event_line(story: &Story, event: &Event, elapsed: Duration) -> String {
    // The decision's own time, not when the timeline saw it.
    let at = humantime::parse_rfc3339(&event.time)
        .ok()
        .and_then(|t| t.duration_since(story.started_wall).ok())
        .unwrap_or(elapsed);
    let mut line = format!("  {:>5.1}s  ", at.as_secs_f64());
    let since_failing = story
        .canary_served
        .load(Ordering::Relaxed)
        .saturating_sub(story.served_before_failing.load(Ordering::Relaxed));
    let failed = story.canary_failures.load(Ordering::Relaxed);
    let number = |key: &str| {
        event
            .details
            .get(key)
            .and_then(|v| v.as_f64())
            .unwrap_or(0.0)
    };
    let route = event.route.as_deref().unwrap_or("?");
    match event.kind {
        "rollback" if event.reason.starts_with("sequential") => {
            let _ = write!(
                line,
                "<< ROLLBACK {route}: {} (evidence {:.1} ≥ {:.1}): {failed} of the last {since_failing} canary requests failed; stable baseline {:.2} %",
                event.reason,
                number("observed"),
                number("threshold"),
                number("stable_rate") * 100.0,
            );
        }
        "rollback" => {
            let _ = write!(
                line,
                "<< ROLLBACK {route}: {} {:.1} % > {:.1} %: {failed} of the last {since_failing} canary requests failed",
                event.reason,
                number("observed") * 100.0,
                number("threshold") * 100.0,
            );
        }
        kind => {
            let _ = write!(
                line,
                "-- {kind}: canary weight {} % → {} %",
                number("from_weight"),
                number("to_weight"),
            );
        }
    }
    line
}

/// The timeline's status line: weight, state, each side's window, the verdict.
fn print_status(story: &Story, elapsed: Duration) {
    let status = story.runtime.status(Instant::now());
    let side = |s: &SideStatus| {
        let p99 = s
            .p99_seconds
            .map_or("-".to_string(), |p| format!("{:.1}ms", p * 1000.0));
        let err = if s.requests == 0 {
            "-".to_string()
        } else {
            format!("{:.1}%", s.error_rate * 100.0)
        };
        (s.requests, err, p99)
    };
    let (sr, se, sp) = side(&status.window.stable);
    let (cr, ce, cp) = side(&status.window.canary);
    println!(
        "  {:>5.1}s  {:>5.1}%  {:<12} {:>13} {:>6} {:>7}  {:>13} {:>6} {:>7}  {}",
        elapsed.as_secs_f64(),
        status.effective_weight,
        status.state,
        sr,
        se,
        sp,
        cr,
        ce,
        cp,
        status.verdict.verdict,
    );
}

impl Story {
    /// What the demo saw, once the timeline has ended.
    fn summary(&self, events: &Events) -> Summary {
        let tally = &self.tally;
        let failing_since = *lock(&self.failing_since);
        let rolled_back_at = *lock(&self.rolled_back_at);
        let rollback = events.list().into_iter().find(|e| e.kind == "rollback");
        Summary {
            requests: tally.stable.load(Ordering::Relaxed) + tally.canary.load(Ordering::Relaxed),
            stable_requests: tally.stable.load(Ordering::Relaxed),
            canary_requests: tally.canary.load(Ordering::Relaxed),
            users: USERS as usize,
            users_exposed: lock(&tally.exposed).len(),
            rolled_back: self.runtime.is_rolled_back(),
            rollback_reason: rollback.map(|e| e.reason),
            failed_canary_before_rollback: self.canary_failures.load(Ordering::Relaxed),
            users_saw_failure: tally.users_failed.load(Ordering::Relaxed),
            canary_requests_after_rollback: tally.canary_after_rollback.load(Ordering::Relaxed),
            time_to_rollback: match (failing_since, rolled_back_at) {
                (Some(fail), Some(back)) => Some(back.saturating_duration_since(fail)),
                _ => None,
            },
        }
    }
}

/// `--keep-running`: the load goes on until Ctrl-C (or SIGTERM), then the workers
/// stop.
async fn keep_running(admin: SocketAddr, keep_load: &AtomicBool, workers: Vec<JoinHandle<()>>) {
    println!(
        "\n  still running, load included: dashboard http://{admin}/ (token demo-token), Ctrl-C to stop"
    );
    crate::app::shutdown_signal().await;
    keep_load.store(false, Ordering::Relaxed);
    for worker in workers {
        let _ = worker.await;
    }
}

/// Locks `mutex`, also when a panicking holder poisoned it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn print_summary(s: &Summary) {
    println!("\nsummary");
    println!(
        "  requests served                       {} (stable {}, canary {})",
        s.requests, s.stable_requests, s.canary_requests
    );
    println!(
        "  users exposed to the canary           {} of {}",
        s.users_exposed, s.users
    );
    match (&s.rollback_reason, s.time_to_rollback) {
        (Some(reason), Some(time)) => {
            println!("  rolled back                           yes ({reason})");
            println!(
                "  failed canary requests: {} — users who saw one: {} (the shield sent the rest to stable)",
                s.failed_canary_before_rollback, s.users_saw_failure
            );
            println!(
                "  time from first failure to rollback   {:.0} ms",
                time.as_secs_f64() * 1000.0
            );
            println!(
                "  canary requests after rollback        {}",
                s.canary_requests_after_rollback
            );
        }
        _ => println!("  rolled back                           no"),
    }
    println!("\n  Flagger or Argo Rollouts judge through PromQL every minute: a bad canary");
    println!("  serves users for minutes. Here the request that spent the budget ended it.");
}

/// A backend: answers `body`, or 500 for 2 in 5 requests while `failing` is set.
/// Returns its address, how many failing answers it has given and how many requests
/// it has served.
async fn backend(
    body: &'static str,
    failing: Option<Arc<AtomicBool>>,
) -> std::io::Result<(SocketAddr, Arc<AtomicU64>, Arc<AtomicU64>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let counter = Arc::new(AtomicU64::new(0));
    let served = Arc::clone(&counter);
    let failures = Arc::new(AtomicU64::new(0));
    let failed = Arc::clone(&failures);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let failing = failing.clone();
            let counter = Arc::clone(&counter);
            let failed = Arc::clone(&failed);
            tokio::spawn(async move {
                let service = service_fn(move |_req: Request<Incoming>| {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let fail =
                        failing.as_ref().is_some_and(|f| f.load(Ordering::Acquire)) && n % 5 < 2;
                    if fail {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    async move {
                        let mut response =
                            Response::new(Full::new(Bytes::from_static(body.as_bytes())));
                        if fail {
                            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                        }
                        response
                            .headers_mut()
                            .insert("x-served-by", http::HeaderValue::from_static(body));
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((addr, failures, served))
}

/// A private temporary directory for the demo's token file.
fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir =
        std::env::temp_dir().join(format!("canary-proxy-demo-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
