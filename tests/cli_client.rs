//! The admin API's command-line client (`canary-proxy status|rollback|resume|promote|
//! pause`), run as a real process against a live proxy; its exit codes: 0 done,
//! 1 refused, 2 usage/config, 3 unreachable.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use support::*;
use tokio::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_canary-proxy");
const TOKEN: &str = "s3cret-token";

/// A live proxy with one route `r` and a token file, plus a client config that points
/// at its admin listener.
struct Fixture {
    proxy: TestProxy,
    dir: tempfile::TempDir,
    _stable: MockUpstream,
    _canary: MockUpstream,
}

impl Fixture {
    async fn start() -> Fixture {
        let stable = MockUpstream::start("stable").await;
        let canary = MockUpstream::start("canary").await;
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
        let proxy = TestProxy::start(&format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n{}",
            token.display(),
            route_toml("r", stable.addr, canary.addr, 10.0, "")
        ))
        .await;
        Fixture {
            proxy,
            dir,
            _stable: stable,
            _canary: canary,
        }
    }

    fn admin(&self) -> SocketAddr {
        self.proxy.admin.unwrap()
    }

    /// A client config: `[admin] listen` at `listen`, the token file holding `token`.
    fn client_config(&self, listen: &str, token: &str) -> PathBuf {
        client_config(self.dir.path(), listen, Some(token))
    }

    /// The config that reaches this proxy with the right token.
    fn config(&self) -> PathBuf {
        self.client_config(&self.admin().to_string(), TOKEN)
    }
}

/// Writes `client-N.toml` in `dir`: a valid config whose `[admin]` is `listen` (and
/// `token_file` holding `token`, when given).
fn client_config(dir: &Path, listen: &str, token: Option<&str>) -> PathBuf {
    let n = std::fs::read_dir(dir).unwrap().count();
    let token_line = match token {
        Some(token) => {
            let file = dir.join(format!("token-{n}"));
            std::fs::write(&file, format!("{token}\n")).unwrap();
            format!("token_file = \"{}\"\n", file.display())
        }
        None => String::new(),
    };
    let path = dir.join(format!("client-{n}.toml"));
    std::fs::write(
        &path,
        format!(
            "[admin]\nlisten = \"{listen}\"\n{token_line}[[route]]\nname = \"r\"\nstable = {{ endpoints = [\"127.0.0.1:1\"] }}\ncanary = {{ endpoints = [\"127.0.0.1:2\"] }}\n"
        ),
    )
    .unwrap();
    path
}

async fn cli(config: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(BIN)
        .args(args)
        .arg("-c")
        .arg(config)
        .output()
        .await
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Exit code, stdout, stderr.
fn parts(out: &Output) -> (Option<i32>, String, String) {
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_prints_a_table_and_the_json_as_is() {
    let fx = Fixture::start().await;
    let (code, stdout, stderr) = parts(&cli(&fx.config(), &["status"]).await);
    assert_eq!(code, Some(0), "{stderr}");
    let mut lines = stdout.lines();
    let header = lines.next().unwrap();
    for column in [
        "ROUTE",
        "STATE",
        "CONFIGURED",
        "EFFECTIVE",
        "VERDICT",
        "CANARY",
    ] {
        assert!(header.contains(column), "{stdout}");
    }
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        &row[..6],
        ["r", "steady", "10%", "10%", "undecided", "v2"],
        "{stdout}"
    );
    // reason/since columns follow the API: shown exactly when it carries them.
    let api = fx.proxy.route_status("r").await;
    assert_eq!(
        header.contains("REASON"),
        api.get("reason").is_some(),
        "{stdout}"
    );
    assert_eq!(
        header.contains("SINCE"),
        api.get("since").is_some(),
        "{stdout}"
    );

    let (code, stdout, stderr) = parts(&cli(&fx.config(), &["status", "--json"]).await);
    assert_eq!(code, Some(0), "{stderr}");
    let all: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(all["routes"][0]["name"], "r", "{stdout}");
    assert!(all["generation"].is_u64(), "{stdout}");

    let (code, stdout, stderr) = parts(&cli(&fx.config(), &["status", "r", "--json"]).await);
    assert_eq!(code, Some(0), "{stderr}");
    let one: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(one["name"], "r");
    assert_eq!(one["configured_weight"], 10.0);

    let (code, _, stderr) = parts(&cli(&fx.config(), &["status", "nope"]).await);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("no route named \"nope\" (routes: r)"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_with_the_token_rolls_the_route_back() {
    let fx = Fixture::start().await;
    let (code, stdout, stderr) = parts(
        &cli(
            &fx.config(),
            &["rollback", "r", "--reason", "bad deploy, see INC-42"],
        )
        .await,
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.lines().nth(1).unwrap().contains("rolled_back"),
        "{stdout}"
    );
    let status = fx.proxy.route_status("r").await;
    assert_eq!(status["state"], "rolled_back");
    assert_eq!(status["effective_weight"], 0.0);
    // Where the API keeps the operator's reason, it is the one sent.
    if let Some(reason) = status.get("reason").filter(|r| !r.is_null()) {
        assert_eq!(reason, "bad deploy, see INC-42");
    }

    // resume, with --json: the API's answer as is.
    let (code, stdout, stderr) = parts(&cli(&fx.config(), &["resume", "r", "--json"]).await);
    assert_eq!(code, Some(0), "{stderr}");
    let answer: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(answer["name"], "r");
    assert_ne!(answer["state"], "rolled_back", "{stdout}");
    assert_eq!(fx.proxy.route_status("r").await["effective_weight"], 10.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_exit_1_with_the_apis_message() {
    let fx = Fixture::start().await;
    let config = fx.client_config(&fx.admin().to_string(), "not-the-token");
    let (code, stdout, stderr) = parts(&cli(&config, &["pause", "r"]).await);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("403 Forbidden: invalid token"), "{stderr}");
    assert_eq!(fx.proxy.route_status("r").await["state"], "steady");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_is_exit_1_with_the_apis_message() {
    let fx = Fixture::start().await;
    let (code, _, stderr) = parts(&cli(&fx.config(), &["rollback", "r"]).await);
    assert_eq!(code, Some(0), "{stderr}");
    // Pausing a rolled-back route makes no sense: 409.
    let (code, stdout, stderr) = parts(&cli(&fx.config(), &["pause", "r"]).await);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stderr.starts_with("error: 409 Conflict: "), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    // An unknown route: 404, also 1.
    let (code, _, stderr) = parts(&cli(&fx.config(), &["promote", "nope"]).await);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("404 Not Found"), "{stderr}");
}

/// A wildcard `[admin] listen` is reached on loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_listen_address_is_reached_on_loopback() {
    let fx = Fixture::start().await;
    let listen = format!("0.0.0.0:{}", fx.admin().port());
    let config = fx.client_config(&listen, TOKEN);
    let (code, stdout, stderr) = parts(&cli(&config, &["status", "r"]).await);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("steady"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_is_down_is_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let refused = refused_addr().await;
    let config = client_config(dir.path(), &refused.to_string(), Some(TOKEN));
    for args in [&["status"][..], &["rollback", "r"]] {
        let (code, _, stderr) = parts(&cli(&config, args).await);
        assert_eq!(code, Some(3), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("cannot reach the admin API at {refused}")),
            "{stderr}"
        );
    }

    // Accepts, never answers: the 5 s timeout, then 3.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = client_config(
        dir.path(),
        &silent.local_addr().unwrap().to_string(),
        Some(TOKEN),
    );
    let started = Instant::now();
    let (code, _, stderr) = parts(&cli(&config, &["status"]).await);
    let took = started.elapsed();
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("no answer within 5s"), "{stderr}");
    assert!(
        (Duration::from_millis(4900)..Duration::from_secs(8)).contains(&took),
        "{took:?}"
    );
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_and_usage_errors_are_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    // Invalid: every problem is printed, located.
    let invalid = dir.path().join("invalid.toml");
    std::fs::write(
        &invalid,
        "[admin]\nlisten = \"nowhere\"\n[[route]]\nname = \"r\"\nstable = { endpoints = [\"127.0.0.1:1\"] }\ncanary = { endpoints = [\"127.0.0.1:2\"] }\ncanary_weight = 101\n",
    )
    .unwrap();
    let (code, _, stderr) = parts(&cli(&invalid, &["status"]).await);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("invalid.toml:2:10: admin.listen"),
        "{stderr}"
    );
    assert!(stderr.contains("route[0].canary_weight"), "{stderr}");

    let missing = dir.path().join("missing.toml");
    let (code, _, stderr) = parts(&cli(&missing, &["status"]).await);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("missing.toml: cannot read"), "{stderr}");

    // No [admin]: nothing to talk to.
    let no_admin = dir.path().join("no-admin.toml");
    std::fs::write(
        &no_admin,
        "[[route]]\nname = \"r\"\nstable = { endpoints = [\"127.0.0.1:1\"] }\ncanary = { endpoints = [\"127.0.0.1:2\"] }\n",
    )
    .unwrap();
    let (code, _, stderr) = parts(&cli(&no_admin, &["status"]).await);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("has no [admin] section"), "{stderr}");

    // A command without a token_file; a token file that has gone.
    let refused = refused_addr().await;
    let tokenless = client_config(dir.path(), &refused.to_string(), None);
    let (code, _, stderr) = parts(&cli(&tokenless, &["rollback", "r"]).await);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("[admin] has no token_file"), "{stderr}");
    let config = dir.path().join("gone.toml");
    std::fs::write(
        &config,
        format!(
            "[admin]\nlisten = \"{refused}\"\ntoken_file = \"{}\"\n{}",
            dir.path().join("no-such-token").display(),
            route_toml("r", refused, refused, 0.0, "")
        ),
    )
    .unwrap();
    let (code, _, stderr) = parts(&cli(&config, &["rollback", "r"]).await);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("cannot read token file"), "{stderr}");

    // Not a route name; a missing ROUTE; a missing -c.
    let (code, _, stderr) = parts(&cli(&config, &["pause", "a/b"]).await);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("`a/b` is not a route name"), "{stderr}");
    let (code, _, stderr) = parts(&cli(&config, &["pause"]).await);
    assert_eq!(code, Some(2), "{stderr}");
    let out = tokio::process::Command::new(BIN)
        .arg("status")
        .output()
        .await
        .unwrap();
    let (code, _, stderr) = parts(&out);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("canary-proxy status -c FILE"), "{stderr}");
}

#[test]
fn help_documents_the_exit_codes() {
    let out = std::process::Command::new(BIN)
        .args(["rollback", "--help"])
        .output()
        .unwrap();
    let help = text(&out.stdout);
    assert!(out.status.success(), "{help}");
    for line in [
        "1  the API refused",
        "2  usage or config error",
        "3  the proxy is unreachable (connection refused or no answer within 5 s)",
        "--reason <TEXT>",
    ] {
        assert!(help.contains(line), "no {line:?} in:\n{help}");
    }
    let out = std::process::Command::new(BIN)
        .arg("--help")
        .output()
        .unwrap();
    let help = text(&out.stdout);
    assert!(help.contains("Exit codes:"), "{help}");
    assert!(
        help.contains("3 drain_timeout elapsed and open connections were cut"),
        "{help}"
    );
}
