//! The binary itself: `check`, `--version`, and SIGTERM drain.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use http::StatusCode;
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_canary-proxy");

fn repo(path: &str) -> String {
    format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn version() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn check_accepts_the_shipped_configs() {
    for file in [
        "config/example.toml",
        "config/minimal.toml",
        "config/bench.toml",
    ] {
        let out = Command::new(BIN)
            .args(["check", "-c", &repo(file)])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{file}: {}{}",
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("route"), "{stdout}");
    }
    // A config without [admin] and [state] is valid but warned about.
    let out = Command::new(BIN)
        .args(["check", "-c", &repo("config/minimal.toml")])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("warning: no [admin]"), "{stderr}");
    assert!(stderr.contains("warning: no [state]"), "{stderr}");
}

/// Each file in config/invalid/ starts with `# expect: KEY @ LINE` lines; `check` must
/// exit 1 and print `FILE:LINE:COL: ...KEY...` for each.
#[test]
fn check_rejects_every_invalid_config_naming_key_and_line() {
    let dir = repo("config/invalid");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let expects: Vec<(String, String)> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect:"))
            .map(|l| {
                let (key, line) = l.split_once('@').unwrap();
                (key.trim().to_string(), line.trim().to_string())
            })
            .collect();
        assert!(
            !expects.is_empty(),
            "{} has no '# expect:' line",
            path.display()
        );
        let out = Command::new(BIN)
            .args(["check", "-c", path.to_str().unwrap()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}: {stderr}", path.display());
        for (key, line) in &expects {
            let located = format!("{}:{line}:", path.display());
            assert!(
                stderr
                    .lines()
                    .any(|l| l.contains(&located) && l.contains(key.as_str())),
                "{}: expected an error at line {line} naming {key}, got:\n{stderr}",
                path.display()
            );
        }
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} invalid configs");
}

#[test]
fn missing_file_is_a_clear_error() {
    let out = Command::new(BIN)
        .args(["check", "-c", "/nonexistent/canary.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/canary.toml"));
}

/// Starts the binary on `config` and returns it with its listen address and, when the
/// config has `[admin]`, the admin address (both read from its log). Its stderr keeps
/// being drained by a thread.
fn spawn_proxy(
    config: &Path,
    with_admin: bool,
) -> (std::process::Child, SocketAddr, Option<SocketAddr>) {
    let mut child = Command::new(BIN)
        .args(["run", "-c", config.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[proxy] {line}");
            if line.contains("listening") {
                let _ = tx.send(line);
            }
        }
    });
    let addr_of = |line: String| -> SocketAddr {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix("addr="))
            .unwrap()
            .parse()
            .unwrap()
    };
    let proxy = addr_of(
        rx.recv_timeout(Duration::from_secs(10))
            .expect("proxy did not start"),
    );
    let admin = with_admin.then(|| {
        addr_of(
            rx.recv_timeout(Duration::from_secs(10))
                .expect("no admin listener"),
        )
    });
    (child, proxy, admin)
}

fn sigterm(child: &std::process::Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// A rollback survives a restart of the process: same config, same state dir.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_latch_survives_a_process_restart() {
    let stable = MockUpstream::start("stable").await;
    let canary = MockUpstream::start("canary").await;
    canary.fail_every(1);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndrain_timeout = \"1s\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[state]\ndir = \"state\"\n{}[route.budget]\nmode = \"threshold\"\nmin_requests = 5\n",
            route_toml("r", stable.addr, canary.addr, 100.0, "")
        ),
    )
    .unwrap();
    let (first, addr, admin) = spawn_proxy(&config, true);
    let client = client();
    for _ in 0..10 {
        get(&client, &format!("http://{addr}/"), &[]).await;
    }
    let routes = get(
        &client,
        &format!("http://{}/api/v1/routes", admin.unwrap()),
        &[],
    )
    .await
    .2;
    assert!(routes.contains("\"state\":\"rolled_back\""), "{routes}");
    sigterm(&first);
    let mut first = first;
    tokio::task::spawn_blocking(move || first.wait().unwrap())
        .await
        .unwrap();
    assert!(dir.path().join("state/route-r.json").exists());

    let (second, addr, admin) = spawn_proxy(&config, true);
    let routes = get(
        &client,
        &format!("http://{}/api/v1/routes", admin.unwrap()),
        &[],
    )
    .await
    .2;
    assert!(routes.contains("\"state\":\"rolled_back\""), "{routes}");
    let served = canary.requests();
    for _ in 0..20 {
        let (_, headers, _) = get(&client, &format!("http://{addr}/"), &[]).await;
        assert_eq!(headers["x-served-by"], "stable");
    }
    assert_eq!(canary.requests(), served);
    sigterm(&second);
    let mut second = second;
    tokio::task::spawn_blocking(move || second.wait().unwrap())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_refuses_new_connections() {
    let stable = MockUpstream::start("stable").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndrain_timeout = \"10s\"\n{}",
            route_toml("r", stable.addr, stable.addr, 0.0, "")
        ),
    )
    .unwrap();
    let (mut child, addr, _) = spawn_proxy(&config, false);

    let client = client();
    let url = format!("http://{addr}/slow/1500");
    let in_flight = tokio::spawn(async move { get(&client, &url, &[]).await });
    // Let the request reach the upstream, then ask the proxy to stop.
    for _ in 0..100 {
        if stable.requests() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stable.requests(), 1);
    sigterm(&child);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "new connections must be refused while draining"
    );
    let (status, _, body) = in_flight.await.unwrap();
    assert_eq!(status, StatusCode::OK, "the in-flight request completes");
    assert_eq!(body, "stable");
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(exit.code(), Some(0));
}

/// SIGHUP re-reads the config and the files it refers to. The admin token lives
/// behind a directory symlink that is swapped: the watched directory itself never
/// changes, so only the signal can pick the new token up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_config() {
    let up = MockUpstream::start("up").await;
    let config_dir = tempfile::tempdir().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    // secrets/current -> a; the token is current/sub/token, so the proxy watches
    // a/sub (intermediate symlinks resolve), which the swap of `current` never touches.
    for (dir, token) in [("a", "old-token"), ("b", "new-token")] {
        std::fs::create_dir_all(secrets.path().join(dir).join("sub")).unwrap();
        std::fs::write(secrets.path().join(dir).join("sub/token"), token).unwrap();
    }
    std::os::unix::fs::symlink("a", secrets.path().join("current")).unwrap();
    let token = secrets.path().join("current/sub/token");
    let config = config_dir.path().join("proxy.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndrain_timeout = \"1s\"\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n{}",
            token.display(),
            route_toml("r", up.addr, up.addr, 0.0, "")
        ),
    )
    .unwrap();
    let (mut child, _, admin) = spawn_proxy(&config, true);
    let admin = admin.unwrap();
    let pause = |token: &'static str| {
        let url = format!("http://{admin}/api/v1/routes/r/pause");
        async move {
            let req = http::Request::post(url)
                .header("authorization", format!("Bearer {token}"))
                .body(empty())
                .unwrap();
            client().request(req).await.unwrap().status()
        }
    };
    std::fs::write(&token, "new-token").unwrap();
    assert_eq!(
        pause("new-token").await,
        StatusCode::FORBIDDEN,
        "not reloaded yet"
    );
    let status = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut accepted = false;
    for _ in 0..100 {
        if pause("new-token").await == StatusCode::OK {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(accepted, "SIGHUP did not reload the token");
    assert_eq!(pause("old-token").await, StatusCode::FORBIDDEN);
    let events = get(&client(), &format!("http://{admin}/api/v1/events"), &[])
        .await
        .2;
    assert!(events.contains("\"trigger\":\"sighup\""), "{events}");
    sigterm(&child);
    tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
}

#[test]
fn demo_runs_to_completion_and_reports_a_rollback() {
    let out = Command::new(BIN)
        .args(["demo", "--short"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("<< ROLLBACK shop: sequential_error_rate"),
        "{stdout}"
    );
    assert!(
        stdout.contains("rolled back                           yes (sequential_error_rate)"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("-- promote"),
        "failure starts before the last step: {stdout}"
    );
    assert!(
        stdout.contains("-- step: canary weight 10 % → 25 %"),
        "{stdout}"
    );
    assert!(
        stdout.contains("canary requests after rollback        0"),
        "{stdout}"
    );
    // "failed canary requests: N — users who saw one: M (…)"
    let (failed, saw): (u64, u64) = stdout
        .lines()
        .find_map(|l| {
            let rest = l.trim().strip_prefix("failed canary requests: ")?;
            let (failed, rest) = rest.split_once(" — users who saw one: ")?;
            let saw = rest.split_whitespace().next()?;
            Some((failed.parse().ok()?, saw.parse().ok()?))
        })
        .unwrap_or_else(|| panic!("no failed-request counts in:\n{stdout}"));
    assert!((1..200).contains(&failed), "{failed}");
    assert!(saw <= failed, "{saw} > {failed}");
    assert!(
        saw < failed.max(2),
        "the shield answered most of them: {saw} of {failed}"
    );
    assert!(
        stdout.contains("-- step: canary weight 25 % → 50 %"),
        "{stdout}"
    );
}
