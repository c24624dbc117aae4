//! Hot reload through real files: in-place edits, ConfigMap symlink swaps, a soak of
//! valid and invalid files under load, state carried by canary identity.

mod support;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use support::*;
use tokio::time::Instant;

const TOKEN: &str = "reload-token";
const SUCCESS: &str = "canary_proxy_config_reloads_total{result=\"success\"}";
const FAILURE: &str = "canary_proxy_config_reloads_total{result=\"failure\"}";

fn config(dir: &Path, routes: &str) -> String {
    std::fs::write(dir.join("token"), TOKEN).unwrap();
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n{routes}",
        dir.join("token").display()
    )
}

fn route(stable: &MockUpstream, canary: &MockUpstream, weight: f64, version: &str) -> String {
    format!(
        "[[route]]\nname = \"shop\"\nstable = {{ endpoints = [\"{}\"] }}\ncanary = {{ endpoints = [\"{}\"], version = \"{version}\" }}\ncanary_weight = {weight}\nsticky = [\"header:x-user-id\"]\n",
        stable.addr, canary.addr
    )
}

/// A temp dir holding `proxy.toml` (route `shop` at `weight`, canary v1) and a proxy
/// watching it.
async fn watching(
    weight: f64,
) -> (
    tempfile::TempDir,
    MockUpstream,
    MockUpstream,
    std::path::PathBuf,
    TestProxy,
) {
    let dir = tempfile::tempdir().unwrap();
    let (stable, canary) = (
        MockUpstream::start("stable").await,
        MockUpstream::start("canary").await,
    );
    let path = dir.path().join("proxy.toml");
    std::fs::write(
        &path,
        config(dir.path(), &route(&stable, &canary, weight, "v1")),
    )
    .unwrap();
    let proxy = TestProxy::start_watching(&path).await;
    (dir, stable, canary, path, proxy)
}

/// Writes `text` the way editors and ConfigMaps do: a new file renamed over the old.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn canary_share(proxy: &TestProxy, tag: &str, n: usize) -> f64 {
    let client = client();
    let mut canary = 0;
    for i in 0..n {
        let (_, h, _) = get(
            &client,
            &proxy.url("/"),
            &[("x-user-id", &format!("{tag}-{i}"))],
        )
        .await;
        if h["x-served-by"] == "canary" {
            canary += 1;
        }
    }
    canary as f64 * 100.0 / n as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_edited_in_place_takes_effect_within_a_second() {
    let (dir, stable, canary, path, proxy) = watching(10.0).await;
    let before = canary_share(&proxy, "a", 2000).await;
    assert!((before - 10.0).abs() < 2.5, "{before}");

    // In place: truncate and write, as `sed -i`-less editors and `echo >` do.
    std::fs::write(
        &path,
        config(dir.path(), &route(&stable, &canary, 50.0, "v1")),
    )
    .unwrap();
    let took = wait_for("weight 50", Duration::from_secs(1), || async {
        proxy.route_status("shop").await["effective_weight"] == 50.0
    })
    .await;
    println!("reload latency (write → new weight serving): {took:?}");
    let after = canary_share(&proxy, "b", 2000).await;
    assert!((after - 50.0).abs() < 3.5, "{after}");
    assert_eq!(proxy.admin_json("/api/v1/routes").await["generation"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_configmap_symlink_swaps_are_seen() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (stable, canary) = (
        MockUpstream::start("stable").await,
        MockUpstream::start("canary").await,
    );
    // dir/proxy.toml -> ..data/proxy.toml, ..data -> ..2026_11_21_a
    let write_version = |name: &str, weight: f64| {
        let version_dir = root.join(name);
        std::fs::create_dir(&version_dir).unwrap();
        std::fs::write(
            version_dir.join("proxy.toml"),
            config(root, &route(&stable, &canary, weight, "v1")),
        )
        .unwrap();
    };
    write_version("..2026_11_21_a", 10.0);
    std::os::unix::fs::symlink("..2026_11_21_a", root.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/proxy.toml", root.join("proxy.toml")).unwrap();
    let proxy = TestProxy::start_watching(&root.join("proxy.toml")).await;
    assert_eq!(proxy.route_status("shop").await["configured_weight"], 10.0);

    for (name, weight) in [("..2026_11_21_b", 30.0), ("..2026_11_21_c", 70.0)] {
        write_version(name, weight);
        std::os::unix::fs::symlink(name, root.join("..data_tmp")).unwrap();
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
        wait_for("the swapped config", Duration::from_secs(2), || async {
            proxy.route_status("shop").await["configured_weight"] == weight
        })
        .await;
    }
    assert_eq!(proxy.metric(SUCCESS).await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_reloads_under_load_lose_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let (stable, canary) = (
        MockUpstream::start("stable").await,
        MockUpstream::start("canary").await,
    );
    let path = dir.path().join("proxy.toml");
    std::fs::write(
        &path,
        config(dir.path(), &route(&stable, &canary, 0.5, "v1")),
    )
    .unwrap();
    let proxy = Arc::new(TestProxy::start_watching(&path).await);

    // Four clients send requests until told to stop (bounded by count and time).
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = Vec::new();
    for c in 0..4 {
        let (proxy, stop, ok, failed) = (proxy.clone(), stop.clone(), ok.clone(), failed.clone());
        clients.push(tokio::spawn(async move {
            let client = client();
            let deadline = Instant::now() + Duration::from_secs(60);
            for i in 0..200_000 {
                if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                    break;
                }
                let req = http::Request::get(proxy.url("/"))
                    .header("x-user-id", format!("c{c}-{i}"))
                    .body(empty())
                    .unwrap();
                match client.request(req).await {
                    Ok(r) if r.status() == StatusCode::OK => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }

    let mut last_valid = 0.0;
    for i in 1..=50u32 {
        let (success, failure) = (proxy.metric(SUCCESS).await, proxy.metric(FAILURE).await);
        if i % 2 == 1 {
            last_valid = f64::from(i);
            replace(
                &path,
                &config(dir.path(), &route(&stable, &canary, last_valid, "v1")),
            );
        } else if i % 4 == 0 {
            replace(&path, "[server\nthis is not toml");
        } else {
            replace(
                &path,
                &config(dir.path(), &route(&stable, &canary, 250.0, "v1")),
            );
        }
        wait_for(
            "the reload to be counted",
            Duration::from_secs(3),
            || async {
                proxy.metric(SUCCESS).await + proxy.metric(FAILURE).await > success + failure
            },
        )
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("soak: {ok} requests ok, {failed} failed, 25 valid + 25 invalid reloads");
    assert_eq!(failed, 0);
    assert!(ok > 500, "{ok}");
    assert_eq!(proxy.metric(SUCCESS).await, 25.0);
    assert_eq!(proxy.metric(FAILURE).await, 25.0);
    let route = proxy.route_status("shop").await;
    assert_eq!(route["configured_weight"], last_valid);
    let events = proxy.admin_json("/api/v1/events").await;
    let failed_events: Vec<_> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "reload_failed")
        .collect();
    assert_eq!(failed_events.len(), 25);
    // The error names file, line, column and key.
    let reason = failed_events.last().unwrap()["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        reason.contains("proxy.toml:") && reason.contains("canary_weight"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latch_survives_a_weight_reload_and_a_new_version_re_arms_it() {
    let (dir, stable, canary, path, proxy) = watching(20.0).await;
    assert_eq!(
        proxy.command("shop", "rollback", Some(TOKEN)).await.0,
        StatusCode::OK
    );

    replace(
        &path,
        &config(dir.path(), &route(&stable, &canary, 60.0, "v1")),
    );
    wait_for("weight 60 configured", Duration::from_secs(2), || async {
        proxy.route_status("shop").await["configured_weight"] == 60.0
    })
    .await;
    let route_now = proxy.route_status("shop").await;
    assert_eq!(route_now["state"], "rolled_back");
    assert_eq!(route_now["effective_weight"], 0.0);
    assert_eq!(canary_share(&proxy, "x", 200).await, 0.0);

    replace(
        &path,
        &config(dir.path(), &route(&stable, &canary, 60.0, "v2")),
    );
    wait_for("v2 re-armed", Duration::from_secs(2), || async {
        proxy.route_status("shop").await["state"] == "steady"
    })
    .await;
    assert_eq!(proxy.route_status("shop").await["effective_weight"], 60.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_are_added_and_removed_without_cutting_requests_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let a = MockUpstream::start("a").await;
    let b = MockUpstream::start("b").await;
    let c = MockUpstream::start("c").await;
    let path = dir.path().join("proxy.toml");
    let two = format!(
        "{}{}",
        route_toml("a", a.addr, a.addr, 0.0, "path_prefix = \"/a\""),
        route_toml("b", b.addr, b.addr, 0.0, "path_prefix = \"/slow\"")
    );
    std::fs::write(&path, config(dir.path(), &two)).unwrap();
    let proxy = TestProxy::start_watching(&path).await;

    let in_flight = {
        let url = proxy.url("/slow/1500");
        tokio::spawn(async move { get(&client(), &url, &[]).await })
    };
    wait_for(
        "the slow request upstream",
        Duration::from_secs(2),
        || async { b.requests() == 1 },
    )
    .await;

    let swapped = format!(
        "{}{}",
        route_toml("a", a.addr, a.addr, 0.0, "path_prefix = \"/a\""),
        route_toml("c", c.addr, c.addr, 0.0, "path_prefix = \"/c\"")
    );
    replace(&path, &config(dir.path(), &swapped));
    wait_for("route c", Duration::from_secs(2), || async {
        get(&client(), &proxy.url("/c"), &[]).await.0 == StatusCode::OK
    })
    .await;
    assert_eq!(
        get(&client(), &proxy.url("/slow/1"), &[]).await.0,
        StatusCode::NOT_FOUND
    );
    let (status, _, body) = in_flight.await.unwrap();
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "b"),
        "the in-flight request completes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_file_is_an_error_not_an_empty_config() {
    let (dir, stable, canary, path, proxy) = watching(10.0).await;
    std::fs::remove_file(&path).unwrap();
    wait_for("a reload failure", Duration::from_secs(2), || async {
        proxy.metric(FAILURE).await == 1.0
    })
    .await;
    assert_eq!(get(&client(), &proxy.url("/"), &[]).await.0, StatusCode::OK);
    assert_eq!(proxy.route_status("shop").await["configured_weight"], 10.0);
    let events = proxy.admin_json("/api/v1/events").await;
    assert!(
        events["events"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("cannot read"),
        "{events}"
    );
    // Putting a valid file back is picked up normally.
    replace(
        &path,
        &config(dir.path(), &route(&stable, &canary, 20.0, "v1")),
    );
    wait_for("the restored file", Duration::from_secs(2), || async {
        proxy.route_status("shop").await["configured_weight"] == 20.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_listen_address_is_bound_before_the_old_one_closes() {
    let (_dir, _stable, _canary, path, proxy) = watching(0.0).await;
    let text = std::fs::read_to_string(&path).unwrap();
    // A kept-alive connection on the old port.
    let client = client();
    assert_eq!(get(&client, &proxy.url("/"), &[]).await.0, StatusCode::OK);

    let next = free_addr().await;
    replace(
        &path,
        &text.replacen(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"{next}\""),
            1,
        ),
    );
    wait_for("the new listener", Duration::from_secs(2), || async {
        tokio::net::TcpStream::connect(next).await.is_ok()
    })
    .await;
    let (status, _, _) = get(&client, &format!("http://{next}/"), &[]).await;
    assert_eq!(status, StatusCode::OK);
    // The old port no longer accepts; the connection already open still works.
    assert!(tokio::net::TcpStream::connect(proxy.addr).await.is_err());
    assert_eq!(get(&client, &proxy.url("/"), &[]).await.0, StatusCode::OK);

    // A listen address that cannot be bound rejects the whole file.
    let blocker = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let taken = blocker.local_addr().unwrap();
    replace(
        &path,
        &text.replacen(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"{taken}\""),
            1,
        ),
    );
    wait_for("a reload failure", Duration::from_secs(2), || async {
        proxy.metric(FAILURE).await == 1.0
    })
    .await;
    assert_eq!(
        get(&client, &format!("http://{next}/"), &[]).await.0,
        StatusCode::OK
    );
}

// === What the watcher reacts to ===

const NOT_TOML: &str = "[server\nthis is not toml";

/// Appends a line to `file` every `every` for `total`, as a log or a sidecar beside the
/// config would. Returns the number of lines written.
fn keep_appending(
    file: std::path::PathBuf,
    every: Duration,
    total: Duration,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        use std::io::Write;
        let end = Instant::now() + total;
        let mut lines = 0;
        while Instant::now() < end {
            let mut log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&file)
                .unwrap();
            writeln!(log, "line {lines}").unwrap();
            lines += 1;
            tokio::time::sleep(every).await;
        }
        lines
    })
}

/// How many recorded events are of `kind`.
async fn events_of(proxy: &TestProxy, kind: &str) -> usize {
    let events = proxy.admin_json("/api/v1/events").await;
    events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind)
        .count()
}

/// Long enough for a change to have been reloaded had it been one (debounce 100 ms).
const SETTLED: Duration = Duration::from_millis(600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weight_edit_lands_while_another_file_in_the_directory_is_written_every_20ms() {
    let (dir, stable, canary, path, proxy) = watching(10.0).await;
    let writer = keep_appending(
        dir.path().join("proxy.log"),
        Duration::from_millis(20),
        Duration::from_secs(3),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;

    replace(
        &path,
        &config(dir.path(), &route(&stable, &canary, 50.0, "v1")),
    );
    let took = wait_for(
        "weight 50 configured",
        Duration::from_millis(1500),
        || async { proxy.route_status("shop").await["configured_weight"] == 50.0 },
    )
    .await;
    println!("reload latency with a busy directory: {took:?}");
    assert!(writer.await.unwrap() > 50);
    assert_eq!(proxy.admin_json("/api/v1/routes").await["generation"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_config_is_reported_once_however_often_the_directory_changes() {
    let (dir, _stable, _canary, path, proxy) = watching(10.0).await;
    replace(&path, NOT_TOML);
    wait_for("a reload failure", Duration::from_secs(2), || async {
        proxy.metric(FAILURE).await == 1.0
    })
    .await;

    // stderr appended to a file beside the config: a burst faster than the debounce,
    // then a line every 150 ms (a log line per reload attempt would make that a loop).
    let log = dir.path().join("proxy.log");
    let fast = keep_appending(
        log.clone(),
        Duration::from_millis(20),
        Duration::from_secs(1),
    );
    assert!(fast.await.unwrap() > 20);
    let slow = keep_appending(log, Duration::from_millis(150), Duration::from_secs(1));
    assert!(slow.await.unwrap() > 3);
    tokio::time::sleep(SETTLED).await;

    assert_eq!(proxy.metric(FAILURE).await, 1.0);
    assert_eq!(events_of(&proxy, "reload_failed").await, 1);
    assert_eq!(proxy.route_status("shop").await["configured_weight"], 10.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unrelated_write_in_the_config_directory_is_not_a_reload() {
    let (dir, stable, canary, path, proxy) = watching(10.0).await;
    let success = proxy.metric(SUCCESS).await;
    std::fs::write(dir.path().join("notes.txt"), "unrelated").unwrap();
    std::fs::create_dir(dir.path().join("cache")).unwrap();
    tokio::time::sleep(SETTLED).await;

    assert_eq!(proxy.metric(SUCCESS).await, success);
    assert_eq!(proxy.admin_json("/api/v1/routes").await["generation"], 1);
    assert_eq!(events_of(&proxy, "reload").await, 0);

    // The watcher is alive: a real edit is generation 2.
    replace(
        &path,
        &config(dir.path(), &route(&stable, &canary, 30.0, "v1")),
    );
    wait_for("weight 30 configured", Duration::from_secs(2), || async {
        proxy.route_status("shop").await["configured_weight"] == 30.0
    })
    .await;
    assert_eq!(proxy.admin_json("/api/v1/routes").await["generation"], 2);
    assert_eq!(events_of(&proxy, "reload").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewriting_the_loaded_config_unchanged_is_not_a_reload() {
    let (dir, stable, canary, path, proxy) = watching(10.0).await;
    let success = proxy.metric(SUCCESS).await;
    // The same bytes, in place and renamed over; the token file rewritten as it was.
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, &text).unwrap();
    replace(&path, &text);
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    tokio::time::sleep(SETTLED).await;

    assert_eq!(proxy.metric(SUCCESS).await, success);
    assert_eq!(proxy.admin_json("/api/v1/routes").await["generation"], 1);
    assert_eq!(events_of(&proxy, "reload").await, 0);

    replace(
        &path,
        &config(dir.path(), &route(&stable, &canary, 30.0, "v1")),
    );
    wait_for("weight 30 configured", Duration::from_secs(2), || async {
        proxy.route_status("shop").await["configured_weight"] == 30.0
    })
    .await;
    assert_eq!(proxy.admin_json("/api/v1/routes").await["generation"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_rejected_content_is_reported_once() {
    let (dir, stable, canary, path, proxy) = watching(10.0).await;
    replace(&path, NOT_TOML);
    wait_for("a reload failure", Duration::from_secs(2), || async {
        proxy.metric(FAILURE).await == 1.0
    })
    .await;

    // Touched again with identical bytes: nothing new to report.
    std::fs::write(&path, NOT_TOML).unwrap();
    replace(&path, NOT_TOML);
    tokio::time::sleep(SETTLED).await;
    assert_eq!(proxy.metric(FAILURE).await, 1.0);
    assert_eq!(events_of(&proxy, "reload_failed").await, 1);

    // Different invalid content is a new failure.
    replace(&path, "[server\nstill not toml");
    wait_for("a second failure", Duration::from_secs(2), || async {
        proxy.metric(FAILURE).await == 2.0
    })
    .await;

    // After a valid file, the first invalid content is a new change again.
    replace(
        &path,
        &config(dir.path(), &route(&stable, &canary, 40.0, "v1")),
    );
    wait_for("weight 40 configured", Duration::from_secs(2), || async {
        proxy.route_status("shop").await["configured_weight"] == 40.0
    })
    .await;
    replace(&path, NOT_TOML);
    wait_for("a third failure", Duration::from_secs(2), || async {
        proxy.metric(FAILURE).await == 3.0
    })
    .await;
    assert_eq!(events_of(&proxy, "reload_failed").await, 3);
}
