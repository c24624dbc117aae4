//! `[log] access` (one JSON line per request) and `[log] side_header`, end to end:
//! the lines are checked against what the upstreams saw.

mod support;

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use canary_proxy::routing::split::bucket;
use support::{
    client, get, h2_client, raw, refused_addr, route_toml, wait_for, MockUpstream, TestProxy,
};

/// Every line of an access log file, parsed.
fn read_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// The lines whose request id starts with `prefix`.
fn with_prefix<'a>(lines: &'a [Value], prefix: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|l| l["request_id"].as_str().unwrap_or("").starts_with(prefix))
        .collect()
}

/// Request id → (upstream name, path) for every request the upstreams saw.
fn seen_by(upstreams: &[&MockUpstream]) -> HashMap<String, (&'static str, String)> {
    let mut seen = HashMap::new();
    for upstream in upstreams {
        for (_, uri, headers) in upstream.seen.heads.lock().unwrap().iter() {
            if let Some(id) = headers.get("x-request-id") {
                let id = id.to_str().unwrap().to_string();
                seen.insert(id, (upstream.name, uri.path().to_string()));
            }
        }
    }
    seen
}

#[tokio::test]
async fn each_request_is_one_line_that_matches_what_the_upstream_saw() {
    let stable = MockUpstream::start("stable").await;
    let canary = MockUpstream::start("canary").await;
    let dead = refused_addr().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let toml = format!(
        "[log]\naccess = \"{}\"\n{}{}{}",
        log.display(),
        route_toml(
            "app",
            stable.addr,
            canary.addr,
            50.0,
            "sticky = [\"header:x-user-id\"]\noverride_header = \"x-canary\"",
        ),
        route_toml("dead", dead, dead, 0.0, "path_prefix = \"/dead\""),
        route_toml(
            "shielded",
            stable.addr,
            dead,
            100.0,
            "path_prefix = \"/shielded\"\n[route.shield]",
        ),
    );
    let proxy = TestProxy::start(&toml).await;
    let client = client();

    let mut users = HashMap::new();
    for i in 0..30 {
        let (id, user) = (format!("req-{i}"), format!("user-{i}"));
        let url = proxy.url(&format!("/item/{i}?token=secret"));
        let headers = [("x-request-id", id.as_str()), ("x-user-id", user.as_str())];
        let (status, _, _) = get(&client, &url, &headers).await;
        assert_eq!(status, 200);
        users.insert(id, user);
    }
    let (status, _, body) = get(
        &client,
        &proxy.url("/download/100000"),
        &[("x-request-id", "req-download"), ("x-user-id", "user-0")],
    )
    .await;
    assert_eq!((status.as_u16(), body.len()), (200, 100_000));
    users.insert("req-download".into(), "user-0".into());
    let forced = [("x-request-id", "forced"), ("x-canary", "always")];
    assert_eq!(get(&client, &proxy.url("/"), &forced).await.2, "canary");
    let (status, _, _) = get(&client, &proxy.url("/dead"), &[("x-request-id", "dead")]).await;
    assert_eq!(status, 502);
    let shielded = [("x-request-id", "shielded")];
    let (_, _, body) = get(&client, &proxy.url("/shielded/x"), &shielded).await;
    assert_eq!(body, "stable", "the shield answered from stable");
    let answer = raw(
        proxy.addr,
        b"GET / HTTP/1.1\r\n\r\n",
        Duration::from_millis(300),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    // The lines are written when the proxy stops at the latest.
    proxy.stop().await;

    let lines = read_lines(&log);
    assert_eq!(lines.len(), 35, "one line per request: {lines:#?}");
    let seen = seen_by(&[&stable, &canary]);
    let addr = |name: &str| {
        if name == "stable" {
            stable.addr.to_string()
        } else {
            canary.addr.to_string()
        }
    };
    for line in with_prefix(&lines, "req-") {
        let id = line["request_id"].as_str().unwrap();
        let (side, path) = &seen[id];
        assert_eq!(line["side"], *side, "{line}");
        assert_eq!(line["upstream"], addr(side), "{line}");
        assert_eq!(line["path"], *path, "no query string: {line}");
        assert_eq!(line["route"], "app");
        assert_eq!(line["canary_version"], "v2", "on both sides: {line}");
        assert_eq!(line["method"], "GET");
        assert_eq!(line["status"], 200);
        assert_eq!(line["class"], "2xx");
        let expected_bytes = if id == "req-download" { 100_000 } else { 6 };
        assert_eq!(line["bytes"], expected_bytes, "{line}");
        assert_eq!(line["reason"], "hash");
        let expected = bucket(b"app", users[id].as_bytes());
        assert_eq!(line["bucket"], expected, "{line}");
        assert_eq!(expected < 5000, *side == "canary", "{line}");
        assert!(line.get("shielded").is_none());
        assert!(line["duration_ms"].as_f64().unwrap() >= 0.0);
        let time = line["time"].as_str().unwrap();
        humantime::parse_rfc3339(time).unwrap_or_else(|e| panic!("{e}: {time}"));
    }
    // Both sides were exercised.
    let sides: Vec<_> = with_prefix(&lines, "req-")
        .iter()
        .map(|l| &l["side"])
        .collect();
    assert!(sides.contains(&&Value::from("canary")) && sides.contains(&&Value::from("stable")));

    let forced = with_prefix(&lines, "forced")[0];
    assert_eq!(forced["side"], "canary");
    assert_eq!(forced["reason"], "override");
    assert!(forced.get("bucket").is_none(), "the hash did not decide");
    assert_eq!(forced["upstream"], canary.addr.to_string());

    let dead = with_prefix(&lines, "dead")[0];
    assert_eq!(dead["status"], 502);
    assert_eq!(dead["class"], "error", "no upstream answered");
    assert_eq!(dead["route"], "dead");
    assert_eq!(dead["side"], "stable");
    assert!(dead["upstream"].is_null());
    assert!(dead["bytes"].as_u64().unwrap() > 0, "the proxy's own body");

    let shielded = with_prefix(&lines, "shielded")[0];
    assert_eq!(shielded["side"], "stable");
    assert_eq!(shielded["shielded"], true);
    assert_eq!(shielded["reason"], "hash");
    assert_eq!(shielded["upstream"], stable.addr.to_string());
    assert_eq!(shielded["status"], 200);

    let bad = lines.iter().find(|l| l["status"] == 400).expect("the 400");
    assert!(bad["route"].is_null() && bad["side"].is_null());
    assert_eq!(bad["class"], "4xx");
    assert_eq!(
        bad["request_id"].as_str().unwrap().len(),
        25,
        "a generated id"
    );
}

#[tokio::test]
async fn off_by_default_nothing_is_written_and_no_header_is_added() {
    let stable = MockUpstream::start("stable").await;
    let canary = MockUpstream::start("canary").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n{}",
        route_toml("app", stable.addr, canary.addr, 50.0, "")
    );
    std::fs::write(&config, toml).unwrap();
    let proxy = TestProxy::start_watching(&config).await;
    for _ in 0..5 {
        let (status, headers, _) = get(&client(), &proxy.url("/"), &[]).await;
        assert_eq!(status, 200);
        assert!(!headers.contains_key("x-canary-proxy-side"));
    }
    assert_eq!(
        proxy.metric("canary_proxy_access_log_dropped_total").await,
        0.0
    );
    proxy.stop().await;
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files, ["proxy.toml"], "no file created");
}

#[tokio::test]
async fn the_side_header_names_the_side_and_version() {
    let stable = MockUpstream::start("stable").await;
    let canary = MockUpstream::start("canary").await;
    let dead = refused_addr().await;
    let unversioned = format!(
        "[[route]]\nname = \"plain\"\npath_prefix = \"/plain\"\nstable = {{ endpoints = [\"{}\"] }}\ncanary = {{ endpoints = [\"{}\"] }}\ncanary_weight = 100\n",
        stable.addr, canary.addr
    );
    let toml = format!(
        "[log]\nside_header = true\n{}{}{}{unversioned}",
        route_toml("to-canary", stable.addr, canary.addr, 100.0, ""),
        route_toml(
            "to-stable",
            stable.addr,
            canary.addr,
            0.0,
            "path_prefix = \"/s\""
        ),
        route_toml("dead", dead, dead, 100.0, "path_prefix = \"/dead\""),
    );
    let proxy = TestProxy::start(&toml).await;
    let client = client();
    let side =
        |headers: &http::HeaderMap| headers["x-canary-proxy-side"].to_str().unwrap().to_owned();
    let (_, headers, body) = get(&client, &proxy.url("/"), &[]).await;
    assert_eq!(
        (side(&headers).as_str(), body.as_str()),
        ("canary v2", "canary")
    );
    let (_, headers, body) = get(&client, &proxy.url("/s"), &[]).await;
    assert_eq!(
        (side(&headers).as_str(), body.as_str()),
        ("stable", "stable")
    );
    let (_, headers, _) = get(&client, &proxy.url("/plain"), &[]).await;
    assert_eq!(side(&headers), "canary");
    // A proxy-made answer after the side was chosen names it too.
    let (status, headers, _) = get(&client, &proxy.url("/dead"), &[]).await;
    assert_eq!(
        (status.as_u16(), side(&headers).as_str()),
        (502, "canary v2")
    );
    proxy.stop().await;
}

/// Writes `[log]` + one route to `path`, for a watched proxy.
fn write_config(path: &Path, log: &str, route: &str) {
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n{log}\n{route}"
    );
    std::fs::write(path, toml).unwrap();
}

#[tokio::test]
async fn log_changes_apply_on_reload_and_relative_paths_follow_the_config() {
    let stable = MockUpstream::start("stable").await;
    let canary = MockUpstream::start("canary").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    let route = route_toml("app", stable.addr, canary.addr, 50.0, "");
    write_config(&config, "[log]\naccess = \"a.log\"", &route);
    let proxy = TestProxy::start_watching(&config).await;
    let client = client();
    let send = |id: &'static str| {
        let client = client.clone();
        let url = proxy.url("/");
        async move { get(&client, &url, &[("x-request-id", id)]).await }
    };
    send("first").await;

    // A new destination, and the side header.
    write_config(
        &config,
        "[log]\naccess = \"b.log\"\nside_header = true",
        &route,
    );
    wait_for("the reload", Duration::from_secs(5), || async {
        send("poll").await.1.contains_key("x-canary-proxy-side")
    })
    .await;
    send("second").await;

    // A destination that cannot be opened: the reload is rejected, b.log goes on.
    write_config(&config, "[log]\naccess = \"no/such/dir/c.log\"", &route);
    wait_for("the rejection", Duration::from_secs(5), || async {
        let events = proxy.admin_json("/api/v1/events").await;
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "reload_failed")
    })
    .await;
    let events = proxy.admin_json("/api/v1/events").await;
    let failed = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "reload_failed")
        .unwrap()
        .clone();
    let reason = failed["reason"].as_str().unwrap();
    assert!(
        reason.contains("log.access") && reason.contains("cannot open access log"),
        "{reason}"
    );
    assert!(reason.contains("no/such/dir/c.log"), "{reason}");
    send("third").await;

    // Off again.
    write_config(&config, "", &route);
    wait_for("the reload", Duration::from_secs(5), || async {
        !send("poll").await.1.contains_key("x-canary-proxy-side")
    })
    .await;
    send("fourth").await;
    proxy.stop().await;

    let ids = |file: &str| -> Vec<String> {
        read_lines(&dir.path().join(file))
            .iter()
            .map(|l| l["request_id"].as_str().unwrap().to_owned())
            .filter(|id| id != "poll")
            .collect()
    };
    assert_eq!(
        ids("a.log"),
        ["first"],
        "relative to the config's directory"
    );
    assert_eq!(ids("b.log"), ["second", "third"]);
    assert!(!dir.path().join("no").exists());
}

/// A destination that stops reading: the proxy answers every request at full speed,
/// drops the lines that do not fit, counts them, and writes the rest once it can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_destination_drops_and_counts_lines_and_never_slows_requests() {
    const REQUESTS: usize = 10_000;
    let stable = MockUpstream::start("stable").await;
    let canary = MockUpstream::start("canary").await;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.unwrap().success(), "mkfifo");
    // The reader opens the pipe (so the proxy's open does not block) and reads nothing
    // until told to; then it reads to the end (when the proxy has stopped).
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut pipe = std::fs::File::open(fifo).unwrap();
            let _ = wait.recv();
            let mut text = String::new();
            pipe.read_to_string(&mut text).unwrap();
            text
        })
    };
    let toml = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[log]\naccess = \"{}\"\n{}",
        fifo.display(),
        route_toml("app", stable.addr, canary.addr, 50.0, ""),
    );
    let proxy = TestProxy::start(&toml).await;
    let client = client();
    let url = proxy.url("/");
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                for _ in 0..REQUESTS / 8 {
                    let (status, _, _) = get(&client, &url, &[]).await;
                    assert_eq!(status, 200);
                }
            })
        })
        .collect();
    let started = tokio::time::Instant::now();
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    // A pipe holds 64 KiB and the channel 8 192 lines: over a thousand did not fit.
    let dropped = proxy.metric("canary_proxy_access_log_dropped_total").await;
    assert!(dropped >= 1000.0, "dropped {dropped}");
    assert!(elapsed < Duration::from_secs(60), "{elapsed:?}");
    let _ = go.send(());
    // Idle client connections would keep the proxy's connections (and the log) open.
    drop(client);
    proxy.stop().await;
    // The pipe ends when the last line is written and the log closes.
    wait_for("the end of the pipe", Duration::from_secs(30), || {
        let done = reader.is_finished();
        async move { done }
    })
    .await;
    let text = reader.join().unwrap();
    let written = text.lines().count();
    for line in text.lines() {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
    assert_eq!(
        written + dropped as usize,
        REQUESTS,
        "every line written or counted"
    );
    println!("{REQUESTS} requests in {elapsed:?}; {written} lines written, {dropped} dropped");
}

/// A client that leaves takes its upstream request with it (nginx's default,
/// `proxy_ignore_client_abort off`). Before the response head, the proxy sees the
/// close by reading ahead after the request head (hyper's read-ahead, the code that
/// benches/hyper-read-buf.patch changes), drops the upstream request, which closes that
/// upstream connection, and logs 499. During the body, it stops the download the same
/// way and logs the bytes the client got. An HTTP/2 client that resets the stream
/// cancels that one request.
#[tokio::test]
async fn a_client_that_leaves_cancels_its_upstream_request() {
    let stable = MockUpstream::start("stable").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let toml = format!(
        "[log]\naccess = \"{}\"\n{}",
        log.display(),
        route_toml("app", stable.addr, stable.addr, 0.0, ""),
    );
    let proxy = TestProxy::start(&toml).await;
    let wait = Duration::from_secs(10);
    let line = |id: &'static str| {
        let log = log.clone();
        async move {
            let mut found = None;
            wait_for(&format!("the line of {id}"), wait, || {
                found = read_lines(&log).into_iter().find(|l| l["request_id"] == id);
                let done = found.is_some();
                async move { done }
            })
            .await;
            found.unwrap()
        }
    };
    // Until the upstream has seen `requests` requests and holds `open` connections.
    let upstream = |requests: usize, open: usize| {
        let stable = &stable;
        async move {
            let what = format!("the upstream at {requests} requests, {open} open");
            wait_for(&what, wait, || {
                let now = (stable.requests(), stable.open_connections());
                async move { now == (requests, open) }
            })
            .await;
        }
    };

    // Before the head: the upstream never answers /hang.
    let mut conn = TcpStream::connect(proxy.addr).await.unwrap();
    conn.write_all(b"GET /hang HTTP/1.1\r\nhost: app\r\nx-request-id: left-early\r\n\r\n")
        .await
        .unwrap();
    upstream(1, 1).await;
    drop(conn);
    upstream(1, 0).await;
    let early = line("left-early").await;
    assert_eq!(early["status"], 499, "{early}");
    assert_eq!(early["route"], "app", "{early}");
    assert_eq!(early["side"], "stable", "{early}");
    assert!(early["upstream"].is_null(), "nothing answered: {early}");

    // During the body: 100 GB on offer, the client reads the head and leaves.
    let total: u64 = 100 << 30;
    let mut conn = TcpStream::connect(proxy.addr).await.unwrap();
    let request =
        format!("GET /download/{total} HTTP/1.1\r\nhost: app\r\nx-request-id: left-late\r\n\r\n");
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut head = vec![0u8; 16 * 1024];
    let n = conn.read(&mut head).await.unwrap();
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    drop(conn);
    upstream(2, 0).await;
    let late = line("left-late").await;
    assert_eq!(late["status"], 200, "{late}");
    let bytes = late["bytes"].as_u64().unwrap();
    assert!(bytes < total, "{bytes} of {total}: the download went on");

    // An HTTP/2 client resets the stream (drops its request: RST_STREAM CANCEL) and
    // keeps the connection: the same as leaving, for that one request.
    let h2 = h2_client();
    let pending = tokio::spawn({
        let (h2, url) = (h2.clone(), proxy.url("/hang"));
        async move { get(&h2, &url, &[("x-request-id", "reset")]).await }
    });
    upstream(3, 1).await;
    pending.abort();
    upstream(3, 0).await;
    let reset = line("reset").await;
    assert_eq!(reset["status"], 499, "{reset}");
    assert_eq!(reset["route"], "app", "{reset}");
    let (status, _, body) = get(&h2, &proxy.url("/"), &[]).await;
    assert_eq!(
        (status.as_u16(), body.as_str()),
        (200, "stable"),
        "same connection"
    );

    // None left anything behind: the next request is answered as usual.
    let (status, _, body) = get(&client(), &proxy.url("/"), &[]).await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "stable"));
}
