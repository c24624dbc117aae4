//! `kill -9` around an automatic rollback, many times over, against the real binary:
//! every decision the proxy reported (API state, event, metrics) is on disk and comes
//! back after a restart, and no answer of the API ever shows a half-applied decision
//! (`steady` at 0 %).
//!
//! Each round: a fresh state dir, a proxy whose canary always answers 500 (threshold
//! budget, `min_requests = 5`, so the 5th canary response trips the rollback), one
//! client sending requests and observers polling the API, the events and the metrics as
//! fast as they can. A killer thread sends SIGKILL at a random point: 0–30 ms after the
//! k-th response (k in 3..=7), or 0–50 ms after an observer first saw the rollback
//! reported. Then the proxy restarts on the same config and state dir.
//!
//! Set `CRASH_SEED` to replay a run; the seed is printed.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use http::Request;
use http_body_util::BodyExt;
use tokio::time::Instant;

use support::{client, empty, route_toml, Client, MockUpstream};

const BIN: &str = env!("CARGO_BIN_EXE_canary-proxy");
/// Rounds, bounded again by `TIME_BUDGET`.
const ROUNDS: usize = 100;
const TIME_BUDGET: Duration = Duration::from_secs(40);
/// Requests the client sends per round (the 5th trips the rollback).
const REQUESTS: usize = 12;

/// A proxy process. Dropping it sends SIGKILL to its PID and reaps it.
struct Proxy {
    child: Mutex<Child>,
    addr: SocketAddr,
    admin: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

/// What the observers saw of one proxy process.
#[derive(Default)]
struct Seen {
    /// Some answer reported the rollback (API state, event or metric).
    reported: AtomicBool,
    /// Answers that contradict each other or the invariant.
    violations: Mutex<Vec<String>>,
}

/// A small deterministic generator (xorshift64*), seeded per run.
struct Rng(u64);

// === impl Proxy ===

impl Proxy {
    fn start(config: &Path) -> Proxy {
        let mut child = Command::new(BIN)
            .args(["run", "-c", config.to_str().unwrap()])
            .env("RUST_LOG", "info,canary_proxy::rollout=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if line.contains("listening") {
                        let _ = tx.send(line.clone());
                    }
                    log.lock().unwrap().push(line);
                }
            });
        }
        let mut proxy = None;
        let mut admin = None;
        while proxy.is_none() || admin.is_none() {
            let Ok(line) = rx.recv_timeout(Duration::from_secs(10)) else {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the proxy did not start: {:#?}", log.lock().unwrap());
            };
            let addr: SocketAddr = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("addr="))
                .unwrap()
                .parse()
                .unwrap();
            if line.contains("admin listening") {
                admin = Some(addr);
            } else {
                proxy = Some(addr);
            }
        }
        Proxy {
            child: Mutex::new(child),
            addr: proxy.unwrap(),
            admin: admin.unwrap(),
            log,
        }
    }

    /// `kill -9`, then reap.
    fn kill(&self) {
        let mut child = self.child.lock().unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }

    /// A `key=value` number from every log line with `message`.
    fn logged(&self, message: &str, key: &str) -> Vec<f64> {
        let prefix = format!("{key}=");
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(message))
            .filter_map(|l| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(prefix.as_str()))
                    .and_then(|v| v.parse().ok())
            })
            .collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.kill();
    }
}

// === impl Seen ===

impl Seen {
    fn violation(&self, what: String) {
        self.violations.lock().unwrap().push(what);
    }

    /// Checks one `/api/v1/routes` answer; true when it reports the rollback.
    fn routes(&self, body: &str) -> bool {
        let Ok(json) = serde_json::from_str::<serde_json::Value>(body) else {
            self.violation(format!("not JSON: {body}"));
            return false;
        };
        let route = &json["routes"][0];
        let (state, weight) = (&route["state"], &route["effective_weight"]);
        match state.as_str() {
            Some("steady") if *weight == 100.0 => false,
            Some("rolled_back") if *weight == 0.0 => true,
            _ => {
                self.violation(format!("half-applied: state {state}, effective {weight}"));
                false
            }
        }
    }
}

// === impl Rng ===

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// GET `url`; `None` once the process is gone.
async fn fetch(client: &Client, url: &str) -> Option<(u16, String)> {
    let req = Request::get(url).body(empty()).unwrap();
    let response = client.request(req).await.ok()?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Polls the admin API until `stop`, recording reports and violations.
fn observe(
    proxy: &Proxy,
    seen: &Arc<Seen>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let routes = {
        let (url, seen, stop) = (
            format!("http://{}/api/v1/routes", proxy.admin),
            Arc::clone(seen),
            Arc::clone(stop),
        );
        tokio::spawn(async move {
            let client = client();
            while !stop.load(Ordering::Acquire) {
                match fetch(&client, &url).await {
                    Some((200, body)) => {
                        if seen.routes(&body) {
                            seen.reported.store(true, Ordering::Release);
                        }
                    }
                    Some((status, body)) => seen.violation(format!("routes: {status} {body}")),
                    None => tokio::time::sleep(Duration::from_millis(1)).await,
                }
            }
        })
    };
    let others = {
        let admin = proxy.admin;
        let (seen, stop) = (Arc::clone(seen), Arc::clone(stop));
        tokio::spawn(async move {
            let client = client();
            let events = format!("http://{admin}/api/v1/events");
            let metrics = format!("http://{admin}/metrics");
            while !stop.load(Ordering::Acquire) {
                let mut reported = false;
                if let Some((200, body)) = fetch(&client, &events).await {
                    reported |= body.contains("\"kind\":\"rollback\"");
                }
                if let Some((200, body)) = fetch(&client, &metrics).await {
                    reported |= body.lines().any(|l| {
                        l.starts_with("canary_proxy_rollbacks_total{") && !l.ends_with(" 0")
                    });
                    reported |= body.contains("canary_proxy_canary_weight_ratio{route=\"r\"} 0\n");
                    reported |= body
                        .contains("canary_proxy_canary_state{route=\"r\",state=\"rolled_back\"} 1");
                } else {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                if reported {
                    seen.reported.store(true, Ordering::Release);
                }
            }
        })
    };
    vec![routes, others]
}

/// Count, min, median and max.
fn spread(mut values: Vec<f64>) -> (usize, f64, f64, f64) {
    if values.is_empty() {
        return (0, f64::NAN, f64::NAN, f64::NAN);
    }
    values.sort_by(f64::total_cmp);
    (
        values.len(),
        values[0],
        values[values.len() / 2],
        values[values.len() - 1],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reported_rollback_survives_kill_9() {
    let stable = MockUpstream::start("stable").await;
    let canary = MockUpstream::start("canary").await;
    canary.fail_every(1);
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("CRASH_SEED={seed}");
    let mut rng = Rng(seed);

    let started = Instant::now();
    let (mut rounds, mut reported_rounds, mut lost_unreported, mut persisted_unreported) =
        (0, 0, 0, 0);
    let (mut windows, mut fsyncs) = (Vec::new(), Vec::new());
    while rounds < ROUNDS && started.elapsed() < TIME_BUDGET {
        rounds += 1;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("proxy.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[state]\ndir = \"state\"\n{}[route.budget]\nmode = \"threshold\"\nmin_requests = 5\nmax_error_rate = 0.1\n",
                route_toml("r", stable.addr, canary.addr, 100.0, "")
            ),
        )
        .unwrap();
        let state_file = dir.path().join("state/route-r.json");

        let first = Arc::new(tokio::task::block_in_place(|| Proxy::start(&config)));
        let seen = Arc::new(Seen::default());
        let stop = Arc::new(AtomicBool::new(false));
        let observers = observe(&first, &seen, &stop);

        // The killer: after the k-th response, or after the first report.
        let responses = Arc::new(AtomicUsize::new(0));
        let after_report = rng.next().is_multiple_of(3);
        let k = rng.range(3, 7) as usize;
        // A third of the kills land within 2 ms of their trigger, inside the window.
        let delay = if rng.next().is_multiple_of(3) {
            Duration::from_micros(rng.range(0, 2_000))
        } else if after_report {
            Duration::from_micros(rng.range(0, 50_000))
        } else {
            Duration::from_micros(rng.range(0, 30_000))
        };
        let killer = {
            let (first, seen, responses) = (
                Arc::clone(&first),
                Arc::clone(&seen),
                Arc::clone(&responses),
            );
            std::thread::spawn(move || {
                let deadline = Duration::from_secs(5);
                let mut waited = Duration::ZERO;
                let step = Duration::from_micros(50);
                loop {
                    let due = if after_report {
                        seen.reported.load(Ordering::Acquire)
                    } else {
                        responses.load(Ordering::Acquire) >= k
                    };
                    if due || waited >= deadline {
                        break;
                    }
                    std::thread::sleep(step);
                    waited += step;
                }
                std::thread::sleep(delay);
                first.kill();
            })
        };

        // One user after another, until the process is gone.
        let canary_before = canary.requests();
        let proxy_client = client();
        for user in 0..REQUESTS {
            let req = Request::get(format!("http://{}/", first.addr))
                .header("x-user-id", format!("u{user}"))
                .body(empty())
                .unwrap();
            let Ok(response) = proxy_client.request(req).await else {
                break;
            };
            let _ = response.into_body().collect().await;
            responses.fetch_add(1, Ordering::AcqRel);
        }
        tokio::task::block_in_place(|| killer.join().unwrap());
        stop.store(true, Ordering::Release);
        for observer in observers {
            observer.await.unwrap();
        }
        let canary_hits = canary.requests() - canary_before;
        windows.extend(first.logged("rollback settled", "unpersisted_ms"));
        fsyncs.extend(first.logged("persisted canary state", "took_ms"));

        let violations = seen.violations.lock().unwrap().clone();
        let reported = seen.reported.load(Ordering::Acquire);
        let on_disk = std::fs::read_to_string(&state_file).ok();
        let context = || {
            format!(
                "round {rounds} (CRASH_SEED={seed}, after_report {after_report}, k {k}, \
                 delay {delay:?}, canary hits {canary_hits}), log:\n{}",
                first.log.lock().unwrap().join("\n")
            )
        };
        assert!(violations.is_empty(), "{violations:#?}\n{}", context());
        if reported {
            reported_rounds += 1;
            let text = on_disk
                .as_deref()
                .unwrap_or_else(|| panic!("a reported rollback is not on disk: {}", context()));
            assert!(text.contains("\"rolled_back\""), "{text}\n{}", context());
        } else if on_disk.is_some() {
            persisted_unreported += 1;
        } else if canary_hits >= 5 {
            // Tripped (routing went to stable) but killed before the fsync: nothing
            // reported it, so nothing is owed. This is the documented window.
            lost_unreported += 1;
        }

        // The restart: a reported decision is back; nothing is ever half-applied.
        let second = tokio::task::block_in_place(|| Proxy::start(&config));
        let restarted = Arc::new(Seen::default());
        let admin = client();
        let url = format!("http://{}/api/v1/routes", second.admin);
        for _ in 0..5 {
            let (status, body) = fetch(&admin, &url)
                .await
                .expect("the restarted proxy answers");
            assert_eq!(status, 200, "{body}");
            let rolled_back = restarted.routes(&body);
            assert!(
                rolled_back || !reported,
                "the restart lost a reported rollback: {body}\n{}",
                context()
            );
            assert_eq!(
                rolled_back,
                on_disk.is_some(),
                "the restart disagrees with the state file {on_disk:?}: {body}"
            );
        }
        let violations = restarted.violations.lock().unwrap().clone();
        assert!(violations.is_empty(), "{violations:#?}\n{}", context());
        drop(second);
    }

    let (n, min, med, max) = spread(windows);
    eprintln!(
        "{rounds} rounds: {reported_rounds} reported and all survived; \
         {persisted_unreported} persisted before anyone saw them; \
         {lost_unreported} tripped, killed before the fsync, never reported"
    );
    eprintln!(
        "latch -> on disk (unpersisted_ms), {n} settled rollbacks: \
         min {min:.2} median {med:.2} max {max:.2} ms"
    );
    let (n, min, med, max) = spread(fsyncs);
    eprintln!("store::save (took_ms), {n} saves: min {min:.2} median {med:.2} max {max:.2} ms");
    assert!(rounds >= 10, "only {rounds} rounds in {TIME_BUDGET:?}");
    assert!(reported_rounds > 0, "no round saw a report");
}
