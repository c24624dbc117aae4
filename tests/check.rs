//! `check` away from the host (`--offline`), its warnings, the `[state] dir` probe (in
//! `check` and at start), and the binary's other operator-facing edges: `demo -c`,
//! an unusable `RUST_LOG`, `demo --keep-running`, and `run`'s exit code after a drain
//! that cut connections.

mod kit;
mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use kit::python;
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_canary-proxy");

/// A route with distinct endpoints and a header sticky key: no warning of its own.
const QUIET_ROUTE: &str = "[[route]]\nname = \"r\"\nstable = { endpoints = [\"127.0.0.1:9001\"] }\ncanary = { endpoints = [\"127.0.0.1:9002\"] }\ncanary_weight = 10\nsticky = [\"header:x-user-id\"]\n";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Writes `toml` to `dir/name` and returns the path.
fn write(dir: &Path, name: &str, toml: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, toml).unwrap();
    path
}

fn check(config: &Path, extra: &[&str]) -> Output {
    Command::new(BIN)
        .arg("check")
        .args(extra)
        .arg("-c")
        .arg(config)
        .output()
        .unwrap()
}

/// The `proxy.toml` of the ConfigMap in deploy/kubernetes.yaml.
fn kubernetes_config() -> String {
    const EXTRACT: &str = "import sys, yaml\nfor d in yaml.safe_load_all(open(sys.argv[1])):\n    if d and d.get('kind') == 'ConfigMap':\n        sys.stdout.write(d['data']['proxy.toml'])\n";
    let out = Command::new(python())
        .args(["-c", EXTRACT])
        .arg(repo("deploy/kubernetes.yaml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let toml = text(&out.stdout);
    assert!(
        toml.contains("[[route]]"),
        "no config in the ConfigMap: {toml}"
    );
    toml
}

#[test]
fn offline_check_accepts_the_kubernetes_config_and_lists_what_it_did_not_read() {
    let toml = kubernetes_config();
    let token = "/etc/canary-proxy-secrets/admin-token";
    assert!(toml.contains(token), "token_file moved: update this test");
    assert!(!Path::new(token).exists(), "this host has the pod's token");
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "proxy.toml", &toml);

    let out = check(&config, &["--offline"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("ok (offline)"), "{stdout}");
    assert!(stdout.contains("route app"), "{stdout}");
    assert!(
        stdout.contains(&format!("not checked offline: admin.token_file {token}")),
        "{stdout}"
    );
    assert!(
        stdout.contains("not checked offline: state.dir /var/lib/canary-proxy"),
        "{stdout}"
    );
    // Nothing was created on this host.
    assert!(!dir.path().join("var").exists());

    // Without --offline the missing token is an error, as before.
    let out = check(&config, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("admin.token_file: cannot read token file"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn offline_check_skips_every_file_a_config_names_and_still_checks_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let toml = r#"
[server]
listen = "127.0.0.1:8443"
tls = { cert = "/pod/tls/cert.pem", key = "/pod/tls/key.pem", client_ca = "/pod/tls/ca.pem" }
[admin]
listen = "127.0.0.1:9901"
token_file = "secrets/token"
[notify]
webhook = "https://hooks.example.com/canary"
ca_file = "/pod/hooks-ca.pem"
secret_file = "/pod/hook-secret"
[[route]]
name = "r"
stable = { endpoints = ["https://10.0.0.1:443"], ca_file = "/pod/up-ca.pem", client_cert = "/pod/c.pem", client_key = "/pod/k.pem" }
canary = { endpoints = ["127.0.0.1:9002"] }
sticky = ["cookie:session"]
"#;
    let config = write(dir.path(), "proxy.toml", toml);
    let out = check(&config, &["--offline"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let token = dir.path().join("secrets/token");
    for line in [
        "not checked offline: server.tls.cert /pod/tls/cert.pem".to_string(),
        "not checked offline: server.tls.key /pod/tls/key.pem".to_string(),
        "not checked offline: server.tls.client_ca /pod/tls/ca.pem".to_string(),
        format!("not checked offline: admin.token_file {}", token.display()),
        "not checked offline: notify.ca_file /pod/hooks-ca.pem".to_string(),
        "not checked offline: notify.secret_file /pod/hook-secret".to_string(),
        "not checked offline: route[0].stable.ca_file /pod/up-ca.pem".to_string(),
        "not checked offline: route[0].stable.client_cert /pod/c.pem".to_string(),
        "not checked offline: route[0].stable.client_key /pod/k.pem".to_string(),
    ] {
        assert!(stdout.contains(&line), "no {line:?} in:\n{stdout}");
    }
    // A config with a token file is not warned about as if it had none.
    assert!(!stderr.contains("no token_file"), "{stderr}");

    // Online, each missing file is an error.
    let out = check(&config, &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for key in [
        "server.tls.cert",
        "admin.token_file",
        "notify.secret_file",
        "route[0].stable.ca_file",
    ] {
        assert!(stderr.contains(key), "no {key} in:\n{stderr}");
    }

    // Offline still checks the file itself: a bad value, an empty path.
    let bad = toml
        .replace("sticky = [\"cookie:session\"]", "canary_weight = 101")
        .replace("\"/pod/hook-secret\"", "\"\"");
    let config = write(dir.path(), "bad.toml", &bad);
    let out = check(&config, &["--offline"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("route[0].canary_weight"), "{stderr}");
    assert!(
        stderr.contains("notify.secret_file: must not be empty"),
        "{stderr}"
    );
}

/// Warnings: printed on stderr, exit code still 0.
fn warnings(route: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "proxy.toml",
        &format!("[admin]\nlisten = \"127.0.0.1:9901\"\n[state]\ndir = \"state\"\n{route}"),
    );
    let out = check(&config, &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    stderr
        .lines()
        .filter(|l| l.starts_with("warning: route"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn check_warns_about_rollout_steps_below_canary_weight() {
    let warned = warnings(&format!(
        "{QUIET_ROUTE}[route.rollout]\nsteps = [1, 5, 10, 25, 50, 100]\nstep_interval = \"1m\"\n"
    ));
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(
        warned[0].contains(
            "route `r`: rollout steps 1%, 5% are below canary_weight 10% and are skipped"
        ),
        "{warned:?}"
    );
    let quiet = warnings(&format!(
        "{QUIET_ROUTE}[route.rollout]\nsteps = [10, 25, 100]\nstep_interval = \"1m\"\n"
    ));
    assert!(quiet.is_empty(), "{quiet:?}");
}

#[test]
fn check_warns_about_stable_and_canary_sharing_endpoints() {
    let same = QUIET_ROUTE.replace("127.0.0.1:9002", "127.0.0.1:9001");
    let warned = warnings(&same);
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(
        warned[0].contains(
            "route `r`: stable and canary have the same endpoints (http://127.0.0.1:9001)"
        ),
        "{warned:?}"
    );
    let shared = QUIET_ROUTE.replace(
        "[\"127.0.0.1:9002\"]",
        "[\"127.0.0.1:9002\", \"http://127.0.0.1:9001\"]",
    );
    let warned = warnings(&shared);
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(
        warned[0].contains("endpoint http://127.0.0.1:9001 is both stable and canary"),
        "{warned:?}"
    );
}

#[test]
fn check_warns_when_client_ip_is_the_only_sticky_source() {
    for sticky in ["sticky = [\"client_ip\"]\n", ""] {
        let route = QUIET_ROUTE.replace("sticky = [\"header:x-user-id\"]\n", sticky);
        let warned = warnings(&route);
        assert_eq!(warned.len(), 1, "{sticky:?}: {warned:?}");
        assert!(
            warned[0].contains("route `r`: client_ip is the only sticky source"),
            "{warned:?}"
        );
    }
    // client_ip as the fallback behind a header is fine.
    let route = QUIET_ROUTE.replace(
        "\"header:x-user-id\"",
        "\"header:x-user-id\", \"client_ip\"",
    );
    assert!(warnings(&route).is_empty());
}

#[test]
fn check_creates_and_probes_the_state_dir() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "proxy.toml",
        &format!("[state]\ndir = \"var/state\"\n{QUIET_ROUTE}"),
    );
    let out = check(&config, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let state = dir.path().join("var/state");
    assert!(state.is_dir());
    assert_eq!(
        std::fs::read_dir(&state).unwrap().count(),
        0,
        "probe left behind"
    );

    // A state dir that cannot be created: check names it and exits 1.
    let config = write(
        dir.path(),
        "proc.toml",
        &format!("[state]\ndir = \"/proc/x\"\n{QUIET_ROUTE}"),
    );
    let out = check(&config, &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("state.dir: state dir /proc/x: cannot create it"),
        "{stderr}"
    );
    // Offline, it is not probed.
    let out = check(&config, &["--offline"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("not checked offline: state.dir /proc/x"));
}

/// A file where the state dir should be: it exists but holds no files.
#[test]
fn check_refuses_a_state_dir_that_is_a_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("state"), b"").unwrap();
    let config = write(
        dir.path(),
        "proxy.toml",
        &format!("[state]\ndir = \"state\"\n{QUIET_ROUTE}"),
    );
    let out = check(&config, &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("state dir {}", dir.path().join("state").display())),
        "{stderr}"
    );
}

#[test]
fn run_refuses_an_unusable_state_dir_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "proxy.toml",
        &format!("[server]\nlisten = \"127.0.0.1:0\"\n[state]\ndir = \"/proc/x\"\n{QUIET_ROUTE}"),
    );
    let out = Command::new(BIN)
        .args(["run", "-c"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot start"), "{stderr}");
    assert!(
        stderr.contains("state dir /proc/x: cannot create it"),
        "{stderr}"
    );
    assert!(!stderr.contains("listening"), "{stderr}");
}

#[test]
fn check_without_a_config_names_check() {
    let out = Command::new(BIN).arg("check").output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("a config file is required: canary-proxy check -c FILE"),
        "{stderr}"
    );
}

#[test]
fn demo_with_a_config_is_an_error() {
    let out = Command::new(BIN)
        .args(["demo", "--short", "-c", "config/example.toml"])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("`demo` brings its own config"), "{stderr}");
    assert!(out.stdout.is_empty(), "the demo must not start");
}

/// An unusable RUST_LOG is warned about and replaced by `info`: the start-up error
/// below is still logged.
#[test]
fn an_unusable_rust_log_is_warned_about_and_logs_at_info() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "proxy.toml",
        &format!("[server]\nlisten = \"127.0.0.1:0\"\n[state]\ndir = \"/proc/x\"\n{QUIET_ROUTE}"),
    );
    for (filter, says) in [
        ("canary_proxy=loud", "is not a valid filter"),
        (
            "canary-proxy=debug",
            "target `canary-proxy` matches nothing",
        ),
    ] {
        let out = Command::new(BIN)
            .args(["run", "-c"])
            .arg(&config)
            .env("RUST_LOG", filter)
            .output()
            .unwrap();
        let stderr = text(&out.stderr);
        let first = stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("warning: RUST_LOG="),
            "{filter}: {stderr}"
        );
        assert!(first.contains(says), "{filter}: {stderr}");
        assert!(first.contains("logging at `info`"), "{filter}: {stderr}");
        assert!(stderr.contains("cannot start"), "{filter}: {stderr}");
    }
    // A valid filter: no warning.
    let out = Command::new(BIN)
        .args(["run", "-c"])
        .arg(&config)
        .env("RUST_LOG", "info,canary_proxy=debug")
        .output()
        .unwrap();
    assert!(!text(&out.stderr).contains("warning: RUST_LOG"));
}

fn signal(child: &std::process::Child, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("kill (procps)");
    assert!(status.success());
}

/// Reads `child`'s stream line by line on a thread; returns a receiver of the lines.
fn lines(stream: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            eprintln!("[child] {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The first line from `rx` that holds `needle`, within `timeout`.
fn wait_line(rx: &std::sync::mpsc::Receiver<String>, needle: &str, timeout: Duration) -> String {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(_) => panic!("no line with {needle:?} within {timeout:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_keep_running_keeps_the_load_going_until_ctrl_c() {
    let mut child = Command::new(BIN)
        .args(["demo", "--short", "--keep-running"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rx = lines(child.stdout.take().unwrap());
    // "  dashboard  http://127.0.0.1:PORT/   (admin token: demo-token)"
    let dashboard = wait_line(&rx, "dashboard  http://", Duration::from_secs(10));
    let admin: SocketAddr = dashboard
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap()
        .parse()
        .unwrap();
    wait_line(&rx, "still running", Duration::from_secs(30));
    let responses = || async {
        let (_, _, body) = get(&client(), &format!("http://{admin}/api/v1/routes"), &[]).await;
        let routes: serde_json::Value = serde_json::from_str(&body).unwrap();
        routes["routes"][0]["responses"].as_u64().unwrap()
    };
    let before = responses().await;
    let mut after = before;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = responses().await;
        if after > before + 100 {
            break;
        }
    }
    assert!(
        after > before + 100,
        "no load after the summary: {before} → {after}"
    );
    signal(&child, "-INT");
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_exits_3_when_the_drain_cuts_connections() {
    let up = MockUpstream::start("up").await;
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "proxy.toml",
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndrain_timeout = \"300ms\"\n{}",
            route_toml("r", up.addr, up.addr, 0.0, "")
        ),
    );
    let mut child = Command::new(BIN)
        .args(["run", "-c"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = lines(child.stderr.take().unwrap());
    let listening = wait_line(&rx, "canary-proxy listening", Duration::from_secs(10));
    let addr: SocketAddr = listening
        .split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .unwrap()
        .parse()
        .unwrap();
    // A request the drain cannot wait for.
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut slow, b"GET /slow/5000 HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    wait_for(
        "the slow request upstream",
        Duration::from_secs(5),
        || async { up.requests() > 0 },
    )
    .await;
    signal(&child, "-TERM");
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(3));
    wait_line(
        &rx,
        "the drain cut open connections",
        Duration::from_secs(5),
    );
    drop(slow);
}
